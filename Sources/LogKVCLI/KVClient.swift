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

        /// Fails with exit 1 on 404 and exit 3 on any status but `expected`.
        func require(_ expected: Int, key: String) throws {
            if status == 404 { throw Failure.notFound("key \"\(key)\" not found") }
            guard status == expected else { throw Failure.server("\(status): \(message)") }
        }
    }

    /// Accepts `http://host:port`, `host:port` and `:port`.
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
        done.wait()
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
            defer { done.signal() }
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
                try FileManager.default.moveItem(atPath: file.path, toPath: destination)
                box.result = .success(size)
            } catch {
                box.result = .failure(error)
            }
        }.resume()
        done.wait()
        return try box.result!.get()
    }

    /// A key in a URL path: every byte but unreserved ones and `/` escaped.
    static func path(_ key: String) -> String {
        var out = ""
        for b in key.utf8 {
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

/// The contents of `file`, or all of standard input when it is nil.
func readInput(file: String?) throws -> Data {
    guard let file else { return FileHandle.standardInput.readDataToEndOfFile() }
    guard let data = FileManager.default.contents(atPath: file) else { throw Failure.usage("cannot read \(file)") }
    return data
}
