import Foundation
import LogKV
import NIOCore
import NIOHTTP1

/// The last handler of the pipeline: one aggregated request in, one
/// response out. Routing, auth and error mapping happen here; the work is
/// done by `KVAPI`.
///
/// Runs on its channel's event loop only. Pipelined requests are answered in
/// order because NIO's pipelining handler holds back the next request until
/// this one's response is written.
final class HTTPHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = NIOHTTPServerRequestFull
    typealias OutboundOut = HTTPServerResponsePart

    private let api: KVAPI
    private let routes: [Route]
    private let expectedAuthorization: [UInt8]?

    init(api: KVAPI, routes: [Route]) {
        self.api = api
        self.routes = routes
        self.expectedAuthorization = api.configuration.token.map { Array("Bearer \($0)".utf8) }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let full = unwrapInboundIn(data)
        let started = DispatchTime.now().uptimeNanoseconds
        var request = Request(head: full.head, body: full.body, eventLoop: context.eventLoop)
        let keepAlive = full.head.isKeepAlive
        let version = full.head.version
        var routeLabel = "unmatched"
        let reply: Reply
        switch KVAPI.match(&request, in: routes) {
        case let .failure(error):
            reply = .now(.error(error))
        case let .success(route):
            routeLabel = route.template
            if route.requiresAuth, let expected = expectedAuthorization,
               !Self.constantTimeEquals(request.headers.first(name: "authorization").map { Array($0.utf8) } ?? [], expected) {
                reply = .now(.error(APIError(.unauthorized, "missing or invalid bearer token",
                                             headers: [("WWW-Authenticate", "Bearer realm=\"logkv\"")])))
            } else {
                do {
                    reply = try route.handler(api, request)
                } catch {
                    reply = .now(.error(APIError.from(error)))
                }
            }
        }
        let method = request.method
        let label = routeLabel
        switch reply {
        case let .now(response):
            write(context: context, response, version: version, keepAlive: keepAlive)
            api.serverMetrics.recordRequest(method: method, route: label, status: response.status,
                                            nanoseconds: DispatchTime.now().uptimeNanoseconds - started)
        case let .later(future):
            future.assumeIsolated().whenComplete { result in
                let response: Response
                switch result {
                case let .success(r): response = r
                case let .failure(error): response = .error(APIError.from(error))
                }
                self.write(context: context, response, version: version, keepAlive: keepAlive)
                self.api.serverMetrics.recordRequest(method: method, route: label, status: response.status,
                                                     nanoseconds: DispatchTime.now().uptimeNanoseconds - started)
            }
        }
    }

    private func write(context: ChannelHandlerContext, _ response: Response, version: HTTPVersion, keepAlive: Bool) {
        Self.write(context: context, response, version: version, keepAlive: keepAlive)
    }

    /// Writes one response (head, body, end); closes the connection after it
    /// unless `keepAlive`. Shared by every handler that answers.
    static func write(context: ChannelHandlerContext, _ response: Response, version: HTTPVersion, keepAlive: Bool) {
        var headers = response.headers
        if !response.hasContentLength {
            headers.add(name: "content-length", value: String(response.body.count))
        }
        if !keepAlive { headers.replaceOrAdd(name: "connection", value: "close") }
        let head = HTTPResponseHead(version: version, status: response.status, headers: headers)
        context.write(NIOAny(HTTPServerResponsePart.head(head)), promise: nil)
        if !response.body.isEmpty {
            var buffer = context.channel.allocator.buffer(capacity: response.body.count)
            buffer.writeBytes(response.body)
            context.write(NIOAny(HTTPServerResponsePart.body(.byteBuffer(buffer))), promise: nil)
        }
        if keepAlive {
            context.writeAndFlush(NIOAny(HTTPServerResponsePart.end(nil)), promise: nil)
        } else {
            context.writeAndFlush(NIOAny(HTTPServerResponsePart.end(nil))).assumeIsolated().whenComplete { _ in
                context.close(promise: nil)
            }
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        context.close(promise: nil)
    }

    static func constantTimeEquals(_ a: [UInt8], _ b: [UInt8]) -> Bool {
        guard a.count == b.count else { return false }
        var diff: UInt8 = 0
        for i in 0..<a.count { diff |= a[i] ^ b[i] }
        return diff == 0
    }
}


/// Answers a request whose declared body is over the limit with a JSON 413
/// before the aggregator buffers any of it, then closes the connection.
final class BodyLimitHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias InboundOut = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    let limit: Int
    private var rejecting = false

    init(limit: Int) { self.limit = limit }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let part = unwrapInboundIn(data)
        if case let .head(head) = part {
            rejecting = false
            if let length = head.headers.first(name: "content-length").flatMap(Int.init), length > limit {
                rejecting = true
                let error = APIError(.payloadTooLarge, "request body of \(length) bytes exceeds the limit of \(limit) bytes")
                HTTPHandler.write(context: context, .error(error), version: head.version, keepAlive: false)
                return
            }
        }
        if rejecting { return }
        context.fireChannelRead(data)
    }
}
