#if canImport(Glibc)
import Glibc
#endif
import Logging
import LogKV
import Metrics
import NIOCore
import ServiceLifecycle
import UnixSignals

/// What `logkvd` serves: the data directory, the store's options and the
/// server's, in one value.
public struct ApplicationConfiguration: Sendable {
    public var dataPath: String
    public var store: LogKVOptions
    public var server: ServerConfiguration

    public init(dataPath: String = "data", store: LogKVOptions = LogKVOptions(),
                server: ServerConfiguration = ServerConfiguration()) {
        self.dataPath = dataPath
        self.store = store
        self.server = server
    }
}

/// The whole server built from one configuration, in one place: the store
/// opened on its data directory, the HTTP server over it, and the services
/// that run them. `logkvd` builds through it, and so do tests that want
/// exactly what `logkvd` runs.
///
/// `run()` runs the store and the server as services of one `ServiceGroup`.
/// On SIGTERM/SIGINT the group shuts them down in reverse order: the server
/// stops accepting and lets in-flight requests finish, then the store
/// closes (its index checkpoint covering the whole log).
public final class LogKVApplication: Sendable {
    public let configuration: ApplicationConfiguration
    public let store: LogKV
    public let server: LogKVHTTPServer
    let logger: Logger

    /// Opens the store (recovering it if the last run crashed) and builds
    /// the server; nothing is bound until `run()`.
    ///
    /// - Parameter onListening: told the addresses the server listens on
    ///   once bound (a port 0 becomes the one the kernel picked).
    /// - Throws: the store's open errors (`LogKVError`), unusable TLS files
    ///   (`TLSSettingsError`).
    public init(_ configuration: ApplicationConfiguration, metricsFactory: (any MetricsFactory)? = nil,
                logger: Logger = Logger(label: "logkvd"),
                onListening: (@Sendable ([SocketAddress]) -> Void)? = nil) throws {
        self.configuration = configuration
        self.logger = logger
        store = try LogKV(path: configuration.dataPath, options: configuration.store)
        do {
            server = try LogKVHTTPServer(store: store, configuration: configuration.server, metricsFactory: metricsFactory,
                                         logger: logger, onListening: onListening)
        } catch {
            try? store.close()
            throw error
        }
    }

    /// Serves until one of `signals` (or cancellation), then drains and
    /// closes the store. Throws what the server or the store's close threw.
    public func run(signals: [UnixSignal] = [.sigterm, .sigint]) async throws {
        // SIGHUP reads the TLS certificate and key again (a renewal); it is
        // ignored from here on, so one sent before the task below listens
        // cannot end the process.
        if configuration.server.tls != nil { signal(SIGHUP, SIG_IGN) }
        let reloads: Task<Void, Never>? = configuration.server.tls == nil ? nil : Task { [server, logger] in
            for await _ in await UnixSignalsSequence(trapping: .sighup) {
                do {
                    try server.reloadTLS()
                    logger.notice("TLS certificate and key reloaded")
                } catch {
                    logger.error("TLS reload failed; serving with the previous certificate", metadata: ["error": "\(error)"])
                }
            }
        }
        defer { reloads?.cancel() }
        let group = ServiceGroup(configuration: .init(
            services: [.init(service: StoreService(store: store, logger: logger)), .init(service: server)],
            gracefulShutdownSignals: signals,
            logger: logger))
        try await group.run()
    }
}

/// The store as a service: it waits for the group's shutdown and then
/// closes the store. Listed before the server, it is shut down after it,
/// once every request has been answered.
struct StoreService: Service {
    let store: LogKV
    let logger: Logger

    func run() async throws {
        // Cancelled (the server failed to start or stopped): close all the same.
        try? await gracefulShutdown()
        do {
            try store.close()
        } catch {
            logger.error("closing the store failed", metadata: ["error": "\(error)"])
            throw error
        }
        logger.info("stopped; index checkpoint covers the log")
    }
}
