import Foundation
import LogKVTestSupport
import Testing
@testable import LogKV

@Suite struct StatsTests {
    /// `stats` and `scan` read the unflushed changes, then the index. The
    /// index reads are one snapshot: a flush committing between a key count
    /// and a lookup would otherwise count a deleted key that was both still
    /// counted and already gone from the index.
    @Test func statsAndListingsCountEveryAcknowledgedWriteWhileTheFlusherCommits() throws {
        let dir = TempDir()
        var options = LogKVOptions.testing()
        options.flushIntervalMillis = 1
        let store = try LogKV(path: dir.path, options: options)
        defer { try? store.close() }
        for i in 0..<20 { try store.put(bytes("base\(i)"), bytes("v")) }
        var wrong: [String] = []
        for round in 0..<3_000 where wrong.count < 5 {
            let key = bytes("k\(round % 7)")
            try store.put(key, bytes("12"))
            let afterPut = try store.stats()
            if afterPut.keys != 21 || afterPut.valueBytes != 22 { wrong.append("round \(round) after put: \(afterPut.keys) keys, \(afterPut.valueBytes) bytes") }
            if try store.scan().count != 21 { wrong.append("round \(round): listing after put") }
            try store.delete(key)
            let afterDelete = try store.stats()
            if afterDelete.keys != 20 || afterDelete.valueBytes != 20 { wrong.append("round \(round) after delete: \(afterDelete.keys) keys, \(afterDelete.valueBytes) bytes") }
            if try store.scan().count != 20 { wrong.append("round \(round): listing after delete") }
        }
        #expect(wrong.isEmpty, "\(wrong)")
    }
}
