import CZlib

/// gzip (or deflate) for JSON and text responses of at least
/// `minimumBytes`, when the client's `Accept-Encoding` allows it, done with
/// zlib in one call (responses are whole in memory). Raw values
/// (`application/octet-stream`), backups, HEAD answers and small answers go
/// as they are.
///
/// The negotiation follows swift-nio-extras' `HTTPResponseCompressor`, which
/// did this before the server wrote its own responses: q-values honoured,
/// gzip preferred to deflate at equal weight, `*` means gzip.
enum ResponseCompression {
    static let minimumBytes = 1024
    /// Larger answers go as they are (values over 64 KiB are streamed and
    /// never compressed; this bounds listings and the like).
    static let maximumBytes = 1 << 20
    /// Answers larger than this are compressed on the blocking pool, not on
    /// the event loop (gzip of 1 MiB takes milliseconds; of 16 KiB, about
    /// a tenth of one).
    static let maximumOnEventLoop = 16 * 1024
    static let compressedTypes = ["application/json", "text/plain"]

    enum Algorithm {
        case gzip, deflate
        var token: String { self == .gzip ? "gzip" : "deflate" }
        /// zlib's window bits: 16 + 15 writes a gzip wrapper, 15 a zlib one
        /// (HTTP's "deflate" is the zlib format, RFC 9110 §8.4.1.2).
        var windowBits: Int32 { self == .gzip ? 31 : 15 }
    }

    /// Whether a response of this type and size is worth compressing.
    static func eligible(contentType: String?, bodyCount: Int) -> Bool {
        guard bodyCount >= minimumBytes, bodyCount <= maximumBytes, let contentType else { return false }
        return compressedTypes.contains(where: { contentType.hasPrefix($0) })
    }

    /// The coding to give `response` for this request, or nil to send it
    /// as it is.
    static func coding(for response: Response, _ framing: ResponseEncoder.Framing) -> Algorithm? {
        guard !response.codingDecided, !framing.isHEAD, ResponseEncoder.mayHaveBody(response.status),
              eligible(contentType: response.headers.first(name: "content-type"), bodyCount: response.body.count) else { return nil }
        return negotiate(framing.requestHeaders["accept-encoding"])
    }

    /// `response` with its body compressed (or left as it is if zlib fails),
    /// its coding decided either way.
    static func encoded(_ response: Response, _ algorithm: Algorithm) -> Response {
        var out = response
        out.codingDecided = true
        if let compressed = compress(response.body, algorithm) {
            out.body = compressed
            out.headers.add(name: "content-encoding", value: algorithm.token)
            out.headers.add(name: "vary", value: "Accept-Encoding")
        }
        return out
    }

    /// The algorithm the client accepts best, or nil for none. `*` stands
    /// only for codings the header does not name (RFC 9110 §12.5.3):
    /// `gzip;q=0, *` accepts deflate, not gzip.
    static func negotiate(_ acceptEncoding: [String]) -> Algorithm? {
        var gzip: Float = -1, deflate: Float = -1, any: Float = -1
        for header in acceptEncoding {
            for item in header.split(separator: ",") {
                let entry = item.drop(while: { $0 == " " })
                let name = entry.prefix(while: { $0 != ";" && $0 != " " }).lowercased()
                switch name {
                case "gzip", "x-gzip": gzip = qValue(entry)
                case "deflate": deflate = qValue(entry)
                case "*": any = qValue(entry)
                default: break
                }
            }
        }
        if gzip < 0 { gzip = any }
        if deflate < 0 { deflate = any }
        guard gzip > 0 || deflate > 0 else { return nil }
        return gzip >= deflate ? .gzip : .deflate
    }

    /// The `q` parameter of one `Accept-Encoding` entry: 1 when absent, 0
    /// when malformed or out of range.
    private static func qValue(_ entry: Substring) -> Float {
        let parts = entry.split(separator: ";", maxSplits: 1)
        guard parts.count > 1 else { return 1 }
        let param = parts[1].trimmingCharacters(in: .whitespaces)
        guard param.count > 2, param.first == "q" || param.first == "Q", param.dropFirst().first == "=",
              let q = Float(param.dropFirst(2)), q >= 0, q <= 1 else { return 0 }
        return q
    }

    /// `body` compressed whole, or nil if zlib fails (the caller then sends
    /// it as it is).
    static func compress(_ body: [UInt8], _ algorithm: Algorithm) -> [UInt8]? {
        var stream = z_stream()
        guard deflateInit2_(&stream, Z_DEFAULT_COMPRESSION, Z_DEFLATED, algorithm.windowBits, 8, Z_DEFAULT_STRATEGY,
                            ZLIB_VERSION, Int32(MemoryLayout<z_stream>.size)) == Z_OK else { return nil }
        defer { deflateEnd(&stream) }
        var out = [UInt8](repeating: 0, count: Int(deflateBound(&stream, uLong(body.count))))
        let status: Int32 = body.withUnsafeBufferPointer { input in
            out.withUnsafeMutableBufferPointer { output in
                stream.next_in = UnsafeMutablePointer(mutating: input.baseAddress)
                stream.avail_in = uInt(input.count)
                stream.next_out = output.baseAddress
                stream.avail_out = uInt(output.count)
                return deflate(&stream, Z_FINISH)
            }
        }
        guard status == Z_STREAM_END else { return nil }
        out.removeLast(out.count - Int(stream.total_out))
        return out
    }
}
