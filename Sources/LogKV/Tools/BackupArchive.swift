import Foundation

/// The backup archive: a POSIX ustar stream holding one regular file per
/// segment, named `segments/NNNNNNNNNNNN.seg`, in ascending id order, then
/// `BACKUP_COMPLETE` (`BackupManifest`: each segment's length and CRC-32, so
/// a cut-short or edited archive is never restored), and nothing else. It is what `GET /v1/admin/backup` streams and what
/// `logkv restore` reads; `tar tf` lists it and `tar xf` unpacks it into a
/// directory `logkv restore` also accepts.
///
/// Reading is strict: any other name (absolute, `..`, links, directories,
/// devices) is refused, so an archive can never make `restore` write outside
/// the directory it restores into.
public enum BackupArchive {
    static let block = 512

    /// The archive's exact size for a snapshot, known before streaming (so
    /// the HTTP response carries a Content-Length).
    public static func size(of snapshot: [LogKV.SnapshotSegment]) -> Int64 {
        snapshot.reduce(Int64(2 * block)) { $0 + Int64(block) + padded($1.length) }
            + Int64(block) + padded(Int64(BackupManifest.encodedSize(lengths: snapshot.map(\.length))))
    }

    /// The largest completion marker read (a line per segment: about 45
    /// bytes each).
    static let maxMarkerSize: Int64 = 16 << 20

    static func padded(_ n: Int64) -> Int64 { (n + Int64(block) - 1) / Int64(block) * Int64(block) }

    /// Writes the archive of `snapshot` to `sink` in chunks of at most
    /// `chunkSize` bytes. A throwing sink stops the stream.
    public static func write(_ snapshot: [LogKV.SnapshotSegment], chunkSize: Int = 1 << 20,
                             to sink: ([UInt8]) throws -> Void) throws {
        var manifest = BackupManifest(segments: [])
        for segment in snapshot {
            try sink(header(name: "segments/" + segment.name, size: segment.length))
            var offset: Int64 = 0
            var crc: UInt32 = 0
            while offset < segment.length {
                let n = Int(min(Int64(chunkSize), segment.length - offset))
                var chunk = try segment.read(at: offset, count: n)
                crc = chunk.withUnsafeBytes { CRC32.update(crc, $0) }
                offset += Int64(n)
                if offset == segment.length {
                    chunk += [UInt8](repeating: 0, count: Int(padded(segment.length) - segment.length))
                }
                try sink(chunk)
            }
            manifest.segments.append(.init(id: segment.id, length: segment.length, crc: crc))
        }
        let marker = manifest.encoded()
        try sink(header(name: DataDirectory.backupCompleteMarker, size: Int64(marker.count)))
        try sink(marker + [UInt8](repeating: 0, count: Int(padded(Int64(marker.count))) - marker.count))
        try sink([UInt8](repeating: 0, count: 2 * block))
    }

    /// A ustar header for a regular file (mode 0644, owner 0, mtime 0).
    static func header(name: String, size: Int64) -> [UInt8] {
        var h = [UInt8](repeating: 0, count: block)
        func put(_ text: String, at offset: Int, width: Int) {
            for (i, b) in text.utf8.prefix(width).enumerated() { h[offset + i] = b }
        }
        func octal(_ value: Int64, at offset: Int, width: Int) {
            let digits = String(value, radix: 8)
            put(String(repeating: "0", count: max(0, width - 1 - digits.count)) + digits, at: offset, width: width - 1)
        }
        put(name, at: 0, width: 100)
        octal(0o644, at: 100, width: 8)
        octal(0, at: 108, width: 8)
        octal(0, at: 116, width: 8)
        octal(size, at: 124, width: 12)
        octal(0, at: 136, width: 12)
        h[156] = UInt8(ascii: "0")
        put("ustar", at: 257, width: 6)
        put("00", at: 263, width: 2)
        for i in 148..<156 { h[i] = UInt8(ascii: " ") }
        let sum = h.reduce(0) { $0 + Int64($1) }
        octal(sum, at: 148, width: 7)
        h[155] = UInt8(ascii: " ")
        return h
    }

    /// One file of an archive being read: a segment, or (nil id) the
    /// completion marker.
    struct Entry { var segmentID: UInt64?; var size: Int64 }

    /// Parses one header block: the entry, nil at the end-of-archive marker.
    /// Throws `.invalidArgument` for anything but a segment file.
    static func parseHeader(_ h: [UInt8]) throws -> Entry? {
        guard h.count == block else { throw LogKVError.invalidArgument("backup archive is truncated") }
        if h.allSatisfy({ $0 == 0 }) { return nil }
        func field(_ offset: Int, _ width: Int) -> String {
            String(decoding: h[offset..<offset + width].prefix { $0 != 0 }, as: UTF8.self)
        }
        var stored = h
        for i in 148..<156 { stored[i] = UInt8(ascii: " ") }
        let sum = stored.reduce(0) { $0 + Int64($1) }
        let checksum = Int64(field(148, 8).trimmingCharacters(in: " "), radix: 8)
        guard checksum == sum, field(257, 5) == "ustar" else {
            throw LogKVError.invalidArgument("not a logkv backup archive (bad tar header)")
        }
        let name = field(0, 100)
        let prefix = field(345, 155)
        let type = h[156]
        guard let size = Int64(field(124, 12).trimmingCharacters(in: " "), radix: 8), size >= 0 else {
            throw LogKVError.invalidArgument("backup archive entry \(name) has a malformed size")
        }
        if name == DataDirectory.backupCompleteMarker && prefix.isEmpty && (type == UInt8(ascii: "0") || type == 0) {
            guard size <= maxMarkerSize else { throw LogKVError.invalidArgument("backup archive has an oversized \(name)") }
            return Entry(segmentID: nil, size: size)
        }
        guard prefix.isEmpty, type == UInt8(ascii: "0") || type == 0,
              name.hasPrefix("segments/"), name.hasSuffix(".seg"),
              let id = UInt64(name.dropFirst("segments/".count).dropLast(4)),
              DataDirectory.segmentName(id) == String(name.dropFirst("segments/".count)) else {
            throw LogKVError.invalidArgument("backup archive holds \"\(name)\", which is not a segment file")
        }
        return Entry(segmentID: id, size: size)
    }
}
