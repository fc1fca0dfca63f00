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
        keyDir.adoptRecoveredTail([k: put(5, at: 1_000), other: put(6, at: 1_040)], startingAt: tailStart)
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
}
