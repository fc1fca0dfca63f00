import AsyncHTTPClient
import Foundation
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOSSL

/// A client for logkvd's HTTP API, on async-http-client: what Swift services
/// (and the `logkv` command) use to talk to a logkv server.
///
/// Contracts:
/// - Keys are bytes, sent exactly: every byte outside RFC 3986's unreserved
///   set and `/` is percent-encoded, and so are the dots of a `.` or `..`
///   segment, which HTTP stacks otherwise resolve away (`a/../b` would
///   reach the server as `b`).
/// - Every call has a total deadline (`Configuration.timeout`), not only an
///   idle one: a server that trickles bytes cannot hold a caller forever.
/// - Answers are bounded: a body over `Configuration.maxAnswerBytes` fails
///   with `.answerTooLarge` instead of growing without limit; `download`
///   streams to a file instead of holding the body.
/// - Keys must be valid UTF-8 (any bytes otherwise): async-http-client
///   sends a path whose escapes do not decode as UTF-8 as `/` (it checks
///   Foundation's decoded `URL.path`), so such keys are refused with
///   `.unsupportedKey` rather than sent wrong. Listings return every key.
/// - Errors are `LogKVClientError`.
/// - Thread-safe; call `shutdown()` once done.
public final class LogKVClient: Sendable {
    public struct Configuration: Sendable {
        /// `http://host:port`, `https://host:port`, `host:port`, `[v6]:port`
        /// or `:port` (loopback).
        public var address: String
        /// Bearer token, if the server has one.
        public var token: String?
        /// PEM file of the CA that signed the server's certificate (https;
        /// the system's roots otherwise).
        public var caFile: String?
        /// PEM files of a client certificate and its key, for a server that
        /// asks for one (mutual TLS).
        public var certificateFile: String?
        public var keyFile: String?
        /// Total time one call may take, answer included.
        public var timeout: TimeAmount = .seconds(60)
        /// Largest answer body held in memory (a value at the server's
        /// 64 MiB limit as JSON, with room).
        public var maxAnswerBytes = 96 << 20

        public init(address: String, token: String? = nil) {
            self.address = address
            self.token = token
        }
    }

    /// One answer: status, headers and body.
    public struct Answer: Sendable {
        public var status: Int
        public var headers: HTTPHeaders
        public var body: [UInt8]

        /// The body as a JSON object (empty if it is not one).
        public var json: [String: Any] {
            (try? JSONSerialization.jsonObject(with: Data(body))) as? [String: Any] ?? [:]
        }

        /// logkvd's error message, or the status.
        public var message: String { json["message"] as? String ?? "HTTP \(status)" }
    }

    public let configuration: Configuration
    /// The server's base URL, e.g. `https://[::1]:8443`.
    public let baseURL: String
    private let http: HTTPClient
    private let isShutDown = NIOLockedValueBox(false)

    public init(_ configuration: Configuration) throws {
        self.configuration = configuration
        self.baseURL = try Self.baseURL(configuration.address)
        var tls = TLSConfiguration.makeClientConfiguration()
        if let caFile = configuration.caFile {
            tls.trustRoots = .file(caFile)
        }
        switch (configuration.certificateFile, configuration.keyFile) {
        case let (cert?, key?):
            do {
                tls.certificateChain = try NIOSSLCertificate.fromPEMFile(cert).map { .certificate($0) }
                tls.privateKey = .privateKey(try NIOSSLPrivateKey(file: key, format: .pem))
            } catch {
                throw LogKVClientError.invalidConfiguration("cannot read the client certificate or key: \(error)")
            }
        case (nil, nil): break
        default: throw LogKVClientError.invalidConfiguration("a client certificate needs both a certificate and a key file")
        }
        var config = HTTPClient.Configuration(tlsConfiguration: tls, redirectConfiguration: .disallow,
                                              timeout: .init(connect: .seconds(10)), decompression: .disabled)
        config.httpVersion = .http1Only
        http = HTTPClient(eventLoopGroupProvider: .singleton, configuration: config)
    }

