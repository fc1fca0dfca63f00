/// A snapshot of the store's size and health.
public struct LogKVStats: Equatable, Sendable {
    /// Keys in the index (expired keys not yet swept included); the pending
    /// backlog may add to or take from it.
    public var keys: Int64
    /// Bytes of the live keys' values (what logkv-store calls `total_size`).
    public var valueBytes: Int64
    public var liveBytes: Int64
    public var deadBytes: Int64
    public var totalBytes: Int64
    public var segments: Int
    /// Index changes not yet in SQLite.
    public var pendingIndexEntries: Int
    public var lastSeq: UInt64
}
