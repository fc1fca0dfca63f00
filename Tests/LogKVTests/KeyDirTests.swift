import Foundation
import Testing
@testable import LogKV

/// The KeyDir's checkpoint rules, on the type itself: the checkpoint a batch
/// carries never passes a record the index has not taken.
@Suite struct KeyDirTests {
    func put(_ seq: UInt64, at offset: Int64) -> KeyDirChange {
        .put(RecordLocation(segment: 1, offset: offset, length: 40, seq: seq, expiresAt: 0))
    }

    @Test func aRecoveredKeyReplacedByAnUnsyncedWriteHoldsTheCheckpointAtTheTailStart() {
        var keyDir = KeyDir(cacheBudgetBytes: 0, tracksUnindexed: true)
        let tailStart = LogPosition(segment: 1, offset: 1_000)
        let k = KeyBytes(Array("k".utf8)), other = KeyBytes(Array("other".utf8))
        keyDir.adoptRecoveredTail(Recovery.RecoveredTail(changes: [k: put(5, at: 1_000), other: put(6, at: 1_040)], start: tailStart))
        #expect(keyDir.count == 2)
        // A new write replaces k's recovered change before any flush and
        // is not durable yet (fsync=interval).
        keyDir.publish(k, put(10, at: 1_080), recordAt: LogPosition(segment: 1, offset: 1_080))
        let end = LogPosition(segment: 1, offset: 1_080)
        let first = keyDir.takeDurableBatch(durableSeq: 6, lastSeq: 10, durableEnd: end, logEnd: LogPosition(segment: 1, offset: 1_120))
        #expect(first?.changes.keys.sorted() == [other])
        #expect(first?.checkpoint == tailStart, "k's recovered record (seq 5) is in no batch: a replay must still find it")
        keyDir.batchCommitted(first!)
        // Once k's newer write is durable, it goes and the checkpoint moves on.
        let synced = LogPosition(segment: 1, offset: 1_120)
        let second = keyDir.takeDurableBatch(durableSeq: 10, lastSeq: 10, durableEnd: synced, logEnd: synced)
        #expect(second?.changes.keys.sorted() == [k])
        #expect(second?.checkpoint == synced)
        keyDir.batchCommitted(second!)
        #expect(keyDir.isEmpty)
        // The floor is gone: a later held-back key is bounded by its own record only.
        keyDir.publish(other, put(11, at: 1_120), recordAt: LogPosition(segment: 1, offset: 1_120))
        keyDir.publish(k, put(12, at: 1_160), recordAt: LogPosition(segment: 1, offset: 1_160))
        let third = keyDir.takeDurableBatch(durableSeq: 11, lastSeq: 12, durableEnd: LogPosition(segment: 1, offset: 1_160),
                                            logEnd: LogPosition(segment: 1, offset: 1_200))
        #expect(third?.changes.keys.sorted() == [other])
        #expect(third?.checkpoint == LogPosition(segment: 1, offset: 1_160))
    }

    @Test func keysWrittenAfterARestartDoNotPinTheCheckpointToTheRecoveredTail() {
        // Only a recovered change hidden before the index took it holds the
        // checkpoint at the tail's start; any other unsynced write holds it
        // at its own record only (steady traffic after a crash must not
        // freeze the checkpoint, or compaction and replay would grow).
        var keyDir = KeyDir(cacheBudgetBytes: 0, tracksUnindexed: true)
        let tailStart = LogPosition(segment: 1, offset: 1_000)
        let a = KeyBytes(Array("a".utf8)), b = KeyBytes(Array("b".utf8))
        keyDir.adoptRecoveredTail(Recovery.RecoveredTail(changes: [a: put(5, at: 1_000)], start: tailStart))
        keyDir.publish(b, put(10, at: 1_040), recordAt: LogPosition(segment: 1, offset: 1_040))
        let batch = keyDir.takeDurableBatch(durableSeq: 5, lastSeq: 10, durableEnd: LogPosition(segment: 1, offset: 1_040),
                                            logEnd: LogPosition(segment: 1, offset: 1_080))
        #expect(batch?.changes.keys.sorted() == [a])
        #expect(batch?.checkpoint == LogPosition(segment: 1, offset: 1_040))
    }

    @Test func aRecoveredChangeHiddenWhileItsBatchFailedHoldsTheCheckpointAtTheTailStart() {
        var keyDir = KeyDir(cacheBudgetBytes: 0, tracksUnindexed: true)
        let tailStart = LogPosition(segment: 1, offset: 1_000)
        let k = KeyBytes(Array("k".utf8)), o = KeyBytes(Array("o".utf8))
        keyDir.adoptRecoveredTail(Recovery.RecoveredTail(changes: [o: put(4, at: 1_000), k: put(5, at: 1_040)], start: tailStart))
        let end = LogPosition(segment: 1, offset: 1_080)
        let failing = keyDir.takeDurableBatch(durableSeq: 5, lastSeq: 5, durableEnd: end, logEnd: end)
        #expect(failing?.changes.keys.sorted() == [k, o])
        // While that batch is being committed, an unsynced write hides k's
        // recovered change; then the commit fails.
        keyDir.publish(k, put(10, at: 1_080), recordAt: end)
        keyDir.batchFailed()
        let retry = keyDir.takeDurableBatch(durableSeq: 5, lastSeq: 10, durableEnd: end, logEnd: LogPosition(segment: 1, offset: 1_120))
        #expect(retry?.changes.keys.sorted() == [o])
        #expect(retry?.checkpoint == tailStart, "k's recovered record is in no batch: a replay must still find it")
    }
}
