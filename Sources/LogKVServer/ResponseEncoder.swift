import NIOCore
import NIOHTTP1

/// Writes a `Response` as HTTP/1.1 bytes, head and body in one buffer (one
/// `writev` per answer, no per-part messages through the pipeline).
///
/// Framing is decided here and only here: every answer that may have a body
/// carries `Content-Length` (none is chunked); 1xx, 204 and 304 answers carry
/// neither length nor body; HEAD answers keep the length of the body they
/// leave out. `Connection: close` is added when the connection ends after
/// the answer, `Connection: keep-alive` for an HTTP/1.0 client that asked.
enum ResponseEncoder {
    /// What the request asked of the answer's framing and encoding.
    struct Framing {
        var version: HTTPVersion
        var keepAlive: Bool
        var isHEAD: Bool
        /// The request's headers (`Accept-Encoding` is read only for an
        /// answer worth compressing).
        var requestHeaders: HTTPHeaders
    }

    static func encode(_ response: Response, _ framing: Framing, extraHeaders: [(String, String)] = [],
                       allocator: ByteBufferAllocator) -> ByteBuffer {
        var response = response
        if let algorithm = ResponseCompression.coding(for: response, framing) {
            // Small enough to compress here (larger ones the handler
            // compressed on the blocking pool already).
            response = ResponseCompression.encoded(response, algorithm)
        }
        let mayHaveBody = Self.mayHaveBody(response.status)
        let body = !mayHaveBody || framing.isHEAD ? [] : response.body
        let headers = response.headers
        var buffer = allocator.buffer(capacity: 160 + headers.count * 40 + body.count)
        writeStatusLine(response.status, version: framing.version, into: &buffer)
        for (name, value) in headers where mayHaveBody || !isFramingHeader(name) {
            write(header: name, value, into: &buffer)
        }
        for (name, value) in extraHeaders { write(header: name, value, into: &buffer) }
        if mayHaveBody && !response.hasContentLength {
            // A HEAD answer gives the length its GET would have.
            buffer.writeStaticString("content-length: ")
            buffer.writeString(String(framing.isHEAD ? response.body.count : body.count))
            buffer.writeStaticString("\r\n")
        }
        if !framing.keepAlive {
            buffer.writeStaticString("connection: close\r\n")
        } else if framing.version.major == 1 && framing.version.minor == 0 {
            buffer.writeStaticString("connection: keep-alive\r\n")
        }
        buffer.writeStaticString("\r\n")
        buffer.writeBytes(body)
        return buffer
    }

    /// The head of a streamed answer (its headers carry `Content-Length`).
    static func encodeHead(_ response: Response, _ framing: Framing, extraHeaders: [(String, String)],
                           allocator: ByteBufferAllocator) -> ByteBuffer {
        var head = response
        head.body = []
        head.hasContentLength = true
        var headFraming = framing
        headFraming.isHEAD = true  // the body follows separately
        return encode(head, headFraming, extraHeaders: extraHeaders, allocator: allocator)
    }

    /// `100 Continue`, sent before a body the client is waiting to send.
    static func continueLine(version: HTTPVersion, allocator: ByteBufferAllocator) -> ByteBuffer {
        var buffer = allocator.buffer(capacity: 32)
        writeStatusLine(.continue, version: version, into: &buffer)
        buffer.writeStaticString("\r\n")
        return buffer
    }

    static func mayHaveBody(_ status: HTTPResponseStatus) -> Bool {
        !(status.code < 200 || status == .noContent || status == .notModified)
    }

    private static func isFramingHeader(_ name: String) -> Bool {
        name.utf8.count == 14 && name.lowercased() == "content-length"
            || name.utf8.count == 17 && name.lowercased() == "transfer-encoding"
    }

    private static func writeStatusLine(_ status: HTTPResponseStatus, version: HTTPVersion, into buffer: inout ByteBuffer) {
        if version.major == 1 && version.minor == 0 {
            buffer.writeStaticString("HTTP/1.0 ")
        } else {
            buffer.writeStaticString("HTTP/1.1 ")
        }
        buffer.writeString(String(status.code))
        buffer.writeStaticString(" ")
        buffer.writeString(status.reasonPhrase)
        buffer.writeStaticString("\r\n")
    }

    /// One header line. A value is never able to split the head: CR, LF and
    /// NUL become spaces (headers echo request values such as `Origin`).
    private static func write(header name: String, _ value: String, into buffer: inout ByteBuffer) {
        buffer.writeString(name)
        buffer.writeStaticString(": ")
        if value.utf8.contains(where: { $0 == 13 || $0 == 10 || $0 == 0 }) {
            buffer.writeBytes(value.utf8.map { $0 == 13 || $0 == 10 || $0 == 0 ? 32 : $0 })
        } else {
            buffer.writeString(value)
        }
        buffer.writeStaticString("\r\n")
    }
}
