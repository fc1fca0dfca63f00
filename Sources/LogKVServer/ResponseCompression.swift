import NIOHTTP1
import NIOHTTPCompression

/// gzip (or deflate) for JSON and metrics responses of at least
/// `minimumBytes`, when the client's `Accept-Encoding` allows it
/// (swift-nio-extras' `HTTPResponseCompressor`). Raw values
/// (`application/octet-stream`), backups and small answers go as they are;
/// a response marked `identityMarker` (HEAD answers, which carry no body)
/// is never touched.
enum ResponseCompression {
    static let minimumBytes = 1024
    /// Set by the handler on responses that must not be encoded; removed here.
    static let identityMarker = "x-logkv-identity"
    static let compressedTypes = ["application/json", "text/plain"]

    static func handler() -> HTTPResponseCompressor {
        HTTPResponseCompressor(initialByteBufferCapacity: 4096) { head, supported in
            if head.headers.contains(name: identityMarker) {
                head.headers.remove(name: identityMarker)
                return .doNotCompress
            }
            guard supported,
                  let type = head.headers.first(name: "content-type"),
                  compressedTypes.contains(where: { type.hasPrefix($0) }),
                  let length = head.headers.first(name: "content-length").flatMap(Int.init),
                  length >= minimumBytes else { return .doNotCompress }
            return .compressIfPossible
        }
    }
}