    /// Closes the client's connections.
    public func shutdown() async throws {
        guard markShutDown() else { return }
        try await http.shutdown()
    }

    /// `shutdown()` for synchronous code (never from an event loop).
    public func shutdownBlocking() throws {
        guard markShutDown() else { return }
        try http.syncShutdown()
    }

    private func markShutDown() -> Bool {
        isShutDown.withLockedValue { done in
            defer { done = true }
            return !done
        }
    }

    /// A client dropped without `shutdown()` closes its connections here,
    /// blocking (async-http-client would otherwise stop the process).
    deinit {
        if markShutDown() { try? http.syncShutdown() }
    }

    /// Accepts `http://host:port`, `https://host:port`, `host:port`,
    /// `[v6]:port` and `:port`.
    static func baseURL(_ address: String) throws -> String {
        var text = address
        while text.hasSuffix("/") { text.removeLast() }
        let base: String
        if text.hasPrefix("http://") || text.hasPrefix("https://") {
            base = text
        } else if text.hasPrefix(":") {
            base = "http://127.0.0.1" + text
        } else if text.contains(":") {
            base = "http://" + text
        } else {
            throw LogKVClientError.invalidConfiguration("invalid address \"\(address)\" (expected http://host:port, https://host:port, host:port, [v6]:port or :port)")
        }
        guard let url = URL(string: base), url.host != nil else {
            throw LogKVClientError.invalidConfiguration("invalid address \"\(address)\"")
        }
        return base
    }

    // MARK: Requests

    /// Sends one request and returns its answer (any status). `path`
    /// includes the query, already encoded (see `path(forKey:)`).
    public func send(_ method: HTTPMethod, _ path: String, body: [UInt8]? = nil,
                     headers: [(String, String)] = [], timeout: TimeAmount? = nil) async throws -> Answer {
        let deadline = timeout ?? configuration.timeout
        let limit = configuration.maxAnswerBytes
        let base = baseURL
        return try await Self.within(deadline) { [self] in
            let response = try await execute(method, path, body: body, headers: headers, timeout: deadline)
            var collected: [UInt8] = []
            do {
                var body = try await response.body.collect(upTo: limit)
                collected = body.readBytes(length: body.readableBytes) ?? []
            } catch is NIOTooManyBytesError {
                throw LogKVClientError.answerTooLarge(limit: limit)
            } catch {
                throw Self.translate(error, base: base, timeout: deadline)
            }
            return Answer(status: Int(response.status.code), headers: response.headers, body: collected)
        }
    }

    /// Streams a 200 answer's body to `write` piece by piece (nothing held
    /// whole); returns the bytes written. Any other status is an error. With
    /// a Content-Length, a body that ends short is `.truncated`. The whole
    /// download, body included, ends by the deadline.
    public func download(_ path: String, timeout: TimeAmount? = nil,
                         to write: @escaping @Sendable (ByteBuffer) throws -> Void) async throws -> Int64 {
        let deadline = timeout ?? configuration.timeout
        let base = baseURL
        return try await Self.within(deadline) { [self] in
            let response = try await execute(.GET, path, body: nil, headers: [], timeout: deadline)
            guard response.status == .ok else {
                var body = (try? await response.body.collect(upTo: 1 << 20)) ?? ByteBuffer()
                let answer = Answer(status: Int(response.status.code), headers: response.headers,
                                    body: body.readBytes(length: body.readableBytes) ?? [])
                throw LogKVClientError.from(answer)
            }
            var written: Int64 = 0
            do {
                for try await piece in response.body {
                    do { try write(piece) } catch { throw SinkError(underlying: error) }
                    written += Int64(piece.readableBytes)
                }
            } catch let error as LogKVClientError {
                throw error
            } catch let error as SinkError {
                throw error.underlying  // the caller's own failure (a full disk), as it threw it
            } catch {
                throw Self.translate(error, base: base, timeout: deadline)
            }
            if let expected = response.headers.first(name: "content-length").flatMap(Int64.init), expected != written {
                throw LogKVClientError.truncated(received: written, expected: expected)
            }
            return written
        }
    }

