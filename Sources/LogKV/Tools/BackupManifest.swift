/// What a backup's completion marker (`BACKUP_COMPLETE`) says: every segment
/// the backup holds, with its length and CRC-32, and the totals. Written
/// last — after every segment — by `backup(to:)` and `BackupArchive.write`;
/// `restore` refuses a backup whose segments differ from it in any way (one
/// missing, one added, one shorter, one changed), since restoring part of a
/// store can bring deleted keys back and lose others.
///
/// Text, one fact per line:
///
///     logkv-backup 2
///     segments N
///     bytes B
///     segment 000000000001.seg LENGTH CRC32-IN-8-HEX-DIGITS
///     …
///
/// Markers from before version 2 hold only the two totals, which are then
/// all `restore` can check.
struct BackupManifest: Equatable {
    struct Segment: Equatable { var id: UInt64; var length: Int64; var crc: UInt32 }

    var segments: [Segment]
    /// Whether each segment's length and CRC are known (version 2).
    var listsSegments = true
    /// The totals of a marker from before version 2.
    private var legacyTotals: (count: Int, bytes: Int64)?

    static func == (a: Self, b: Self) -> Bool { a.segments == b.segments && a.listsSegments == b.listsSegments }

    init(segments: [Segment]) { self.segments = segments }

    var totalBytes: Int64 { legacyTotals?.bytes ?? segments.reduce(0) { $0 + $1.length } }
    var count: Int { legacyTotals?.count ?? segments.count }

    /// The marker's size for segments of these lengths, known before their
    /// CRCs are (the archive's Content-Length is sent first).
    static func encodedSize(lengths: [Int64]) -> Int {
        let placeholder = BackupManifest(segments: lengths.enumerated().map { Segment(id: UInt64($0.offset), length: $0.element, crc: 0) })
        return placeholder.encoded().count
    }

    func encoded() -> [UInt8] {
        var text = "logkv-backup 2\nsegments \(segments.count)\nbytes \(totalBytes)\n"
        for segment in segments {
            let hex = String(segment.crc, radix: 16)
            text += "segment \(DataDirectory.segmentName(segment.id)) \(segment.length) \(String(repeating: "0", count: 8 - hex.count) + hex)\n"
        }
        return Array(text.utf8)
    }

    /// Parses a marker; throws `.invalidArgument` for anything malformed.
    static func decode(_ bytes: [UInt8]) throws -> BackupManifest {
        func bad(_ why: String) -> LogKVError { .invalidArgument("backup completion marker is malformed: \(why)") }
        let lines = String(decoding: bytes, as: UTF8.self).split(separator: "\n", omittingEmptySubsequences: true)
        var count: Int?, bytes: Int64?
        var segments: [Segment] = []
        var versioned = false
        for line in lines {
            let fields = line.split(separator: " ")
            switch fields.first {
            case "logkv-backup":
                guard fields.count == 2, fields[1] == "2" else { throw bad("unknown version \(line)") }
                versioned = true
            case "segments":
                guard fields.count == 2, let n = Int(fields[1]), n >= 0 else { throw bad("\(line)") }
                count = n
            case "bytes":
                guard fields.count == 2, let n = Int64(fields[1]), n >= 0 else { throw bad("\(line)") }
                bytes = n
            case "segment":
                guard fields.count == 4, fields[1].hasSuffix(".seg"),
                      let id = UInt64(fields[1].dropLast(4)), DataDirectory.segmentName(id) == fields[1],
                      let length = Int64(fields[2]), length >= 0,
                      fields[3].count == 8, let crc = UInt32(fields[3], radix: 16) else { throw bad("\(line)") }
                segments.append(Segment(id: id, length: length, crc: crc))
            default:
                throw bad("unknown line \(line)")
            }
        }
        guard let count, let bytes else { throw bad("no totals") }
        if versioned {
            var manifest = BackupManifest(segments: segments)
            guard manifest.count == count, manifest.totalBytes == bytes,
                  Set(segments.map(\.id)).count == segments.count else { throw bad("the segment lines do not add up to the totals") }
            manifest.listsSegments = true
            return manifest
        }
        guard segments.isEmpty else { throw bad("segment lines without a version") }
        var legacy = BackupManifest(segments: [])
        legacy.listsSegments = false
        legacy.legacyTotals = (count, bytes)
        return legacy
    }

    /// Throws unless `restored` (what the backup really held, CRCs computed
    /// while copying) is exactly what the marker lists.
    func verify(_ restored: [Segment], backup: String) throws {
        func refuse(_ why: String) -> LogKVError {
            .invalidArgument("backup \(backup) does not match its completion marker: \(why); nothing was restored")
        }
        guard listsSegments else {
            let bytes = restored.reduce(0) { $0 + $1.length }
            guard restored.count == count, bytes == totalBytes else {
                throw refuse("it holds \(restored.count) segments and \(bytes) bytes, the marker says \(count) and \(totalBytes)")
            }
            return
        }
        let have = Dictionary(uniqueKeysWithValues: restored.map { ($0.id, $0) })
        let want = Dictionary(uniqueKeysWithValues: segments.map { ($0.id, $0) })
        for (id, expected) in want.sorted(by: { $0.key < $1.key }) {
            guard let got = have[id] else { throw refuse("segment \(DataDirectory.segmentName(id)) is missing") }
            guard got.length == expected.length else {
                throw refuse("segment \(DataDirectory.segmentName(id)) holds \(got.length) bytes, not \(expected.length)")
            }
            guard got.crc == expected.crc else { throw refuse("segment \(DataDirectory.segmentName(id)) has changed (CRC-32 differs)") }
        }
        if let extra = have.keys.sorted().first(where: { want[$0] == nil }) {
            throw refuse("segment \(DataDirectory.segmentName(extra)) is not listed")
        }
    }
}
