import Foundation
import LogKVTestSupport
import Testing
@testable import LogKV

/// A lease renewal acknowledged before its value's own expiry keeps the
/// value past that expiry, whatever runs beside it: readers on the event
/// loop's path (`getWithoutWaiting`) and the blocking path caching rows,
/// the sweeper, index flushes and compactions. The clock is manual, so a
/// round's value expires exactly when the test says.
@Suite struct RenewalRacesExpiryTests {
    static let rounds = Int(ProcessInfo.processInfo.environment["LOGKV_RENEWAL_ROUNDS"] ?? "") ?? 400
    static let keysPerRound = 8

    @Test(arguments: [FsyncPolicy.never, .always])
    func anAcknowledgedRenewalOutlivesTheValuesOwnExpiryWhateverRunsBesideIt(policy: FsyncPolicy) throws {
        let clock = ManualClock()
        var options = LogKVOptions.testing(clock: clock, fsync: policy)
        options.segmentSize = 32 * 1024
        options.flushIntervalMillis = 1
        options.fsyncIntervalMillis = 1
        options.cacheBudgetBytes = 4 * 1024  // rows come and go from the cache
        options.autoCompaction = false
        options.compactionBytesPerSecond = 0
        options.expirySweepPerSecond = 1_000_000
        options.logger.logLevel = .critical
        let dir = TempDir("renewal-race")
        let store = try LogKV(path: dir.path, options: options)
        defer { try? store.close() }

        let current = LockedBox<[[UInt8]]>([])
        let stop = LockedBox(false)
        let group = DispatchGroup()
        for reader in 0..<2 {
            group.enter()
            Thread.detachNewThread {
                defer { group.leave() }
                var rng = SplitMix(seed: UInt64(reader + 1))
                while !stop.get() {
                    let keys = current.get()
                    guard let key = keys.randomElement(using: &rng) else { continue }
                    if Bool.random(using: &rng) {
                        _ = try? store.get(key)
                    } else {
                        _ = try? store.getWithoutWaiting(key)
                    }
                }
            }
        }
        group.enter()
        Thread.detachNewThread {
            defer { group.leave() }
            var rng = SplitMix(seed: 99)
            while !stop.get() {
                switch Int.random(in: 0..<4, using: &rng) {
                case 0: _ = try? store.compact(everything: Bool.random(using: &rng))
                case 1: _ = try? store.sweepExpired(limit: 100)
                default: try? store.flushIndex()
                }
            }
        }
        defer {
            stop.set(true)
            group.wait()
        }

        var lost: [String] = []
        for round in 0..<Self.rounds {
            let keys = (0..<Self.keysPerRound).map { Array("r\(round)-\($0)".utf8) }
            current.set(keys)
            for key in keys { try store.put(key, Array("held".utf8), expiresAt: clock.now + 10) }
            for key in keys {
                let renewed = try store.refreshTTL(key, expiresAt: clock.now + 3_600_000)
                #expect(renewed != nil, "round \(round): renewal refused before the value expired")
            }
            clock.advance(20)  // past the value's own expiry
            for key in keys {
                if try store.get(key) == nil { lost.append(String(decoding: key, as: UTF8.self)) }
            }
        }
        #expect(lost.isEmpty, "\(policy): \(lost.count) renewed keys read as missing: \(lost.prefix(10))")
        try store.flushIndex()
        for round in 0..<Self.rounds {
            for n in 0..<Self.keysPerRound where try store.get(Array("r\(round)-\(n)".utf8)) == nil {
                lost.append("r\(round)-\(n) (after flush)")
            }
        }
        #expect(lost.isEmpty, "\(policy): \(lost.prefix(10))")
    }
}
