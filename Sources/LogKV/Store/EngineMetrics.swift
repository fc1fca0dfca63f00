import Metrics

/// The engine's metrics, created once per store through swift-metrics; the
/// executable picks the backend (Prometheus), tests may inject a factory.
/// Names follow Prometheus conventions: `logkv_` prefix, base units.
struct EngineMetrics: Sendable {
    let readHit: Counter
    let readMiss: Counter
    let readExpired: Counter
    let readCorrupt: Counter
    /// How reads found their key's location: the in-memory KeyDir (pending
    /// or cache), SQLite on the caller's thread with every page in memory,
    /// or SQLite from a thread that may wait on the disk.
    let lookupMemory: Counter
    let lookupIndexNoWait: Counter
    let lookupIndexBlocking: Counter
    let writesPut: Counter
    /// `putWithoutWaiting` refusals, by what it would have waited for.
    let handedOffContended: Counter
    let handedOffRotation: Counter
    let handedOffBacklog: Counter
    let writesDelete: Counter
    /// TTL refreshes (lease renewals), counted with the writes.
    let ttlRefreshes: Counter
    let expiredRead: Counter
    let expiredSweep: Counter
    let expiredCompaction: Counter
    let writtenBytes: Counter
    let fsyncDuration: Timer
    let flushDuration: Timer
    let flushBatchSize: Recorder
    let pendingEntries: Gauge
    let recoveryDuration: Gauge
    let recoveryReplayed: Gauge
    let recoveryTruncatedBytes: Gauge
    let recoveryDamaged: Counter
    let writeRefusals: Counter
    let indexRebuilds: Counter
    let compactionRuns: Counter
    let compactionDuration: Timer
    let compactionReadBytes: Counter
    let compactionWrittenBytes: Counter
    let compactionReclaimedBytes: Counter
    let compactionSegmentsRemoved: Counter

    init(factory: (any MetricsFactory)?) {
        let f = factory ?? MetricsSystem.factory
        func reads(_ result: String) -> Counter {
            Counter(label: "logkv_reads_total", dimensions: [("result", result)], factory: f)
        }
        func expired(_ reason: String) -> Counter {
            Counter(label: "logkv_expirations_total", dimensions: [("reason", reason)], factory: f)
        }
        readHit = reads("hit")
        readMiss = reads("miss")
        readExpired = reads("expired")
        readCorrupt = reads("corrupt")
        func lookups(_ path: String) -> Counter {
            Counter(label: "logkv_keydir_lookups_total", dimensions: [("path", path)], factory: f)
        }
        lookupMemory = lookups("memory")
        lookupIndexNoWait = lookups("index_nowait")
        lookupIndexBlocking = lookups("index_blocking")
        writesPut = Counter(label: "logkv_writes_total", dimensions: [("op", "put")], factory: f)
        func handedOff(_ reason: String) -> Counter {
            Counter(label: "logkv_writes_handed_off_total", dimensions: [("reason", reason)], factory: f)
        }
        handedOffContended = handedOff("writer_busy")
        handedOffRotation = handedOff("rotation")
        handedOffBacklog = handedOff("backlog")
        writesDelete = Counter(label: "logkv_writes_total", dimensions: [("op", "delete")], factory: f)
        ttlRefreshes = Counter(label: "logkv_writes_total", dimensions: [("op", "ttl_refresh")], factory: f)
        expiredRead = expired("read")
        expiredSweep = expired("sweep")
        expiredCompaction = expired("compaction")
        writtenBytes = Counter(label: "logkv_log_written_bytes_total", factory: f)
        fsyncDuration = Timer(label: "logkv_fsync_duration_seconds", factory: f)
        flushDuration = Timer(label: "logkv_index_flush_duration_seconds", factory: f)
        flushBatchSize = Recorder(label: "logkv_index_flush_batch_entries", factory: f)
        pendingEntries = Gauge(label: "logkv_index_pending_entries", factory: f)
        recoveryDuration = Gauge(label: "logkv_recovery_duration_seconds", factory: f)
        recoveryReplayed = Gauge(label: "logkv_recovery_replayed_records", factory: f)
        recoveryTruncatedBytes = Gauge(label: "logkv_recovery_truncated_bytes", factory: f)
        recoveryDamaged = Counter(label: "logkv_recovery_damaged_records_total", factory: f)
        writeRefusals = Counter(label: "logkv_store_read_only_total", factory: f)
        indexRebuilds = Counter(label: "logkv_index_rebuilds_total", factory: f)
        compactionRuns = Counter(label: "logkv_compaction_runs_total", factory: f)
        compactionDuration = Timer(label: "logkv_compaction_duration_seconds", factory: f)
        compactionReadBytes = Counter(label: "logkv_compaction_read_bytes_total", factory: f)
        compactionWrittenBytes = Counter(label: "logkv_compaction_written_bytes_total", factory: f)
        compactionReclaimedBytes = Counter(label: "logkv_compaction_reclaimed_bytes_total", factory: f)
        compactionSegmentsRemoved = Counter(label: "logkv_compaction_segments_removed_total", factory: f)
    }
}
