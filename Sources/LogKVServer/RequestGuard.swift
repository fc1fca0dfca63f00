import Foundation
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1

/// Bytes of request bodies held in memory across every connection; a
/// request that would go over the budget is refused with 503 instead of
/// being buffered (no number of clients can exhaust memory with uploads).
///
/// Thread-safe.
final class BodyBudget: Sendable {
    let limit: Int
    private let used = NIOLockedValueBox(0)

    init(limit: Int) { self.limit = limit }

    /// Takes `bytes` from the budget; false (taking nothing) if it is spent.
    func reserve(_ bytes: Int) -> Bool {
        used.withLockedValue { used in
            guard used + bytes <= limit else { return false }
            used += bytes
            return true
        }
    }

    func release(_ bytes: Int) {
        guard bytes > 0 else { return }
        used.withLockedValue { $0 -= bytes }
    }

    var inUse: Int { used.withLockedValue { $0 } }
}

/// Everything decided on a request's head, before any of its body is read:
/// `Transfer-Encoding`, `Host`, auth, admin access, the body's size against
/// the per-request limit and the server-wide budget, CORS preflights. A
/// refusal is answered at once and an unwanted body is never read.
///
/// Immutable and `Sendable`: one per listener, shared by its connections
/// (`HTTPConnectionHandler` applies it and owns what it reserves).
struct RequestGuard: Sendable {
    var routes: [Route]
    var token: String?
    var corsOrigins: [String] = []
    var bodyLimit: Int
    var budget: BodyBudget
    /// Names besides loopback ones that a `Host` header may give on an admin
    /// route while no token is set (the listen address, when it is one).
    var adminHosts: [String]
    private let expectedAuthorization: [UInt8]?

    init(routes: [Route], token: String?, corsOrigins: [String] = [], adminHosts: [String] = [],
         bodyLimit: Int, budget: BodyBudget) {
        self.routes = routes
        self.token = token
        self.corsOrigins = corsOrigins
        self.adminHosts = adminHosts.map { $0.lowercased() }
        self.bodyLimit = bodyLimit
        self.budget = budget
        self.expectedAuthorization = token.map { Array($0.utf8) }
    }

    /// The reason to refuse a request on its head alone, or nil. `route` is
    /// the request's match in `routes`; a declared body is reserved from the
    /// budget and added to `reserved` (the caller releases it).
    func check(_ head: HTTPRequestHead, route matched: Result<Route, APIError>, remote: SocketAddress?,
               reserved: inout Int) -> APIError? {
        if let coding = head.headers.first(name: "transfer-encoding"),
           coding.lowercased().trimmingCharacters(in: .whitespaces) != "chunked" {
            return APIError(.notImplemented, "Transfer-Encoding \"\(coding)\" is not supported (only chunked)")
        }
        let hosts = head.headers["host"]
        if head.version.major == 1 && head.version.minor >= 1 && hosts.count != 1 {
            return .badRequest(hosts.isEmpty ? "missing Host header" : "more than one Host header")
        }
        if head.method == .OPTIONS, !corsOrigins.isEmpty, let preflight = corsPreflight(head) {
            return preflight
        }
        let route: Route
        switch matched {
        case let .success(found): route = found
        case let .failure(error):
            // Unknown route or method: answered at once, and a body it
            // came with is never read (nor buffered, nor authenticated).
            return Self.hasBody(head) ? error : nil
        }
        if !route.takesBody && Self.hasBody(head) {
            return .badRequest("\(head.method.rawValue) \(route.template) takes no request body")
        }
        if route.requiresAuth, let expected = expectedAuthorization, !Self.authorized(head.headers, token: expected) {
            return APIError(.unauthorized, "missing or invalid bearer token",
                            headers: [("WWW-Authenticate", "Bearer realm=\"logkv\"")])
        }
        if route.isAdmin && token == nil {
            if !Self.isLoopback(remote) {
                return APIError(.forbidden, "admin routes answer only loopback clients while no token is set (set --token-file or LOGKV_TOKEN)")
            }
            // A loopback peer is not enough: a web page whose name an
            // attacker re-points at 127.0.0.1 (DNS rebinding) reaches this
            // server from the user's browser, with its own name as Host.
            if let host = hosts.first, !isAdminHost(host) {
                return APIError(.forbidden, "admin routes without a token answer only requests addressed to a loopback name or the listen address (Host \"\(host)\")")
            }
        }
        if let refusal = browserWriteRefusal(head, route: route) { return refusal }
        if let length = head.headers.first(name: "content-length") {
            guard let declared = Int(length), declared >= 0 else { return .badRequest("malformed Content-Length") }
            if declared > bodyLimit {
                return APIError(.payloadTooLarge, "request body of \(declared) bytes exceeds the limit of \(bodyLimit) bytes")
            }
            if declared > 0 {
                guard budget.reserve(declared) else { return Self.busy(budget) }
                reserved += declared
            }
        }
        return nil
    }

    /// The reason to refuse a body that has grown to `bodyBytes`, or nil;
    /// reserves from the budget as a chunked body (or one longer than
    /// declared) arrives.
    func checkBody(bodyBytes: Int, reserved: inout Int) -> APIError? {
        if bodyBytes > bodyLimit {
            return APIError(.payloadTooLarge, "request body exceeds the limit of \(bodyLimit) bytes")
        }
        if bodyBytes > reserved {
            let more = max(bodyBytes - reserved, 64 * 1024)
            guard budget.reserve(more) else { return Self.busy(budget) }
            reserved += more
        }
        return nil
    }

