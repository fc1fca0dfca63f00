import Foundation
import LogKV
import NIOConcurrencyHelpers
import NIOHTTP1

/// GET answers of values: small values whole, large ones (over
/// `KVAPI.inlineJSONLimit`) streamed from their segment in pieces
/// (`BodySource`), raw or as JSON, so no answer holds a large value in
/// memory and no event loop reads, checks, copies or escapes one.
extension KVAPI {
    /// A value read for an answer, with what its JSON form needs.
    struct LoadedValue: Sendable {
        var read: ValueRead
        /// For a large value answered as JSON: its shape, learnt while its
        /// checksum was checked.
        var shape: JSONValueShape?

        var seq: UInt64? {
            switch read {
            case .missing: return nil
            case let .whole(value): return value.seq
            case let .large(reader): return reader.seq
            }
        }

        var expiresAt: Int64? {
            switch read {
            case .missing: return nil
            case let .whole(value): return value.expiresAt
            case let .large(reader): return reader.expiresAt
            }
        }
    }

    /// Reads `key` for an answer, off the event loop.
    func loadValue(_ key: [UInt8], raw: Bool) throws -> LoadedValue {
        let shape = raw ? nil : JSONValueShape()
        let read = try store.read(key, wholeUpTo: Self.inlineJSONLimit, chunkSize: 1 << 20) { bytes in shape?.inspect(bytes) }
        if case .large = read { return LoadedValue(read: read, shape: shape) }
        return LoadedValue(read: read, shape: nil)
    }

    /// The answer's body for a large value: the value itself (`?raw`), or
    /// the JSON object around it, escaped or base64-encoded piece by piece.
    static func streamedBody(_ reader: ValueReader, shape: JSONValueShape?, prefix: [UInt8], suffix: [UInt8]) -> BodySource {
        guard let shape else {
            let offset = NIOLockedValueBox(0)
            return BodySource(length: reader.length) {
                try offset.withLockedValue { offset in
                    let piece = try reader.read(at: offset, count: AnswerBudget.pieceSize)
                    offset += piece.count
                    return piece
                }
            }
        }
        let pieces = JSONValuePieces(reader: reader, utf8: shape.isText, prefix: prefix, suffix: suffix)
        return BodySource(length: prefix.count + shape.encodedLength(of: reader.length) + suffix.count) { try pieces.next() }
    }
}

/// What a large value's JSON form needs to know before its first byte is
/// sent: whether it travels as text (valid UTF-8) or base64, and so the
/// body's exact length. Fed the value's bytes in order, once.
final class JSONValueShape: @unchecked Sendable {
    private var validator = UTF8Validator()
    private var escapedBytes = 0

    func inspect(_ bytes: UnsafeRawBufferPointer) {
        for b in bytes {
            validator.feed(b)
            escapedBytes += JSONWriter.escapedCount(b)
        }
    }

    var isText: Bool { validator.isCompleteAndValid }

    /// Bytes of the JSON string's content for a value of `length` bytes.
    func encodedLength(of length: Int) -> Int { isText ? escapedBytes : (length + 2) / 3 * 4 }
}

/// The pieces of a large value's JSON answer: the object's start, the value
/// escaped (or base64-encoded) a piece at a time, the object's end. Each
/// piece is at most `AnswerBudget.pieceSize` bytes, whatever the escaping
/// (a byte escapes to at most 6).
final class JSONValuePieces: @unchecked Sendable {
    private let reader: ValueReader
    private let utf8: Bool
    private let lock = NIOLock()
    private var prefix: [UInt8]?
    private var suffix: [UInt8]?
    private var offset = 0

    init(reader: ValueReader, utf8: Bool, prefix: [UInt8], suffix: [UInt8]) {
        self.reader = reader
        self.utf8 = utf8
        self.prefix = prefix
        self.suffix = suffix
    }

    func next() throws -> [UInt8] {
        try lock.withLock {
            if let prefix {
                // A long key (escaped up to 6x) may make it longer than a piece.
                let piece = Array(prefix.prefix(AnswerBudget.pieceSize))
                self.prefix = prefix.count > piece.count ? Array(prefix.dropFirst(piece.count)) : nil
                return piece
            }
            if offset < reader.length {
                // Base64 pieces start on 3-byte boundaries, so they join up.
                let count = utf8 ? AnswerBudget.pieceSize / 6 : AnswerBudget.pieceSize / 4 * 3
                let raw = try reader.read(at: offset, count: count)
                offset += raw.count
                if !utf8 { return Array(Data(raw).base64EncodedData()) }
                var out: [UInt8] = []
                out.reserveCapacity(raw.count + raw.count / 8)
                for b in raw { JSONWriter.appendEscaped(b, to: &out) }
                return out
            }
            let last = suffix ?? []
            let piece = Array(last.prefix(AnswerBudget.pieceSize))
            suffix = last.count > piece.count ? Array(last.dropFirst(piece.count)) : nil
            return piece
        }
    }
}
