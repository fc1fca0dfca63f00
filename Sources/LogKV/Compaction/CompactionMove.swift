/// A record compaction copied (or drops): where it was, where it went.
/// For a drop, `new` is the row as compaction saw it (its seqs decide).
struct CompactionMove {
    var key: [UInt8]
    var oldSegment: UInt64
    var oldOffset: Int64
    var new: RecordLocation
    /// A TTL refresh record (the row's `ttl_*` columns move), not a value.
    var isRefresh = false
}
