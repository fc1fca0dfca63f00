import ArgumentParser
import Foundation
import Logging
import LogKV
import LogKVServer
import Metrics
import NIOCore
import Prometheus
import ServiceLifecycle
#if canImport(Glibc)
import Glibc
private let RLIMIT_NOFILE_VALUE = __rlimit_resource_t(RLIMIT_NOFILE.rawValue)
#endif

/// `logkvd`: the logkv server. Every setting has a flag and an environment
/// variable; flags win.
@main
struct Logkvd: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "logkvd",
        abstract: "Serve a logkv data directory over HTTP.",
        discussion: """
            Environment: LOGKV_ADDR, LOGKV_DATA_DIR, LOGKV_FSYNC, LOGKV_TOKEN (the token itself), \
            LOGKV_TOKEN_FILE, LOGKV_METRICS_ADDR, LOGKV_LOG_LEVEL.
            """)

    @Option(help: "Listen address: :8080, host:port or [v6]:port. (env LOGKV_ADDR, default :8080)")
    var addr: String?
    @Option(help: "Data directory. (env LOGKV_DATA_DIR, default data)")
    var dataDir: String?
    @Option(help: "fsync policy: always, interval or never. (env LOGKV_FSYNC, default interval)")
    var fsync: String?
    @Option(help: "File holding the bearer token; auth is off without a token. (env LOGKV_TOKEN_FILE, or LOGKV_TOKEN for the token itself)")
    var tokenFile: String?
    @Option(help: "Also serve /metrics on this address. (env LOGKV_METRICS_ADDR)")
    var metricsAddr: String?
    @Option(help: "Largest key, bytes.") var maxKeySize = LogKVOptions().maxKeySize
    @Option(help: "Largest value, bytes.") var maxValueSize = LogKVOptions().maxValueSize
    @Option(help: "Segment size before rotation, bytes.") var segmentSize = LogKVOptions().segmentSize
    @Option(help: "Memory budget of the KeyDir cache, bytes.") var cacheBytes = LogKVOptions().cacheBudgetBytes
    @Option(help: "Bytes kept free in the data directory (RESERVE) for deletes and compaction on a full disk; 0 keeps none.")
    var diskReserveBytes = LogKVOptions().diskReserveBytes
    @Option(help: "Log level: trace, debug, info, notice, warning, error, critical. (env LOGKV_LOG_LEVEL)")
    var logLevel: String?
    @Option(help: "Most open client connections; more are refused with 503.")
    var maxConnections = ServerConfiguration().maxConnections
    @Option(help: "Most blocking queries (?index=&wait=) held at once; more get 429. (env LOGKV_MAX_WATCHES, default 2048)")
    var maxWatches: Int?
    @Option(help: "Longest a blocking query is held, e.g. 10m or 30s. (env LOGKV_MAX_WAIT, default 10m)")
    var maxWait: String?
    @Option(help: "Request body bytes held in memory across all connections.")
    var maxBodyBytesInFlight = ServerConfiguration().maxBodyBytesInFlight
    @Option(help: "Bytes of large answers (values over 64 KiB, streamed in 128 KiB pieces) held in memory across all connections.")
    var maxAnswerBytesInFlight = ServerConfiguration().maxAnswerBytesInFlight
    @Option(help: "Seconds a keep-alive connection may stay idle (or take to send a request head).")
    var idleTimeout = 60
    @Option(help: "Seconds a request body may take to arrive after its head.")
    var requestTimeout = 30
    @Option(help: "Seconds in-flight requests get to finish after SIGTERM/SIGINT; a second signal stops at once.")
    var shutdownGrace = 10
    @Option(help: "PEM certificate (chain) for HTTPS on --addr; with --tls-key. SIGHUP reloads both. (env LOGKV_TLS_CERT)")
    var tlsCert: String?
    @Option(help: "PEM private key of --tls-cert. (env LOGKV_TLS_KEY)")
    var tlsKey: String?
    @Option(help: "PEM CA file: clients must present a certificate it signed (mutual TLS). (env LOGKV_TLS_CLIENT_CA)")
    var tlsClientCa: String?
    @Option(help: "Browser origins allowed to call the API (CORS), comma-separated; * for any. Off by default. (env LOGKV_CORS_ORIGINS)")
    var corsOrigins: String?

    func run() async throws {
        // A file-size limit (RLIMIT_FSIZE) must fail the write with EFBIG,
        // answered as "disk full", not kill the server.
        signal(SIGXFSZ, SIG_IGN)
        _ = Self.stdoutWasOpenAtStart
        let env = ProcessInfo.processInfo.environment
        let level = Logger.Level(rawValue: logLevel ?? env["LOGKV_LOG_LEVEL"] ?? "info") ?? .info
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        let logger = Logger(label: "logkvd")

        let addressText = addr ?? env["LOGKV_ADDR"] ?? ":8080"
        guard let address = ListenAddress(parsing: addressText) else {
            throw ValidationError("invalid listen address \"\(addressText)\" (expected :PORT or HOST:PORT)")
        }
        var serverConfig = ServerConfiguration()
        serverConfig.address = address
        if let text = metricsAddr ?? env["LOGKV_METRICS_ADDR"] {
            guard let metrics = ListenAddress(parsing: text) else { throw ValidationError("invalid metrics address \"\(text)\"") }
            serverConfig.metricsAddress = metrics
        }
        serverConfig.token = try loadToken(env: env)
        switch (tlsCert ?? env["LOGKV_TLS_CERT"], tlsKey ?? env["LOGKV_TLS_KEY"]) {
        case let (cert?, key?):
            serverConfig.tls = TLSSettings(certificatePath: cert, keyPath: key, clientCAPath: tlsClientCa ?? env["LOGKV_TLS_CLIENT_CA"])
        case (nil, nil):
            if tlsClientCa ?? env["LOGKV_TLS_CLIENT_CA"] != nil { throw ValidationError("--tls-client-ca needs --tls-cert and --tls-key") }
        default:
            throw ValidationError("--tls-cert and --tls-key go together")
        }
        serverConfig.maxConnections = maxConnections
        if let text = maxWatches.map(String.init) ?? env["LOGKV_MAX_WATCHES"] {
            guard let n = Int(text), n >= 0 else { throw ValidationError("--max-watches must be a whole number, 0 or more") }
            serverConfig.maxHeldQueries = n
        }
        if let text = maxWait ?? env["LOGKV_MAX_WAIT"] {
            guard let wait = ServerConfiguration.duration(text), wait.nanoseconds > 0 else {
                throw ValidationError("--max-wait must be a duration such as 10m, 30s or 500ms")
            }
            serverConfig.maxBlockingWait = wait
        }
        serverConfig.maxBodyBytesInFlight = maxBodyBytesInFlight
        serverConfig.maxAnswerBytesInFlight = maxAnswerBytesInFlight
        serverConfig.idleTimeout = .seconds(Int64(idleTimeout))
        serverConfig.requestTimeout = .seconds(Int64(requestTimeout))
        serverConfig.shutdownGracePeriod = .seconds(Int64(shutdownGrace))
        if let origins = corsOrigins ?? env["LOGKV_CORS_ORIGINS"] {
            serverConfig.corsOrigins = origins.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
                .filter { !$0.isEmpty }
        }
        guard maxConnections > 0, maxBodyBytesInFlight > 0, maxAnswerBytesInFlight > 0, idleTimeout > 0, requestTimeout > 0, shutdownGrace >= 0 else {
            throw ValidationError("connection, body, timeout and grace settings must be positive")
        }
        let descriptors = Self.raiseFileDescriptorLimit(logger: logger)
        // Connections must leave room for segments, the index and accepts
        // (at the descriptor limit accept() fails and the loop would spin),
        // and each may hold a second descriptor while it streams a large
        // value (`ValueReader`), plus the few over the cap kept for probes.
        let reserve = LogKVOptions().maxOpenSegments + 64 + ServerConfiguration.probeConnectionReserve
        if descriptors > 0 && serverConfig.maxConnections > (descriptors - reserve) / 2 {
            let cap = max(1, (descriptors - reserve) / 2)
            logger.notice("lowering --max-connections to fit the open-file limit",
                          metadata: ["max_connections": "\(cap)", "open_file_limit": "\(descriptors)"])
            serverConfig.maxConnections = cap
        }
        if serverConfig.token == nil {
            logger.notice("auth is off (no token): admin routes (/v1/admin/...) answer loopback clients only; set --token-file or LOGKV_TOKEN to use them remotely")
            if !address.isLoopback {
                logger.warning("listening on a non-loopback address without a token: any client that can reach it may read and write every key; set --token-file or LOGKV_TOKEN",
                               metadata: ["address": "\(addressText)"])
            }
        }

        var options = LogKVOptions()
        let fsyncText = fsync ?? env["LOGKV_FSYNC"] ?? "interval"
        guard let policy = FsyncPolicy(rawValue: fsyncText) else {
            throw ValidationError("invalid fsync policy \"\(fsyncText)\" (expected always, interval or never)")
        }
        options.fsync = policy
        options.maxKeySize = maxKeySize
        options.maxValueSize = maxValueSize
        options.segmentSize = segmentSize
        options.cacheBudgetBytes = cacheBytes
        options.diskReserveBytes = diskReserveBytes
        options.logger = Logger(label: "logkv")

        let metrics = PrometheusBackend()
        MetricsSystem.bootstrap(metrics)
        serverConfig.metricsRegistry = metrics.registry

        let configuration = ApplicationConfiguration(
            dataPath: dataDir ?? env["LOGKV_DATA_DIR"] ?? "data", store: options, server: serverConfig)
        let app: LogKVApplication
        do {
            app = try LogKVApplication(configuration, logger: logger, onListening: Self.announce)
        } catch let error as TLSSettingsError {
            logger.critical("cannot start TLS", metadata: ["error": "\(error)"])
            FileHandle.standardError.write("logkvd: \(error)\n".data(using: .utf8)!)
            throw ExitCode(1)
        } catch let error as LogKVError {
            logger.critical("cannot open data directory", metadata: ["path": "\(configuration.dataPath)", "error": "\(error)"])
            FileHandle.standardError.write("logkvd: \(error)\n".data(using: .utf8)!)
            throw ExitCode(1)
        }
        try await app.run()
    }

    /// Started with stdout closed, descriptor 1 may later name one of the
    /// store's files: then nothing is announced. Read before anything opens.
    static let stdoutWasOpenAtStart = fcntl(STDOUT_FILENO, F_GETFD) != -1

    /// One line per listener on stdout, once bound: `listening HOST:PORT`
    /// for the API, then `metrics HOST:PORT` if it has its own. With port 0
    /// this is how a supervisor or a test learns the port the kernel chose.
    @Sendable static func announce(_ addresses: [SocketAddress]) {
        var text = ""
        for (n, address) in addresses.enumerated() {
            let host = address.ipAddress.map { address.protocol == .inet6 ? "[\($0)]" : $0 } ?? "?"
            text += (n == 0 ? "listening " : "metrics ") + "\(host):\(address.port ?? 0)\n"
        }
        // Never fail over a reader that left.
        guard stdoutWasOpenAtStart else { return }
        try? FileHandle.standardOutput.write(contentsOf: Data(text.utf8))
    }

    /// Raises the soft descriptor limit to the hard one: every connection and
    /// segment takes a descriptor, and the default soft limit (1024) is far
    /// below what a busy server needs.
    /// - Returns: the soft limit now in force (0 if unknown).
    @discardableResult
    static func raiseFileDescriptorLimit(logger: Logger) -> Int {
        var limit = rlimit()
        guard getrlimit(RLIMIT_NOFILE_VALUE, &limit) == 0 else { return 0 }
        if limit.rlim_cur < limit.rlim_max {
            let old = limit.rlim_cur
            limit.rlim_cur = limit.rlim_max
            if setrlimit(RLIMIT_NOFILE_VALUE, &limit) == 0 {
                logger.debug("raised the open-file limit", metadata: ["from": "\(old)", "to": "\(limit.rlim_max)"])
            } else {
                limit.rlim_cur = old
            }
        }
        return Int(min(limit.rlim_cur, rlim_t(Int.max / 2)))
    }

    func loadToken(env: [String: String]) throws -> String? {
        if let path = tokenFile ?? env["LOGKV_TOKEN_FILE"] {
            guard let text = try? String(contentsOfFile: path, encoding: .utf8) else {
                throw ValidationError("cannot read token file \(path)")
            }
            let token = text.trimmingCharacters(in: .whitespacesAndNewlines)
            guard !token.isEmpty else { throw ValidationError("token file \(path) is empty") }
            return token
        }
        if let token = env["LOGKV_TOKEN"], !token.isEmpty { return token }
        return nil
    }
}
