import Foundation
import LogKVClient
import NIOCore
import NIOHTTP1

/// The `logkv` command's synchronous face over `LogKVClient`
/// (async-http-client): requests with a total deadline (LOGKV_TIMEOUT,
/// default 60 s), answers bounded in size, TLS with a private CA or a
/// client certificate, IPv6 literals.
struct KVClient {
    let client: LogKVClient
    var base: String { client.baseURL }

    struct Reply {
        var status: Int
        var headers: [String: String]
        var body: Data
        var json: [String: Any] { (try? JSONSerialization.jsonObject(with: body)) as? [String: Any] ?? [:] }
        var message: String { json["message"] as? String ?? "HTTP \(status)" }

        /// Fails with exit 1 when logkvd says the key is missing, and exit 3
        /// on any other status but `expected` — including a 404 that is not
        /// logkvd's "key not found" (a wrong --addr must not look like a
        /// missing key).
        func require(_ expected: Int, key: String) throws {
            if status == 404 {
                if json["success"] as? Bool == false, json["message"] as? String == "key not found" {
                    throw Failure.notFound("key \"\(displayText(Array(key.utf8)))\" not found")
                }
                throw Failure.server("404 from the server, which is not logkvd's \"key not found\" (\(message)); is --addr a logkvd?")
            }
            guard status == expected else { throw Failure.server("\(status): \(message)") }
        }
    }

    /// Seconds a request may take in all (env LOGKV_TIMEOUT).
    static let totalTimeout: Double = Double(ProcessInfo.processInfo.environment["LOGKV_TIMEOUT"] ?? "") ?? 60

    init(address: String, token: String?, tls: TLSFiles = TLSFiles()) throws {
        var configuration = LogKVClient.Configuration(address: address, token: token)
        configuration.caFile = tls.caFile
        configuration.certificateFile = tls.certificateFile
        configuration.keyFile = tls.keyFile
        configuration.timeout = .nanoseconds(Int64(Self.totalTimeout * 1e9))
        do {
            client = try LogKVClient(configuration)
        } catch let error as LogKVClientError {
            throw Failure.usage(error.description)
        }
    }

    /// TLS files from options or the environment (LOGKV_CACERT, LOGKV_CERT, LOGKV_KEY).
    struct TLSFiles {
        var caFile: String?
        var certificateFile: String?
        var keyFile: String?
    }

    func request(_ method: String, _ path: String, body: Data? = nil, contentType: String? = nil) throws -> Reply {
        let client = self.client
        let answer = try blocking {
            try await client.send(HTTPMethod(rawValue: method), path, body: body.map { Array($0) },
                                  headers: contentType.map { [("Content-Type", $0)] } ?? [])
        }
        var headers: [String: String] = [:]
        for (name, value) in answer.headers { headers[name.lowercased()] = value }
        let reply = Reply(status: answer.status, headers: headers, body: Data(answer.body))
        if reply.status >= 500 { throw Failure.server("server error \(reply.status): \(reply.message)") }
        return reply
    }

    /// Streams a GET answer's body into a new file at `destination`, never
    /// held in memory: written to a temporary file beside it (0600, so a
    /// copy of the store is never readable by others), checked against the
    /// answer's Content-Length, then renamed into place. On any failure,
    /// or SIGINT/SIGTERM meanwhile, the temporary file is removed and
    /// nothing is left at `destination`. Returns the bytes written.
    func download(_ path: String, to destination: String, timeout: Double) throws -> Int64 {
        if FileManager.default.fileExists(atPath: destination) {
            throw Failure.usage("\(destination) already exists")
        }
        let temp = destination + ".partial-\(getpid())"
        var fd = open(temp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw Failure.usage("cannot write \(temp): \(String(cString: strerror(errno)))") }
        TemporaryFile.remember(temp)
        defer { TemporaryFile.forget() }
        let client = self.client
        let output = fd
        do {
            let written = try blocking {
                try await client.download(path, timeout: .nanoseconds(Int64(timeout * 1e9))) { piece in
                    try Self.writeAll(piece, to: output, naming: temp)
                }
            }
            guard fsync(fd) == 0 else { throw Failure.server("cannot write \(temp): \(String(cString: strerror(errno)))") }
            close(fd)
            fd = -1
            // Renamed with the handler's lock held: an interruption now
            // either removes the partial file first or finds it complete.
            guard TemporaryFile.renameIntoPlace(temp, destination) == 0 else { throw Failure.server("cannot write \(destination): \(String(cString: strerror(errno)))") }
            return written
        } catch {
            if fd >= 0 { close(fd) }
            unlink(temp)
            throw error
        }
    }

