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

    public init(store: LogKV, configuration: ServerConfiguration, metricsFactory: (any MetricsFactory)? = nil,
                logger: Logger = Logger(label: "logkvd")) {
        self.configuration = configuration
        self.logger = logger
        let threads = configuration.eventLoopThreads > 0 ? configuration.eventLoopThreads : System.coreCount
        group = MultiThreadedEventLoopGroup(numberOfThreads: threads)
        blockingPool = NIOThreadPool(numberOfThreads: configuration.blockingThreads)
        blockingPool.start()
        api = KVAPI(store: store, configuration: configuration, blockingPool: blockingPool,
                    serverMetrics: ServerMetrics(factory: metricsFactory, routes: KVAPI.routes.map { ($0.method, $0.template) }))
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
        var channels = [try await bind(configuration.address, routes: KVAPI.routes)]
        if let metrics = configuration.metricsAddress {
            channels.append(try await bind(metrics, routes: KVAPI.metricsRoutes))
        }
        return channels
    }

    private func bind(_ address: ListenAddress, routes: [Route]) async throws -> Channel {
        let api = self.api
        let limit = bodyLimit
        let quiescing = ServerQuiescingHelper(group: group)
        self.quiescing.withLockedValue { $0.append(quiescing) }
        return try await ServerBootstrap(group: group)
            .serverChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(quiescing.makeServerChannelHandler(channel: channel))
                }
            }
            .serverChannelOption(.backlog, value: 1024)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.tcpOption(.tcp_nodelay), value: 1)
            .childChannelOption(.maxMessagesPerRead, value: 16)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    let sync = channel.pipeline.syncOperations
                    try sync.configureHTTPServerPipeline(withPipeliningAssistance: true, withErrorHandling: true)
                    try sync.addHandler(BodyLimitHandler(limit: limit))
                    try sync.addHandler(NIOHTTPServerRequestAggregator(maxContentLength: limit))
                    try sync.addHandler(HTTPHandler(api: api, routes: routes))
                }
            }
            .bind(host: address.host, port: address.port)
            .get()
    }

    /// Serves until graceful shutdown (SIGTERM/SIGINT through the service
    /// group), then drains.
    public func run() async throws {
        let channels = try await bind()
        for channel in channels {
            logger.info("listening", metadata: ["address": "\(channel.localAddress.map { "\($0)" } ?? "?")"])
        }
        try await runUntilShutdown(channels)
    }

    /// Waits for graceful shutdown, then stops accepting and lets open
    /// connections finish their in-flight requests.
    public func runUntilShutdown(_ channels: [Channel]) async throws {
        await drain(channels)
        try await shutdown()
    }

    private func drain(_ channels: [Channel]) async {
        let helpers = quiescing.withLockedValue { $0 }
        let drained = helpers.map { _ in group.next().makePromise(of: Void.self) }
        let initiated = NIOLockedValueBox(false)
        await withGracefulShutdownHandler {
            for channel in channels { try? await channel.closeFuture.get() }
        } onGracefulShutdown: { [logger] in
            logger.info("shutting down: no new connections; finishing in-flight requests")
            initiated.withLockedValue { $0 = true }
            for (helper, promise) in zip(helpers, drained) { helper.initiateShutdown(promise: promise) }
        }
        for promise in drained {
            if initiated.withLockedValue({ $0 }) {
                try? await promise.futureResult.get()
            } else {
                promise.succeed()
            }
        }
    }

    /// Stops the event loops (letting queued work finish) and the blocking pool.
    public func shutdown() async throws {
        quiescing.withLockedValue { $0.removeAll() }
        try await group.shutdownGracefully()
        try await blockingPool.shutdownGracefully()
    }
}

