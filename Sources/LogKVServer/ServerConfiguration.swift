import LogKV
import Prometheus

/// Everything the HTTP layer needs to know; built by `logkvd` from flags and
/// environment, or by tests directly.
public struct ServerConfiguration: Sendable {
    public var address: ListenAddress = ListenAddress(host: "0.0.0.0", port: 8080)
    /// Serve `/metrics` on its own address too (it is always on the main one).
    public var metricsAddress: ListenAddress?
    /// Bearer token required on every route but `/health` and `/metrics`; nil = auth off.
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

    public init() {}
}
