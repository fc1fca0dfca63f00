/// Every metric family logkvd exposes, with its help text: the one list the
/// README's metrics section and the dashboard are written against.
public enum MetricsCatalog {
    public static let help: [String: String] = [
        // HTTP
        "logkv_http_requests_total": "HTTP requests answered, by method, route template and status class.",
        "logkv_http_request_duration_seconds": "Time from request received to response written, by method and route template.",
        // Store state (refreshed at scrape time)
        "logkv_keys": "Keys in the index (expired keys not yet swept included).",
        "logkv_live_bytes": "Bytes of segment records that hold a live value.",
        "logkv_dead_bytes": "Bytes of segment records that are garbage (overwritten, deleted, expired).",
        "logkv_segment_bytes": "Total bytes in segment files.",
        "logkv_segments": "Segment files in the data directory.",
        "logkv_index_pending_entries": "Index changes acknowledged but not yet flushed to SQLite.",
        "logkv_store_read_only": "1 while the store refuses writes (a failed fsync until restart, or an index that cannot be written), else 0.",
        "logkv_store_disk_full": "1 while writes are refused because the disk is full (until a delete or a compaction frees space), else 0.",
        "logkv_store_read_only_total": "Times the store started refusing writes (failed fsync, create or directory sync; index write failures).",
        // Engine activity
        "logkv_reads_total": "Key reads by result: hit, miss, expired, corrupt (checksum or index mismatch).",
        "logkv_keydir_lookups_total": "Where KeyDir lookups (reads, conditional writes and deletes) found a key's location: memory (KeyDir pending or cache), index_nowait (SQLite on the event loop, every page cached), index_blocking (SQLite on the blocking pool).",
        "logkv_writes_total": "Acknowledged writes by operation: put, delete, ttl_refresh (a lease renewal).",
        "logkv_writes_handed_off_total": "PUTs an event loop handed to the blocking pool instead of waiting, by what they would have waited for: writer_busy (the writer lock was held across disk work), rotation (a segment rotation was due), backlog (the index backlog was full).",
        "logkv_blocking_queries_held": "Blocking queries (?index=&wait=) held now, waiting for a change.",
        "logkv_expirations_total": "Keys expired, by reason: read (lazy), sweep (background), compaction.",
        "logkv_log_written_bytes_total": "Bytes appended to segment files.",
        "logkv_fsync_duration_seconds": "Duration of each fsync of the active segment.",
        "logkv_index_flush_duration_seconds": "Duration of each index flush transaction.",
        "logkv_index_flush_batch_entries": "Index changes per flush transaction.",
        "logkv_index_rebuilds_total": "Full index rebuilds from the segments since start.",
        // Compaction
        "logkv_compaction_runs_total": "Compactions completed.",
        "logkv_compaction_duration_seconds": "Duration of each compaction.",
        "logkv_compaction_read_bytes_total": "Bytes read from segments by compaction.",
        "logkv_compaction_written_bytes_total": "Bytes of live records copied into new segments by compaction.",
        "logkv_compaction_reclaimed_bytes_total": "Disk bytes freed by compaction.",
        "logkv_compaction_segments_removed_total": "Segment files removed by compaction.",
        // Startup
        "logkv_recovery_duration_seconds": "Time the last open took, recovery included.",
        "logkv_recovery_replayed_records": "Log records replayed into the index by the last open.",
        "logkv_recovery_truncated_bytes": "Bytes cut from a torn tail of the last segment by the last open.",
        "logkv_recovery_damaged_records_total": "Stretches of damaged bytes found before intact records (by recovery or compaction); the intact records were kept.",
        // Process
        "process_resident_memory_bytes": "Resident memory of the process.",
        "process_open_fds": "Open file descriptors of the process.",
        "process_start_time_seconds": "Start time of the process since the Unix epoch.",
    ]

    /// Histogram buckets for durations: 50 µs to 10 s.
    public static let durationBuckets: [Duration] = [
        .microseconds(50), .microseconds(100), .microseconds(250), .microseconds(500),
        .milliseconds(1), .microseconds(2500), .milliseconds(5), .milliseconds(10), .milliseconds(25),
        .milliseconds(50), .milliseconds(100), .milliseconds(250), .milliseconds(500), .seconds(1),
        .milliseconds(2500), .seconds(5), .seconds(10),
    ]

    /// Histogram buckets for counts (e.g. flush batch sizes).
    public static let countBuckets: [Double] = [1, 10, 100, 1000, 5000, 10_000, 50_000, 100_000, 250_000]
}
