import ArgumentParser
import Foundation
import LogKV

/// `swift run -c release logkv-bench`: ours against a plain SQLite table,
/// side by side in one run, printed as a table of ratios.
@main
struct LogKVBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "logkv-bench",
        abstract: "Benchmarks the logkv engine against a SQLite-table baseline.",
        subcommands: [Run.self, ResidentMemory.self, HelloServer.self],
        defaultSubcommand: Run.self)
}

struct Run: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "run", abstract: "Run every benchmark (default).")

    @Option(help: "Keys written in each put benchmark.") var putKeys = 300_000
    @Option(help: "Keys in the get benchmark whose key set fits the cache budget.") var getKeys = 100_000
    @Option(help: "Random gets per get benchmark.") var gets = 300_000
    @Option(help: "Key counts for the restart benchmark (comma-separated).") var restartKeys = "100000,1000000"
    @Option(help: "Key counts for the memory benchmark (comma-separated).") var memoryKeys = "1000000,5000000"
    @Option(help: "fsync policy for our puts.") var fsync = "interval"
    @Option(help: "Concurrent writer threads in the put benchmarks (both sides).") var writers = 1
    @Option(help: "Keys in the compaction benchmark (each overwritten 3 times).") var compactionKeys = 200_000
    @Option(help: "Only these sections (put,get,restart,memory,compaction).") var only = "put,get,restart,memory,compaction"

    struct Row { var name: String; var ours: String; var baseline: String; var ratio: String; var target: String }

    func run() throws {
        var rows: [Row] = []
        let sections = Set(only.split(separator: ",").map(String.init))
        func log(_ s: String) { FileHandle.standardError.write((s + "\n").data(using: .utf8)!) }

        if sections.contains("put") {
            for (size, target) in [(100, 1.2), (4096, 3.0)] {
                let n = size > 1000 ? putKeys / 3 : putKeys
                log("put \(n) x \(size) B ...")
                let ours = try oursPut(keys: n, valueSize: size)
                let base = ProcessInfo.processInfo.environment["BENCH_NO_BASELINE"] != nil ? ours : baselinePut(keys: n, valueSize: size)
                rows.append(Row(name: "put \(size) B values, \(writers) writer(s), ops/s", ours: fmt(ours), baseline: fmt(base),
                                ratio: ratio(ours, base), target: "≥ \(target)x"))
            }
        }
        if sections.contains("get") {
            let budgetPerKey = 24 + 120
            let budget = getKeys * budgetPerKey
            for (keys, label, target) in [(getKeys, "fits budget", 1.0), (getKeys * 10, "10x budget", 0.7)] {
                log("get \(label): \(keys) keys, budget \(budget) B ...")
                let (ours, base) = try getBench(keys: keys, cacheBytes: budget)
                rows.append(Row(name: "get, key set \(label) (\(keys) keys), ops/s", ours: fmt(ours),
                                baseline: fmt(base), ratio: ratio(ours, base), target: "≥ \(target)x"))
            }
        }
        if sections.contains("restart") {
            for keys in restartKeys.split(separator: ",").compactMap({ Int($0) }) {
                log("restart at \(keys) keys ...")
                let r = try restartBench(keys: keys)
                rows.append(Row(name: "restart after clean close, \(keys) keys", ours: ms(r.clean), baseline: ms(r.baselineOpen),
                                ratio: ratio(r.baselineOpen, r.clean), target: "< 100 ms"))
                rows.append(Row(name: "restart after crash, \(r.backlog)-entry backlog", ours: ms(r.crash), baseline: "-",
                                ratio: "-", target: "-"))
                rows.append(Row(name: "restart with full index rebuild, \(keys) keys", ours: ms(r.rebuild), baseline: "-",
                                ratio: "-", target: "-"))
            }
        }
        if sections.contains("memory") {
            for keys in memoryKeys.split(separator: ",").compactMap({ Int($0) }) {
                log("memory at \(keys) keys (child process) ...")
                let rss = try childRSS(keys: keys)
                rows.append(Row(name: "resident memory after \(keys) keys + reads", ours: mib(rss.rss),
                                baseline: "peak \(mib(rss.peak))", ratio: "-", target: "bounded by budgets"))
            }
        }
        if sections.contains("compaction") {
            log("compaction with \(compactionKeys) keys ...")
            let c = try compactionBench(keys: compactionKeys)
            rows.append(Row(name: "space amplification (disk / live) before → after compaction", ours: String(format: "%.2f → %.2f", c.ampBefore, c.ampAfter),
                            baseline: "-", ratio: "-", target: "-"))
            rows.append(Row(name: "compaction throughput (read, 64 MiB/s limit), MB/s", ours: String(format: "%.0f", c.mbPerSecond), baseline: "-", ratio: "-",
                            target: "-"))
            rows.append(Row(name: "mixed put/get ops/s: during compaction vs without", ours: fmt(c.opsDuring), baseline: fmt(c.opsWithout),
                            ratio: ratio(c.opsDuring, c.opsWithout), target: "≥ 0.7x"))
            rows.append(Row(name: "mixed put/get p99: during compaction vs without", ours: String(format: "%.1f µs", c.p99During * 1e6),
                            baseline: String(format: "%.1f µs", c.p99Without * 1e6), ratio: ratio(c.p99During, c.p99Without), target: "-"))
        }
        printTable(rows)
    }

    struct CompactionResult {
        var ampBefore: Double, ampAfter: Double, mbPerSecond: Double
        var opsDuring: Double, opsWithout: Double, p99During: Double, p99Without: Double
    }

    /// A store with every key overwritten three times; then the same mixed
    /// workload (1 put : 3 gets) with and without a compaction running.
    func compactionBench(keys: Int) throws -> CompactionResult {
        let path = tempPath("compaction")
        defer { try? FileManager.default.removeItem(atPath: path) }
        var options = LogKVOptions()
        options.autoCompaction = false
        options.segmentSize = 16 << 20
        let store = try LogKV(path: path, options: options)
        let value = Workload.value(4, size: 100)
        let keyList = (0..<keys).map { Workload.key($0) }
        for _ in 0..<3 { for key in keyList { try store.put(key, value) } }
        try store.flushIndex()
        func amplification() throws -> Double {
            let s = try store.stats()
            return Double(directorySize(path + "/segments")) / Double(max(1, s.liveBytes))
        }
        let ampBefore = try amplification()
        // A quiet compaction first: space and speed on their own.
        let quiet = try store.compact()
        let ampAfter = try amplification()
        // Then garbage again, for the same workload with and without a
        // compaction running.
        for _ in 0..<2 { for key in keyList { try store.put(key, value) } }
        try store.flushIndex()

        func workload(until done: () -> Bool, minimum: Double) throws -> (ops: Double, p99: Double) {
            var latencies: [UInt64] = []
            var rng = Workload.Rng(state: 42)
            let start = DispatchTime.now().uptimeNanoseconds
            var i = 0
            while true {
                let elapsed = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
                if elapsed >= minimum && done() { break }
                let key = keyList[Int(rng.next() % UInt64(keys))]
                let t0 = DispatchTime.now().uptimeNanoseconds
                if i % 4 == 0 { try store.put(key, value) } else { _ = try store.get(key) }
                latencies.append(DispatchTime.now().uptimeNanoseconds - t0)
                i += 1
            }
            let total = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
            latencies.sort()
            return (Double(i) / total, Double(latencies[latencies.count * 99 / 100]) / 1e9)
        }
        let without = try workload(until: { true }, minimum: 3)
        final class Flag: @unchecked Sendable { let lock = NSLock(); var done = false; var report: CompactionReport?; var error: Error? }
        let flag = Flag()
        let thread = Thread {
            do {
                let report = try store.compact()
                flag.lock.withLock { flag.report = report }
            } catch {
                flag.lock.withLock { flag.error = error }
            }
            flag.lock.withLock { flag.done = true }
        }
        thread.start()
        let during = try workload(until: { flag.lock.withLock { flag.done } }, minimum: 1)
        if let error = flag.error { throw error }
        try store.close()
        return CompactionResult(ampBefore: ampBefore, ampAfter: ampAfter,
                                mbPerSecond: Double(quiet.bytesRead) / 1e6 / max(quiet.seconds, 1e-9),
                                opsDuring: during.ops, opsWithout: without.ops, p99During: during.p99, p99Without: without.p99)
    }

    func oursPut(keys: Int, valueSize: Int) throws -> Double {
        let path = tempPath("put")
        defer { try? FileManager.default.removeItem(atPath: path) }
        let values = (0..<64).map { Workload.value($0, size: valueSize) }
        let keyList = (0..<keys).map { Workload.key($0) }
        var appendSeconds = 0.0
        let t = try seconds {
            var options = LogKVOptions()
            options.fsync = FsyncPolicy(rawValue: fsync) ?? .interval
            let store = try LogKV(path: path, options: options)
            appendSeconds = try seconds {
                try inParallel(writers) { w in
                    for i in stride(from: w, to: keys, by: writers) { try store.put(keyList[i], values[i % 64]) }
                }
            }
            try store.close()
        }
        if ProcessInfo.processInfo.environment["BENCH_VERBOSE"] != nil {
            FileHandle.standardError.write("  appends took \(appendSeconds) s of \(t) s\n".data(using: .utf8)!)
        }
        return Double(keys) / t
    }

    func baselinePut(keys: Int, valueSize: Int) -> Double {
        let path = tempPath("put-base")
        try? FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: path) }
        let values = (0..<64).map { Workload.value($0, size: valueSize) }
        let keyList = (0..<keys).map { Workload.key($0) }
        let t = seconds {
            let db = SQLiteBaseline(path: path + "/kv.sqlite", cacheBytes: 64 << 20)
            // One connection, one writer at a time: SQLite's own rule.
            let lock = NSLock()
            try? inParallel(writers) { w in
                for i in stride(from: w, to: keys, by: writers) { lock.withLock { db.put(keyList[i], values[i % 64]) } }
            }
            db.close()
        }
        return Double(keys) / t
    }

    func getBench(keys: Int, cacheBytes: Int) throws -> (Double, Double) {
        let path = tempPath("get")
        defer { try? FileManager.default.removeItem(atPath: path) }
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        var options = LogKVOptions()
        options.cacheBudgetBytes = cacheBytes
        let value = Workload.value(1, size: 100)
        do {
            let store = try LogKV(path: path + "/ours", options: options)
            for i in 0..<keys { try store.put(Workload.key(i), value) }
            try store.close()
        }
        let db = SQLiteBaseline(path: path + "/base.sqlite", cacheBytes: cacheBytes)
        for i in 0..<keys { db.put(Workload.key(i), value) }
        db.commit()
        let probe = (0..<gets).map { i -> [UInt8] in
            var rng = Workload.Rng(state: UInt64(i) &* 77)
            return Workload.key(Int(rng.next() % UInt64(keys)))
        }
        let store = try LogKV(path: path + "/ours", options: options)
        // Warm both equally: one pass over the probe set, then measure.
        for key in probe.prefix(gets / 3) { _ = try store.get(key); _ = db.get(key) }
        var found = 0
        let ours = try seconds { for key in probe where try store.get(key) != nil { found += 1 } }
        let base = seconds { for key in probe where db.get(key) != nil { found += 1 } }
        precondition(found == 2 * gets, "lost keys: found \(found) of \(2 * gets)")
        try store.close()
        db.close()
        return (Double(gets) / ours, Double(gets) / base)
    }

    struct RestartResult { var clean: Double; var crash: Double; var rebuild: Double; var baselineOpen: Double; var backlog: Int }

    func restartBench(keys: Int) throws -> RestartResult {
        let path = tempPath("restart")
        defer { try? FileManager.default.removeItem(atPath: path) }
        let options = LogKVOptions()
        let backlog = min(options.maxPendingEntries, keys / 2)
        let value = Workload.value(2, size: 100)
        let dataDir = path + "/data"
        do {
            let store = try LogKV(path: dataDir, options: options)
            for i in 0..<(keys - backlog) { try store.put(Workload.key(i), value) }
            try store.close()
        }
        // An index whose checkpoint is `backlog` records behind: what a crash
        // with a full flush backlog leaves.
        try FileManager.default.copyItem(atPath: dataDir + "/index.sqlite", toPath: path + "/behind.sqlite")
        do {
            let store = try LogKV(path: dataDir, options: options)
            for i in (keys - backlog)..<keys { try store.put(Workload.key(i), value) }
            try store.close()
        }
        let probe = Workload.key(keys / 3)
        func openAndGet() throws -> Double {
            var store: LogKV?
            let t = try seconds {
                store = try LogKV(path: dataDir, options: options)
                let found = try store!.get(probe)
                precondition(found != nil)
            }
            try store?.close()
            return t
        }
        let clean = try (0..<3).map { _ in try openAndGet() }.min()!
        try FileManager.default.removeItem(atPath: dataDir + "/index.sqlite")
        try FileManager.default.copyItem(atPath: path + "/behind.sqlite", toPath: dataDir + "/index.sqlite")
        let crash = try openAndGet()
        try FileManager.default.removeItem(atPath: dataDir + "/index.sqlite")
        let rebuild = try openAndGet()

        let db = SQLiteBaseline(path: path + "/base.sqlite", cacheBytes: 8 << 20)
        for i in 0..<keys { db.put(Workload.key(i), value) }
        db.close()
        let baselineOpen = seconds {
            let db = SQLiteBaseline(path: path + "/base.sqlite", cacheBytes: 8 << 20)
            precondition(db.get(probe) != nil)
            db.close()
        }
        return RestartResult(clean: clean, crash: crash, rebuild: rebuild, baselineOpen: baselineOpen, backlog: backlog)
    }

    func childRSS(keys: Int) throws -> (rss: Int, peak: Int) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: CommandLine.arguments[0])
        process.arguments = ["resident-memory", "--keys", String(keys)]
        let out = Pipe()
        process.standardOutput = out
        try process.run()
        let data = out.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        let parts = String(decoding: data, as: UTF8.self).split(whereSeparator: \.isWhitespace).compactMap { Int($0) }
        guard parts.count == 2 else { throw ValidationError("child printed \(String(decoding: data, as: UTF8.self))") }
        return (parts[0], parts[1])
    }

    /// Runs `body(0..<n)` on n threads and waits for all of them.
    func inParallel(_ n: Int, _ body: @escaping @Sendable (Int) throws -> Void) throws {
        final class Failure: @unchecked Sendable { var error: Error? ; let lock = NSLock() }
        let failure = Failure()
        let group = DispatchGroup()
        for w in 0..<n {
            let thread = Thread {
                do { try body(w) } catch { failure.lock.withLock { failure.error = error } }
                group.leave()
            }
            group.enter()
            thread.start()
        }
        group.wait()
        if let error = failure.error { throw error }
    }

    func fmt(_ x: Double) -> String { String(format: "%.0f", x) }
    func ms(_ s: Double) -> String { String(format: "%.1f ms", s * 1000) }
    func mib(_ b: Int) -> String { String(format: "%.0f MiB", Double(b) / 1048576) }
    func ratio(_ a: Double, _ b: Double) -> String { String(format: "%.2fx", a / b) }

    func printTable(_ rows: [Row]) {
        let header = Row(name: "benchmark", ours: "logkv", baseline: "sqlite table", ratio: "ratio", target: "target")
        let all = [header] + rows
        let widths = [all.map(\.name.count).max()!, all.map(\.ours.count).max()!, all.map(\.baseline.count).max()!,
                      all.map(\.ratio.count).max()!, all.map(\.target.count).max()!]
        func line(_ r: Row) -> String {
            let cells = [r.name, r.ours, r.baseline, r.ratio, r.target]
            return "| " + zip(cells, widths).map { $0.padding(toLength: $1, withPad: " ", startingAt: 0) }.joined(separator: " | ") + " |"
        }
        print(line(header))
        print("|" + widths.map { String(repeating: "-", count: $0 + 2) }.joined(separator: "|") + "|")
        for r in rows { print(line(r)) }
    }
}

/// Child process for the memory benchmark: loads N keys with default
/// budgets, reads a sample back, prints "RSS PEAK" in bytes.
struct ResidentMemory: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "resident-memory", shouldDisplay: false)
    @Option var keys = 1_000_000

    func run() throws {
        let path = tempPath("rss")
        defer { try? FileManager.default.removeItem(atPath: path) }
        let value = Workload.value(3, size: 100)
        let store = try LogKV(path: path, options: LogKVOptions())
        for i in 0..<keys { try store.put(Workload.key(i), value) }
        try store.flushIndex()
        var rng = Workload.Rng(state: 9)
        for _ in 0..<200_000 { _ = try store.get(Workload.key(Int(rng.next() % UInt64(keys)))) }
        let mem = residentMemory()
        try store.close()
        print(mem.rss, mem.peak)
    }
}
