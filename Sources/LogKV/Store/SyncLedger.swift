/// How far the log is appended and how far an fsync has covered it: the
/// durability watermarks group commit works from.
///
/// Invariants kept here:
/// - `syncedBytes <= appended.bytes`; both only grow.
/// - At most one fsync is in flight (`beginSync` … `endSync`): after a
///   failed one, another's success would vouch for nothing (rule 6), and a
///   commit record may be appended only once the fsync before it succeeded.
/// - An fsync covers what was appended when its goal was read (`appended`
///   and `file`, read once its commit record is appended), in the segment
///   active then; a rotation syncs the old segment itself before the next
///   one becomes `file`.
///
/// A value type; its owner (`LogKV`) guards it with `syncState`.
struct SyncLedger {
    /// A point in the log: the bytes appended up to it, the last record's
    /// seq and the position just past it.
    struct Mark {
        var bytes: UInt64
        var seq: UInt64
        var end: LogPosition
    }

    private(set) var appended: Mark
    /// Bytes an fsync (or a rotation's) has covered.
    private(set) var syncedBytes: UInt64 = 0
    private(set) var syncInProgress = false
    /// The segment the next fsync syncs: the active one.
    private(set) var file: SegmentFile

    init(seq: UInt64, end: LogPosition, file: SegmentFile) {
        appended = Mark(bytes: 0, seq: seq, end: end)
        self.file = file
    }

    /// Counts a record just appended (`seq` nil: a commit record, which
    /// takes no seq). Returns the bytes a writer waits to see synced.
    @discardableResult
    mutating func noteAppended(_ count: Int, seq: UInt64?, end: LogPosition) -> UInt64 {
        appended.bytes += UInt64(count)
        if let seq { appended.seq = seq }
        appended.end = end
        return appended.bytes
    }

    /// Whether an fsync has covered the first `bytes` appended.
    func covers(_ bytes: UInt64) -> Bool { syncedBytes >= bytes }

    var hasUnsynced: Bool { syncedBytes < appended.bytes }

    /// Starts the one fsync in flight.
    mutating func beginSync() {
        precondition(!syncInProgress, "one fsync at a time")
        syncInProgress = true
    }

    mutating func endSync() { syncInProgress = false }

    /// An fsync covered everything up to `bytes`.
    mutating func noteSynced(upTo bytes: UInt64) {
        syncedBytes = max(syncedBytes, bytes)
    }

    /// A rotation synced the old segment (`noteSynced` first) and made
    /// `next` active; its first record goes after `start`.
    mutating func rotated(to next: SegmentFile, start: LogPosition) {
        appended.end = start
        file = next
    }
}