    /// A CORS preflight (`OPTIONS` with `Origin` and
    /// `Access-Control-Request-Method`): 204 with what the path allows for an
    /// allowed origin, 403 for another. Answered before auth: browsers send
    /// preflights without credentials.
    private func corsPreflight(_ head: HTTPRequestHead) -> APIError? {
        guard let origin = head.headers.first(name: "origin"),
              head.headers.contains(name: "access-control-request-method") else { return nil }
        guard corsOrigins.contains(where: { $0 == "*" || $0 == origin }) else {
            return APIError(.forbidden, "origin \(origin) is not allowed (see --cors-origins)")
        }
        let path = head.uri.split(separator: "?", maxSplits: 1).first.map(String.init) ?? head.uri
        let methods = routes.filter { KVAPI.matchTemplate($0, path) != nil }.map(\.method.rawValue)
        guard !methods.isEmpty else { return .notFound("no route for \(path)") }
        return APIError(.noContent, "", headers: [
            ("Access-Control-Allow-Origin", origin), ("Vary", "Origin"),
            ("Access-Control-Allow-Methods", methods.joined(separator: ", ")),
            ("Access-Control-Allow-Headers", "Authorization, Content-Type, If-Match, If-None-Match"),
            ("Access-Control-Max-Age", "600"),
        ])
    }

    /// Whether a `Host` header value (a name or address, a port optional)
    /// names this machine's loopback or one of `adminHosts`.
    func isAdminHost(_ value: String) -> Bool {
        let name = Self.hostName(value)
        if name == "localhost" || name.hasSuffix(".localhost") || name == "::1" { return true }
        if let v4 = try? SocketAddress(ipAddress: name, port: 0), Self.isLoopback(v4) { return true }
        return adminHosts.contains(name)
    }

    /// The name in a `Host` value, lowercased, without port or brackets.
    static func hostName(_ value: String) -> String {
        var text = Substring(value.lowercased().trimmingCharacters(in: .whitespaces))
        if text.hasPrefix("[") {
            guard let close = text.firstIndex(of: "]") else { return String(text) }
            return String(text[text.index(after: text.startIndex)..<close])
        }
        if let colon = text.lastIndex(of: ":"), text.firstIndex(of: ":") == colon { text = text[..<colon] }
        if text.hasSuffix(".") { text = text.dropLast() }
        return String(text)
    }

    /// A write a browser could send on a page's behalf without the server's
    /// consent (CSRF, or DNS rebinding with auth off): refused.
    /// - An `Origin` outside `corsOrigins` on anything but a read: browsers
    ///   send `Origin` with every cross-origin (and rebound) write.
    /// - A "simple" content type (a form or text/plain) on a route that
    ///   reads JSON with POST: an HTML form can send those with no preflight.
    ///   Clients send `application/json` (or none).
    private func browserWriteRefusal(_ head: HTTPRequestHead, route: Route) -> APIError? {
        guard head.method != .GET && head.method != .HEAD && head.method != .OPTIONS else { return nil }
        if let origin = head.headers.first(name: "origin"), !corsOrigins.contains(where: { $0 == "*" || $0 == origin }) {
            return APIError(.forbidden, "writes from origin \(origin) are refused (allow it with --cors-origins)")
        }
        if head.method == .POST && route.readsJSON, let type = head.headers.first(name: "content-type") {
            let mediaType = type.split(separator: ";", maxSplits: 1).first.map { $0.trimmingCharacters(in: .whitespaces).lowercased() } ?? ""
            if ["application/x-www-form-urlencoded", "multipart/form-data", "text/plain"].contains(mediaType) {
                return APIError(.unsupportedMediaType, "POST \(route.template) takes Content-Type: application/json, not \(mediaType) (which a web page may send unasked)")
            }
        }
        return nil
    }

    static func busy(_ budget: BodyBudget) -> APIError {
        APIError(.serviceUnavailable, "server is receiving too many request bodies (\(budget.limit) bytes in flight); retry later",
                 headers: [("Retry-After", "1")])
    }

    static func hasBody(_ head: HTTPRequestHead) -> Bool {
        head.headers.contains(name: "transfer-encoding")
            || (head.headers.first(name: "content-length").flatMap(Int.init) ?? 0) > 0
    }

    // MARK: Helpers

    /// `Authorization: Bearer <token>`, the scheme case-insensitive (RFC 9110),
    /// the token compared in constant time.
    static func authorized(_ headers: HTTPHeaders, token: [UInt8]) -> Bool {
        guard let value = headers.first(name: "authorization") else { return false }
        let bytes = Array(value.utf8)
        let scheme = Array("bearer ".utf8)
        guard bytes.count > scheme.count,
              bytes.prefix(scheme.count).map({ $0 | 0x20 }) == scheme.map({ $0 | 0x20 }) else { return false }
        var presented = Array(bytes.dropFirst(scheme.count))
        while presented.first == UInt8(ascii: " ") { presented.removeFirst() }
        return constantTimeEquals(presented, token)
    }

    static func constantTimeEquals(_ a: [UInt8], _ b: [UInt8]) -> Bool {
        guard a.count == b.count else { return false }
        var diff: UInt8 = 0
        for i in 0..<a.count { diff |= a[i] ^ b[i] }
        return diff == 0
    }

    static func isLoopback(_ address: SocketAddress?) -> Bool {
        guard let address else { return false }
        switch address {
        case let .v4(v4):
            return UInt32(bigEndian: v4.address.sin_addr.s_addr) >> 24 == 127
        case let .v6(v6):
            let bytes = withUnsafeBytes(of: v6.address.sin6_addr) { Array($0) }
            if bytes == [UInt8](repeating: 0, count: 15) + [1] { return true }
            // IPv4-mapped 127.0.0.0/8
            return bytes.prefix(10).allSatisfy { $0 == 0 } && bytes[10] == 0xFF && bytes[11] == 0xFF && bytes[12] == 127
        case .unixDomainSocket:
            return true
        }
    }
}
