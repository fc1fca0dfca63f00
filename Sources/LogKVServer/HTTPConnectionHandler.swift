import Foundation
import LogKV
import NIOCore
import NIOHTTP1

/// One HTTP/1.1 connection, from NIO's request parser to the bytes of the
/// answers: the guard on each head, body aggregation, routing, the answer's
/// encoding, pipelining order and the connection's clocks, in one handler
/// (a handler per concern cost a third of the server's throughput: every
/// request part and response part crossed several of them as boxed
/// messages). The work is done by `KVAPI`.
///
/// Requests are answered strictly in order, one at a time:
/// - while an answer is under way (from the blocking pool, a held blocking
///   query, a stream), or while the client is not taking its answers (the
///   channel is not writable), later request parts are queued and the
///   socket is not read again, so a pipelining client is held to what one
///   read brought in;
/// - answers written while handling a read are flushed once, when the read
///   is done.
///
/// Clocks: a keep-alive connection must send its next request head within
/// `idleTimeout` of the last answer (slowloris and idle sockets close); a
/// request's body must arrive within `requestTimeout` of its head (408). No
/// clock runs while the engine works on a request (an fsync may take long).
///
/// A refusal (`RequestGuard`, a parse error, a body over a limit) is a JSON
/// error; the connection closes unless nothing of the request is left
/// unread.
///
/// Runs on its channel's event loop only.
final class HTTPConnectionHandler: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    struct Settings: Sendable {
        var requestGuard: RequestGuard
        var idleTimeout: TimeAmount
        var requestTimeout: TimeAmount
        /// A connection admitted past the cap (`ConnectionCounter`): it may
        /// ask for `/health` or `/metrics` once, and anything else is 503.
        var probesOnly = false
    }

    private let api: KVAPI
    private let settings: Settings

    /// What reached the handler, in order: request parts, or the parser's
    /// refusal of the bytes after them.
    private enum Inbound {
        case part(HTTPServerRequestPart)
        case malformed(APIError)
    }

    /// A request whose head was accepted and whose body is arriving.
    private struct Incoming {
        var head: HTTPRequestHead
        var request: Request
        var route: Result<Route, APIError>
        var body: ByteBuffer?
        var bodyBytes = 0
    }

    private var queue = CircularBuffer<Inbound>(initialCapacity: 4)
    private var incoming: Incoming?
    /// An answer is under way: input waits in `queue`.
    private var answering = false
    /// The rest of a refused request is dropped: up to its end (the
    /// connection stays open), or everything (it is closing).
    private var skippingToEnd = false
    private var closing = false
    /// Graceful shutdown: close after the answer under way.
    private var quiescing = false
    /// A `read()` held back while input is queued.
    private var readPending = false
    private var needsFlush = false
    /// Whether `channelRead` is on the stack (writes then wait for
    /// `channelReadComplete`'s flush).
    private var inRead = false
    /// Whether `drain` is on the stack: an answer completed inline (an
    /// already fulfilled future) leaves the queue to that loop instead of
    /// nesting a drain per queued request.
    private var draining = false
    /// Request-body bytes reserved from the server-wide budget.
    private var reserved = 0
    /// A streamed answer waiting for room in the answer budget: cancelled
    /// when the connection closes, so the value it holds open goes too.
    private var budgetWaiter: Int?
    private let connectionEvents = ConnectionEvents()

    /// The connection's one clock: what happens once `deadline.at` passes
    /// (nil: no clock runs). A per-connection ticker checks it, so a request
    /// only writes a time instead of scheduling and cancelling timers; a
    /// timeout is acted on at most a quarter of the shorter timeout late.
    private enum Expiry { case idle, body(HTTPRequestHead) }
    private var deadline: (at: NIODeadline, then: Expiry)?
    private var tick: Scheduled<Void>?
    /// Answer bytes still unsent when the idle clock last ran out: a client
    /// still taking a large answer, however slowly, is not idle.
    private var unsentAtLastIdleCheck: Int?

    init(api: KVAPI, settings: Settings) {
        self.api = api
        self.settings = settings
    }

    // MARK: Lifecycle

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
        if let waiter = budgetWaiter {
            api.answerBudget.cancel(waiter)
            budgetWaiter = nil
        }
        queue.removeAll()
        incoming = nil
        closing = true
        connectionEvents.closed()
        context.fireChannelInactive()
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        stopClock()
        releaseBudget()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is ChannelShouldQuiesceEvent {
            quiescing = true
            if !answering && incoming == nil && queue.isEmpty {
                close(context, after: nil)  // once the answers already written are out
            }
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        guard let parserError = error as? HTTPParserError else {
            context.close(promise: nil)
            return
        }
        let status: HTTPResponseStatus = parserError == .headerOverflow ? .requestHeaderFieldsTooLarge : .badRequest
        receive(context, .malformed(APIError(status, "malformed HTTP request: \(parserError)")))
    }

    // MARK: Reading

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        inRead = true
        receive(context, .part(unwrapInboundIn(data)))
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        inRead = false
        flushIfNeeded(context)
        context.fireChannelReadComplete()
    }

    /// Input waits (and the socket is not read) while an answer is under
    /// way and while the client is not taking its answers: no answer, not
    /// even a refusal, is produced for a client that takes none (the idle
    /// clock, armed by the last answer, closes it if it never does).
    private func inputMustWait(_ context: ChannelHandlerContext) -> Bool {
        answering || !context.channel.isWritable
    }

    /// Holds the socket's next read while input waits: a client is never
    /// read ahead of the answers it has not taken.
    func read(context: ChannelHandlerContext) {
        if closing || inputMustWait(context) || !queue.isEmpty {
            readPending = true
        } else {
            context.read()
        }
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable { drain(context) }
        context.fireChannelWritabilityChanged()
    }

    private func receive(_ context: ChannelHandlerContext, _ inbound: Inbound) {
        guard !closing else { return }
        if inputMustWait(context) || !queue.isEmpty {
            queue.append(inbound)
            return
        }
        process(context, inbound)
    }

    /// Handles queued input once an answer is done, until the next answer
    /// goes asynchronous; then lets the socket be read again.
    private func drain(_ context: ChannelHandlerContext) {
        guard !draining else { return }
        draining = true
        while !inputMustWait(context) && !closing, let next = queue.popFirst() {
            process(context, next)
        }
        draining = false
        if !inRead { flushIfNeeded(context) }
        if readPending && !inputMustWait(context) && queue.isEmpty && !closing {
            readPending = false
            context.read()
        }
    }

    private func process(_ context: ChannelHandlerContext, _ inbound: Inbound) {
        switch inbound {
        case let .malformed(error):
            refuse(context, error, to: incoming?.head, keepAlive: false)
        case let .part(.head(head)):
            skippingToEnd = false
            armRequestTimer(context, head: head)
            var request = Request(head: head, body: nil, eventLoop: context.eventLoop)
            let route = KVAPI.match(&request, in: settings.requestGuard.routes)
            if settings.probesOnly, (try? route.get())?.isProbe != true {
                refuse(context, APIError(.serviceUnavailable, "too many connections (limit \(api.configuration.maxConnections)); retry later",
                                         headers: [("Retry-After", "1")]), to: head, route: route, keepAlive: false)
                return
            }
            if let error = settings.requestGuard.check(head, route: route, remote: context.channel.remoteAddress,
                                                      reserved: &reserved) {
                // Without a body to skip, the connection can stay open.
                refuse(context, error, to: head, route: route, keepAlive: head.isKeepAlive && !RequestGuard.hasBody(head))
                return
            }
            if let expect = head.headers.first(name: "expect") {
                guard expect.lowercased() == "100-continue" else {
                    refuse(context, APIError(.expectationFailed, "unsupported expectation \"\(expect)\""),
                           to: head, route: route, keepAlive: false)
                    return
                }
                // Everything on the head is acceptable: ask for the body
                // (HTTP/1.0 has no interim answers).
                if head.version.major == 1 && head.version.minor >= 1 { context.writeAndFlush(wrapOutboundOut(ResponseEncoder.continueLine(
                    version: head.version, allocator: context.channel.allocator)), promise: nil) }
            }
            incoming = Incoming(head: head, request: request, route: route)
        case var .part(.body(buffer)):
            guard !skippingToEnd, var current = incoming else { return }
            incoming = nil  // appended to without a copy
            current.bodyBytes += buffer.readableBytes
            if let error = settings.requestGuard.checkBody(bodyBytes: current.bodyBytes, reserved: &reserved) {
                refuse(context, error, to: current.head, route: current.route, keepAlive: false)
                return
            }
            if current.body == nil {
                current.body = buffer
            } else {
                current.body!.writeBuffer(&buffer)
            }
            incoming = current
        case .part(.end):
            if skippingToEnd {
                skippingToEnd = false
                armIdleTimer(context)
                return
            }
            guard var current = incoming else { return }
            incoming = nil
            // The whole request is in; the answer may take as long as the
            // engine needs (an fsync), so no clock runs until it is written.
            deadline = nil
            current.request.body = current.body
            dispatch(context, current)
        }
    }

    // MARK: Answering

    private func dispatch(_ context: ChannelHandlerContext, _ full: Incoming) {
        // Requests still queued for a client that has gone are not worth
        // answering (a pipelining client that hangs up must cost nothing).
        guard context.channel.isActive else { return }
        deadline = nil
        let started = DispatchTime.now().uptimeNanoseconds
        var request = full.request
        request.connection = connectionEvents
        let head = full.head
        let framing = ResponseEncoder.Framing(version: head.version, keepAlive: head.isKeepAlive && !settings.probesOnly,
                                              isHEAD: head.method == .HEAD,
                                              requestHeaders: head.headers)
        let record = RequestRecord(metrics: api.serverMetrics, route: try? full.route.get(), method: head.method,
                                   started: started)
        let reply: Reply
        switch full.route {
        case let .failure(error):
            reply = .now(.error(error))
        case let .success(route):
            // Auth and admin access were checked on the head.
            do {
                reply = try route.handler(api, request)
            } catch {
                reply = .now(.error(APIError.from(error)))
            }
        }
        let extraHeaders = api.configuration.corsOrigins.isEmpty
            ? [] : api.configuration.corsHeaders(origin: head.headers.first(name: "origin"))
        switch reply {
        case let .now(response):
            answer(context, response, framing, extraHeaders: extraHeaders)
            record(response.status)
        case let .later(future):
            answering = true
            future.assumeIsolated().whenComplete { result in
                let response: Response
                switch result {
                case let .success(r): response = r
                case let .failure(error): response = .error(APIError.from(error))
                }
                self.answering = false
                self.answer(context, response, framing, extraHeaders: extraHeaders)
                record(response.status)
                self.drain(context)
            }
        case let .stream(stream):
            let streams = api.streams
            guard streams.begin(context.channel) else {
                let busy = Response.error(APIError(.tooManyRequests, "another stream (a backup) is running; retry later",
                                                   headers: [("Retry-After", "5")]))
                answer(context, busy, framing, extraHeaders: extraHeaders)
                record(busy.status)
                return
            }
            answering = true
            let streaming = ResponseStreaming(channel: context.channel, framing: framing, extraHeaders: extraHeaders,
                                              stallTimeout: api.configuration.streamStallTimeout)
            let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
            api.blockingPool.submit { state in
                let outcome: ResponseStreaming.Outcome = state == .active ? streaming.run(stream) : .broken
                streams.end(streaming.channel)
                streaming.channel.eventLoop.execute {
                    let (handler, context) = loopBound.value
                    handler.answering = false
                    switch outcome {
                    case let .sent(status):
                        record(status)
                        handler.answered(context, keepAlive: framing.keepAlive)
                    case let .failedBeforeStart(response):
                        handler.answer(context, response, framing, extraHeaders: extraHeaders)
                        record(response.status)
                    case .broken:
                        handler.closing = true
                        context.close(promise: nil)
                    }
                    handler.drain(context)
                }
            }
        }
    }

    /// Writes one answer, then readies the connection for the next request
    /// (or closes it once the answer is out).
    private func answer(_ context: ChannelHandlerContext, _ response: Response, _ framing: ResponseEncoder.Framing,
                        extraHeaders: [(String, String)]) {
        let budgetBytes = response.answerBudgetBytes
        guard !closing else {  // the client has gone
            api.answerBudget.release(budgetBytes)
            return
        }
        var framing = framing
        if quiescing { framing.keepAlive = false }
        if response.body.count > ResponseCompression.maximumOnEventLoop,
           let algorithm = ResponseCompression.coding(for: response, framing) {
            // Compressing a large answer takes milliseconds: on the pool.
            answering = true
            let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
            api.blockingPool.runIfActive(eventLoop: context.eventLoop) { ResponseCompression.encoded(response, algorithm) }
                .assumeIsolated().whenComplete { result in
                    let (handler, context) = loopBound.value
                    var settled = response
                    settled.codingDecided = true
                    if case let .success(encoded) = result { settled = encoded }
                    handler.answering = false
                    handler.answer(context, settled, framing, extraHeaders: extraHeaders)
                    handler.drain(context)
                }
            return
        }
        if let source = response.bodySource, !framing.isHEAD, ResponseEncoder.mayHaveBody(response.status) {
            context.write(wrapOutboundOut(ResponseEncoder.encodeHead(response, framing, extraHeaders: extraHeaders,
                                                                     allocator: context.channel.allocator)), promise: nil)
            needsFlush = true
            flushIfNeeded(context)
            answering = true
            sendPiece(context, of: source, sent: 0, keepAlive: framing.keepAlive)
            return
        }
        let bytes = ResponseEncoder.encode(response, framing, extraHeaders: extraHeaders, allocator: context.channel.allocator)
        var written: EventLoopPromise<Void>?
        if budgetBytes > 0 {
            let budget = api.answerBudget
            written = context.eventLoop.makePromise()
            written!.futureResult.whenComplete { _ in budget.release(budgetBytes) }
        }
        if framing.keepAlive {
            context.write(wrapOutboundOut(bytes), promise: written)
            needsFlush = true
            answered(context, keepAlive: true)
        } else {
            close(context, after: bytes, written: written)
        }
    }

    /// Streams `source` after its head: a piece is reserved from the answer
    /// budget, pulled on the blocking pool, written, and only once it is on
    /// the socket is the next one pulled. No thread waits on the client; a
    /// client that takes nothing for the stall timeout is disconnected.
    private func sendPiece(_ context: ChannelHandlerContext, of source: BodySource, sent: Int, keepAlive: Bool) {
        guard !closing, context.channel.isActive else { return }
        if sent >= source.length {
            answering = false
            answered(context, keepAlive: keepAlive)
            drain(context)
            return
        }
        let api = self.api
        let budget = api.answerBudget
        let reservation = AnswerBudget.pieceSize
        let stallTimeout = api.configuration.streamStallTimeout
        let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        budgetWaiter = budget.reserve(reservation, on: context.eventLoop) {
            let (handler, context) = loopBound.value
            handler.budgetWaiter = nil
            guard !handler.closing, context.channel.isActive else {
                budget.release(reservation)
                return
            }
            api.blockingPool.runIfActive(eventLoop: context.eventLoop) { try source.next() }
                .assumeIsolated().whenComplete { result in
                    let (handler, context) = loopBound.value
                    guard case let .success(piece) = result, !piece.isEmpty, piece.count <= reservation,
                          sent + piece.count <= source.length, !handler.closing, context.channel.isActive else {
                        // A read that failed after the head was sent (the
                        // client sees a short body) or a client that left.
                        budget.release(reservation)
                        handler.breakStream(context)
                        return
                    }
                    let channel = context.channel
                    let stall = context.eventLoop.scheduleTask(in: stallTimeout) { channel.close(promise: nil) }
                    let buffer = context.channel.allocator.buffer(bytes: piece)
                    context.writeAndFlush(handler.wrapOutboundOut(buffer)).assumeIsolated().whenComplete { written in
                        stall.cancel()
                        budget.release(reservation)
                        let (handler, context) = loopBound.value
                        switch written {
                        case .success: handler.sendPiece(context, of: source, sent: sent + piece.count, keepAlive: keepAlive)
                        case .failure: handler.breakStream(context)
                        }
                    }
                }
        }
    }

    private func breakStream(_ context: ChannelHandlerContext) {
        answering = false
        guard !closing else { return }
        closing = true
        queue.removeAll()
        context.close(promise: nil)
    }

    /// An answer is out (or queued for the socket): wait for the next
    /// request, or close.
    private func answered(_ context: ChannelHandlerContext, keepAlive: Bool) {
        releaseBudget()
        if keepAlive && !quiescing {
            armIdleTimer(context)
        } else {
            close(context, after: nil)
        }
    }

    /// Closes the connection once `last` (and every answer before it) is
    /// written; input still queued is dropped.
    private func close(_ context: ChannelHandlerContext, after last: ByteBuffer?, written: EventLoopPromise<Void>? = nil) {
        guard !closing else {
            written?.fail(ChannelError.ioOnClosedChannel)
            return
        }
        closing = true
        releaseBudget()
        queue.removeAll()
        // A client that takes nothing more cannot keep the connection (and
        // its slot) open: the close is forced after the idle timeout.
        deadline = (.now() + settings.idleTimeout, .idle)
        unsentAtLastIdleCheck = nil
        startTicker(context)
        needsFlush = false
        let flushed = context.writeAndFlush(wrapOutboundOut(last ?? context.channel.allocator.buffer(capacity: 0)))
        flushed.cascade(to: written)
        flushed.assumeIsolated().whenComplete { _ in context.close(promise: nil) }
    }

    /// Answers `error`; the connection closes unless `keepAlive` (nothing of
    /// the request is left but its end).
    /// Counted in the request metrics under its route (when one matched).
    private func refuse(_ context: ChannelHandlerContext, _ error: APIError, to head: HTTPRequestHead?,
                        route: Result<Route, APIError>? = nil, keepAlive: Bool) {
        incoming = nil
        deadline = nil
        api.serverMetrics.recordRequest(try? route?.get(), method: head?.method ?? .GET, status: error.status, nanoseconds: 0)
        let framing = ResponseEncoder.Framing(version: head?.version ?? .http1_1, keepAlive: keepAlive,
                                              isHEAD: head?.method == .HEAD, requestHeaders: [:])
        answer(context, .error(error), framing, extraHeaders: [])
        if !closing { skippingToEnd = true }
    }

    private func flushIfNeeded(_ context: ChannelHandlerContext) {
        if needsFlush {
            needsFlush = false
            context.flush()
        }
    }

    private func releaseBudget() {
        settings.requestGuard.budget.release(reserved)
        reserved = 0
    }

    // MARK: Clocks

    private func stopClock() {
        tick?.cancel()
        tick = nil
        deadline = nil
    }

    private func armIdleTimer(_ context: ChannelHandlerContext) {
        // Idle between requests, or a head that never completed.
        deadline = (.now() + settings.idleTimeout, .idle)
        unsentAtLastIdleCheck = nil
        startTicker(context)
    }

    private func armRequestTimer(_ context: ChannelHandlerContext, head: HTTPRequestHead) {
        deadline = (.now() + settings.requestTimeout, .body(head))
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
            let unsent = (try? context.channel.syncOptions?.getOption(.bufferedWritableBytes)) ?? 0
            if unsent > 0 && unsent < (unsentAtLastIdleCheck ?? .max) {
                // Still taking its answers: not idle.
                unsentAtLastIdleCheck = unsent
                self.deadline = (.now() + settings.idleTimeout, .idle)
                return
            }
            closing = true
            context.close(promise: nil)
        case let .body(head):
            let seconds = settings.requestTimeout.nanoseconds / 1_000_000_000
            refuse(context, APIError(.requestTimeout, "request body not received within \(seconds) s"),
                   to: head, route: incoming?.route, keepAlive: false)
        }
    }
}

/// Counts one request in the metrics once its answer's status is known,
/// wherever that happens (at once, from a future, after a stream).
private struct RequestRecord: Sendable {
    let metrics: ServerMetrics
    let route: Route?
    let method: HTTPMethod
    let started: UInt64

    func callAsFunction(_ status: HTTPResponseStatus) {
        metrics.recordRequest(route, method: method, status: status,
                              nanoseconds: DispatchTime.now().uptimeNanoseconds - started)
    }
}
