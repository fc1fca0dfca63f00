import Foundation
import LogKV
import Metrics
import NIOConcurrencyHelpers
import NIOHTTP1

/// HTTP metrics, plus the gauges that mirror the store's state at scrape
/// time. Labels are the route template, the method and the status class, so
/// cardinality is bounded by the route table whatever the keys are.
final class ServerMetrics: Sendable {
    private struct Series: Hashable { var method: String; var route: String; var status: String }
    private let factory: any MetricsFactory
    private let counters = NIOLockedValueBox<[Series: Counter]>([:])
    private let timers = NIOLockedValueBox<[Series: Metrics.Timer]>([:])
    let keys: Gauge
    let liveBytes: Gauge
    let deadBytes: Gauge
    let totalBytes: Gauge
    let segments: Gauge
    let readOnly: Gauge
    let diskFull: Gauge
    let residentMemory: Gauge
    let openFDs: Gauge
    let startTime: Gauge
    let blockingQueriesHeld: Gauge

    init(factory: (any MetricsFactory)?, routes: [(HTTPMethod, String)]) {
        let f = factory ?? MetricsSystem.factory
        self.factory = f
        var series: [RouteSeries] = []
        for (method, template) in routes {
            series.append(RouteSeries(
                counters: (1...5).map { klass in
                    Counter(label: "logkv_http_requests_total",
                            dimensions: [("method", method.rawValue), ("route", template), ("status", "\(klass)xx")], factory: f)
                },
                timer: Metrics.Timer(label: "logkv_http_request_duration_seconds",
                                     dimensions: [("method", method.rawValue), ("route", template)], factory: f)))
        }
        routeSeries = series
        keys = Gauge(label: "logkv_keys", factory: f)
        liveBytes = Gauge(label: "logkv_live_bytes", factory: f)
        deadBytes = Gauge(label: "logkv_dead_bytes", factory: f)
        totalBytes = Gauge(label: "logkv_segment_bytes", factory: f)
        segments = Gauge(label: "logkv_segments", factory: f)
        readOnly = Gauge(label: "logkv_store_read_only", factory: f)
        diskFull = Gauge(label: "logkv_store_disk_full", factory: f)
        residentMemory = Gauge(label: "process_resident_memory_bytes", factory: f)
        openFDs = Gauge(label: "process_open_fds", factory: f)
        startTime = Gauge(label: "process_start_time_seconds", factory: f)
        blockingQueriesHeld = Gauge(label: "logkv_blocking_queries_held", factory: f)
        startTime.record(Date().timeIntervalSince1970)
    }

    /// Handles of every route's series, made once: the hot path does no
    /// string work and takes no lock for matched routes.
    private struct RouteSeries: Sendable { var counters: [Counter]; var timer: Metrics.Timer }
    /// Indexed by `Route.slot` (the order of `KVAPI.routes`).
    private let routeSeries: [RouteSeries]

    /// Counts one answered request under `route` (nil when none matched:
    /// counted as "unmatched").
    func recordRequest(_ route: Route?, method: HTTPMethod, status: HTTPResponseStatus, nanoseconds: UInt64) {
        let klass = Int(status.code / 100)
        if let slot = route?.slot, routeSeries.indices.contains(slot), (1...5).contains(klass) {
            let series = routeSeries[slot]
            series.counters[klass - 1].increment()
            series.timer.recordNanoseconds(Int64(nanoseconds))
            return
        }
        // Unmatched requests: the method label is kept to the standard ones.
        let methodLabel = Self.knownMethods.contains(method.rawValue) ? method.rawValue : "OTHER"
        recordSlow(method: methodLabel, route: route?.template ?? "unmatched", status: "\(klass)xx", nanoseconds: nanoseconds)
    }

    private static let knownMethods: Set<String> = ["GET", "HEAD", "PUT", "POST", "DELETE", "PATCH", "OPTIONS"]

    private func recordSlow(method: String, route: String, status klass: String, nanoseconds: UInt64) {
        let series = Series(method: method, route: route, status: klass)
        let counter = counters.withLockedValue { map in
            if let c = map[series] { return c }
            let c = Counter(label: "logkv_http_requests_total",
                            dimensions: [("method", series.method), ("route", route), ("status", klass)], factory: factory)
            map[series] = c
            return c
        }
        counter.increment()
        let timerSeries = Series(method: method, route: route, status: "")
        let timer = timers.withLockedValue { map in
            if let t = map[timerSeries] { return t }
            let t = Metrics.Timer(label: "logkv_http_request_duration_seconds",
                                  dimensions: [("method", timerSeries.method), ("route", route)], factory: factory)
            map[timerSeries] = t
            return t
        }
        timer.recordNanoseconds(Int64(nanoseconds))
    }

    /// Updates the state gauges just before a scrape.
    func refreshGauges(from store: LogKV, watches: WatchRegistry) {
        blockingQueriesHeld.record(watches.held)
        if let s = try? store.stats() {
            keys.record(s.keys)
            liveBytes.record(s.liveBytes)
            deadBytes.record(s.deadBytes)
            totalBytes.record(s.totalBytes)
            segments.record(s.segments)
        }
        let refusal = store.writeRefusal
        readOnly.record(refusal == nil || refusal == .diskFull ? 0 : 1)
        diskFull.record(refusal == .diskFull ? 1 : 0)
        residentMemory.record(Self.residentBytes())
        openFDs.record(Self.openFileDescriptors())
    }

    static func residentBytes() -> Int {
        guard let text = try? String(contentsOfFile: "/proc/self/statm", encoding: .utf8) else { return 0 }
        let fields = text.split(separator: " ")
        guard fields.count > 1, let pages = Int(fields[1]) else { return 0 }
        return pages * Int(sysconf(Int32(_SC_PAGESIZE)))
    }

    static func openFileDescriptors() -> Int {
        (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd").count) ?? 0
    }
}