    /// An error thrown by a download's `write`, kept apart from the network's.
    private struct SinkError: Error { var underlying: Error }

    /// Runs `operation` and cancels it at `timeout`: async-http-client's
    /// deadline ends a request only until its answer's head, not while its
    /// body trickles in. Returns at the deadline even if the operation is
    /// slow to notice its cancellation (a write blocked on a full pipe).
    static func within<T: Sendable>(_ timeout: TimeAmount,
                                    _ operation: @escaping @Sendable () async throws -> T) async throws -> T {
        let work = Task { try await operation() }
        let race = Race<T>()
        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { continuation in
                race.start(continuation)
                let timer = Task {
                    try await Task.sleep(nanoseconds: UInt64(max(0, timeout.nanoseconds)))
                    race.finish(.failure(LogKVClientError.timedOut(seconds: Double(timeout.nanoseconds) / 1e9)))
                    work.cancel()
                }
                Task {
                    let result = await work.result
                    timer.cancel()
                    race.finish(result)
                }
            }
        } onCancel: {
            work.cancel()
        }
    }

    /// The first of two outcomes resumes the waiting call; the other is dropped.
    private final class Race<T: Sendable>: @unchecked Sendable {
        private let lock = NIOLock()
        private var continuation: CheckedContinuation<T, Error>?
        private var early: Result<T, Error>?

        func start(_ continuation: CheckedContinuation<T, Error>) {
            let ready: Result<T, Error>? = lock.withLock {
                if let early { return early }
                self.continuation = continuation
                return nil
            }
            if let ready { continuation.resume(with: ready) }
        }

        func finish(_ result: Result<T, Error>) {
            let waiting: CheckedContinuation<T, Error>? = lock.withLock {
                if let continuation {
                    self.continuation = nil
                    early = result  // later outcomes are dropped
                    return continuation
                }
                if early == nil { early = result }
                return nil
            }
            waiting?.resume(with: result)
        }
    }

    private func execute(_ method: HTTPMethod, _ path: String, body: [UInt8]?, headers: [(String, String)],
                         timeout: TimeAmount? = nil) async throws -> HTTPClientResponse {
        var request = HTTPClientRequest(url: baseURL + path)
        request.method = method
        if let token = configuration.token { request.headers.add(name: "Authorization", value: "Bearer \(token)") }
        for (name, value) in headers { request.headers.add(name: name, value: value) }
        if let body { request.body = .bytes(ByteBuffer(bytes: body)) }
        let response: HTTPClientResponse
        do {
            response = try await http.execute(request, timeout: timeout ?? configuration.timeout)
        } catch {
            throw Self.translate(error, base: baseURL, timeout: timeout ?? configuration.timeout)
        }
        if response.status == .unauthorized {
            var body = (try? await response.body.collect(upTo: 1 << 16)) ?? ByteBuffer()
            let answer = Answer(status: 401, headers: response.headers, body: body.readBytes(length: body.readableBytes) ?? [])
            throw LogKVClientError.unauthorized(answer.message)
        }
        return response
    }

    static func translate(_ error: Error, base: String, timeout: TimeAmount) -> LogKVClientError {
        if let error = error as? LogKVClientError { return error }
        if let error = error as? HTTPClientError, error == .deadlineExceeded || error == .readTimeout {
            return .timedOut(seconds: Double(timeout.nanoseconds) / 1e9)
        }
        return .unreachable("cannot reach \(base): \(error)")
    }

    // MARK: Keys and values

    /// A value as read: its bytes, version (ETag) and seconds left to live.
    public struct Value: Sendable, Equatable {
        public var bytes: [UInt8]
        public var version: UInt64
        public var ttl: Int?
        /// The store's index the read reflects (for blocking queries).
        public var index: UInt64?
    }

    /// The key's value, or nil if it is missing or expired.
    public func get(_ key: [UInt8]) async throws -> Value? {
        try await value(from: send(.GET, "/v1/kv/\(try Self.checkedPath(forKey: key))?raw"))
    }

    /// Waits (up to `wait`, at most the server's limit) until the key's
    /// index passes `index`, then reads it: Consul's blocking query.
    public func get(_ key: [UInt8], after index: UInt64, wait: TimeAmount) async throws -> Value? {
        let millis = max(1, wait.nanoseconds / 1_000_000)
        let answer = try await send(.GET, "/v1/kv/\(try Self.checkedPath(forKey: key))?raw&index=\(index)&wait=\(millis)ms",
                                    timeout: blockingDeadline(wait: wait))
        return try value(from: answer)
    }

    /// A blocking query's deadline: it may take the wait itself, plus the
    /// usual time.
    func blockingDeadline(wait: TimeAmount) -> TimeAmount { wait + configuration.timeout }

    private func value(from answer: Answer) throws -> Value? {
        if answer.status == 404 && answer.json["success"] as? Bool == false { return nil }
        guard answer.status == 200 else { throw LogKVClientError.from(answer) }
        guard let version = Self.version(answer.headers) else {
            throw LogKVClientError.protocolError("the answer carries no ETag: is this a logkvd?")
        }
        return Value(bytes: answer.body, version: version, ttl: answer.headers.first(name: "x-logkv-ttl").flatMap(Int.init),
                     index: answer.headers.first(name: "x-logkv-index").flatMap(UInt64.init))
    }

    /// Stores a value; returns its version. `ttl` in seconds; `ifVersion`
    /// writes only over that version (0: only if the key is absent).
    @discardableResult
    public func put(_ key: [UInt8], _ value: [UInt8], ttl: Int? = nil, ifVersion: UInt64? = nil) async throws -> UInt64 {
        var headers = [("Content-Type", "application/octet-stream")]
        if let ifVersion { headers.append(ifVersion == 0 ? ("If-None-Match", "*") : ("If-Match", "\"\(ifVersion)\"")) }
        let answer = try await send(.PUT, "/v1/kv/\(try Self.checkedPath(forKey: key))" + (ttl.map { "?ttl=\($0)" } ?? ""),
                                    body: value, headers: headers)
        guard answer.status == 204, let version = Self.version(answer.headers) else { throw LogKVClientError.from(answer) }
        return version
    }

    /// Deletes a key; false if it was missing.
    @discardableResult
    public func delete(_ key: [UInt8], ifVersion: UInt64? = nil) async throws -> Bool {
        let answer = try await send(.DELETE, "/v1/kv/\(try Self.checkedPath(forKey: key))",
                                    headers: ifVersion.map { [("If-Match", "\"\($0)\"")] } ?? [])
        if answer.status == 404 && answer.json["success"] as? Bool == false { return false }
        guard answer.status == 204 else { throw LogKVClientError.from(answer) }
        return true
    }

    /// Renews a key's lease: a TTL of `seconds` from now (0: none) without
    /// rewriting the value. False if the key is missing.
    @discardableResult
    public func refreshTTL(_ key: [UInt8], seconds: Int) async throws -> Bool {
        let answer = try await send(.PATCH, "/v1/kv/\(try Self.checkedPath(forKey: key))?ttl=\(seconds)")
        if answer.status == 404 && answer.json["success"] as? Bool == false { return false }
        guard answer.status == 200 else { throw LogKVClientError.from(answer) }
        return true
    }

    /// Every key under `prefix`, in key order, a page at a time; the
    /// cursor is exact (base64), so any key bytes page correctly, and a
    /// cursor that does not move forward ends the listing with an error
    /// instead of cycling.
    public func keys(prefix: [UInt8] = [], pageSize: Int = 1000) -> KeyPages {
        KeyPages(client: self, prefix: prefix, pageSize: max(1, pageSize))
    }

    public struct KeyPages: AsyncSequence, Sendable {
        public typealias Element = [[UInt8]]
        let client: LogKVClient
        let prefix: [UInt8]
        let pageSize: Int

        public func makeAsyncIterator() -> Iterator { Iterator(pages: self) }

        public struct Iterator: AsyncIteratorProtocol {
            let pages: KeyPages
            var after: [UInt8]?
            var done = false

            init(pages: KeyPages) { self.pages = pages }

            public mutating func next() async throws -> [[UInt8]]? {
                guard !done else { return nil }
                let answer = try await pages.client.send(.GET, "/v1/keys?prefix_base64=\(LogKVClient.query(base64: pages.prefix))"
                    + "&after_base64=\(LogKVClient.query(base64: after ?? []))&limit=\(pages.pageSize)")
                guard answer.status == 200 else { throw LogKVClientError.from(answer) }
                let json = answer.json
                let keys: [[UInt8]]
                if let exact = json["keys_base64"] as? [String] {
                    keys = try exact.map {
                        guard let data = Data(base64Encoded: $0) else { throw LogKVClientError.protocolError("malformed keys_base64") }
                        return Array(data)
                    }
                } else {
                    keys = (json["keys"] as? [String] ?? []).map { Array($0.utf8) }
                }
                guard let cursor = json["next_after_base64"] as? String, !keys.isEmpty,
                      let next = Data(base64Encoded: cursor).map(Array.init) else {
                    done = true
                    return keys.isEmpty ? nil : keys
                }
                if let after, !LogKVClient.lexicographicallyPrecedes(after, next) {
                    throw LogKVClientError.protocolError("the listing's cursor did not move forward: the server or a proxy is cycling")
                }
                after = next
                return keys
            }
        }
    }

    // MARK: Encoding

    /// `path(forKey:)` for a key this client can send (valid UTF-8, not empty).
    static func checkedPath(forKey key: [UInt8]) throws -> String {
        guard !key.isEmpty else { throw LogKVClientError.unsupportedKey("the key is empty") }
        guard String(validating: key, as: UTF8.self) != nil else {
            throw LogKVClientError.unsupportedKey("the key is not valid UTF-8, which async-http-client cannot put in a URL path")
        }
        return path(forKey: key)
    }

    /// The key's bytes for a URL path (see the type's contract).
    public static func path(forKey key: [UInt8]) -> String {
        key.split(separator: UInt8(ascii: "/"), omittingEmptySubsequences: false).map { segment in
            !segment.isEmpty && segment.allSatisfy({ $0 == UInt8(ascii: ".") })
                ? String(repeating: "%2E", count: segment.count)
                : percentEncode(segment)
        }.joined(separator: "/")
    }

    static func percentEncode<C: Collection>(_ bytes: C) -> String where C.Element == UInt8 {
        var out = ""
        for b in bytes {
            switch b {
            case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"),
                 UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "-"), UInt8(ascii: "."),
                 UInt8(ascii: "_"), UInt8(ascii: "~"):
                out.unicodeScalars.append(Unicode.Scalar(b))
            default:
                let hex = Array("0123456789ABCDEF".utf8)
                out.unicodeScalars.append(Unicode.Scalar(UInt8(ascii: "%")))
                out.unicodeScalars.append(Unicode.Scalar(hex[Int(b >> 4)]))
                out.unicodeScalars.append(Unicode.Scalar(hex[Int(b & 0xF)]))
            }
        }
        return out
    }

    /// Bytes as a base64 query value.
    static func query(base64 bytes: [UInt8]) -> String {
        percentEncode(Array(Data(bytes).base64EncodedString().utf8))
    }

    static func version(_ headers: HTTPHeaders) -> UInt64? {
        headers.first(name: "etag").flatMap { UInt64($0.trimmingCharacters(in: CharacterSet(charactersIn: "\""))) }
    }

    static func lexicographicallyPrecedes(_ a: [UInt8], _ b: [UInt8]) -> Bool {
        a.lexicographicallyPrecedes(b)
    }
}
