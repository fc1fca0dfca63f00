import LogKV
import NIOCore
import Prometheus

/// Everything the HTTP layer needs to know; built by `logkvd` from flags and
/// environment, or by tests directly.
public struct ServerConfiguration: Sendable {
    /// Every address, IPv6 and IPv4 (`::` with IPV6_V6ONLY off; IPv4 alone
    /// where the host has no IPv6).
    public var address: ListenAddress = ListenAddress(host: "::", port: 8080)
    /// Serve `/metrics` on its own address too (it is always on the main one).
    public var metricsAddress: ListenAddress?
    /// TLS on the API listener (`metricsAddress` stays plain HTTP: it serves
    /// only `/health` and `/metrics`).
    public var tls: TLSSettings?
    /// Bearer token required on every route but `/health` and `/metrics`; nil =
    /// auth off, and admin routes (`/v1/admin/...`) answer loopback clients
    /// only (like Redis's protected mode; see `RequestGuard`).
    public var token: String?
    /// Event-loop threads; 0 = one per core.
    public var eventLoopThreads = 0
    /// Threads for work that may block on the disk (fsync=always writes, cold
    /// reads, listings, batches).
    public var blockingThreads = 16
    /// Default and largest page size of `GET /v1/keys`.
    public var defaultPageSize = 1000
    public var maxPageSize = 10_000
    /// Most operations in one `POST /v1/batch`.
    public var maxBatchOperations = 1000
    /// Where `/metrics` reads from; nil disables the route's content.
    public var metricsRegistry: PrometheusCollectorRegistry?

    // Limits that keep any client, however slow, pipelined or large, from
    // exhausting memory, descriptors or the event loops.

    /// Open client connections across all listeners; more get a 503 and are
    /// closed at once.
    public var maxConnections = 4096
    /// Connections past `maxConnections` that may still ask for `/health` or
    /// `/metrics` (once each; anything else is 503), so a server busy at its
    /// cap still answers its orchestrator and Prometheus.
    public static let probeConnectionReserve = 16
    /// Request body bytes held in memory across all connections; a request
    /// that would go over gets a 503 with Retry-After before its body is read.
    public var maxBodyBytesInFlight = 512 * 1024 * 1024
    /// Bytes of streamed answers (values over 64 KiB, sent in 128 KiB
    /// pieces) held in memory across all connections; a stream that finds
    /// it spent waits for room (see `AnswerBudget`).
    public var maxAnswerBytesInFlight = 64 * 1024 * 1024
    /// Bytes of values one `POST /v1/batch` may return; beyond it the batch
    /// is refused with 413 (ask for fewer keys per batch).
    public var maxBatchResponseBytes = 16 * 1024 * 1024
    /// A keep-alive connection must send its next request head within this
    /// time of the last response (also bounds a head sent byte by byte).
    public var idleTimeout: TimeAmount = .seconds(60)
    /// A request body must arrive within this time of its head (else 408).
    public var requestTimeout: TimeAmount = .seconds(30)
    /// A streamed response (a backup, a large value) whose client reads
    /// nothing for this long is disconnected.
    public var streamStallTimeout: TimeAmount = .seconds(60)
    /// On SIGTERM/SIGINT, in-flight requests get this long to finish before
    /// their connections are closed; a second signal stops waiting at once.
    public var shutdownGracePeriod: TimeAmount = .seconds(10)
    /// Outbound bytes queued per connection above which the server stops
    /// reading more requests from it until the client catches up.
    public var writeBufferHighWater = 256 * 1024

    /// Blocking queries (`?index=&wait=`) held at once; more get 429 with
    /// Retry-After. Each holds a connection: kept below `maxConnections` so
    /// watchers cannot crowd out other clients.
    public var maxHeldQueries = 2048
    /// The longest a blocking query is held (`wait` beyond it is cut to it;
    /// Consul's `max_query_time`). Its default `wait` is 5 minutes, or this
    /// if shorter.
    public var maxBlockingWait: TimeAmount = .minutes(10)

    /// A duration as Consul writes it (`30s`, `5m`, `1m30s`, `500ms`; a bare
    /// number is seconds), for `wait` and `--max-wait`.
    public static func duration(_ text: String) -> TimeAmount? { BlockingQuery.duration(text) }

    /// Browser origins allowed to call the API (CORS), e.g.
    /// `https://dash.example.com`; `*` allows any. Empty (the default): CORS
    /// is off, preflight `OPTIONS` requests get 405.
    public var corsOrigins: [String] = []

    /// The CORS headers for a response to a request from `origin`, or none.
    func corsHeaders(origin: String?) -> [(String, String)] {
        guard let origin, corsOrigins.contains(where: { $0 == "*" || $0 == origin }) else { return [] }
        return [("Access-Control-Allow-Origin", origin), ("Vary", "Origin"),
                ("Access-Control-Expose-Headers", "ETag, X-Logkv-TTL, X-Logkv-Index, Retry-After")]
    }

    public init() {}
}
