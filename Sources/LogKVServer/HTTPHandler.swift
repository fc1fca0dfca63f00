import Foundation
import LogKV
import NIOConcurrencyHelpers
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
    /// Nesting of `channelRead`: writing a response's end makes NIO's
    /// pipelining handler deliver the next buffered request inside that
    /// write, so thousands of pipelined requests answered at once would
    /// nest thousands deep and overflow the stack. Past a few levels the
    /// next request is answered from a fresh event-loop task instead.
    private var depth = 0
    private static let maxDepth = 8
    private let connectionEvents = ConnectionEvents()

    init(api: KVAPI, routes: [Route]) {
        self.api = api
        self.routes = routes
    }

    /// A request held while the connection is not writable: a client that
    /// does not read its answers gets no more work done for it (NIO's
    /// pipelining handler holds every later request meanwhile).
    private var heldUntilWritable: NIOHTTPServerRequestFull?

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable, let held = heldUntilWritable {
            heldUntilWritable = nil
            handle(context: context, held)
        }
        context.fireChannelWritabilityChanged()
    }

    func channelInactive(context: ChannelHandlerContext) {
        heldUntilWritable = nil
        connectionEvents.closed()
        context.fireChannelInactive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let full = unwrapInboundIn(data)
        if !context.channel.isWritable {
            heldUntilWritable = full
            return
        }
        if depth >= Self.maxDepth {
            let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
            context.eventLoop.execute {
                let (handler, context) = loopBound.value
                handler.handle(context: context, full)
            }
            return
        }
        depth += 1
        defer { depth -= 1 }
        handle(context: context, full)
    }

    private func handle(context: ChannelHandlerContext, _ full: NIOHTTPServerRequestFull) {
        // Requests still buffered for a client that has gone are not worth
        // answering (a pipelining client that hangs up must cost nothing).
        guard context.channel.isActive else { return }
        let started = DispatchTime.now().uptimeNanoseconds
        var request = Request(head: full.head, body: full.body, eventLoop: context.eventLoop)
        request.connection = connectionEvents
        let keepAlive = full.head.isKeepAlive
        let version = full.head.version
        var routeLabel = "unmatched"
        let reply: Reply
        switch KVAPI.match(&request, in: routes) {
        case let .failure(error):
            reply = .now(.error(error))
        case let .success(route):
            // Auth and admin access were checked on the head (RequestGuardHandler).
            routeLabel = route.template
            do {
                reply = try route.handler(api, request)
            } catch {
                reply = .now(.error(APIError.from(error)))
            }
        }
        let method = request.method
        let label = routeLabel
        // Headers every answer to this request gets: CORS, and for HEAD
        // (no body to encode) the compressor's leave-alone marker.
        var extraHeaders = api.configuration.corsHeaders(origin: full.head.headers.first(name: "origin"))
        if method == .HEAD { extraHeaders.append((ResponseCompression.identityMarker, "1")) }
        switch reply {
        case var .now(response):
            response.headers.add(contentsOf: extraHeaders)
            write(context: context, response, version: version, keepAlive: keepAlive)
            api.serverMetrics.recordRequest(method: method, route: label, status: response.status,
                                            nanoseconds: DispatchTime.now().uptimeNanoseconds - started)
        case let .later(future):
            future.assumeIsolated().whenComplete { result in
                var response: Response
                switch result {
                case let .success(r): response = r
                case let .failure(error): response = .error(APIError.from(error))
                }
                response.headers.add(contentsOf: extraHeaders)
                self.write(context: context, response, version: version, keepAlive: keepAlive)
                self.api.serverMetrics.recordRequest(method: method, route: label, status: response.status,
                                                     nanoseconds: DispatchTime.now().uptimeNanoseconds - started)
            }
        case let .stream(stream):
            let channel = context.channel
            let metrics = api.serverMetrics
            let stall = api.configuration.streamStallTimeout
            let streams = api.streams
            guard streams.begin(channel) else {
                let busy = Response.error(APIError(.tooManyRequests, "another stream (a backup) is running; retry later",
                                                   headers: [("Retry-After", "5")]))
                write(context: context, busy, version: version, keepAlive: keepAlive)
                return
            }
            api.blockingPool.submit { state in
                defer { streams.end(channel) }
                guard state == .active else {
                    channel.close(promise: nil)
                    return
                }
                let status = Self.runStream(stream, on: channel, version: version, keepAlive: keepAlive, stallTimeout: stall,
                                            extraHeaders: extraHeaders)
                metrics.recordRequest(method: method, route: label, status: status,
                                      nanoseconds: DispatchTime.now().uptimeNanoseconds - started)
            }
        }
    }

    /// Produces a streamed response on the calling (blocking-pool) thread.
    /// Returns the status answered.
    private static func runStream(_ stream: ResponseStream, on channel: Channel, version: HTTPVersion,
                                  keepAlive: Bool, stallTimeout: TimeAmount,
                                  extraHeaders: [(String, String)]) -> HTTPResponseStatus {
        /// Writes one part and waits until it is on the socket, closing the
        /// connection if that takes longer than the stall timeout.
        func send(_ part: HTTPServerResponsePart) throws {
            // A timed wait, never `future.wait()`: if the event loop shuts
            // down meanwhile the future never completes, and this thread
            // must not hold the blocking pool's shutdown forever.
            let done = DispatchSemaphore(value: 0)
            let outcome = NIOLockedValueBox<Result<Void, Error>?>(nil)
            channel.writeAndFlush(part).whenComplete { result in
                outcome.withLockedValue { $0 = result }
                done.signal()
            }
            let seconds = Double(stallTimeout.nanoseconds) / 1e9
            guard done.wait(timeout: .now() + seconds) == .success else {
                channel.close(promise: nil)
                throw ChannelError.ioOnClosedChannel
            }
            try outcome.withLockedValue { $0 }?.get()
        }
        var started = false
        var status = HTTPResponseStatus.ok
        do {
            try stream.produce({ response in
                var headers = response.headers
                headers.add(contentsOf: extraHeaders)
                if !keepAlive { headers.replaceOrAdd(name: "connection", value: "close") }
                status = response.status
                started = true
                try send(.head(HTTPResponseHead(version: version, status: response.status, headers: headers)))
            }, { chunk in
                try send(.body(.byteBuffer(channel.allocator.buffer(bytes: chunk))))
            })
            try send(.end(nil))
            if !keepAlive { channel.close(promise: nil) }
        } catch {
            if started {
                channel.close(promise: nil)
            } else {
                let response = Response.error(APIError.from(error))
                status = response.status
                channel.eventLoop.execute {
                    guard let context = try? channel.pipeline.syncOperations.context(handlerType: HTTPHandler.self) else { return }
                    Self.write(context: context, response, version: version, keepAlive: keepAlive)
                }
            }
        }
        return status
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

}
