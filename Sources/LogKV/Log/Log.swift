import Foundation
import Synchronization

/// The log's writer state: the active segment, the next seq and segment id,
/// whether writing has ended, and the latch that makes the store read-only
/// after a failure that leaves durability unknown. `LogKV+Write.swift`
/// appends through it; rotation, commit records and fsyncs, which also move
/// the durability watermarks, stay there.
///
/// Rules it keeps:
/// - One append at a time: every field below marked "guarded by `lock`"
///   changes only under `lock`, so seqs are issued in append order and a
///   record's seq is above every seq appended before it.
/// - A segment id is used once (`reserveSegment`), even if creating the
///   file fails, and a new segment's header records the seq high-water
///   mark at its creation.
/// - The failure latch, once set, stays until restart (rule 6): a later
///   fsync that "succeeds" vouches for nothing after one that failed.
/// - `diskWork` is raised before a holder of `lock` does work that may wait
///   on the disk (an fsync, a file creation, an index read), and lowered
///   after: an event loop waits for `lock` only while it is 0
///   (`tryLockBriefly`).
///
/// Thread-safety: `lock` guards the fields marked so; `failure` has a leaf
/// lock of its own (nothing is taken while it is held).
final class Log: @unchecked Sendable {
    /// The writer lock (see the lock order at `LogKV`'s declaration).
    let lock = NSLock()
    /// Above 0 while `lock`'s holder (or a thread queued for it) does disk
    /// work under it. Written only by those threads.
    let diskWork = Atomic<Int>(0)

    /// The segment appends go to. Guarded by `lock`.
    private(set) var active: SegmentFile
    /// The seq the next record takes. Guarded by `lock`.
    private(set) var nextSeq: UInt64
    /// The next segment id, for rotation and compaction output alike.
    /// Guarded by `lock`.
    private var nextSegmentID: UInt64
    /// Set by `close()`: no append from then on. Guarded by `lock`.
    private(set) var isClosed = false
    /// Records appended to the active segment since its last commit record.
    /// Guarded by `lock`.
    private(set) var recordsSinceCommit = 0

    private let failureLock = NSLock()
    /// Guarded by `failureLock`.
    private var _failure: LogKVError?

    /// The log as recovery left it.
    init(_ start: Recovery.LogStart) {
        active = start.active
        nextSeq = start.maxSeq + 1
        nextSegmentID = (start.segments.map(\.id).max() ?? 0) + 1
    }

    /// Set once a write failed in a way that leaves durability unknown (an
    /// fsync error); from then on writes are refused. Never cleared.
    var failure: LogKVError? {
        failureLock.withLock { _failure }
    }

    /// Latches `error` unless a failure is latched already; returns whether
    /// this call latched it.
    func latchFailure(_ error: LogKVError) -> Bool {
        failureLock.withLock {
            guard _failure == nil else { return false }
            _failure = error
            return true
        }
    }

    /// Just past the last record appended. Under `lock`.
    var end: LogPosition { LogPosition(segment: active.id, offset: active.size) }

    /// The seq of the last record appended. Under `lock`.
    var lastSeq: UInt64 { nextSeq - 1 }

    /// Takes a segment id, with the seq high-water mark its header records.
    /// Under `lock`.
    func reserveSegment() -> (id: UInt64, highWater: UInt64) {
        defer { nextSegmentID += 1 }
        return (nextSegmentID, lastSeq)
    }

    /// Whether `length` more bytes must go to a new segment: the active one
    /// would pass `segmentSize` (unless it holds nothing yet), or its format
    /// predates TTL refresh and commit records. Under `lock`.
    func rotationDue(appending length: Int64, segmentSize: Int64) -> Bool {
        let full = active.size + length > segmentSize && active.size > Int64(RecordFormat.segmentHeaderSize)
        let outdated = active.header?.version ?? RecordFormat.formatVersion < RecordFormat.commitRecordsSince
        return full || outdated
    }

    /// Appends one record, encoded with `seq` (which must be `nextSeq`), and
    /// issues the next seq; returns where the record starts. Under `lock`.
    func append(_ head: [UInt8], _ value: [UInt8], seq: UInt64) throws -> Int64 {
        precondition(seq == nextSeq, "records are appended in seq order")
        let offset = active.size
        try active.append(head, value)
        nextSeq += 1
        recordsSinceCommit += 1
        return offset
    }

    /// Appends a commit record (which takes no seq) sealing the records
    /// since the last one. Under `lock`.
    func appendCommitRecord(_ record: [UInt8]) throws {
        try active.append(record)
        recordsSinceCommit = 0
    }

    /// The next segment takes the appends. Under `lock`.
    func rotated(to next: SegmentFile) {
        active = next
        recordsSinceCommit = 0
    }

    /// Ends writing; returns whether it had ended already. Under `lock`.
    func close() -> Bool {
        defer { isClosed = true }
        return isClosed
    }

    // MARK: Taking the lock

    /// Takes `lock` for an event loop: waits for another event loop's
    /// append (microseconds, and cheaper than handing the write to another
    /// thread), but not while any thread that may do disk work under the
    /// lock holds it or queues for it. Left: a sync that fails and cuts the
    /// unsynced tail flags the cut only once it holds the lock.
    func tryLockBriefly() -> Bool {
        if lock.try() { return true }
        if diskWork.load(ordering: .acquiring) > 0 { return false }
        lock.lock()
        return true
    }

    /// Takes `lock` for work that may wait on the disk, flagged from before
    /// it queues, so no event loop queues behind it. Pair with
    /// `unlockAfterDiskWork`.
    func lockForDiskWork() {
        diskWork.wrappingAdd(1, ordering: .releasing)
        lock.lock()
    }

    func unlockAfterDiskWork() {
        lock.unlock()
        diskWork.wrappingSubtract(1, ordering: .releasing)
    }

    /// Runs `body`, which holds (or is about to take) `lock` across disk
    /// work, flagged for event loops.
    func flaggingDiskWork<T>(_ body: () throws -> T) rethrows -> T {
        diskWork.wrappingAdd(1, ordering: .releasing)
        defer { diskWork.wrappingSubtract(1, ordering: .releasing) }
        return try body()
    }
}
