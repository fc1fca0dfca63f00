/// Which segment files make up the store, in memory: every live segment
/// readable by id, the ids compaction retired, and the segments holding
/// damaged bytes. (On disk the same set is the `segments/` directory, the
/// index's `segments` table and, during a swap, the `COMPACTION` manifest,
/// which `Recovery` reconciles at open.)
///
/// Rules kept here:
/// - A segment is added once it is durable (created and its directory
///   synced), and leaves only by `retire` (compaction removed it; readers
///   that find a location in it relocate the key) or `withdraw` (an output
///   of a compaction that did not commit; no reader ever saw it).
/// - A damaged segment is never compacted: its bytes are the only evidence
///   (`logkv check` reports it).
///
/// A value type; its owner (`LogKV`) guards it with `state`.
struct SegmentSet {
    private var files: [UInt64: SegmentFile]
    private var retired: Set<UInt64> = []
    private(set) var damaged: Set<UInt64> = []

    init(_ files: [SegmentFile]) {
        self.files = Dictionary(uniqueKeysWithValues: files.map { ($0.id, $0) })
    }

    subscript(id: UInt64) -> SegmentFile? { files[id] }

    /// Every live segment, by id.
    var all: [SegmentFile] { files.values.sorted { $0.id < $1.id } }

    var count: Int { files.count }

    var totalBytes: Int64 { files.values.reduce(0) { $0 + $1.size } }

    /// Whether compaction removed segment `id` (a location there moved).
    func isRetired(_ id: UInt64) -> Bool { retired.contains(id) }

    /// Ids of the log segments (not compaction outputs) other than `active`.
    func logSegments(excluding active: UInt64?) -> Set<UInt64> {
        Set(files.values.filter { $0.kind == .log && $0.id != active }.map(\.id))
    }

    mutating func add(_ file: SegmentFile) { files[file.id] = file }

    /// Takes back a segment no reader may have used (an uncommitted output).
    mutating func withdraw(_ id: UInt64) { files[id] = nil }

    /// Compaction removed these: readers relocate keys found in them.
    mutating func retire(_ ids: [UInt64]) {
        for id in ids {
            files[id] = nil
            retired.insert(id)
        }
    }

    mutating func markDamaged(_ id: UInt64) { damaged.insert(id) }
}
