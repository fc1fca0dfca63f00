import Foundation
import Synchronization

/// Bounds the open segment descriptors of a store (LevelDB's table cache):
/// past `limit`, the least recently used sealed segments' descriptors are
/// closed; a later read reopens them. A 1 TB store of 256 MiB segments has
/// 4000 segments, and every client connection needs a descriptor too.
///
/// Thread-safe. Segments that may not be closed (the active one, outputs
/// being written) are never evicted, so the count may exceed `limit` by them.
final class SegmentHandleCache: @unchecked Sendable {
    let limit: Int
    private let lock = NSLock()
    private var segments: [ObjectIdentifier: WeakSegment] = [:]

    private final class WeakSegment {
        weak var segment: SegmentFile?
        init(_ segment: SegmentFile) { self.segment = segment }
    }

    private static let clock = Atomic<UInt64>(0)
    /// A logical time for "last used".
    static func tick() -> UInt64 { clock.add(1, ordering: .relaxed).newValue }

    init(limit: Int) { self.limit = max(1, limit) }

    /// Told when a segment's descriptor was opened; closes others if too
    /// many are open.
    func opened(_ segment: SegmentFile) {
        lock.lock()
        defer { lock.unlock() }
        segments[ObjectIdentifier(segment)] = WeakSegment(segment)
        var open = 0
        var candidates: [(UInt64, SegmentFile)] = []
        for (id, entry) in segments {
            guard let s = entry.segment else { segments[id] = nil; continue }
            guard s.hasOpenDescriptor else { continue }
            open += 1
            if s !== segment, let lastUse = s.evictionCandidate { candidates.append((lastUse, s)) }
        }
        guard open > limit else { return }
        candidates.sort { $0.0 < $1.0 }
        for (_, s) in candidates.prefix(open - limit) { _ = s.closeDescriptor() }
    }

    /// Open descriptors now (for tests and metrics).
    var openCount: Int {
        lock.withLock { segments.values.reduce(0) { $0 + (($1.segment?.hasOpenDescriptor ?? false) ? 1 : 0) } }
    }
}
