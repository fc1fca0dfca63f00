import Foundation
import LogKVTestSupport
import Testing
@testable import LogKV

@Suite struct RoundTripTests {
    @Test func putThenGetReturnsTheValue() throws {
        let dir = TempDir()
        let store = try LogKV(path: dir.path, options: .testing())
        defer { try? store.close() }
        let seq = try store.put("a", "1")
        let got = try #require(try store.get("a"))
        #expect(got.value == bytes("1"))
        #expect(got.seq == seq)
        #expect(got.expiresAt == nil)
    }

    @Test func binaryKeysAndValuesRoundTrip() throws {
        let dir = TempDir()
        let store = try LogKV(path: dir.path, options: .testing())
        defer { try? store.close() }
        let key: [UInt8] = [0, 0xFF, 0x10, 0, 0x80]
        let value = (0..<4096).map { UInt8(truncatingIfNeeded: $0 &* 31) }
        try store.put(key, value)
        #expect(try store.get(key)?.value == value)
        try store.flushIndex()
        try store.close()
        let reopened = try LogKV(path: dir.path, options: .testing())
        defer { try? reopened.close() }
        #expect(try reopened.get(key)?.value == value)
    }

    @Test func emptyValueIsAValueNotADelete() throws {
        let dir = TempDir()
        let store = try LogKV(path: dir.path, options: .testing())
        defer { try? store.close() }
        try store.put(bytes("e"), [])
        let got = try #require(try store.get("e"))
        #expect(got.value.isEmpty)
        #expect(try store.scan().map(\.key) == [bytes("e")])
    }

    @Test func largeValueRoundTripsAcrossReopen() throws {
        let dir = TempDir()
        var options = LogKVOptions.testing()
        options.segmentSize = 4 << 20
        let big = (0..<(3 << 20)).map { UInt8(truncatingIfNeeded: $0 ^ ($0 >> 8)) }
        do {
            let store = try LogKV(path: dir.path, options: options)
            try store.put(bytes("big"), big)
            try store.put(bytes("big2"), big)  // rotates
            try store.close()
        }
        let store = try LogKV(path: dir.path, options: options)
        defer { try? store.close() }
        #expect(try store.get("big")?.value == big)
        #expect(try store.get("big2")?.value == big)
        #expect(dir.segmentFiles().count == 2)
    }

    @Test func overwriteReturnsTheNewestValueAndCountsTheOldAsDead() throws {
        let dir = TempDir()
        let store = try LogKV(path: dir.path, options: .testing())
        defer { try? store.close() }
        let first = try store.put("k", "one")
        try store.flushIndex()
        let second = try store.put("k", "two")
        #expect(second > first)
        #expect(try store.get("k")?.value == bytes("two"))
        try store.flushIndex()
        let stats = try store.stats()
        #expect(stats.keys == 1)
        #expect(stats.deadBytes > 0)
    }

    @Test func deleteRemovesTheKeyAndReportsWhetherItExisted() throws {
        let dir = TempDir()
        let store = try LogKV(path: dir.path, options: .testing())
        defer { try? store.close() }
        try store.put("k", "v")
        #expect(try store.delete("k"))
        #expect(try store.get("k") == nil)
        #expect(try store.delete("k") == false)
        try store.flushIndex()
        #expect(try store.get("k") == nil)
        #expect(try store.stats().keys == 0)
    }

    @Test func oversizeKeysAndValuesAreRefusedWithClearErrors() throws {
        let dir = TempDir()
        var options = LogKVOptions.testing()
        options.maxKeySize = 8
        options.maxValueSize = 16
        let store = try LogKV(path: dir.path, options: options)
        defer { try? store.close() }
        #expect(throws: LogKVError.keyTooLarge(size: 9, limit: 8)) { try store.put(Array(repeating: 1, count: 9), [1]) }
        #expect(throws: LogKVError.valueTooLarge(size: 17, limit: 16)) { try store.put([1], Array(repeating: 1, count: 17)) }
        #expect(throws: LogKVError.invalidKey("key is empty")) { try store.put([], [1]) }
        #expect(try store.stats().lastSeq == 0)
    }

