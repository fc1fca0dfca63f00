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
/// `Host`, auth, admin access, `Expect`, the body's size against the per
/// request limit and the server-wide budget; plus the connection's clocks.
///
/// - A keep-alive connection must send its next request head within
///   `idleTimeout` of the last response (slowloris and idle sockets close).
/// - A request's body must arrive within `requestTimeout` of its head (408).
/// - A refusal is a JSON error and the connection closes, so an unwanted
///   body is never read.
///
/// Runs on its channel's event loop only. Sits after NIO's pipelining
/// handler, so it sees one request at a time.
final class RequestGuardHandler: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias InboundOut = HTTPServerRequestPart
    typealias OutboundIn = HTTPServerResponsePart
    typealias OutboundOut = HTTPServerResponsePart

    struct Settings: Sendable {
        var routes: [Route]
        var token: String?
        var corsOrigins: [String] = []
        var bodyLimit: Int
        var budget: BodyBudget
        var idleTimeout: TimeAmount
        var requestTimeout: TimeAmount
    }

    private let settings: Settings
    private let expectedAuthorization: [UInt8]?
    /// Discarding the rest of a refused request (the connection is closing).
    private var refusing = false
    /// Discarding the rest (an empty body) of a request refused on a
    /// connection that stays open.
    private var skippingToEnd = false
    private var inRequest = false
    private var bodyBytes = 0
    private var reserved = 0
    /// The connection's one clock: what happens once `deadline.at` passes
    /// (nil: no clock runs, e.g. while the engine works on a request). A
    /// per-connection ticker checks it, so a request only writes a time
    /// instead of scheduling and cancelling timers; a timeout is acted on
    /// at most a quarter of the shorter timeout late.
    private enum Expiry { case idle, body(HTTPVersion) }
    private var deadline: (at: NIODeadline, then: Expiry)?
    private var tick: Scheduled<Void>?

    init(settings: Settings) {
        self.settings = settings
        self.expectedAuthorization = settings.token.map { Array($0.utf8) }
    }

    // MARK: Clocks

    func handlerAdded(context: ChannelHandlerContext) {
        if context.channel.isActive { armIdleTimer(context) }
    }

    func channelActive(context: ChannelHandlerContext) {
        armIdleTimer(context)
        context.fireChannelActive()
    }

    func channelInactive(context: ChannelHandlerContext) {
        stopClock()
        releaseBudget()
        context.fireChannelInactive()
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        stopClock()
        releaseBudget()
    }

    private func stopClock() {
        tick?.cancel()
        tick = nil
        deadline = nil
    }

    private func armIdleTimer(_ context: ChannelHandlerContext) {
        // Idle between requests, or a head that never completed.
        deadline = (.now() + settings.idleTimeout, .idle)
        startTicker(context)
    }

    private func armRequestTimer(_ context: ChannelHandlerContext, version: HTTPVersion) {
        deadline = (.now() + settings.requestTimeout, .body(version))
        startTicker(context)
    }

    /// Schedules the next check unless one is pending; each check schedules
    /// the next while the connection lives (not a `RepeatedTask`, which
    /// reschedules itself even on a loop that is shutting down).
    private func startTicker(_ context: ChannelHandlerContext) {
        guard tick == nil, context.channel.isActive else { return }
        let shorter = min(settings.idleTimeout, settings.requestTimeout).nanoseconds
        let period = TimeAmount.nanoseconds(max(10_000_000, shorter / 4))
        let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        tick = context.eventLoop.scheduleTask(in: period) {
            let (handler, context) = loopBound.value
            handler.tick = nil
            handler.checkDeadline(context)
            if handler.deadline != nil { handler.startTicker(context) }
        }
    }

    private func checkDeadline(_ context: ChannelHandlerContext) {
        guard let deadline, NIODeadline.now() >= deadline.at else { return }
        self.deadline = nil
        switch deadline.then {
        case .idle:
            context.close(promise: nil)
        case let .body(version):
            let seconds = settings.requestTimeout.nanoseconds / 1_000_000_000
            refuse(context, APIError(.requestTimeout, "request body not received within \(seconds) s"), version: version)
        }
    }

    private func releaseBudget() {
        settings.budget.release(reserved)
        reserved = 0
    }

    // MARK: Inbound

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let part = unwrapInboundIn(data)
        switch part {
        case let .head(head):
            refusing = false
            skippingToEnd = false
            inRequest = true
            bodyBytes = 0
            armRequestTimer(context, version: head.version)
            if let error = check(head, context: context) {
                // Without a body to skip, the connection can stay open.
                refuse(context, error, version: head.version, keepAlive: head.isKeepAlive && !Self.hasBody(head))
                return
            }
            if let expect = head.headers.first(name: "expect") {
                guard expect.lowercased() == "100-continue" else {
                    refuse(context, APIError(.expectationFailed, "unsupported expectation \"\(expect)\""), version: head.version)
                    return
                }
                // Everything on the head is acceptable: ask for the body.
                let interim = HTTPResponseHead(version: head.version, status: .continue)
                context.writeAndFlush(wrapOutboundOut(.head(interim)), promise: nil)
            }
            context.fireChannelRead(data)
        case let .body(buffer):
            guard !refusing && !skippingToEnd else { return }
            bodyBytes += buffer.readableBytes
            if bodyBytes > settings.bodyLimit {
                refuse(context, APIError(.payloadTooLarge, "request body exceeds the limit of \(settings.bodyLimit) bytes"),
                       version: .http1_1)
                return
            }
            if bodyBytes > reserved {
                // A chunked body (or one longer than declared): reserve as it comes.
                let more = max(bodyBytes - reserved, 64 * 1024)
                guard settings.budget.reserve(more) else {
                    refuse(context, Self.busy(settings.budget), version: .http1_1)
                    return
                }
                reserved += more
            }
            context.fireChannelRead(data)
        case .end:
            if skippingToEnd {
                skippingToEnd = false
                armIdleTimer(context)
                return
            }
            guard !refusing else { return }
            // The whole request is in; the response may take as long as the
            // engine needs (an fsync), so no clock runs until it is written.
            deadline = nil
            context.fireChannelRead(data)
        }
    }

    /// The reason to refuse a request on its head alone, or nil.
    private func check(_ head: HTTPRequestHead, context: ChannelHandlerContext) -> APIError? {
        if let coding = head.headers.first(name: "transfer-encoding"),
           coding.lowercased().trimmingCharacters(in: .whitespaces) != "chunked" {
            return APIError(.notImplemented, "Transfer-Encoding \"\(coding)\" is not supported (only chunked)")
        }
        let hosts = head.headers["host"]
        if head.version.major == 1 && head.version.minor >= 1 && hosts.count != 1 {
            return .badRequest(hosts.isEmpty ? "missing Host header" : "more than one Host header")
        }
        if head.method == .OPTIONS, !settings.corsOrigins.isEmpty, let preflight = corsPreflight(head) {
            return preflight
        }
        var request = Request(head: head, body: nil, eventLoop: context.eventLoop)
        let route: Route
        switch KVAPI.match(&request, in: settings.routes) {
        case let .success(matched): route = matched
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
        if route.isAdmin && settings.token == nil && !Self.isLoopback(context.channel.remoteAddress) {
            return APIError(.forbidden, "admin routes answer only loopback clients while no token is set (set --token-file or LOGKV_TOKEN)")
        }
        if let length = head.headers.first(name: "content-length") {
            guard let declared = Int(length), declared >= 0 else { return .badRequest("malformed Content-Length") }
            if declared > settings.bodyLimit {
                return APIError(.payloadTooLarge, "request body of \(declared) bytes exceeds the limit of \(settings.bodyLimit) bytes")
            }
            if declared > 0 {
                guard settings.budget.reserve(declared) else { return Self.busy(settings.budget) }
                reserved += declared
            }
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
        guard settings.corsOrigins.contains(where: { $0 == "*" || $0 == origin }) else {
            return APIError(.forbidden, "origin \(origin) is not allowed (see --cors-origins)")
        }
        let path = head.uri.split(separator: "?", maxSplits: 1).first.map(String.init) ?? head.uri
        let methods = settings.routes.filter { KVAPI.matchTemplate($0, path) != nil }.map(\.method.rawValue)
        guard !methods.isEmpty else { return .notFound("no route for \(path)") }
        return APIError(.noContent, "", headers: [
            ("Access-Control-Allow-Origin", origin), ("Vary", "Origin"),
            ("Access-Control-Allow-Methods", methods.joined(separator: ", ")),
            ("Access-Control-Allow-Headers", "Authorization, Content-Type, If-Match, If-None-Match"),
            ("Access-Control-Max-Age", "600"),
        ])
    }

    static func busy(_ budget: BodyBudget) -> APIError {
        APIError(.serviceUnavailable, "server is receiving too many request bodies (\(budget.limit) bytes in flight); retry later",
                 headers: [("Retry-After", "1")])
    }

    /// Answers `error` and closes the connection; the rest of the request
    /// is discarded unread.
    private func refuse(_ context: ChannelHandlerContext, _ error: APIError, version: HTTPVersion, keepAlive: Bool = false) {
        refusing = true
        deadline = nil
        releaseBudget()
        HTTPHandler.write(context: context, .error(error), version: version, keepAlive: keepAlive)
        if keepAlive {
            refusing = false
            skippingToEnd = true
        }
    }

    static func hasBody(_ head: HTTPRequestHead) -> Bool {
        head.headers.contains(name: "transfer-encoding")
            || (head.headers.first(name: "content-length").flatMap(Int.init) ?? 0) > 0
    }

    // MARK: Outbound

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        if case .end = unwrapOutboundIn(data) {
            inRequest = false
            releaseBudget()
            if !refusing { armIdleTimer(context) }
        }
        context.write(data, promise: promise)
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
