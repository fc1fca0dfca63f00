import ArgumentParser
import Foundation
import Logging
import LogKV

/// Options of commands that work on a stopped data directory.
struct DirectoryOptions: ParsableArguments {
    @Option(help: "Data directory. (env LOGKV_DATA_DIR, default data)")
    var dataDir: String?

    @Flag(help: "Work on a directory even if it does not look like a logkv data directory.")
    var force = false

    var path: String { dataDir ?? ProcessInfo.processInfo.environment["LOGKV_DATA_DIR"] ?? "data" }

    /// Opens the store for an offline command: quiet logs, no background work.
    ///
    /// Only a logkv data directory (`segments/` holding a logkv segment) is
    /// opened — opening creates and rewrites files, which must never happen
    /// to an unrelated directory. With `create`, a missing or empty
    /// directory is made one. `--force` skips the check.
    func open(create: Bool = false, _ configure: (inout LogKVOptions) -> Void = { _ in }) throws -> LogKV {
        if !force && !LogKV.isDataDirectory(path) {
            let entries = (try? FileManager.default.contentsOfDirectory(atPath: path)) ?? []
            let missing = !FileManager.default.fileExists(atPath: path)
            guard create && (missing || entries.isEmpty) else {
                throw Failure.usage(missing ? "\(path) does not exist"
                    : "\(path) is not a logkv data directory (no logkv segment in segments/); nothing was changed (--force to use it anyway)")
            }
        }
        var options = LogKVOptions()
        options.autoCompaction = false
        options.expirySweepPerSecond = 0
        options.compactionBytesPerSecond = 0
        options.logger = adminLogger()
        configure(&options)
        return try engine { try LogKV(path: path, options: options) }
    }
}

/// The engine's log for admin commands: warnings and worse unless
/// `LOGKV_LOG_LEVEL` says otherwise (e.g. `info` shows a rebuild's phases).
func adminLogger() -> Logger {
    var logger = Logger(label: "logkv")
    let level = ProcessInfo.processInfo.environment["LOGKV_LOG_LEVEL"].flatMap(Logger.Level.init(rawValue:))
    logger.logLevel = level ?? .warning
    return logger
}

/// Runs engine work, turning its errors into one-line failures (exit 3).
func engine<T>(_ body: () throws -> T) throws -> T {
    do { return try body() } catch let error as LogKVError {
        throw Failure.server(error.description)
    }
}

struct Check: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Verify every record's checksum and that the index agrees with the segments.")
    @OptionGroup var directory: DirectoryOptions

    func run() throws {
        // `check` takes the directory's lock (writing LOCK): never in a
        // directory that is not logkv's.
        guard directory.force || LogKV.isDataDirectory(directory.path) else {
            throw Failure.usage("\(directory.path) is not a logkv data directory (no logkv segment in segments/); nothing was changed (--force to check it anyway)")
        }
        let progress = Progress("checking segments")
        let report = try engine { try LogKV.check(path: directory.path) { progress.update($0, $1) } }
        progress.finish()
        print("\(report.segments) segments, \(report.records) records, \(report.keys) live keys in the index")
        for problem in report.problems { print("problem: \(problem)") }
        if !report.isHealthy { throw Failure.server("\(report.problems.count) problem(s) found") }
        print("ok")
    }
}

struct RebuildIndex: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "rebuild-index", abstract: "Rebuild index.sqlite from the segments.")
    @OptionGroup var directory: DirectoryOptions

    func run() throws {
        let progress = Progress("rebuilding index")
        let store = try directory.open {
            $0.forceIndexRebuild = true
            $0.recoveryProgress = { done, total, records in progress.update(done, total, detail: "\(records) records") }
        }
        progress.finish()
        let stats = try engine { try store.stats() }
        try engine { try store.close() }
        print("index rebuilt: \(stats.keys) keys in \(stats.segments) segments")
    }
}

