import Testing
@testable import LogKV

/// The index's progress (`IndexProgress`) and the durability watermarks
/// (`SyncLedger`) as specifications of their own, apart from the threads
/// that drive them.
@Suite struct IndexProgressTests {
    func progress() -> IndexProgress {
        IndexProgress(checkpoint: LogPosition(segment: 1, offset: 64), sealedSizes: [:], recoveredBacklog: 0)
    }

    @Test func sealedSizesGoWithTheNextCommitAndComeBackIfItFails() {
        var p = progress()
        p.sealed(1, size: 1000)
        let sizes = p.takeSizes(durableEnd: LogPosition(segment: 2, offset: 80))
        #expect(sizes == [1: 1000, 2: 80])
        #expect(p.takeSizes(durableEnd: LogPosition(segment: 2, offset: 90)) == [2: 90])  // taken once
        p.sealed(2, size: 500)  // noted while the failed commit ran
        p.restoreSizes(sizes)
        #expect(p.takeSizes(durableEnd: LogPosition(segment: 3, offset: 64)) == [1: 1000, 2: 500, 3: 64])
    }

    @Test func writesAreRefusedOnlyAfterEnoughFailedFlushesInARowAndAgainAcceptedAfterOneSucceeds() {
        var p = progress()
        let n = p.beginFlush()
        p.flushFailed(.index(code: 10, message: "disk I/O error"))
        #expect(p.refusal(after: 2) == nil)
        p.flushFailed(.index(code: 10, message: "disk I/O error"))
        #expect(p.refusal(after: 2) != nil)
        p.flushCommitted(n, checkpoint: LogPosition(segment: 1, offset: 128))
        #expect(p.refusal(after: 2) == nil)
        #expect(p.failures == 0 && p.lastError == nil)
        #expect(p.checkpoint == LogPosition(segment: 1, offset: 128))
        #expect(p.lastCompletedStart == n)
    }

    @Test func theFlusherLooksForDurableChangesOnlyWhenSomethingBecameDurable() {
        var p = progress()
        let first = p.takeLook(durableSeq: 5, lastSeq: 9)
        let again = p.takeLook(durableSeq: 5, lastSeq: 9)
        let afterAnFsync = p.takeLook(durableSeq: 7, lastSeq: 9)
        p.noteDurableChange()  // an expiry of a durable record
        let afterAnExpiry = p.takeLook(durableSeq: 7, lastSeq: 9)
        let allDurable = p.takeLook(durableSeq: 7, lastSeq: 7)
        #expect(first)
        #expect(!again)  // nothing new
        #expect(afterAnFsync)
        #expect(afterAnExpiry)
        #expect(allDurable)  // everything durable: always look
    }

    @Test func aRecoveredBacklogCountsUntilTheFirstFlushCommits() {
        var p = IndexProgress(checkpoint: LogPosition(segment: 1, offset: 64), sealedSizes: [:], recoveredBacklog: 40)
        #expect(p.recoveredBacklog == 40)
        p.flushCommitted(p.beginFlush(), checkpoint: LogPosition(segment: 1, offset: 999))
        #expect(p.recoveredBacklog == 0)
    }
}
