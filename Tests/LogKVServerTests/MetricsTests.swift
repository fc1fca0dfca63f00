import Foundation
import LogKVTestSupport
import LogKV
@testable import LogKVServer
import Testing

@Suite struct MetricsTests {
    /// Sample values by series, e.g. `logkv_writes_total{op="put"}`.
    static func samples(_ text: String) -> [String: Double] {
        var out: [String: Double] = [:]
        for line in text.split(separator: "\n") where !line.hasPrefix("#") {
            guard let space = line.lastIndex(of: " "), let value = Double(line[line.index(after: space)...]) else { continue }
            out[String(line[..<space])] = value
        }
        return out
    }

    static func promtool() -> String? {
        for dir in ["/usr/bin", "/usr/local/bin", "/bin"] where FileManager.default.isExecutableFile(atPath: dir + "/promtool") {
            return dir + "/promtool"
        }
        return nil
    }

    @Test func scrapeAfterAMixedWorkloadPassesPromtoolAndCountsTheWorkload() async throws {
        var options = LogKVOptions()
        options.fsync = .never
        options.expirySweepPerSecond = 0  // so the expired key is found by the read
        try await withServer(options: options) { s in
            let c = try s.client()
            for i in 0..<25 { #expect(try c.request("PUT", "/v1/kv/k\(i)", body: utf8("v")).status == 204) }
            for i in 0..<5 { #expect(try c.request("PUT", "/v1/kv", json: #"{"key":"j\#(i)","value":"v","ttl":1}"#).status == 204) }
            for i in 0..<10 { #expect(try c.request("GET", "/v1/kv/k\(i)").status == 200) }
            for i in 0..<4 { #expect(try c.request("GET", "/v1/kv/missing\(i)").status == 404) }
            for i in 0..<3 { #expect(try c.request("DELETE", "/v1/kv/k\(i)").status == 204) }
            #expect(try c.request("PUT", "/v1/kv", json: "{bad").status == 400)
            // Refused on its head (no Host): counted under its route all the same.
            let noHost = try s.client()
            try noHost.sendRaw(Array("GET /v1/stats HTTP/1.1\r\n\r\n".utf8))
            #expect(try noHost.readResponse().status == 400)
            try await Task.sleep(for: .milliseconds(1100))
            #expect(try c.request("GET", "/v1/kv/j0").status == 404)  // expired on read
            try s.store.flushIndex()

            let scrape = try c.request("GET", "/metrics")
            #expect(scrape.status == 200)
            #expect(scrape.headers["content-type"]?.hasPrefix("text/plain; version=0.0.4") == true)
            let m = Self.samples(scrape.text)
            #expect(m[#"logkv_writes_total{op="put"}"#] == 30)
            #expect(m[#"logkv_writes_total{op="delete"}"#] == 3)
            #expect(m[#"logkv_reads_total{result="hit"}"#] == 10)
            #expect(m[#"logkv_reads_total{result="miss"}"#] == 4)
            #expect(m[#"logkv_reads_total{result="expired"}"#] == 1)
            #expect(m[#"logkv_expirations_total{reason="read"}"#] == 1)
            #expect(m[#"logkv_http_requests_total{method="PUT",route="/v1/kv/{key}",status="2xx"}"#] == 25)
            #expect(m[#"logkv_http_requests_total{method="PUT",route="/v1/kv",status="2xx"}"#] == 5)
            #expect(m[#"logkv_http_requests_total{method="PUT",route="/v1/kv",status="4xx"}"#] == 1)
            #expect(m[#"logkv_http_requests_total{method="GET",route="/v1/kv/{key}",status="4xx"}"#] == 5)
            #expect(m[#"logkv_http_requests_total{method="GET",route="/v1/stats",status="4xx"}"#] == 1)
            #expect(m[#"logkv_http_request_duration_seconds_count{method="DELETE",route="/v1/kv/{key}"}"#] == 3)
            #expect(m["logkv_keys"] == 26)
            #expect(m["logkv_segments"] == 1)
            #expect((m["logkv_live_bytes"] ?? 0) > 0)
            #expect((m["logkv_dead_bytes"] ?? 0) > 0)
            #expect((m["process_resident_memory_bytes"] ?? 0) > 1_000_000)
            #expect((m["process_open_fds"] ?? 0) > 3)
            #expect(m["logkv_recovery_replayed_records"] == 0)
            // Keys never become labels: cardinality is bounded by the routes.
            #expect(!scrape.text.contains("k17"))

            let promtool = try #require(Self.promtool(), "promtool not installed (apt-get install prometheus)")
            let file = NSTemporaryDirectory() + "metrics-\(UUID().uuidString).txt"
            try Data(scrape.body).write(to: URL(fileURLWithPath: file))
            defer { try? FileManager.default.removeItem(atPath: file) }
            let process = Process()
            process.executableURL = URL(fileURLWithPath: "/bin/sh")
            process.arguments = ["-c", "\(promtool) check metrics < \(file)"]
            let output = Pipe()
            process.standardOutput = output
            process.standardError = output
            try spawnSerialized(process)
            let exit = waitForExit(process)
            let report = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            #expect(exit == .exited(0), "promtool: \(report)")
        }
    }

    @Test func separateMetricsListenerServesOnlyMetricsAndHealth() async throws {
        try await withServer(configure: { $0.metricsAddress = ListenAddress(host: "127.0.0.1", port: 0) }) { s in
            let metricsPort = s.channels[1].localAddress!.port!
            let c = try HTTPTestClient(port: metricsPort)
            #expect(try c.request("GET", "/metrics").status == 200)
            #expect(try c.request("GET", "/health").status == 200)
            #expect(try c.request("GET", "/v1/kv/x").status == 404)
            #expect(try s.client().request("GET", "/metrics").status == 200)
        }
    }
}
