import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

/// A small synchronous HTTP client for logkvd.
struct KVClient {
    let base: String
    let token: String?

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

    /// Accepts `http://host:port`, `host:port`, `[v6]:port` and `:port`.
    init(address: String, token: String?) throws {
        var text = address
        while text.hasSuffix("/") { text.removeLast() }
        if text.hasPrefix("http://") || text.hasPrefix("https://") {
            base = text
        } else if text.hasPrefix(":") {
            base = "http://127.0.0.1" + text
        } else if text.contains(":") {
            base = "http://" + text
        } else {
            throw Failure.usage("invalid address \"\(address)\" (expected http://host:port, host:port or :port)")
        }
        self.token = token
        // swift-corelibs-foundation's URLSession answers NSURLErrorBadURL
        // for every IPv6 literal ("http://[::1]:8080"): say so plainly.
        if base.contains("://[") {
            throw Failure.usage("IPv6 literal addresses (\(address)) are not supported by this build's HTTP client (FoundationNetworking rejects them); use a host name that resolves to the address")
        }
    }

    func request(_ method: String, _ path: String, body: Data? = nil, contentType: String? = nil) throws -> Reply {
        guard let url = URL(string: base + path) else { throw Failure.usage("invalid URL \(base + path)") }
        var request = URLRequest(url: url, timeoutInterval: 30)
        request.httpMethod = method
        request.httpBody = body
        if let contentType { request.setValue(contentType, forHTTPHeaderField: "Content-Type") }
        if let token { request.setValue("Bearer \(token)", forHTTPHeaderField: "Authorization") }
        final class Box: @unchecked Sendable { var result: Result<(Data, HTTPURLResponse), Error>? }
        let box = Box()
        let done = DispatchSemaphore(value: 0)
        URLSession.shared.dataTask(with: request) { data, response, error in
            if let error {
                box.result = .failure(error)
            } else if let http = response as? HTTPURLResponse {
                box.result = .success((data ?? Data(), http))
            }
            done.signal()
        }.resume()
        // A total deadline, not only an idle one: a server that trickles
        // bytes cannot hold the command forever.
        if done.wait(timeout: .now() + KVClient.totalTimeout) == .timedOut {
            throw Failure.server("no complete answer from \(base) within \(Int(KVClient.totalTimeout)) s")
        }
        switch box.result {
        case let .success((data, http)):
            var headers: [String: String] = [:]
            for (k, v) in http.allHeaderFields { headers[String(describing: k).lowercased()] = String(describing: v) }
            let reply = Reply(status: http.statusCode, headers: headers, body: data)
            if reply.status == 401 { throw Failure.server("unauthorized: \(reply.message) (set LOGKV_TOKEN)") }
            if reply.status >= 500 { throw Failure.server("server error \(reply.status): \(reply.message)") }
            return reply
        case let .failure(error):
            throw Failure.server("cannot reach \(base): \(error.localizedDescription)")
        case nil:
            throw Failure.server("no response from \(base)")
        }
    }

    /// Streams a GET response body to a new file at `destination` (never
    /// held in memory); returns the bytes written. Nothing is left at
    /// `destination` unless the whole body arrived with status 200.
    func download(_ path: String, to destination: String) throws -> Int64 {
        guard let url = URL(string: base + path) else { throw Failure.usage("invalid URL \(base + path)") }
        if FileManager.default.fileExists(atPath: destination) {
            throw Failure.usage("\(destination) already exists")
        }
        var request = URLRequest(url: url, timeoutInterval: 300)
        if let token { request.setValue("Bearer \(token)", forHTTPHeaderField: "Authorization") }
        final class Box: @unchecked Sendable { var result: Result<Int64, Error>? }
        let box = Box()
        let done = DispatchSemaphore(value: 0)
        URLSession.shared.downloadTask(with: request) { file, response, error in
            defer {
                // Never leave a copy of the store behind in a temp file.
                if let file, FileManager.default.fileExists(atPath: file.path) { try? FileManager.default.removeItem(at: file) }
                done.signal()
            }
            if let error { box.result = .failure(Failure.server("cannot reach \(base): \(error.localizedDescription)")); return }
            guard let http = response as? HTTPURLResponse, let file else {
                box.result = .failure(Failure.server("no response from \(base)"))
                return
            }
            guard http.statusCode == 200 else {
                let body = (try? Data(contentsOf: file)) ?? Data()
                let reply = Reply(status: http.statusCode, headers: [:], body: body)
                box.result = .failure(Failure.server("\(http.statusCode): \(reply.message)"))
                return
            }
            do {
                let size = ((try FileManager.default.attributesOfItem(atPath: file.path))[.size] as? NSNumber)?.int64Value ?? -1
                if let expected = http.value(forHTTPHeaderField: "Content-Length").flatMap(Int64.init), expected != size {
                    throw Failure.server("backup stream ended after \(size) of \(expected) bytes")
                }
                guard http.value(forHTTPHeaderField: "Content-Length") != nil else {
                    throw Failure.server("the server sent no Content-Length: cannot tell a complete backup from a cut one")
                }
                do {
                    try FileManager.default.moveItem(atPath: file.path, toPath: destination)
                } catch {
                    throw Failure.server("cannot write \(destination): \(error.localizedDescription)")
                }
                box.result = .success(size)
            } catch {
                box.result = .failure(error)
            }
        }.resume()
        done.wait()
        return try box.result!.get()
    }

    /// A key in a URL path: every byte but unreserved ones and `/` escaped.
    /// The key's bytes percent-encoded for a URL path: unreserved bytes
    /// and `/` as they are, all else encoded — and the dots of a `.` or
    /// `..` segment too, which HTTP clients resolve away (`a/../b` would
    /// otherwise reach the server as `b`).
    static func path(_ key: String) -> String {
        key.split(separator: "/", omittingEmptySubsequences: false).map { segment in
            segment.allSatisfy({ $0 == "." }) && !segment.isEmpty
                ? String(repeating: "%2E", count: segment.count)
                : encodeSegment(segment)
        }.joined(separator: "/")
    }

    private static func encodeSegment(_ segment: Substring) -> String {
        var out = ""
        for b in segment.utf8 {
            switch b {
            case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"),
                 UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "-"), UInt8(ascii: "."),
                 UInt8(ascii: "_"), UInt8(ascii: "~"), UInt8(ascii: "/"):
                out.unicodeScalars.append(Unicode.Scalar(b))
            default:
                out += String(format: "%%%02X", b)
            }
        }
        return out
    }

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
