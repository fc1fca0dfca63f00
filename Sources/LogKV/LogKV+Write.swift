import Foundation

/// The write path: append under the writer lock, publish the change to the
/// pending map, then acknowledge per the fsync policy.
extension LogKV {
    func append(key: [UInt8], value: [UInt8], expiresAt: Int64, tombstone: Bool,
                condition: WriteCondition) throws -> UInt64 {
        let now = options.clock()
        // The value's checksum is the costly part of encoding: compute it
        // before taking the writer lock, so concurrent writers overlap it.
        let valueCRC = value.withUnsafeBytes { CRC32.checksum($0) }
        waitForBacklogRoom()
        writerLock.lock()
        var acknowledgedAt: UInt64 = 0
        let seq: UInt64
        do {
            defer { writerLock.unlock() }
            if writerClosed { throw LogKVError.closed }
            if let writeFailure { throw writeFailure }
            if tombstone || condition != .none {
                let current = try currentVersion(key, now: now)
                switch condition {
                case .none: break
                case .ifAbsent: if current != nil { throw LogKVError.preconditionFailed(currentSeq: current) }
                case .ifPresent: if current == nil { throw LogKVError.preconditionFailed(currentSeq: nil) }
                case let .ifVersion(wanted): if current != wanted { throw LogKVError.preconditionFailed(currentSeq: current) }
                }
                if tombstone && current == nil { throw LogKVError.preconditionFailed(currentSeq: nil) }
            }
            seq = nextSeq
            let head = RecordCodec.encodeHead(seq: seq, writtenAt: now, expiresAt: expiresAt, tombstone: tombstone,
                                              key: key, value: value, valueCRC: valueCRC)
            let recordLength = head.count + value.count
            if active.size + Int64(recordLength) > options.segmentSize
                && active.size > Int64(RecordFormat.segmentHeaderSize) {
                try rotate()
            }
            let offset = active.size
            do {
                try active.append(head, value)
            } catch let error as LogKVError {
                if case .readOnly = error { writeFailure = error }
                throw error
            }
            nextSeq += 1
            let location = RecordLocation(segment: active.id, offset: offset, length: recordLength,
                                          seq: seq, expiresAt: expiresAt)
            let k = KeyBytes(key)
            state.withLock {
                pending[k] = tombstone ? .delete(seq: seq) : .put(location)
                logEnd = LogPosition(segment: active.id, offset: active.size)
                lastSeq = seq
                cache.remove(k)
            }
            acknowledgedAt = syncState.withLock {
                appendedBytes += UInt64(recordLength)
                return appendedBytes
            }
            metrics.writtenBytes.increment(by: recordLength)
        }
        if options.fsync == .always {
            try waitForSync(upTo: acknowledgedAt)
        }
        return seq
    }

    /// The seq of the key's live version, or nil. Called under the writer
    /// lock, so no other write can change it meanwhile.
    private func currentVersion(_ key: [UInt8], now: Int64) throws -> UInt64? {
        guard let location = try locate(key), !location.isExpired(now: now) else { return nil }
        return location.seq
    }

    /// Holds writers back while the index backlog is full.
    private func waitForBacklogRoom() {
        state.lock()
        defer { state.unlock() }
        while pending.count + flushing.count >= options.maxPendingEntries && flusherRunning && flusherError == nil {
            state.broadcast()
            state.wait()
        }
    }

    /// Seals the active segment (durably) and starts the next one.
    /// Called under the writer lock.
    func rotate() throws {
        try active.sync()
        let sealed = active
        let id = nextSegmentID
        let next = try SegmentFile.create(id: id, path: dir.segmentPath(id), storeID: storeID)
        nextSegmentID += 1
        DataDirectory.syncDirectory(dir.segmentsPath)
        state.withLock {
            segments[next.id] = next
            sealedSizes[sealed.id] = sealed.size
        }
        syncState.withLock { syncFile = next }
        active = next
        logger.debug("rotated segment", metadata: ["sealed": "\(sealed.id)", "size": "\(sealed.size)"])
    }

    /// Group commit: returns once an fsync covering `target` appended bytes has
    /// completed. One caller runs the fsync; the others wait for it.
    func waitForSync(upTo target: UInt64) throws {
        syncState.lock()
        defer { syncState.unlock() }
        while syncedBytes < target {
            if let writeFailure { throw writeFailure }
            if syncInProgress {
                syncState.wait()
                continue
            }
            try runSync()
        }
    }

    /// Runs one fsync of the active segment. Called with `syncState` locked;
    /// unlocks it around the fsync itself.
    private func runSync() throws {
        syncInProgress = true
        let goal = appendedBytes
        let file = syncFile
        syncState.unlock()
        let started = DispatchTime.now()
        var failure: Error?
        do { try file.sync() } catch { failure = error }
        metrics.fsyncDuration.recordNanoseconds(Int64(DispatchTime.now().uptimeNanoseconds - started.uptimeNanoseconds))
        syncState.lock()
        syncInProgress = false
        syncState.broadcast()
        if let failure {
            // After a failed fsync the page cache may have dropped the data:
            // the only honest answer is to stop taking writes.
            let error = LogKVError.readOnly(reason: "fsync failed: \(failure)")
            writeFailure = error
            logger.critical("fsync failed; store is now read-only", metadata: ["error": "\(failure)"])
            throw error
        }
        syncedBytes = max(syncedBytes, goal)
    }

    // MARK: Background fsync for `.interval`

    func startSyncer() {
        guard options.fsync == .interval else { return }
        syncState.withLock { syncerRunning = true }
        let thread = Thread { [weak self] in self?.syncerLoop() }
        thread.name = "logkv-syncer"
        thread.start()
    }

    private func syncerLoop() {
        let interval = TimeInterval(options.fsyncIntervalMillis) / 1000
        syncState.lock()
        while syncerRunning {
            _ = syncState.wait(until: Date(timeIntervalSinceNow: interval))
            guard syncerRunning else { break }
            if syncedBytes < appendedBytes && !syncInProgress {
                try? runSync()
            }
        }
        syncerExited = true
        syncState.broadcast()
        syncState.unlock()
    }

    func stopSyncer() {
        guard options.fsync == .interval else { return }
        syncState.lock()
        syncerRunning = false
        syncState.broadcast()
        while !syncerExited { syncState.wait() }
        syncState.unlock()
    }
}
