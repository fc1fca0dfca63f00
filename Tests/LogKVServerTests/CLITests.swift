import Foundation
import LogKV
import LogKVTestSupport
import Testing

/// The `logkv` tool end to end: client commands against a live logkvd,
/// admin commands on real data directories.
@Suite(.serialized) struct CLITests {
    struct Run { var status: Int32; var stdout: Data; var stderr: String; var text: String { String(decoding: stdout, as: UTF8.self) } }

    @discardableResult
    static func logkv(_ args: [String], stdin: Data? = nil, env: [String: String] = [:]) throws -> Run {
        var environment = ProcessInfo.processInfo.environment
        for (k, v) in env { environment[k] = v }
        let out = Pipe(), err = Pipe(), input = Pipe()
        let process = try runRetryingSpawnRaces {
            let process = Process()
            process.executableURL = URL(fileURLWithPath: builtProduct("logkv"))
            process.arguments = args
            process.environment = environment
            process.standardOutput = out
            process.standardError = err
            process.standardInput = input
            return process
        }
        if let stdin { input.fileHandleForWriting.write(stdin) }
        try input.fileHandleForWriting.close()
        let stdout = out.fileHandleForReading.readDataToEndOfFile()
        let stderr = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        return Run(status: waitForExit(process).code, stdout: stdout, stderr: stderr)
    }

    func tempDir() -> String { NSTemporaryDirectory() + "logkv-cli-\(UUID().uuidString)" }