    /// Streams a GET answer's body to the descriptor `output` piece by
    /// piece; a missing key is exit 1, as with `request(...).require`.
    func stream(_ path: String, key: String, to output: Int32) throws {
        let client = self.client
        // A reader that pauses (a pager) must not cut the value off at the
        // usual 60 s: an hour unless LOGKV_TIMEOUT says otherwise.
        let deadline = ProcessInfo.processInfo.environment["LOGKV_TIMEOUT"].flatMap(Double.init) ?? 3600
        do {
            _ = try blocking {
                try await client.download(path, timeout: .nanoseconds(Int64(deadline * 1e9))) { piece in
                    try Self.writeAll(piece, to: output, naming: "the value")
                }
            }
        } catch let failure as Failure where failure.message == "404: key not found" {
            throw Failure.notFound("key \"\(displayText(Array(key.utf8)))\" not found")
        }
    }

    /// Writes all of `piece` to the descriptor `output` (`what` names it in
    /// the error).
    static func writeAll(_ piece: ByteBuffer, to output: Int32, naming what: String) throws {
        try piece.withUnsafeReadableBytes { bytes in
            var offset = 0
            while offset < bytes.count {
                let n = write(output, bytes.baseAddress! + offset, bytes.count - offset)
                if n < 0 && errno == EINTR { continue }
                guard n > 0 else { throw Failure.server("cannot write \(what): \(String(cString: strerror(errno)))") }
                offset += n
            }
        }
    }

    /// Runs `body` to completion from synchronous code: the CLI's commands
    /// are synchronous, the client is async.
    func blocking<T: Sendable>(_ body: @escaping @Sendable () async throws -> T) throws -> T {
        let box = ResultBox<T>()
        let done = DispatchSemaphore(value: 0)
        Task {
            do { box.result = .success(try await body()) } catch { box.result = .failure(error) }
            done.signal()
        }
        done.wait()
        do {
            return try box.result!.get()
        } catch let error as LogKVClientError {
            switch error {
            case let .unauthorized(message): throw Failure.server("unauthorized: \(message) (set LOGKV_TOKEN)")
            case .server(404, let message): throw Failure.server("404: \(message)")
            default: throw Failure.server(error.description)
            }
        }
    }

    /// A key in a URL path (`LogKVClient.path(forKey:)`).
    static func path(_ key: String) -> String { LogKVClient.path(forKey: Array(key.utf8)) }

    static func query(_ value: String) -> String {
        path(value).replacingOccurrences(of: "/", with: "%2F")
    }
}

func printJSON(_ object: Any) {
    if let data = try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys]) {
        FileHandle.standardOutput.write(data)
        FileHandle.standardOutput.write(Data("\n".utf8))
    }
}

/// The largest input `readInput` takes (env LOGKV_MAX_INPUT_BYTES; default
/// the server's default value limit): `set k < /dev/zero` fails fast
/// instead of growing without bound.
let maxInputBytes = Int(ProcessInfo.processInfo.environment["LOGKV_MAX_INPUT_BYTES"] ?? "") ?? 64 * 1024 * 1024

/// The contents of `file`, or of standard input when it is nil, at most
/// `maxInputBytes`.
func readInput(file: String?) throws -> Data {
    let handle: FileHandle
    if let file {
        guard let h = FileHandle(forReadingAtPath: file) else { throw Failure.usage("cannot read \(file)") }
        handle = h
    } else {
        handle = FileHandle.standardInput
    }
    var data = Data()
    while true {
        let chunk = handle.readData(ofLength: 1 << 20)
        if chunk.isEmpty { break }
        data.append(chunk)
        if data.count > maxInputBytes {
            throw Failure.usage("input is larger than \(maxInputBytes) bytes (the server's value limit; set LOGKV_MAX_INPUT_BYTES to change)")
        }
    }
    return data
}

