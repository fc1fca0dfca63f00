import Foundation
import LogKVTestSupport
import Testing

/// Tests against a real `logkvd` process.
@Suite(.serialized) struct LiveServerTests {
    /// A `logkvd` process on `127.0.0.1:0`: the port is the one it
    /// announces on stdout once bound (no free-port race between tests).
    final class Logkvd: @unchecked Sendable {
        let process: Process
        /// The bound port; 0 if the process exited before binding.
        private(set) var port = 0
        let stderr = Pipe()
        let stdout = Pipe()
        /// The server's stderr, read as it comes: a pipe nobody reads fills
        /// up and blocks the server's logging (and whatever waits on it).
        private let stderrDrained = DispatchSemaphore(value: 0)
        private let stderrLock = NSLock()
        private var stderrBytes = Data()

        init(dataDir: String, env: [String: String] = [:], args: [String] = [], fileSizeLimit: Int? = nil) throws {
            var command = [Unprivileged.binary, "--data-dir", dataDir, "--log-level", "info"] + args
            if Unprivileged.active {
                // Operators run logkvd as a service user: so do the tests.
                try Unprivileged.handOver(dataDir)
                command = ["/usr/bin/setpriv", "--reuid=\(Unprivileged.uid)", "--regid=\(Unprivileged.uid)",
                           "--clear-groups", "--"] + command
            }
            if let fileSizeLimit {
                // prlimit (util-linux) caps the size of any file the server writes.
                command = ["/usr/bin/prlimit", "--fsize=\(fileSizeLimit)"] + command
            }
            var environment = ProcessInfo.processInfo.environment
            environment["LOGKV_ADDR"] = "127.0.0.1:0"
            for (k, v) in env { environment[k] = v }
            let stderr = self.stderr, stdout = self.stdout
            process = try runRetryingSpawnRaces {
                let process = Process()
                process.executableURL = URL(fileURLWithPath: command[0])
                process.arguments = Array(command.dropFirst())
                process.environment = environment
                process.standardError = stderr
                process.standardOutput = stdout
                return process
            }
            let reader = stderr.fileHandleForReading
            Thread.detachNewThread { [self] in
                while true {
                    let chunk = reader.availableData
                    if chunk.isEmpty { break }
                    stderrLock.withLock { stderrBytes.append(chunk) }
                }
                stderrDrained.signal()
            }
            port = Self.announcedPort(stdout.fileHandleForReading)
        }

        /// Reads logkvd's stdout until its complete `listening HOST:PORT`
        /// line (0 if stdout ends first: the process exited, or nothing comes
        /// within two minutes), draining it afterwards on the same thread.
        static func announcedPort(_ reader: FileHandle) -> Int {
            let found = LockedBox(0)
            let announced = DispatchSemaphore(value: 0)
            Thread.detachNewThread {
                var text = ""
                var signalled = false
                while true {
                    let chunk = reader.availableData
                    if chunk.isEmpty { break }
                    guard !signalled else { continue }
                    text += String(decoding: chunk, as: UTF8.self)
                    let lines = text.split(separator: "\n", omittingEmptySubsequences: false).dropLast()  // complete ones
                    if let line = lines.first(where: { $0.hasPrefix("listening ") }),
                       let port = line.split(separator: ":").last.flatMap({ Int($0) }) {
                        found.set(port)
                        signalled = true
                        announced.signal()
                    }
                }
                if !signalled { announced.signal() }
            }
            _ = announced.wait(timeout: .now() + 120)
            return found.get()
        }

        /// Waits until /health answers; false if the process exited first.
        /// Generous: a starved test run may take many seconds to start it.
        func waitUntilReady() -> Bool {
            let deadline = Date().addingTimeInterval(120)
            while Date() < deadline {
                if !process.isRunning { return false }
                if let c = try? HTTPTestClient(port: port), (try? c.request("GET", "/health").status) == 200 { return true }
                usleep(50_000)
            }
            return false
        }

        func terminate() -> Int32 {
            if process.isRunning { kill(process.processIdentifier, SIGTERM) }
            return waitForExit(process).code
        }

        /// The user id the server process runs as.
        func uid() -> UInt32? {
            guard let status = try? String(contentsOfFile: "/proc/\(process.processIdentifier)/status", encoding: .utf8),
                  let line = status.split(separator: "\n").first(where: { $0.hasPrefix("Uid:") }) else { return nil }
            return line.split(whereSeparator: { $0 == "\t" || $0 == " " }).dropFirst().first.flatMap { UInt32($0) }
        }

