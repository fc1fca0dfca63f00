import Foundation
import LogKV
@testable import LogKVServer
import Metrics
import NIOCore
import Prometheus

/// A store and a server on a loopback port the kernel picks, built through
/// `LogKVApplication` as logkvd builds them (bound and stopped by hand, not
/// through signals).
final class TestServer: @unchecked Sendable {
    let dir: String
    private let keepDir: Bool
    let store: LogKV
    let server: LogKVHTTPServer
    let channels: [Channel]
    let port: Int
    let registry = PrometheusCollectorRegistry()

    /// `dir`: a data directory to serve (kept by `stop`); a new one otherwise.
    init(token: String? = nil, options: LogKVOptions? = nil, dir: String? = nil,
         configure: (inout ServerConfiguration) -> Void = { _ in }) async throws {
        keepDir = dir != nil
        self.dir = dir ?? NSTemporaryDirectory() + "logkv-server-\(UUID().uuidString)"
        var opts = options ?? LogKVOptions()
        if options == nil { opts.fsync = .never }
        let factory = PrometheusBackend(registry: registry)
        opts.metricsFactory = factory
        var config = ServerConfiguration()
        config.address = ListenAddress(host: "127.0.0.1", port: 0)
        config.token = token
        config.eventLoopThreads = 2
        config.metricsRegistry = registry
        // A test starved of CPU by the suites running beside it can sit
        // between two requests for a minute on a loaded 2-core machine: the
        // server's idle clock must not close its connection meanwhile (a
        // fresh-clone CI run failed with `.closed` so). Tests of the idle
        // clock set their own.
        config.idleTimeout = .seconds(600)
        configure(&config)
        let app = try LogKVApplication(ApplicationConfiguration(dataPath: self.dir, store: opts, server: config),
                                       metricsFactory: factory)
        store = app.store
        server = app.server
        channels = try await server.bind()
        port = channels[0].localAddress!.port!
    }

    func client() throws -> HTTPTestClient { try HTTPTestClient(port: port) }

    func stop() async throws {
        for channel in channels { try? await channel.close() }
        try await server.shutdown()
        try store.close()
        if !keepDir { try? FileManager.default.removeItem(atPath: dir) }
    }
}

/// Runs `body` against a fresh test server and always stops it.
func withServer(token: String? = nil, options: LogKVOptions? = nil,
                configure: (inout ServerConfiguration) -> Void = { _ in },
                _ body: (TestServer) async throws -> Void) async throws {
    let server = try await TestServer(token: token, options: options, configure: configure)
    do {
        try await body(server)
    } catch {
        try? await server.stop()
        throw error
    }
    try await server.stop()
}

func utf8(_ s: String) -> [UInt8] { Array(s.utf8) }
