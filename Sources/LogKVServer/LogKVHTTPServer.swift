import Foundation
import Logging
import Metrics
import LogKV
import NIOConcurrencyHelpers
import NIOCore
import NIOExtras
import NIOHTTP1
import NIOPosix
import ServiceLifecycle

/// The HTTP server over a store: one builder shared by `logkvd` and the
/// tests. A `Service`: `run()` serves until graceful shutdown, then stops
/// accepting, lets in-flight requests finish and returns; the store is
/// closed by whoever owns it, after the server.
public final class LogKVHTTPServer: Service, Sendable {
    public let configuration: ServerConfiguration
    let api: KVAPI
    let group: MultiThreadedEventLoopGroup
    let blockingPool: NIOThreadPool
    let logger: Logger
    /// One per listener: closes idle connections and lets busy ones finish
    /// on shutdown. Released before the event loops stop (their deinit
    /// touches a loop).
    let quiescing = NIOLockedValueBox<[ServerQuiescingHelper]>([])
    let connections: ConnectionCounter
    let bodyBudget: BodyBudget
    /// A loop outside `group` for the shutdown's own promises: NIO's
    /// quiescing helper completes them as the last connections close, which
    /// may be while `group` shuts down.
    let controlGroup = MultiThreadedEventLoopGroup(numberOfThreads: 1)
    /// Told the bound addresses by `run()`.
    let onListening: (@Sendable ([SocketAddress]) -> Void)?
    /// The API listener's TLS, when configured.
    let tls: ServerTLS?

    public init(store: LogKV, configuration: ServerConfiguration, metricsFactory: (any MetricsFactory)? = nil,
                logger: Logger = Logger(label: "logkvd"), onListening: (@Sendable ([SocketAddress]) -> Void)? = nil) throws {
        self.configuration = configuration
        self.tls = try configuration.tls.map(ServerTLS.init)
        self.logger = logger
        self.onListening = onListening
        connections = ConnectionCounter(limit: configuration.maxConnections)
        bodyBudget = BodyBudget(limit: configuration.maxBodyBytesInFlight)
        let threads = configuration.eventLoopThreads > 0 ? configuration.eventLoopThreads : System.coreCount
        group = MultiThreadedEventLoopGroup(numberOfThreads: threads)
        blockingPool = NIOThreadPool(numberOfThreads: configuration.blockingThreads)
        blockingPool.start()
        api = KVAPI(store: store, configuration: configuration, blockingPool: blockingPool,
                    serverMetrics: ServerMetrics(factory: metricsFactory, routes: KVAPI.routes.map { ($0.method, $0.template) }))
        store.setChangeObserver { [watches = api.watches] change in watches.record(change) }
    }

    /// Reads the TLS certificate and key again (SIGHUP): new connections
    /// use them, open ones keep theirs. Throws, keeping the old ones, if
    /// they cannot be used.
    public func reloadTLS() throws {
        try tls?.reload()
    }

    /// The largest request body accepted: a maximal value as JSON or base64,
    /// with room for the key and the envelope.
    var bodyLimit: Int {
        let options = api.store.options
        return options.maxValueSize / 3 * 4 + 8 + options.maxKeySize * 6 + 64 * 1024
    }

    /// Binds the listeners; returns the channels (their local addresses carry
    /// the real ports when port 0 was asked for).
    public func bind() async throws -> [Channel] {
        var channels = [try await bind(configuration.address, routes: KVAPI.routes, tls: tls)]
        if let metrics = configuration.metricsAddress {
            channels.append(try await bind(metrics, routes: KVAPI.metricsRoutes, tls: nil))
        }
        return channels
    }

