import Foundation

/// The background maintenance thread: sweeps expired keys nobody reads
/// (bounded per second) and starts a compaction when a trigger is reached.
extension LogKV {
    func startMaintenance() {
        guard options.expirySweepPerSecond > 0 || options.autoCompaction || options.diskReserveBytes > 0 else { return }
        maintenance.start { [weak self] in self?.maintenanceLoop() }
    }

    func stopMaintenance() { maintenance.stop() }

    private func maintenanceLoop() {
        var lastCompactionCheck = Date()
        while true {
            // Once a second; the condition is broadcast for other reasons
            // too, so wait out the whole second.
            let deadline = Date(timeIntervalSinceNow: 1)
            let running = state.withLock { () -> Bool in
                while !maintenance.stopRequested && Date() < deadline { _ = state.wait(until: deadline) }
                return !maintenance.stopRequested
            }
            guard running else { break }
            // A backstop should a publishing path not deliver (every one
            // does; see `ChangeOutbox`).
            changes.deliver()
            // A reserve given up on a full disk comes back once the disk
            // has room for it; so do puts.
            if options.diskReserveBytes > 0 && (reserve.isReleased || !reserve.isHeld) && reserve.ensure() {
                diskFullHint.store(false, ordering: .relaxed)
            }
            if options.expirySweepPerSecond > 0 {
                do { _ = try sweepExpired(limit: options.expirySweepPerSecond) } catch {
                    logger.error("expiry sweep failed", metadata: ["error": "\(error)"])
                }
            }
            if options.autoCompaction && -lastCompactionCheck.timeIntervalSinceNow >= Double(options.compactionCheckSeconds) {
                lastCompactionCheck = Date()
                do {
                    if try compactionTriggered() { try compact(everything: false) }
                } catch {
                    logger.error("background compaction failed", metadata: ["error": "\(error)"])
                }
            }
        }
    }

    /// Removes up to `limit` expired keys from the index without anyone
    /// reading them. Returns how many were expired.
    @discardableResult
    public func sweepExpired(limit: Int) throws -> Int {
        let (expired, epoch) = try readers.withReader { reader in
            let epoch = state.withLock { keyDir.epoch }
            return (try reader.expired(now: options.clock(), limit: limit), epoch)
        }
        var count = 0
        for (key, location) in expired
        where expireLazily(key, location, observedEpoch: epoch, counter: metrics.expiredSweep) {
            count += 1
        }
        return count
    }
}
