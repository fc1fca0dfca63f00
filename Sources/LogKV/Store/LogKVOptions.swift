import Logging
import Metrics

/// When an acknowledged write is known to be on disk.
public enum FsyncPolicy: String, Sendable, CaseIterable {
    /// Acknowledge after an fsync covering the record; concurrent writers
    /// share one fsync (group commit).
    case always
    /// fsync in the background every `fsyncInterval` (like Redis `everysec`).
    case interval
    /// Leave it to the operating system.
    case never
}

/// Settings of a store. Every field has a production default.
public struct LogKVOptions: Sendable {
    /// Largest accepted key, bytes. 16 KiB: a key must fit, percent- or
    /// base64-encoded, in a request line or cursor under HTTP servers'
    /// header limits (NIO's is 80 KiB).
    public var maxKeySize: Int = 16 * 1024
    /// Largest accepted value, bytes.
    public var maxValueSize: Int = 64 * 1024 * 1024
    /// The active segment is sealed and a new one started past this size.
    public var segmentSize: Int64 = 256 * 1024 * 1024
    public var fsync: FsyncPolicy = .interval
    /// Period of the background fsync under `.interval`, milliseconds.
    public var fsyncIntervalMillis: Int = 1000
    /// Memory budget of the in-memory KeyDir cache in front of SQLite, bytes.
    /// 0 disables it.
    public var cacheBudgetBytes: Int = 64 * 1024 * 1024
    /// How many unflushed index entries may wait before writers are held back.
    public var maxPendingEntries: Int = 200_000
    /// Bytes kept free in the data directory (`RESERVE`) for deletes and
    /// compaction once the disk is full; 0 keeps none.
    public var diskReserveBytes: Int = 8 * 1024 * 1024
    /// Memory the unflushed index entries may take (keys plus bookkeeping)
    /// before writers are held back.
    public var maxPendingBytes: Int = 64 * 1024 * 1024
    /// Consecutive failed index flushes after which writes are refused
    /// (`.readOnly` naming the SQLite error) until a flush succeeds again.
    public var flushFailuresBeforeRefusingWrites = 5
    /// Where every file operation goes; tests substitute a simulated disk.
    public var fileSystem: any FileSystem = PosixFileSystem()
    /// How long the flusher waits to gather a batch, milliseconds.
    public var flushIntervalMillis: Int = 5
    /// Segment files kept open at most (sealed ones beyond it are closed and
    /// reopened on demand), so a large store does not exhaust descriptors.
    public var maxOpenSegments: Int = 256
    /// Number of SQLite read connections.
    public var readConnections: Int = 4
    /// Background compaction: checked every `compactionCheckSeconds`; runs
    /// when a sealed segment has at least `compactionTriggerRatio` garbage or
    /// `compactionTriggerDeadBytes` dead bytes, and then takes every sealed
    /// segment over `compactionThresholdRatio` or `compactionThresholdDeadBytes`
    /// (Bitcask's frag/dead-bytes merge triggers and thresholds).
    public var autoCompaction = true
    public var compactionCheckSeconds = 60
    public var compactionTriggerRatio = 0.6
    public var compactionTriggerDeadBytes: Int64 = 512 * 1024 * 1024
    public var compactionThresholdRatio = 0.4
    public var compactionThresholdDeadBytes: Int64 = 128 * 1024 * 1024
    /// Compaction I/O budget (read + written), bytes per second; 0 = unlimited.
    public var compactionBytesPerSecond: Int64 = 64 * 1024 * 1024
    /// Background sweep of expired keys nobody reads: at most this many per
    /// second (0 disables it).
    public var expirySweepPerSecond = 1000
    /// Testing hook: called at each step of a compaction ("outputs-written",
    /// "outputs-synced", "index-committed", "old-segment-deleted", "finished");
    /// throwing aborts the compaction there, as a crash would.
    public var compactionFailpoint: (@Sendable (String) throws -> Void)? = nil
    /// Rebuild the index from the segments on open, whatever its state.
    public var forceIndexRebuild = false
    /// Called while opening replays segments: (segments done, segments to
    /// replay, records so far). For progress bars.
    public var recoveryProgress: (@Sendable (Int, Int, Int) -> Void)? = nil
    /// Called as compaction finishes each input segment: (done, total).
    public var compactionProgress: (@Sendable (Int, Int) -> Void)? = nil
    /// Where the engine's metrics go; nil means the global `MetricsSystem`.
    public var metricsFactory: (any MetricsFactory)? = nil
    /// Recovery progress, truncations and background errors are logged here.
    public var logger = Logger(label: "logkv")
    /// Milliseconds since the Unix epoch; injectable for tests.
    public var clock: @Sendable () -> Int64 = { LogKVOptions.systemMillis() }

    public init() {}

    public static func systemMillis() -> Int64 {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        return Int64(ts.tv_sec) * 1000 + Int64(ts.tv_nsec) / 1_000_000
    }
}

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