        /// Everything the server wrote to stderr; waits for it to exit.
        func stderrText() -> String {
            stderrDrained.wait()
            stderrDrained.signal()
            return stderrLock.withLock { String(decoding: stderrBytes, as: UTF8.self) }
        }
    }

    /// When the tests run as root, every live logkvd runs as `nobody`
    /// (through setpriv), from a copy of the binary that user may execute,
    /// on data directories handed over to it.
    enum Unprivileged {
        static let uid: UInt32 = 65534
        static let active = getuid() == 0
        static let binary: String = {
            guard active else { return builtProduct("logkvd") }
            let dir = NSTemporaryDirectory() + "logkvd-bin-\(UUID().uuidString)"
            try! FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true,
                                                     attributes: [.posixPermissions: 0o755])
            let copy = dir + "/logkvd"
            try! FileManager.default.copyItem(atPath: builtProduct("logkvd"), toPath: copy)
            try! FileManager.default.setAttributes([.posixPermissions: 0o755], ofItemAtPath: copy)
            return copy
        }()

        /// Makes `dataDir` (created if missing) and all in it owned by the service user.
        static func handOver(_ dataDir: String) throws {
            try FileManager.default.createDirectory(atPath: dataDir, withIntermediateDirectories: true)
            let chown = Process()
            chown.executableURL = URL(fileURLWithPath: "/bin/chown")
            chown.arguments = ["-R", "\(uid):\(uid)", dataDir]
            try spawnSerialized(chown)
            _ = waitForExit(chown)
        }
    }

    func tempDir() -> String { NSTemporaryDirectory() + "logkvd-live-\(UUID().uuidString)" }

    /// As a service user (no root, no capabilities) logkvd serves every
    /// route; TCP_NODELAY was once set as SO_DEBUG, which only root may.
    @Test func servesAsAnUnprivilegedUser() throws {
        let dir = tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let server = try Logkvd(dataDir: dir)
        let port = server.port
        #expect(server.waitUntilReady())
        if Unprivileged.active { #expect(server.uid() == Unprivileged.uid) } else { #expect(server.uid() != 0) }
        let c = try HTTPTestClient(port: port)
        #expect(try c.request("PUT", "/v1/kv", json: #"{"key":"a","value":"1"}"#).status == 204)
        #expect(try c.request("GET", "/v1/kv/a?raw").text == "1")
        #expect(try c.request("GET", "/metrics").status == 200)
        #expect(server.terminate() == 0)
    }

    /// Clients that ask for large values and read nothing hold at most a
    /// piece each (and their socket buffers, which are the kernel's): the
    /// server's memory does not grow with the values they asked for. Before
    /// answers were streamed, each held its whole answer — 40 raw 24 MiB
    /// answers and 8 JSON answers of 4 MiB of control bytes (24 MiB escaped)
    /// grew the server by about 1.1 GiB.
    @Test func clientsThatReadNothingOfLargeValuesHoldAtMostAPieceEach() throws {
        let dir = tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let server = try Logkvd(dataDir: dir)
        defer { _ = server.terminate() }
        #expect(server.waitUntilReady())
        let c = try HTTPTestClient(port: server.port)
        let value = [UInt8]((0..<(24 << 20)).map { UInt8(truncatingIfNeeded: $0 &* 31) })
        #expect(try c.request("PUT", "/v1/kv/big", body: value).status == 204)
        let controls = [UInt8](repeating: 0x01, count: 4 << 20)
        #expect(try c.request("PUT", "/v1/kv/controls", body: controls).status == 204)
        #expect(try c.request("GET", "/v1/kv/controls?raw").body == controls)
        func rss() -> Int {
            let status = (try? String(contentsOfFile: "/proc/\(server.process.processIdentifier)/status", encoding: .utf8)) ?? ""
            let line = status.split(separator: "\n").first { $0.hasPrefix("VmRSS:") } ?? ""
            return (Int(line.split(separator: " ").dropFirst().first ?? "") ?? 0) * 1024
        }
        let before = rss()
        var idle: [HTTPTestClient] = []
        for i in 0..<48 {
            let client = try HTTPTestClient(port: server.port)
            let path = i < 40 ? "/v1/kv/big?raw" : "/v1/kv/controls"
            try client.sendRaw(Array("GET \(path) HTTP/1.1\r\nHost: localhost\r\n\r\n".utf8))
            idle.append(client)
        }
        // Time for the server to produce all it will (it stops at the
        // pieces the sockets cannot take).
        Thread.sleep(forTimeInterval: 3)
        let grown = rss() - before
        print("large answers: RSS grew by \(grown >> 20) MiB for 48 clients reading nothing")
        #expect(grown < 160 << 20, "RSS grew by \(grown >> 20) MiB for 48 clients reading nothing")
        // The server still answers others at once.
        #expect(try HTTPTestClient(port: server.port).request("GET", "/health").status == 200)
        let reader = try HTTPTestClient(port: server.port)
        #expect(try reader.request("GET", "/v1/kv/big?raw").body == value)
        _ = idle
    }

    /// `--addr :PORT` (as the default `:8080`) listens on IPv6 and IPv4.
    @Test func anAddressWithoutAHostListensOnIPv6AndIPv4() throws {
        guard FileManager.default.fileExists(atPath: "/proc/net/if_inet6") else { return }  // no IPv6 on this host
        let dir = tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let server = try Logkvd(dataDir: dir, env: ["LOGKV_ADDR": ":0"])
        defer { _ = server.terminate() }
        #expect(server.waitUntilReady())
        #expect(try CLITests.logkv(["set", "both", "yes"], env: ["LOGKV_ADDR": "127.0.0.1:\(server.port)"]).status == 0)
        let v6 = try CLITests.logkv(["get", "both"], env: ["LOGKV_ADDR": "[::1]:\(server.port)"])
        #expect(v6.status == 0 && v6.text == "yes", "\(v6.stderr)")
    }

    /// A client with a half-sent body cannot hold a shutdown: after the
    /// grace period the connection is closed and the store closes cleanly.
    @Test func shutdownFinishesWithinTheGracePeriodWhateverTheClients() throws {
        let dir = tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var server = try Logkvd(dataDir: dir, args: ["--shutdown-grace", "1", "--request-timeout", "60"])
        var port = server.port
        #expect(server.waitUntilReady())
        let c = try HTTPTestClient(port: port)
        for i in 0..<20 { #expect(try c.request("PUT", "/v1/kv/k\(i)", body: Array("v\(i)".utf8)).status == 204) }
        let stuck = try HTTPTestClient(port: port)
        try stuck.sendRaw(Array("PUT /v1/kv/half HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nabc".utf8))
        usleep(200_000)
        let started = Date()
        #expect(server.terminate() == 0)
        // The stuck client's request timeout is 60 s: ended by the grace.
        #expect(Date().timeIntervalSince(started) < 45, "shutdown took \(Date().timeIntervalSince(started)) s")
        #expect(server.stderrText().contains("index checkpoint covers the log"))
        server = try Logkvd(dataDir: dir)
        port = server.port
        #expect(server.waitUntilReady())
        let c2 = try HTTPTestClient(port: port)
        for i in 0..<20 { #expect(try c2.request("GET", "/v1/kv/k\(i)?raw").text == "v\(i)") }
        #expect(server.terminate() == 0)
    }

    /// A backup client that reads nothing cannot keep logkvd from exiting.
    @Test func shutdownIsNotHeldByAStalledBackupStream() throws {
        let dir = tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let server = try Logkvd(dataDir: dir, args: ["--shutdown-grace", "1"])
        let port = server.port
        #expect(server.waitUntilReady())
        let c = try HTTPTestClient(port: port)
        let value = [UInt8](repeating: 0x61, count: 256 * 1024)
        for i in 0..<48 { #expect(try c.request("PUT", "/v1/kv/k\(i)", body: value).status == 204) }
        let stalled = try HTTPTestClient(port: port)
        try stalled.sendRaw(HTTPTestClient.encode("GET", "/v1/admin/backup"))
        usleep(500_000)
        let started = Date()
        #expect(server.terminate() == 0)
        // The stream's stall timeout is 60 s: ended by the grace.
        #expect(Date().timeIntervalSince(started) < 40, "shutdown took \(Date().timeIntervalSince(started)) s")
        withExtendedLifetime(stalled) {}
    }

    @Test func sigtermAnswersHeldBlockingQueriesAtOnce() throws {
        let dir = tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let server = try Logkvd(dataDir: dir, args: ["--shutdown-grace", "30"])
        let port = server.port
        #expect(server.waitUntilReady())
        let c = try HTTPTestClient(port: port)
        #expect(try c.request("PUT", "/v1/kv/k", body: Array("v".utf8)).status == 204)
        let index = try #require(try c.request("GET", "/v1/kv/k").headers["x-logkv-index"])
        let watchers = try (0..<5).map { _ in try HTTPTestClient(port: port) }
        for w in watchers { try w.sendRaw(HTTPTestClient.encode("GET", "/v1/kv/k?raw&index=\(index)&wait=10m")) }
        // All five held before the signal (a starved server may not have
        // read them yet; unread connections would just be closed).
        #expect(try eventually { try c.request("GET", "/metrics").text.contains("logkv_blocking_queries_held 5") })
        let started = Date()
        kill(server.process.processIdentifier, SIGTERM)
        for w in watchers {
            let answer = try w.readResponse()
            #expect(answer.status == 200)
            #expect(answer.text == "v")
            #expect(answer.headers["x-logkv-index"] == index)
        }
        // The grace is 30 s: held queries are answered at once, not at its end.
        #expect(Date().timeIntervalSince(started) < 20, "held queries answered after \(Date().timeIntervalSince(started)) s")
        #expect(waitForExit(server.process, timeout: 60).code == 0)
        #expect(Date().timeIntervalSince(started) < 25)
    }

    @Test func secondSignalEndsTheDrainAtOnce() throws {
        let dir = tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let server = try Logkvd(dataDir: dir, args: ["--shutdown-grace", "30", "--request-timeout", "60"])
        let port = server.port
        #expect(server.waitUntilReady())
        let stuck = try HTTPTestClient(port: port)
        try stuck.sendRaw(Array("PUT /v1/kv/half HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nabc".utf8))
        usleep(200_000)
        let started = Date()
        kill(server.process.processIdentifier, SIGTERM)
        // The second signal counts once the drain has begun; a starved
        // server may not have begun it yet, so signal again until it exits.
        // (`waitForExit` reaps the child itself if Foundation misses it.)
        var exit = ChildExit.stillRunning
        let exited = Date().addingTimeInterval(60)
        while exit == .stillRunning && Date() < exited {
            exit = waitForExit(server.process, timeout: 0.5)
            if exit == .stillRunning { kill(server.process.processIdentifier, SIGINT) }
        }
        #expect(exit == .exited(0))
        // The grace is 30 s: ended by the second signal, not by the grace.
        #expect(Date().timeIntervalSince(started) < 25)
        #expect(server.stderrText().contains("index checkpoint covers the log"))
    }

    @Test func restartKeepsEveryAcknowledgedWrite() throws {
        let dir = tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var server = try Logkvd(dataDir: dir)
        var port = server.port
        #expect(server.waitUntilReady())
        let c = try HTTPTestClient(port: port)
        for i in 0..<300 { #expect(try c.request("PUT", "/v1/kv/k\(i)", body: Array("v\(i)".utf8)).status == 204) }
        #expect(server.terminate() == 0)
        #expect(server.stderrText().contains("index checkpoint covers the log"))
        server = try Logkvd(dataDir: dir)
        port = server.port
        #expect(server.waitUntilReady())
        let c2 = try HTTPTestClient(port: port)
        for i in 0..<300 { #expect(try c2.request("GET", "/v1/kv/k\(i)?raw").text == "v\(i)") }
        #expect(server.terminate() == 0)
        #expect(server.stderrText().contains("replayed_records=0"))
    }

    @Test func sigtermWithRequestsInFlightLosesNothingAcknowledged() throws {
        let dir = tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let server = try Logkvd(dataDir: dir, args: ["--fsync", "always"])
        var port = server.port
        #expect(server.waitUntilReady())
        final class Acked: @unchecked Sendable { let lock = NSLock(); var keys: [String] = [] }
        let acked = Acked()
        let group = DispatchGroup()
        for worker in 0..<8 {
            group.enter()
            // Own threads: Dispatch's pool has two on this machine's cores.
            Thread.detachNewThread { [port] in
                defer { group.leave() }
                guard let c = try? HTTPTestClient(port: port) else { return }
                for i in 0..<100_000 {
                    let key = "w\(worker)-\(i)"
                    guard let r = try? c.request("PUT", "/v1/kv/\(key)", body: Array(key.utf8)), r.status == 204 else { return }
                    acked.lock.lock(); acked.keys.append(key); acked.lock.unlock()
                }
            }
        }
        // Let writes flow (at least 200 acknowledged, or 60 s), then SIGTERM
        // while they are still in flight.
        eventually { acked.lock.withLock { acked.keys.count } >= 200 }
        #expect(server.terminate() == 0)
        group.wait()
        let keys = acked.lock.withLock { acked.keys }
        #expect(keys.count > 50)
        let restarted = try Logkvd(dataDir: dir)
        port = restarted.port
        #expect(restarted.waitUntilReady())
        let c = try HTTPTestClient(port: port)
        var missing = 0
        for key in keys where try c.request("GET", "/v1/kv/\(key)?raw").text != key { missing += 1 }
        #expect(missing == 0)
        #expect(restarted.terminate() == 0)
    }

    @Test func authTokenFromEnvironmentOrFile() throws {
        let dir = tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var server = try Logkvd(dataDir: dir, env: ["LOGKV_TOKEN": "tok-env"])
        var port = server.port
        #expect(server.waitUntilReady())
        var c = try HTTPTestClient(port: port)
        #expect(try c.request("GET", "/v1/stats").status == 401)
        #expect(try c.request("GET", "/v1/stats", headers: ["Authorization": "Bearer tok-env"]).status == 200)
        #expect(server.terminate() == 0)

        let tokenFile = dir + "-token"
        try "tok-file\n".write(toFile: tokenFile, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(atPath: tokenFile) }
        server = try Logkvd(dataDir: dir, args: ["--token-file", tokenFile])
        port = server.port
        #expect(server.waitUntilReady())
        c = try HTTPTestClient(port: port)
        #expect(try c.request("GET", "/v1/stats", headers: ["Authorization": "Bearer tok-file"]).status == 200)
        #expect(try c.request("GET", "/v1/stats", headers: ["Authorization": "Bearer tok-env"]).status == 401)
        #expect(server.terminate() == 0)

        server = try Logkvd(dataDir: dir)

        port = server.port
        #expect(server.waitUntilReady())
        c = try HTTPTestClient(port: port)
        #expect(try c.request("GET", "/v1/stats").status == 200)
        #expect(server.terminate() == 0)
    }

    @Test func secondLogkvdOnTheSameDataDirIsRefused() throws {
        let dir = tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let first = try Logkvd(dataDir: dir)
        #expect(first.waitUntilReady())
        let second = try Logkvd(dataDir: dir)
        #expect(waitForExit(second.process).code != 0)
        let message = second.stderrText()
        #expect(message.contains("locked by another process"))
        #expect(message.contains("pid \(first.process.processIdentifier)"))
        #expect(first.terminate() == 0)
    }

    @Test func fullDiskAnswers503AndLosesNothingAcknowledged() throws {
        let dir = tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let server = try Logkvd(dataDir: dir, args: ["--fsync", "always"], fileSizeLimit: 1_000_000)
        var port = server.port
        #expect(server.waitUntilReady())
        let c = try HTTPTestClient(port: port)
        let value = Array(repeating: UInt8(ascii: "x"), count: 10_000)
        var acked: [Int] = []
        var full: HTTPTestClient.Response?
        for i in 0..<500 {
            let r = try c.request("PUT", "/v1/kv/k\(i)", body: value)
            if r.status == 204 { acked.append(i) } else { full = r; break }
        }
        let refusal = try #require(full)
        #expect(refusal.status == 503)
        #expect(refusal.json["success"] as? Bool == false)
        #expect((refusal.json["message"] as? String)?.contains("disk full") == true)
        #expect(acked.count > 50)
        // Still serving reads.
        #expect(try c.request("GET", "/v1/kv/k0?raw").body == value)
        #expect(server.terminate() == 0)
        let restarted = try Logkvd(dataDir: dir)
        port = restarted.port
        #expect(restarted.waitUntilReady())
        let c2 = try HTTPTestClient(port: port)
        for i in acked { #expect(try c2.request("GET", "/v1/kv/k\(i)?raw").body == value) }
        #expect(try c2.request("GET", "/v1/kv/k\(acked.count)").status == 404)
        #expect(restarted.terminate() == 0)
    }

    @Test func badSettingsAreRefusedWithAClearMessage() throws {
        let server = try Logkvd(dataDir: tempDir(), args: ["--fsync", "sometimes"])
        #expect(waitForExit(server.process).code != 0)
        #expect(server.stderrText().contains("invalid fsync policy"))
    }
}