struct Compact: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Compact every segment with garbage now.")
    @OptionGroup var directory: DirectoryOptions

    func run() throws {
        let progress = Progress("compacting segments")
        let store = try directory.open { $0.compactionProgress = { done, total in progress.update(done, total) } }
        let before = try engine { try store.stats() }
        FileHandle.standardError.write(Data("\(before.segments) segments, \(before.deadBytes) dead bytes\n".utf8))
        let report = try engine { try store.compact() }
        progress.finish()
        let after = try engine { try store.stats() }
        try engine { try store.close() }
        print("compacted \(report.segmentsCompacted) segments into \(report.segmentsWritten); reclaimed \(report.bytesReclaimed) bytes; \(after.segments) segments, \(after.deadBytes) dead bytes left")
    }
}

struct Backup: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Write a consistent copy of a data directory (its segments) to DEST.",
        discussion: """
            Offline (default): opens and locks the stopped data directory and writes DEST as a directory \
            holding segments/. With --online, streams a snapshot from a running logkvd (--addr / \
            LOGKV_ADDR, GET /v1/admin/backup) into DEST, a new archive file (tar). `restore` takes either \
            and rebuilds the index.
            """)
    @OptionGroup var directory: DirectoryOptions
    @Flag(help: "Back up through a running logkvd instead.") var online = false
    @Option(help: "Server address for --online. (env LOGKV_ADDR)") var addr: String?
    @Option(help: "Seconds --online may take in all. (env LOGKV_TIMEOUT, default 3600)") var timeout: Double?
    @OptionGroup var tls: TLSOptions
    @Argument(help: "Destination: a new or empty directory; with --online, a new archive file.") var destination: String

    func run() throws {
        if online {
            let env = ProcessInfo.processInfo.environment
            let client = try KVClient(address: addr ?? env["LOGKV_ADDR"] ?? ":8080", token: env["LOGKV_TOKEN"], tls: tls.files)
            let deadline = timeout ?? env["LOGKV_TIMEOUT"].flatMap(Double.init) ?? 3600
            guard deadline > 0 else { throw Failure.usage("--timeout must be positive") }
            let bytes = try client.download("/v1/admin/backup", to: destination, timeout: deadline)
            print("backed up \(bytes) bytes from \(client.base) to \(destination)")
            return
        }
        let store = try directory.open()
        let result = try engine { try store.backup(to: destination) }
        try engine { try store.close() }
        print("backed up \(result.segments) segments, \(result.bytes) bytes to \(destination)")
    }
}

struct Restore: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Create a data directory from a backup.")
    @Argument(help: "The backup: a directory written by `backup`, or an archive written by `backup --online`.") var backup: String
    @OptionGroup var directory: DirectoryOptions

    func run() throws {
        var options = LogKVOptions()
        options.autoCompaction = false
        options.expirySweepPerSecond = 0
        options.logger = adminLogger()
        let stats = try engine { try LogKV.restore(from: backup, to: directory.path, options: options) }
        print("restored \(stats.keys) keys into \(directory.path)")
    }
}

struct Dump: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Export all live keys as JSON lines.",
        discussion: #"One object per line: {"key": "...", "value": "...", "expires_at": MS?}; binary keys or values use "key_base64" / "value_base64"."#)
    @OptionGroup var directory: DirectoryOptions
    @Option(help: "Write here instead of standard output.") var output: String?

    /// Read-only: reads the segments as they are (no lock written, no
    /// recovery, no index), so it is safe on any copy of a data directory.
    func run() throws {
        guard LogKV.isDataDirectory(directory.path) else {
            throw Failure.usage("\(directory.path) is not a logkv data directory")
        }
        let out: FileHandle
        if let output {
            // Every value goes in it: owner only, like the data directory.
            FileManager.default.createFile(atPath: output, contents: nil, attributes: [.posixPermissions: 0o600])
            guard let handle = FileHandle(forWritingAtPath: output) else { throw Failure.usage("cannot write \(output)") }
            out = handle
        } else {
            out = FileHandle.standardOutput
        }
        var count = 0
        let result = try engine {
            try LogKV.forEachLiveRecord(readOnlyPath: directory.path) { key, stored in
                var object: [String: Any] = [:]
                Self.put(key, into: &object, name: "key")
                Self.put(stored.value, into: &object, name: "value")
                if let expires = stored.expiresAt { object["expires_at"] = expires }
                out.write(try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys]) + Data("\n".utf8))
                count += 1
            }
        }
        if result.damaged > 0 {
            FileHandle.standardError.write(Data("warning: \(result.damaged) damaged or torn stretches skipped (run `logkv check`)\n".utf8))
        }
        FileHandle.standardError.write(Data("dumped \(count) keys\n".utf8))
    }

    static func put(_ bytes: [UInt8], into object: inout [String: Any], name: String) {
        if let text = String(validating: bytes, as: UTF8.self) {
            object[name] = text
        } else {
            object[name + "_base64"] = Data(bytes).base64EncodedString()
        }
    }
}

