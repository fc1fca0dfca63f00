/// What a compaction did.
public struct CompactionReport: Equatable, Sendable {
    public var segmentsCompacted = 0
    public var segmentsWritten = 0
    public var bytesRead: Int64 = 0
    public var bytesWritten: Int64 = 0
    /// Disk bytes freed: input sizes minus output sizes.
    public var bytesReclaimed: Int64 = 0
    public var keysMoved = 0
    public var expiredDropped = 0
    public var seconds = 0.0

    public init() {}
}
