import Foundation
import LogKVTestSupport
import Testing
@testable import LogKV

/// A long random sequence of operations against the store and against a plain
/// dictionary; after every step both must agree.
@Suite struct DifferentialTests {
    struct ModelValue: Equatable { var value: [UInt8]; var expiresAt: Int64? }

    @Test(arguments: [1, 2, 3, 4])
    func randomOperationsMatchADictionaryModel(seed: UInt64) throws {
        let dir = TempDir("diff")
        let clock = ManualClock()
        var options = LogKVOptions.testing(clock: clock)
        options.segmentSize = 8 * 1024
        options.cacheBudgetBytes = 2048
        options.maxPendingEntries = 64
        var rng = SplitMix(seed: seed)
        var model: [[UInt8]: ModelValue] = [:]
        var store = try LogKV(path: dir.path, options: options)
        let keys: [[UInt8]] = (0..<60).map { i in i % 7 == 0 ? [0, UInt8(i), 0xFF] : bytes("k/\(i)") }

        func live(_ now: Int64) -> [[UInt8]: ModelValue] {
            model.filter { $0.value.expiresAt.map { $0 > now } ?? true }
        }

        for step in 0..<4000 {
            let key = keys[Int(rng.next() % UInt64(keys.count))]
            switch rng.next() % 100 {
            case 0..<45:
                let value = (0..<Int(rng.next() % 200)).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
                let ttl: Int64? = rng.next() % 4 == 0 ? Int64(rng.next() % 5000) + 1 : nil
                try store.put(key, value, expiresAt: ttl.map { clock.now + $0 })
                model[key] = ModelValue(value: value, expiresAt: ttl.map { clock.now + $0 })
            case 45..<60:
                let existed = try store.delete(key)
                #expect(existed == (live(clock.now)[key] != nil), "step \(step)")
                model[key] = nil
            case 60..<85:
                let got = try store.get(key)
                let want = live(clock.now)[key]
                #expect(got?.value == want?.value, "step \(step)")
                #expect(got?.expiresAt == want?.expiresAt, "step \(step)")
            case 85..<92:
                clock.advance(Int64(rng.next() % 2000))
            case 92..<95:
                try store.flushIndex()
            case 95..<97:
                try store.close()
                store = try LogKV(path: dir.path, options: options)
            case 97:
                // Crash-like reopen: drop the index entirely.
                try store.close()
                for f in [dir.indexPath, dir.indexPath + "-wal", dir.indexPath + "-shm"] {
                    try? FileManager.default.removeItem(atPath: f)
                }
                store = try LogKV(path: dir.path, options: options)
            default:
                let listed = try store.scan(prefix: bytes("k/"), limit: 1000).map(\.key)
                let want = live(clock.now).keys.filter { $0.starts(with: bytes("k/")) }
                    .sorted { $0.lexicographicallyPrecedes($1) }
                #expect(listed == want, "step \(step)")
            }
        }
        // Final full comparison.
        let now = clock.now
        for key in keys {
            #expect(try store.get(key)?.value == live(now)[key]?.value)
        }
        let all = try store.scan(limit: 10_000).map(\.key)
        #expect(all == live(now).keys.sorted { $0.lexicographicallyPrecedes($1) })
        try store.close()
    }
}