struct Load: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Import keys from JSON lines (the format `dump` writes).")
    @OptionGroup var directory: DirectoryOptions
    @Option(help: "Read from here instead of standard input.") var input: String?

    /// Every line is read and checked before anything is written: a file
    /// with a bad line loads nothing, and each bad line is reported with its
    /// number (exit 2).
    func run() throws {
        let data = try readInput(file: input)
        let now = LogKVOptions.systemMillis()
        var records: [(key: [UInt8], value: [UInt8], expiresAt: Int64?)] = []
        var problems: [String] = []
        for (number, line) in data.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false).enumerated()
        where !line.allSatisfy({ $0 == UInt8(ascii: " ") || $0 == UInt8(ascii: "\r") }) {
            do {
                records.append(try Self.record(Data(line)))
            } catch let failure as Failure {
                problems.append("line \(number + 1): \(failure.message)")
            }
        }
        guard problems.isEmpty else {
            for problem in problems.prefix(50) { FileHandle.standardError.write(Data("logkv: \(problem)\n".utf8)) }
            if problems.count > 50 { FileHandle.standardError.write(Data("logkv: … and \(problems.count - 50) more\n".utf8)) }
            throw Failure.usage("\(problems.count) bad line(s); nothing was loaded")
        }
        let store = try directory.open(create: true)
        defer { try? store.close() }
        var loaded = 0, expired = 0
        for record in records {
            if let expiresAt = record.expiresAt, expiresAt <= now { expired += 1; continue }
            try engine { try store.put(record.key, record.value, expiresAt: record.expiresAt) }
            loaded += 1
        }
        try engine { try store.flushIndex() }
        print("loaded \(loaded) keys (\(expired) already expired, skipped)")
    }

    /// One line of `dump`'s format, checked: an object with `key` and
    /// `value` (or their `_base64` forms) and, if present, `expires_at` as
    /// whole milliseconds since the epoch.
    static func record(_ line: Data) throws -> (key: [UInt8], value: [UInt8], expiresAt: Int64?) {
        guard let object = try? JSONSerialization.jsonObject(with: line) as? [String: Any] else {
            throw Failure.usage("not a JSON object")
        }
        guard let key = bytes(object, "key"), !key.isEmpty else {
            throw Failure.usage("needs a non-empty \"key\" (or \"key_base64\")")
        }
        guard let value = bytes(object, "value") else { throw Failure.usage("needs \"value\" (or \"value_base64\")") }
        guard let raw = object["expires_at"], !(raw is NSNull) else { return (key, value, nil) }
        // JSONSerialization gives numbers as NSNumber, booleans too: only a
        // whole, positive number of milliseconds is an expiry.
        guard type(of: raw) != Bool.self, let number = raw as? NSNumber, String(cString: number.objCType) != "c",
              let millis = Int64(exactly: number.doubleValue), Double(millis) == number.doubleValue, millis > 0 else {
            throw Failure.usage("\"expires_at\" must be whole milliseconds since 1970 (got \(raw))")
        }
        return (key, value, millis)
    }

    static func bytes(_ object: [String: Any], _ name: String) -> [UInt8]? {
        if let text = object[name] as? String { return Array(text.utf8) }
        if let encoded = object[name + "_base64"] as? String, let data = Data(base64Encoded: encoded) { return Array(data) }
        return nil
    }
}