    @Test func clientCommandsAgainstALiveServer() throws {
        let dir = tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let server = try LiveServerTests.Logkvd(dataDir: dir, env: ["LOGKV_TOKEN": "tk"])
        let port = server.port
        #expect(server.waitUntilReady())
        defer { _ = server.terminate() }
        let env = ["LOGKV_ADDR": "127.0.0.1:\(port)", "LOGKV_TOKEN": "tk"]

        #expect(try Self.logkv(["set", "greeting", "hello"], env: env).status == 0)
        #expect(try Self.logkv(["get", "greeting"], env: env).text == "hello")
        // Binary through stdin and stdout, byte for byte.
        let binary = Data((0..<5000).map { UInt8(truncatingIfNeeded: $0 &* 131) })
        #expect(try Self.logkv(["set", "bin/a"], stdin: binary, env: env).status == 0)
        #expect(try Self.logkv(["get", "bin/a"], env: env).stdout == binary)
        // From a file, with a TTL; every address form works.
        let file = dir + "-value"
        try Data("from file".utf8).write(to: URL(fileURLWithPath: file))
        defer { try? FileManager.default.removeItem(atPath: file) }
        for addr in ["http://127.0.0.1:\(port)", "127.0.0.1:\(port)", ":\(port)"] {
            #expect(try Self.logkv(["set", "f", "--file", file, "--ttl", "120", "--addr", addr], env: ["LOGKV_TOKEN": "tk"]).status == 0)
        }
        let ttl = try Self.logkv(["ttl", "f"], env: env)
        #expect(Int(ttl.text.trimmingCharacters(in: .whitespacesAndNewlines)).map { (60...120).contains($0) } == true)
        #expect(try Self.logkv(["ttl", "greeting"], env: env).text == "none\n")
        // With SECONDS it renews: a new TTL from now, the value untouched.
        #expect(try Self.logkv(["ttl", "f", "3600"], env: env).status == 0)
        let renewed = try Self.logkv(["ttl", "f"], env: env)
        #expect(Int(renewed.text.trimmingCharacters(in: .whitespacesAndNewlines)).map { (3000...3600).contains($0) } == true)
        #expect(try Self.logkv(["ttl", "f", "0"], env: env).status == 0)
        #expect(try Self.logkv(["ttl", "f"], env: env).text == "none\n")
        #expect(try Self.logkv(["ttl", "nobody", "10"], env: env).status == 1)
        // Listing pages through everything.
        for i in 0..<25 { try Self.logkv(["set", "p/\(i)", "v"], env: env) }
        let listed = try Self.logkv(["list", "--prefix", "p/", "--page-size", "7"], env: env)
        #expect(listed.text.split(separator: "\n").count == 25)
        let json = try Self.logkv(["list", "--prefix", "p/", "--json"], env: env)
        #expect((try JSONSerialization.jsonObject(with: json.stdout) as? [String])?.count == 25)
        #expect(try Self.logkv(["stats"], env: env).text.contains("total_keys: 28"))
        let batch = try Self.logkv(["batch"], stdin: Data(#"{"ops":[{"op":"get","key":"greeting"}]}"#.utf8), env: env)
        #expect(batch.text.contains(#""value":"hello""#))
        // Exit codes.
        #expect(try Self.logkv(["delete", "greeting"], env: env).status == 0)
        let missing = try Self.logkv(["get", "greeting"], env: env)
        #expect(missing.status == 1)
        #expect(missing.stderr.contains("not found"))
        #expect(try Self.logkv(["delete", "greeting"], env: env).status == 1)
        #expect(try Self.logkv(["get"], env: env).status == 2)
        #expect(try Self.logkv(["set", "k", "--ttl", "-1", "v"], env: env).status == 2)
        let unauthorized = try Self.logkv(["get", "f"], env: ["LOGKV_ADDR": "127.0.0.1:\(port)", "LOGKV_TOKEN": "wrong"])
        #expect(unauthorized.status == 3)
        // Online backup through the running server, then restore it.
        let backup = try Self.logkv(["backup", "--online", dir + "-online"], env: env)
        defer { for d in ["-online", "-online-restored"] { try? FileManager.default.removeItem(atPath: dir + d) } }
        #expect(backup.status == 0, "\(backup.stderr)")
        let restored = try Self.logkv(["restore", dir + "-online", "--data-dir", dir + "-online-restored"])
        #expect(restored.status == 0, "\(restored.stderr)")
        #expect(try Self.logkv(["dump", "--data-dir", dir + "-online-restored"]).text.contains(#""key":"f""#))
        // The archive is a plain tar of segment files.
        let listing = Pipe()
        let tar = try runRetryingSpawnRaces {
            let tar = Process()
            tar.executableURL = URL(fileURLWithPath: "/usr/bin/env")
            tar.arguments = ["tar", "tf", dir + "-online"]
            tar.standardOutput = listing
            return tar
        }
        let names = String(decoding: listing.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self).split(separator: "\n")
        _ = waitForExit(tar)
        #expect(names.last == "BACKUP_COMPLETE", "\(names)")
        #expect(names.count > 1 && names.dropLast().allSatisfy { $0.hasPrefix("segments/") && $0.hasSuffix(".seg") }, "\(names)")
        let again = try Self.logkv(["backup", "--online", dir + "-online"], env: env)
        #expect(again.status != 0 && again.stderr.contains("already exists"))  // never overwrites
        let unreachable = try Self.logkv(["get", "f", "--addr", "127.0.0.1:1"])
        #expect(unreachable.status == 3)
        #expect(unreachable.stderr.split(separator: "\n").count == 1)
    }

    @Test func adminCommandsOnAStoppedDirectory() throws {
        let dir = tempDir()
        defer { for suffix in ["", "-backup", "-restored", "-loaded"] { try? FileManager.default.removeItem(atPath: dir + suffix) } }
        let server = try LiveServerTests.Logkvd(dataDir: dir)
        let port = server.port
        #expect(server.waitUntilReady())
        let env = ["LOGKV_ADDR": "127.0.0.1:\(port)"]
        for round in 0..<3 { for i in 0..<40 { try Self.logkv(["set", "k\(i)", "round\(round)"], env: env) } }
        try Self.logkv(["set", "bin"], stdin: Data([0, 255, 10, 13]), env: env)
        // While the server runs, offline commands are refused with the holder named.
        let locked = try Self.logkv(["check", "--data-dir", dir])
        #expect(locked.status == 3)
        #expect(locked.stderr.contains("locked by another process"))
        #expect(server.terminate() == 0)

        let check = try Self.logkv(["check", "--data-dir", dir])
        #expect(check.status == 0, "\(check.text)")
        #expect(check.text.contains("ok"))
        #expect(check.stderr.contains("checking segments: 1/1"))  // plain progress lines off a TTY

        let rebuild = try Self.logkv(["rebuild-index", "--data-dir", dir])
        #expect(rebuild.status == 0)
        #expect(rebuild.stderr.contains("rebuilding index: 1/1"))
        #expect(rebuild.text.contains("41 keys"))

        let compact = try Self.logkv(["compact", "--data-dir", dir])
        #expect(compact.status == 0, "\(compact.stderr)")
        #expect(compact.text.contains("compacted 1 segments"))
        #expect(compact.stderr.contains("compacting segments: 1/1"))

        #expect(try Self.logkv(["backup", "--data-dir", dir, dir + "-backup"]).status == 0)
        let restore = try Self.logkv(["restore", dir + "-backup", "--data-dir", dir + "-restored"])
        #expect(restore.status == 0, "\(restore.stderr)")
        #expect(restore.text.contains("restored 41 keys"))

        let dump = try Self.logkv(["dump", "--data-dir", dir + "-restored"])
        #expect(dump.status == 0)
        let lines = dump.text.split(separator: "\n")
        #expect(lines.count == 41)
        #expect(dump.text.contains(#""value_base64":"AP8KDQ==""#))
        let load = try Self.logkv(["load", "--data-dir", dir + "-loaded"], stdin: dump.stdout)
        #expect(load.status == 0, "\(load.stderr)")
        #expect(try Self.logkv(["dump", "--data-dir", dir + "-loaded"]).stdout == dump.stdout)
        #expect(try Self.logkv(["check", "--data-dir", dir + "-loaded"]).status == 0)
        #expect(try Self.logkv(["load", "--data-dir", dir + "-loaded"], stdin: Data("not json\n".utf8)).status == 2)
    }

    @Test func checkReportsAFlippedByteWithSegmentAndOffset() throws {
        let dir = tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try Self.logkv(["load", "--data-dir", dir], stdin: Data((0..<20).map { #"{"key":"k\#($0)","value":"v\#($0)"}"# + "\n" }.joined().utf8))
        let segment = dir + "/segments/000000000001.seg"
        var bytes = try Data(contentsOf: URL(fileURLWithPath: segment))
        bytes[64 + 37 + 3] ^= 0x40
        try bytes.write(to: URL(fileURLWithPath: segment))
        let check = try Self.logkv(["check", "--data-dir", dir])
        #expect(check.status == 3)
        #expect(check.text.contains("segment 1 offset 64: checksum mismatch"))
    }

    /// Files of a directory with their contents, to show nothing changed.
    func snapshot(_ dir: String) -> [String: Data] {
        var out: [String: Data] = [:]
        let base = URL(fileURLWithPath: dir)
        for case let path as String in FileManager.default.enumerator(atPath: dir) ?? FileManager.default.enumerator(atPath: "/nonexistent")! {
            let url = base.appendingPathComponent(path)
            var isDir: ObjCBool = false
            if FileManager.default.fileExists(atPath: url.path, isDirectory: &isDir), !isDir.boolValue {
                out[path] = (try? Data(contentsOf: url)) ?? Data()
            } else {
                out[path + "/"] = Data()
            }
        }
        return out
    }

    @Test func offlineCommandsNeverTouchADirectoryThatIsNotALogkvDataDirectory() throws {
        let dir = tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try FileManager.default.createDirectory(atPath: dir + "/segments", withIntermediateDirectories: true)
        try Data("precious database".utf8).write(to: URL(fileURLWithPath: dir + "/index.sqlite"))
        try Data("someone else's lock".utf8).write(to: URL(fileURLWithPath: dir + "/LOCK"))
        try Data("not a segment".utf8).write(to: URL(fileURLWithPath: dir + "/notes.txt"))
        let before = snapshot(dir)
        let line = Data(#"{"key":"k","value":"v"}"#.utf8 + [10])
        for args in [["dump", "--data-dir", dir], ["rebuild-index", "--data-dir", dir], ["compact", "--data-dir", dir],
                     ["backup", "--data-dir", dir, dir + "-b"], ["load", "--data-dir", dir], ["check", "--data-dir", dir]] {
            let run = try Self.logkv(args, stdin: args[0] == "load" ? line : nil)
            #expect(run.status == 2, "\(args[0]): \(run.stderr)")
            #expect(run.stderr.contains("not a logkv data directory"), "\(args[0]): \(run.stderr)")
        }
        let backup = dir + "-src"
        defer { try? FileManager.default.removeItem(atPath: backup) }
        #expect(try Self.logkv(["load", "--data-dir", backup], stdin: line).status == 0)
        #expect(try Self.logkv(["backup", "--data-dir", backup, backup + "-copy"]).status == 0)
        defer { try? FileManager.default.removeItem(atPath: backup + "-copy") }
        let restore = try Self.logkv(["restore", backup + "-copy", "--data-dir", dir])
        #expect(restore.status != 0 && restore.stderr.contains("not empty"), "\(restore.stderr)")
        #expect(snapshot(dir) == before, "a refused command changed the directory")
        #expect(!FileManager.default.fileExists(atPath: dir + "-b"))
    }

    /// `backup --online` writes an owner-only file, and leaves nothing
    /// behind when the stream stalls past its deadline or the command is
    /// interrupted (the old client left a world-readable copy in /tmp).
    @Test func onlineBackupLeavesNothingBehindOnATimeoutOrAnInterruption() throws {
        let dir = tempDir()
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        func leftovers() -> [String] { ((try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? []).sorted() }
        let stalling = StallingServer()
        defer { stalling.stop() }
        let addr = "127.0.0.1:\(stalling.port)"
        let timedOut = try Self.logkv(["backup", "--online", "--addr", addr, "--timeout", "1", dir + "/b.tar"])
        #expect(timedOut.status == 3, "\(timedOut.stderr)")
        #expect(leftovers().isEmpty, "\(leftovers())")
        // Interrupted mid-stream.
        let process = try runRetryingSpawnRaces {
            let process = Process()
            process.executableURL = URL(fileURLWithPath: builtProduct("logkv"))
            process.arguments = ["backup", "--online", "--addr", addr, "--timeout", "60", dir + "/c.tar"]
            process.standardOutput = FileHandle.nullDevice
            process.standardError = FileHandle.nullDevice
            return process
        }
        #expect(eventually(timeout: 30) { leftovers().contains { $0.hasPrefix("c.tar.partial-") } })
        #expect(leftovers().allSatisfy { name in
            var info = stat()
            return stat(dir + "/" + name, &info) == 0 && UInt32(info.st_mode) & 0o077 == 0
        }, "the partial file is readable by others")
        kill(process.processIdentifier, SIGINT)
        #expect(waitForExit(process).code == 130)
        #expect(leftovers().isEmpty, "\(leftovers())")
    }

    /// `load` checks every line before it writes anything: bad lines are
    /// reported with their numbers and nothing is loaded.
    @Test func loadReportsEveryBadLineByNumberAndLoadsNothing() throws {
        let dir = tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let future = Int64(Date().timeIntervalSince1970 * 1000) + 3_600_000
        let lines = [
            #"{"key":"good","value":"v","expires_at":\#(future)}"#,
            #"{"key":"string-expiry","value":"v","expires_at":"tomorrow"}"#,
            #"{"key":"fraction","value":"v","expires_at":1.5}"#,
            #"{"key":"negative","value":"v","expires_at":-5}"#,
            #"{"key":"bool","value":"v","expires_at":true}"#,
            #"{"value":"no key"}"#,
            "not json",
            #"{"key":"ok-too","value_base64":"AAE="}"#,
        ]
        let bad = try Self.logkv(["load", "--data-dir", dir], stdin: Data(lines.joined(separator: "\n").utf8))
        #expect(bad.status == 2, "\(bad.stderr)")
        for number in 2...7 { #expect(bad.stderr.contains("line \(number):"), "line \(number): \(bad.stderr)") }
        #expect(!bad.stderr.contains("line 1:") && !bad.stderr.contains("line 8:"))
        #expect(!FileManager.default.fileExists(atPath: dir + "/segments"), "a refused load wrote something")
        let good = try Self.logkv(["load", "--data-dir", dir], stdin: Data([lines[0], lines[7]].joined(separator: "\n").utf8))
        #expect(good.status == 0 && good.text.contains("loaded 2 keys"), "\(good.stderr)")
    }

    /// A process killed at any moment of a rebuild — scanning, sorting,
    /// building `keydir` under its rollback journal, switching back to WAL —
    /// leaves an index the next open either trusts whole or rebuilds, never
    /// one missing a key.
    @Test func rebuildKilledAtAnyMomentLeavesAnIndexTheNextOpenTrustsOrRebuilds() throws {
        let dir = tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let keys = 40_000
        let lines = (0..<keys).map { #"{"key":"k\#($0)","value":"v\#($0 * 7)"}"# }.joined(separator: "\n") + "\n"
        #expect(try Self.logkv(["load", "--data-dir", dir], stdin: Data(lines.utf8)).status == 0)
        func rebuildProcess() throws -> Process {
            try runRetryingSpawnRaces {
                let process = Process()
                process.executableURL = URL(fileURLWithPath: builtProduct("logkv"))
                process.arguments = ["rebuild-index", "--data-dir", dir]
                process.standardOutput = FileHandle.nullDevice
                process.standardError = FileHandle.nullDevice
                return process
            }
        }
        let started = Date()
        let whole = try rebuildProcess()
        #expect(waitForExit(whole) == .exited(0))
        var duration = Date().timeIntervalSince(started)
        var options = LogKVOptions()
        options.logger.logLevel = .error
        func expectEveryKey() throws {
            let store = try LogKV(path: dir, options: options)
            #expect(!FileManager.default.fileExists(atPath: dir + "/index.sqlite-journal"))
            #expect(try store.stats().keys == keys)
            for i in stride(from: 0, to: keys, by: 97) {
                #expect(try store.get(Array("k\(i)".utf8))?.value == Array("v\(i * 7)".utf8), "k\(i)")
            }
            try store.close()
        }
        // Kills spread over the whole rebuild; every state left is opened.
        // (`RecoveryTests` leaves a hot journal behind deterministically.)
        // A rebuild that ends before its kill shortens the estimate: the
        // first, measured one may have run on a starved machine.
        var generator = SystemRandomNumberGenerator()
        var killedMidway = 0
        for attempt in 0..<30 where attempt < 12 || killedMidway == 0 {
            let runStarted = Date()
            let process = try rebuildProcess()
            usleep(UInt32(duration * Double.random(in: 0.05...0.98, using: &generator) * 1_000_000))
            if process.isRunning { kill(process.processIdentifier, SIGKILL) }
            if waitForExit(process) == .signaled(SIGKILL) {
                killedMidway += 1
            } else {
                duration = min(duration, Date().timeIntervalSince(runStarted))
            }
            try expectEveryKey()
        }
        #expect(killedMidway > 0, "no rebuild was killed before it ended")
        let check = try Self.logkv(["check", "--data-dir", dir])
        #expect(check.status == 0, "\(check.text) \(check.stderr)")
    }

    @Test func dumpReadsADataDirectoryWithoutChangingAByte() throws {
        let dir = tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let lines = (0..<30).map { #"{"key":"k\#($0)","value":"v\#($0)"}"# }.joined(separator: "\n") + "\n"
        #expect(try Self.logkv(["load", "--data-dir", dir], stdin: Data(lines.utf8)).status == 0)
        try? FileManager.default.removeItem(atPath: dir + "/LOCK")
        let before = snapshot(dir)
        let dump = try Self.logkv(["dump", "--data-dir", dir])
        #expect(dump.status == 0, "\(dump.stderr)")
        #expect(dump.text.split(separator: "\n").count == 30)
        #expect(snapshot(dir) == before)
    }

    @Test func clientCommandEdgesAreClearErrors() throws {
        let dir = tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let server = try LiveServerTests.Logkvd(dataDir: dir)
        let port = server.port
        defer { _ = server.terminate() }
        #expect(server.waitUntilReady())
        let env = ["LOGKV_ADDR": "127.0.0.1:\(port)"]
        #expect(try Self.logkv(["get", ""], env: env).status == 2)
        #expect(try Self.logkv(["set", "", "v"], env: env).status == 2)
        // Input beyond the value limit fails fast instead of growing.
        let big = dir + "-big"
        defer { try? FileManager.default.removeItem(atPath: big) }
        try Data(repeating: 0x61, count: 5000).write(to: URL(fileURLWithPath: big))
        let tooBig = try Self.logkv(["set", "k", "--file", big], env: env.merging(["LOGKV_MAX_INPUT_BYTES": "1000"]) { $1 })
        #expect(tooBig.status == 2 && tooBig.stderr.contains("larger than"), "\(tooBig.stderr)")
        // A 404 that is not logkvd's "key not found" is not reported as a missing key.
        let hello = try Self.logkv(["get", "k", "--addr", "127.0.0.1:\(port)/no/such/prefix"])
        #expect(hello.status == 3, "\(hello.stderr)")
        // Binary keys and a text key that looks like their encoding page and print apart.
        let c = try HTTPTestClient(port: port)
        for path in ["/v1/kv/%FF", "/v1/kv/%25FF", "/v1/kv/%FE%FF", "/v1/kv/plain", "/v1/kv/back%5Cslash"] {
            #expect(try c.request("PUT", path, body: utf8("v")).status == 204)
        }
        let listed = try Self.logkv(["list", "--page-size", "1"], env: env)
        #expect(listed.status == 0)
        let lines = listed.stdout.split(separator: 10).map { Array($0) }
        #expect(lines.count == 5, "\(lines)")
        #expect(Set(lines).count == 5)
        #expect(lines.contains([0xFF]) && lines.contains(Array("%FF".utf8)))
        let json = try Self.logkv(["list", "--json"], env: env)
        #expect(json.text.contains(#"{"base64":"\/w=="}"#) || json.text.contains(#""base64":"/w==""#), "\(json.text)")
    }

    /// HTTP clients resolve `.` and `..` path segments: a key that holds
    /// them must reach the server as those bytes, never as another key.
    @Test func keysWithDotSegmentsAreTheKeysTheyNameNotOthers() throws {
        let dir = tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let server = try LiveServerTests.Logkvd(dataDir: dir)
        let port = server.port
        defer { _ = server.terminate() }
        #expect(server.waitUntilReady())
        let env = ["LOGKV_ADDR": "127.0.0.1:\(port)"]
        #expect(try Self.logkv(["set", "b", "original"], env: env).status == 0)
        for key in ["a/../b", "./b", "a/./b", "..", ".", "x/..", "q/../b"] {
            #expect(try Self.logkv(["set", key, "dots \(key)"], env: env).status == 0, "set \(key)")
            let got = try Self.logkv(["get", key], env: env)
            #expect(got.status == 0 && got.text == "dots \(key)", "get \(key): \(got.stderr)")
        }
        #expect(try Self.logkv(["delete", "q/../b"], env: env).status == 0)
        #expect(try Self.logkv(["get", "b"], env: env).text == "original")
        let admin = try Self.logkv(["get", "p/../../admin/backup"], env: env)
        #expect(admin.status == 1, "\(admin.stdout.count) bytes: \(admin.stderr)")
        let c = try HTTPTestClient(port: port)
        #expect(try c.request("GET", "/v1/kv/a/%2E%2E/b?raw").text == "dots a/../b")
    }
}