    private func bind(_ address: ListenAddress, routes: [Route], tls: ServerTLS?) async throws -> Channel {
        let api = self.api
        let config = configuration
        let connections = self.connections
        let settings = HTTPConnectionHandler.Settings(
            requestGuard: RequestGuard(routes: routes, token: config.token, corsOrigins: config.corsOrigins,
                                       adminHosts: address.isWildcard ? [] : [address.host],
                                       bodyLimit: bodyLimit, budget: bodyBudget),
            idleTimeout: config.idleTimeout, requestTimeout: config.requestTimeout)
        let group = self.group
        // One quiescing helper per listener that binds (a failed bind has
        // spent its helper on a dead channel).
        func listen(host: String, dualStack: Bool) async throws -> Channel {
            let quiescing = ServerQuiescingHelper(group: group)
            var bootstrap = self.bootstrap(group, quiescing, api, connections, settings, tls, config)
            if dualStack {
                bootstrap = bootstrap.serverChannelOption(ChannelOptions.Types.SocketOption(level: .ipv6, name: .ipv6_v6only), value: 0)
            }
            let channel = try await bootstrap.bind(host: host, port: address.port).get()
            self.quiescing.withLockedValue { $0.append(quiescing) }
            return channel
        }
        // `::` (the default) listens on IPv6 and IPv4 alike; where the host
        // has no IPv6, on every IPv4 address instead. Any other failure (the
        // port taken) is an error, not a quiet fallback.
        if address.host == "::" {
            do {
                return try await listen(host: "::", dualStack: true)
            } catch let error as IOError where [EAFNOSUPPORT, EADDRNOTAVAIL, EPROTONOSUPPORT].contains(error.errnoCode) {
                logger.notice("no IPv6 here: listening on IPv4 only", metadata: ["error": "\(error)"])
                return try await listen(host: "0.0.0.0", dualStack: false)
            }
        }
        return try await listen(host: address.host, dualStack: false)
    }

