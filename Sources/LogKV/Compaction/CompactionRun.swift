/// One compaction's state while it runs: its id, its inputs, the outputs
/// written so far (named in the `COMPACTION` manifest before each exists),
/// the rows to move and drop, and its report. Used by one thread (the
/// compactor, under `compactionLock`).
final class CompactionRun {
    /// Names this compaction; its index commit records it, so an open after
    /// a crash can tell "committed" from "not yet" whatever index state the
    /// power loss left (never from missing rows, which an older index state
    /// lacks too).
    let id = UInt64.random(in: 1...UInt64(Int64.max))
    /// The segments chosen, by id, and those of them that exist.
    let inputIDs: [UInt64]
    let inputs: [SegmentFile]
    /// Every record that may be older than a hiding record lies in a
    /// segment whose `min_seq` is at most that record's seq: the oldest
    /// `min_seq` among the segments that stay.
    let minStayingSeq: UInt64
    /// The outputs' `min_seq`: the oldest of the inputs'.
    let outputMinSeq: UInt64
    /// Expiry is judged at this time (read under the writer lock).
    let now: Int64
    var outputIDs: [UInt64] = []
    var outputs: [SegmentFile] = []
    var moves: [CompactionMove] = []
    var drops: [CompactionMove] = []
    var report = CompactionReport()
    var limiter: RateLimiter
    var committed = false

    init(chosen: [UInt64], inputs: [SegmentFile], staying: [SegmentFile], now: Int64, bytesPerSecond: Int64) {
        inputIDs = chosen
        self.inputs = inputs
        minStayingSeq = staying.map { $0.header?.minSeq ?? 0 }.min() ?? UInt64.max
        outputMinSeq = inputs.map { $0.header?.minSeq ?? 0 }.min() ?? 0
        self.now = now
        limiter = RateLimiter(bytesPerSecond: bytesPerSecond)
    }

    var manifest: CompactionManifest {
        CompactionManifest(compactionID: id, inputs: inputIDs, outputs: outputIDs)
    }
}
