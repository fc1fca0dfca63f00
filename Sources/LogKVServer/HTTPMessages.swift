import NIOCore
import NIOHTTP1

/// A request as the route handlers see it.
struct Request {
    var method: HTTPMethod
    /// The path with its query removed, still percent-encoded.
    var path: String
    var query: [String: String]
    /// The same parameters as the exact bytes they encode (keys in `after`
    /// and `prefix` need not be UTF-8).
    var queryBytes: [String: [UInt8]]
    var headers: HTTPHeaders
    var body: ByteBuffer?
    /// Path parameter `{key}`, percent-decoded to bytes.
    var key: [UInt8] = []
    var eventLoop: EventLoop
    /// The connection's events (a held request stops waiting when it closes).
    var connection: ConnectionEvents?

    var bodyBytes: [UInt8] { body.map { Array($0.readableBytesView) } ?? [] }

    init(head: HTTPRequestHead, body: ByteBuffer?, eventLoop: EventLoop) {
        self.eventLoop = eventLoop
        method = head.method
        let uri = head.uri
        if let q = uri.firstIndex(of: "?") {
            path = String(uri[..<q])
            queryBytes = Self.parseQuery(uri[uri.index(after: q)...])
            query = queryBytes.mapValues { String(decoding: $0, as: UTF8.self) }
        } else {
            path = uri
            query = [:]
            queryBytes = [:]
        }
        headers = head.headers
        self.body = body
    }

    static func parseQuery(_ text: Substring) -> [String: [UInt8]] {
        var out: [String: [UInt8]] = [:]
        for pair in text.split(separator: "&", omittingEmptySubsequences: true) {
            let parts = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            let name = percentDecode(parts[0], plusIsSpace: true).map { String(decoding: $0, as: UTF8.self) } ?? ""
            let value = parts.count > 1 ? percentDecode(parts[1], plusIsSpace: true) ?? [] : []
            out[name] = value
        }
        return out
    }
}

/// Decodes %XX escapes to raw bytes; nil on a malformed escape.
func percentDecode<S: StringProtocol>(_ text: S, plusIsSpace: Bool = false) -> [UInt8]? {
    var out: [UInt8] = []
    out.reserveCapacity(text.utf8.count)
    var it = text.utf8.makeIterator()
    func hexValue(_ c: UInt8?) -> UInt8? {
        guard let c else { return nil }
        switch c {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): return c - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): return c - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): return c - UInt8(ascii: "A") + 10
        default: return nil
        }
    }
    while let c = it.next() {
        if c == UInt8(ascii: "%") {
            guard let hi = hexValue(it.next()), let lo = hexValue(it.next()) else { return nil }
            out.append(hi << 4 | lo)
        } else if plusIsSpace && c == UInt8(ascii: "+") {
            out.append(UInt8(ascii: " "))
        } else {
            out.append(c)
        }
    }
    return out
}

/// Encodes bytes for use in a URL path or query (RFC 3986 unreserved kept).
func percentEncode(_ bytes: [UInt8], keepSlash: Bool = false) -> String {
    var out = ""
    for b in bytes {
        switch b {
        case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"),
             UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "-"), UInt8(ascii: "."),
             UInt8(ascii: "_"), UInt8(ascii: "~"):
            out.unicodeScalars.append(Unicode.Scalar(b))
        case UInt8(ascii: "/") where keepSlash:
            out.append("/")
        default:
            out += "%" + String(b, radix: 16, uppercase: true).leftPadded(to: 2)
        }
    }
    return out
}

extension String {
    func leftPadded(to n: Int) -> String { count >= n ? self : String(repeating: "0", count: n - count) + self }
}

/// A response ready to write.
struct Response {
    var status: HTTPResponseStatus
    var headers: HTTPHeaders
    var body: [UInt8]
    /// Set when `headers` already carries content-length (a streamed
    /// answer's head, whose body follows separately).
    var hasContentLength = false
    /// A body too large to hold, streamed after the head in place of
    /// `body` (whose length `headers` then carry).
    var bodySource: BodySource?
    /// Whether the body's content coding (compression) is settled.
    var codingDecided = false
    /// Bytes of the answer budget this body holds (a large batch answer),
    /// released once it is written.
    var answerBudgetBytes = 0

    init(status: HTTPResponseStatus = .ok, contentType: String? = nil, body: [UInt8] = [], headers: HTTPHeaders = [:]) {
        self.status = status
        self.headers = headers
        self.body = body
        if let contentType { self.headers.replaceOrAdd(name: "content-type", value: contentType) }
    }

    static func json(_ writer: JSONWriter, status: HTTPResponseStatus = .ok) -> Response {
        Response(status: status, contentType: "application/json", body: writer.bytes)
    }

    static let noContent = Response(status: .noContent)

    static func error(_ error: APIError) -> Response {
        if error.status == .noContent {
            // A refusal-path answer that carries no body (a CORS preflight).
            var response = Response(status: .noContent)
            for (name, value) in error.headers { response.headers.add(name: name, value: value) }
            return response
        }
        var w = JSONWriter()
        w.beginObject()
        w.field("success", false)
        w.field("message", error.message)
        w.endObject()
        var response = Response.json(w, status: error.status)
        for (name, value) in error.headers { response.headers.add(name: name, value: value) }
        return response
    }
}

/// A handler's answer: now, later from the blocking-I/O pool, or streamed.
enum Reply {
    case now(Response)
    case later(EventLoopFuture<Response>)
    case stream(ResponseStream)
}

/// A response too large to hold in memory (a backup), produced on the
/// blocking pool: `produce` calls `start` once with the head (a Response
/// whose headers carry Content-Length, body empty), then `send` per chunk.
/// `send` returns once the chunk reached the socket, so memory holds one
/// chunk per stream; a client that reads nothing for the stall timeout is
/// disconnected and `send` throws, ending the production.
///
/// If `produce` throws before `start`, the error is answered as usual; after
/// it, the connection is closed (the client sees a short body).
struct ResponseStream: Sendable {
    var produce: @Sendable (_ start: (Response) throws -> Void, _ send: ([UInt8]) throws -> Void) throws -> Void
}
