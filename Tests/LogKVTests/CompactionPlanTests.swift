import Testing
@testable import LogKV

/// `CompactionPlan.fate`, case by case: what compaction copies, drops, and
/// drops together with the key's row. (The supersession differential holds
/// it to the other places that decide liveness over random histories.)
@Suite struct CompactionPlanTests {
    static let now: Int64 = 1_000_000

    static func header(seq: UInt64, expiresAt: Int64 = 0, flags: UInt8 = 0) -> RecordHeader {
        RecordHeader(crc: 0, seq: seq, writtenAt: 0, expiresAt: expiresAt, flags: flags, keyLength: 1, valueLength: 1)
    }

    static func row(seq: UInt64, segment: UInt64 = 3, offset: Int64 = 100, expiresAt: Int64 = 0,
                    ttl: RefreshRecord = RefreshRecord()) -> RecordLocation {
        RecordLocation(segment: segment, offset: offset, length: 40, seq: seq, expiresAt: expiresAt, ttl: ttl)
    }

    func fate(_ header: RecordHeader, at offset: Int64 = 100, row: RecordLocation?, minStayingSeq: UInt64 = .max) -> CompactionPlan.Fate {
        CompactionPlan.fate(of: header, segment: 3, offset: offset, row: row, minStayingSeq: minStayingSeq, now: Self.now)
    }

    @Test func theValueItsRowPointsAtIsCopiedAndTheRowMoves() {
        #expect(fate(Self.header(seq: 5), row: Self.row(seq: 5)) == .copyOwned)
    }

    @Test func anExpiredValueHidingNothingThatStaysIsDroppedWithItsRow() {
        let expired = Self.row(seq: 5, expiresAt: Self.now - 1)
        #expect(fate(Self.header(seq: 5, expiresAt: Self.now - 1), row: expired) == .dropWithRow)
        // An older value of the key may stay behind: the expired one stays to hide it.
        #expect(fate(Self.header(seq: 5, expiresAt: Self.now - 1), row: expired, minStayingSeq: 2) == .copyOwned)
    }

    @Test func theRowsExpiryDecidesNotTheRecordsOwn() {
        // Renewed past its own expiry by a TTL refresh (seq 9).
        let renewed = Self.row(seq: 5, expiresAt: Self.now + 60_000, ttl: RefreshRecord(seq: 9, segment: 4, offset: 8, length: 50))
        #expect(fate(Self.header(seq: 5, expiresAt: Self.now - 1), row: renewed) == .copyOwned)
    }

    @Test func aTTLRefreshIsLiveWhileItIsTheRowsRefresh() {
        let ttl = RefreshRecord(seq: 9, segment: 3, offset: 200, length: 50)
        let refresh = Self.header(seq: 9, expiresAt: Self.now + 60_000, flags: RecordFormat.ttlRefreshFlag)
        #expect(fate(refresh, at: 200, row: Self.row(seq: 5, segment: 2, expiresAt: Self.now + 60_000, ttl: ttl)) == .copyOwned)
        // Expired with its value: dropped, the value record takes the row.
        #expect(fate(refresh, at: 200, row: Self.row(seq: 5, segment: 2, expiresAt: Self.now - 1, ttl: ttl)) == .drop)
    }

    @Test func aRecordANewerOneSupersedesIsDropped() {
        #expect(fate(Self.header(seq: 5), row: Self.row(seq: 7, segment: 4)) == .drop)
        #expect(fate(Self.header(seq: 5), row: Self.row(seq: 7, segment: 4), minStayingSeq: 0) == .drop)
    }

    @Test func aTombstoneStaysOnlyWhileAnOlderValueMayStayBehind() {
        let tombstone = Self.header(seq: 8, flags: RecordFormat.tombstoneFlag)
        #expect(fate(tombstone, row: nil) == .drop)
        #expect(fate(tombstone, row: nil, minStayingSeq: 8) == .copyHiding)
        #expect(fate(tombstone, row: nil, minStayingSeq: 9) == .drop)
    }

    @Test func anUnindexedLiveValueIsDeadAndAnUnindexedExpiredOneHides() {
        // No row and not expired: a delete or an expiry newer than it hid it.
        #expect(fate(Self.header(seq: 5), row: nil, minStayingSeq: 0) == .drop)
        #expect(fate(Self.header(seq: 5, expiresAt: Self.now), row: nil, minStayingSeq: 0) == .copyHiding)
    }
}