    @Test func conditionalWritesCompareAndSwap() throws {
        let dir = TempDir()
        let store = try LogKV(path: dir.path, options: .testing())
        defer { try? store.close() }
        let v1 = try store.put(bytes("k"), bytes("1"), condition: .ifAbsent)
        #expect(throws: LogKVError.preconditionFailed(currentSeq: v1)) {
            try store.put(bytes("k"), bytes("x"), condition: .ifAbsent)
        }
        let v2 = try store.put(bytes("k"), bytes("2"), condition: .ifVersion(v1))
        #expect(throws: LogKVError.preconditionFailed(currentSeq: v2)) {
            try store.put(bytes("k"), bytes("3"), condition: .ifVersion(v1))
        }
        #expect(try store.get("k")?.value == bytes("2"))
    }

    @Test func ttlExpiresOnReadAndIsCounted() throws {
        let dir = TempDir()
        let clock = ManualClock()
        let store = try LogKV(path: dir.path, options: .testing(clock: clock))
        defer { try? store.close() }
        try store.put(bytes("t"), bytes("v"), expiresAt: clock.now + 1000)
        try store.put("forever", "v")
        #expect(try store.get("t")?.expiresAt == clock.now + 1000)
        try store.flushIndex()
        clock.advance(999)
        #expect(try store.get("t") != nil)
        clock.advance(1)
        #expect(try store.get("t") == nil)
        #expect(try store.scan().map(\.key) == [bytes("forever")])
        try store.flushIndex()
        #expect(try store.stats().keys == 1)
        // An expired key can be created again, also with create-only.
        try store.put(bytes("t"), bytes("again"), condition: .ifAbsent)
        #expect(try store.get("t")?.value == bytes("again"))
    }

    @Test func expiredKeyStaysGoneAfterReopenAndRebuild() throws {
        let dir = TempDir()
        let clock = ManualClock()
        do {
            let store = try LogKV(path: dir.path, options: .testing(clock: clock))
            try store.put(bytes("t"), bytes("old"))
            try store.put(bytes("t"), bytes("v"), expiresAt: clock.now + 10)
            try store.close()
        }
        clock.advance(20)
        try FileManager.default.removeItem(atPath: dir.indexPath)
        let store = try LogKV(path: dir.path, options: .testing(clock: clock))
        defer { try? store.close() }
        #expect(try store.get("t") == nil)
    }

    @Test func prefixScansPageInKeyOrder() throws {
        let dir = TempDir()
        let store = try LogKV(path: dir.path, options: .testing())
        defer { try? store.close() }
        for i in 0..<50 { try store.put("user/\(String(format: "%03d", i))", "v\(i)") }
        try store.put("other", "x")
        try store.flushIndex()
        // Some changes still pending when listing: they must show up too.
        try store.put("user/100", "new")
        try store.delete("user/000")
        var seen: [String] = []
        var after: [UInt8] = []
        while true {
            let page = try store.scan(prefix: bytes("user/"), after: after, limit: 7)
            if page.isEmpty { break }
            seen += page.map { String(decoding: $0.key, as: UTF8.self) }
            after = page.last!.key
        }
        let expected = (1..<50).map { "user/\(String(format: "%03d", $0))" } + ["user/100"]
        #expect(seen == expected)
    }

    @Test func prefixUpperBoundHandlesFF() {
        #expect(IndexReader.prefixUpperBound([0x61, 0xFF]) == [0x62])
        #expect(IndexReader.prefixUpperBound([0xFF, 0xFF]) == nil)
        #expect(IndexReader.prefixUpperBound([]) == nil)
    }

    @Test func concurrentWritersAndReadersSeeTheirOwnWrites() async throws {
        let dir = TempDir()
        var options = LogKVOptions.testing(fsync: .always)
        options.cacheBudgetBytes = 4096
        options.maxPendingEntries = 500
        let store = try LogKV(path: dir.path, options: options)
        defer { try? store.close() }
        try await withThrowingTaskGroup(of: Void.self) { group in
            for worker in 0..<4 {
                group.addTask {
                    for i in 0..<300 {
                        let key = bytes("w\(worker)-\(i % 40)")
                        let value = bytes("\(worker)-\(i)")
                        try store.put(key, value)
                        let got = try store.get(key)
                        #expect(got?.value == value)
                    }
                }
            }
            try await group.waitForAll()
        }
    }

    @Test func aFullIndexBacklogIsAnnouncedSoEventLoopsCanHandWritesOff() throws {
        // While the flusher cannot commit, writers fill the backlog and wait;
        // `writeWouldWait` tells callers that must not block (the server's
        // event loops) before they call in, and clears once the flush lands.
        let dir = TempDir()
        var options = LogKVOptions.testing()
        options.maxPendingEntries = 40
        options.flushIntervalMillis = 1
        let store = try LogKV(path: dir.path, options: options)
        defer { try? store.close() }
        #expect(!store.writeWouldWait)
        let releaseIndexWriter = store.holdIndexWriter()  // the flusher's next commit waits here
        let written = DispatchSemaphore(value: 0)
        let writer = Thread {
            for i in 0..<200 { try? store.put(bytes("k\(i)"), bytes("v")) }
            written.signal()
        }
        writer.start()
        #expect(eventually(pollingEvery: 2_000) { store.writeWouldWait })
        releaseIndexWriter()
        written.wait()
        try store.flushIndex()
        #expect(eventually(pollingEvery: 2_000) { !store.writeWouldWait })
        #expect(try store.get(bytes("k199"))?.value == bytes("v"))
    }
}