/// True when standard output is a terminal (escape what could drive it).
let stdoutIsTerminal = isatty(STDOUT_FILENO) == 1

/// Bytes as a terminal may safely show them, unambiguously: printable UTF-8
/// as is, `\` as `\\`, control characters, escape sequences and invalid
/// UTF-8 as `\xNN`. A text key `%FF`, the byte key 0xFF (`\xff`) and the
/// text `\xff` (`\\xff`) never print alike.
func displayText(_ bytes: [UInt8]) -> String {
    var out = ""
    var i = 0
    while i < bytes.count {
        let b = bytes[i]
        if b == UInt8(ascii: "\\") { out += "\\\\"; i += 1; continue }
        if b >= 0x20 && b < 0x7F { out.unicodeScalars.append(Unicode.Scalar(b)); i += 1; continue }
        // A whole UTF-8 sequence of a printable scalar (not C1 controls).
        let length = b >= 0xF0 ? 4 : b >= 0xE0 ? 3 : b >= 0xC2 ? 2 : 0
        if length > 0, i + length <= bytes.count,
           let scalar = String(validating: bytes[i..<i + length], as: UTF8.self)?.unicodeScalars.first,
           scalar.value >= 0xA0 {
            out.unicodeScalars.append(scalar)
            i += length
            continue
        }
        out += "\\x" + String(b, radix: 16).leftPadded(2)
        i += 1
    }
    return out
}

extension String {
    func leftPadded(_ n: Int) -> String { count >= n ? self : String(repeating: "0", count: n - count) + self }
}

/// Writes bytes for a person: raw into a pipe or file (byte-exact), escaped
/// on a terminal.
func writeOutput(_ bytes: [UInt8], newline: Bool) {
    if stdoutIsTerminal {
        FileHandle.standardOutput.write(Data((displayText(bytes) + (newline ? "\n" : "")).utf8))
    } else {
        FileHandle.standardOutput.write(Data(bytes + (newline ? [10] : [])))
    }
}

extension Array where Element == UInt8 {
    var isValidUTF8Text: Bool { String(validating: self, as: UTF8.self) != nil }
}

/// The partial file of a download in progress, removed if the command is
/// interrupted (SIGINT, SIGTERM) before it completes.
enum TemporaryFile {
    /// Guards `path` between the signal handler's queue and the command.
    private static let lock = NSLock()
    nonisolated(unsafe) private static var path: [CChar]?
    nonisolated(unsafe) private static var sources: [DispatchSourceSignal] = []

    static func remember(_ file: String) {
        lock.withLock { path = Array(file.utf8CString) }
        for signalNumber in [SIGINT, SIGTERM] {
            signal(signalNumber, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: signalNumber, queue: .global())
            source.setEventHandler {
                let removed: Bool = lock.withLock {
                    guard let path else { return false }  // already complete and in place
                    path.withUnsafeBufferPointer { _ = unlink($0.baseAddress!) }
                    return true
                }
                guard removed else { return }
                FileHandle.standardError.write(Data("logkv: interrupted; removed the partial download\n".utf8))
                exit(128 + signalNumber)
            }
            source.resume()
            sources.append(source)
        }
    }

    static func renameIntoPlace(_ from: String, _ to: String) -> Int32 {
        lock.withLock {
            let rc = rename(from, to)
            if rc == 0 { path = nil }
            return rc
        }
    }

    static func forget() {
        for source in sources { source.cancel() }
        sources.removeAll()
        for signalNumber in [SIGINT, SIGTERM] { signal(signalNumber, SIG_DFL) }
        lock.withLock { path = nil }
    }
}

/// Carries an async call's result back to the thread that waits for it.
private final class ResultBox<T>: @unchecked Sendable {
    var result: Result<T, Error>?
}