    private func bootstrap(_ group: MultiThreadedEventLoopGroup, _ quiescing: ServerQuiescingHelper, _ api: KVAPI,
                           _ connections: ConnectionCounter, _ settings: HTTPConnectionHandler.Settings,
                           _ tls: ServerTLS?, _ config: ServerConfiguration) -> ServerBootstrap {
        ServerBootstrap(group: group)
            .serverChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    // At the descriptor limit, accept() fails at once: back
                    // off instead of spinning.
                    try channel.pipeline.syncOperations.addHandler(AcceptBackoffHandler())
                    try channel.pipeline.syncOperations.addHandler(quiescing.makeServerChannelHandler(channel: channel))
                }
            }
            .serverChannelOption(.backlog, value: 1024)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.tcpOption(.tcp_nodelay), value: 1)
            // Few reads per wake-up: bounds what one connection gets parsed and
            // queued (while an answer is under way) before backpressure applies.
            .childChannelOption(.maxMessagesPerRead, value: 2)
            .childChannelOption(.writeBufferWaterMark,
                                value: .init(low: config.writeBufferHighWater / 2, high: config.writeBufferHighWater))
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    let sync = channel.pipeline.syncOperations
                    // TLS first: even a refusal is answered inside it.
                    if let tls { try sync.addHandler(tls.handler()) }
                    let admission = connections.tryOpen()
                    guard admission != .refused else {
                        try sync.addHandler(ConnectionRefusalHandler(limit: connections.limit))
                        return
                    }
                    channel.closeFuture.whenComplete { _ in connections.close(admission) }
                    var settings = settings
                    if admission == .probesOnly {
                        // A probe asks at once: an idle one must not hold the
                        // few slots past the cap for long.
                        settings.probesOnly = true
                        settings.idleTimeout = min(settings.idleTimeout, .seconds(5))
                        settings.requestTimeout = min(settings.requestTimeout, .seconds(5))
                    }
                    // No other handler: every one a request crosses costs. A client
                    // that does not read its answers stops being read (the
                    // connection handler holds its reads).
                    // NIO's parser (llhttp); everything after it is one handler
                    // that writes its answers as bytes.
                    try sync.addHandler(ByteToMessageHandler(HTTPRequestDecoder(leftOverBytesStrategy: .dropBytes)))
                    try sync.addHandler(HTTPConnectionHandler(api: api, settings: settings))
                }
            }
    }

    /// Serves until graceful shutdown (SIGTERM/SIGINT through the service
    /// group), then drains.
    public func run() async throws {
        let channels = try await bind()
        for channel in channels {
            logger.info("listening", metadata: ["address": "\(channel.localAddress.map { "\($0)" } ?? "?")"])
        }
        onListening?(channels.compactMap(\.localAddress))
        try await runUntilShutdown(channels)
    }

    /// Waits for graceful shutdown, then stops accepting and lets open
    /// connections finish their in-flight requests.
    public func runUntilShutdown(_ channels: [Channel]) async throws {
        await drain(channels)
        try await shutdown()
    }

    /// On graceful shutdown: stop accepting, let in-flight requests finish
    /// for at most `shutdownGracePeriod` (a second SIGTERM/SIGINT stops
    /// waiting at once); `shutdown()` then closes whatever is still open.
    private func drain(_ channels: [Channel]) async {
        let helpers = quiescing.withLockedValue { $0 }
        let loop = controlGroup.next()
        let drained = helpers.map { _ in loop.makePromise(of: Void.self) }
        let done = loop.makePromise(of: Void.self)
        let grace = configuration.shutdownGracePeriod
        let signalSources = SignalSources()
        await withGracefulShutdownHandler {
            for channel in channels { try? await channel.closeFuture.get() }
        } onGracefulShutdown: { [logger, api] in
            logger.info("shutting down: no new connections; finishing in-flight requests",
                        metadata: ["grace_seconds": "\(grace.nanoseconds / 1_000_000_000)"])
            for (helper, promise) in zip(helpers, drained) { helper.initiateShutdown(promise: promise) }
            // Held blocking queries answer now, with what they have.
            api.watches.close()
            EventLoopFuture.andAllComplete(drained.map(\.futureResult), on: loop).cascade(to: done)
            loop.scheduleTask(in: grace) {
                logger.warning("shutdown grace period over; closing the remaining connections")
                done.succeed()
            }
            // The first signal started this; a second one means "now".
            for sig in [SIGTERM, SIGINT] {
                let source = DispatchSource.makeSignalSource(signal: sig)
                source.setEventHandler {
                    logger.warning("second signal: closing the remaining connections now")
                    loop.execute { done.succeed() }
                }
                source.resume()
                signalSources.add(source)
            }
        }
        if signalSources.isEmpty {
            // Ended without a shutdown request (the channels closed).
            done.succeed()
            for promise in drained { promise.succeed() }
        }
        try? await done.futureResult.get()
        signalSources.cancelAll()
    }

    /// Stops the event loops (letting queued work finish) and the blocking pool.
    public func shutdown() async throws {
        // Streams run on the blocking pool, waiting on their connections:
        // end them while the event loops still run.
        api.streams.closeAll()
        api.watches.close()
        api.store.setChangeObserver(nil)
        quiescing.withLockedValue { $0.removeAll() }
        // The pool first: its work (offloaded requests, a stream's end)
        // hands results back to the event loops, which must still run.
        try await blockingPool.shutdownGracefully()
        try await group.shutdownGracefully()
        try await controlGroup.shutdownGracefully()
    }
}


/// Signal sources watched during a shutdown. Dispatch sources are not
/// `Sendable`; a lock guards them.
private final class SignalSources: @unchecked Sendable {
    private let lock = NSLock()
    private var sources: [DispatchSourceSignal] = []

    func add(_ source: DispatchSourceSignal) { lock.withLock { sources.append(source) } }
    var isEmpty: Bool { lock.withLock { sources.isEmpty } }
    func cancelAll() {
        lock.withLock {
            for source in sources { source.cancel() }
            sources.removeAll()
        }
    }
}
