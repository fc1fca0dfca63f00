import Foundation
import LogKV
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix

/// The KV routes over one store. Thin: it parses and validates HTTP input,
/// calls the engine, and shapes the answer; the engine knows nothing of HTTP.
///
/// Thread-safety: immutable after init; handlers run on event loops and
/// hand blocking engine calls to `blockingPool`.
public final class KVAPI: Sendable {
    let store: LogKV
    let configuration: ServerConfiguration
    let blockingPool: NIOThreadPool
    let serverMetrics: ServerMetrics
    /// Copied out of the store's options once (the options struct is large).
    let clock: @Sendable () -> Int64
    /// Streamed responses (backups) in flight.
    let streams = ActiveStreams(limit: 1)
    /// Memory of streamed value answers across connections.
    let answerBudget: AnswerBudget
    /// Blocking queries held, and the indexes reads report.
    let watches: WatchRegistry

    init(store: LogKV, configuration: ServerConfiguration, blockingPool: NIOThreadPool, serverMetrics: ServerMetrics) {
        self.store = store
        self.watches = WatchRegistry(startSeq: store.lastIssuedSeq, limit: configuration.maxHeldQueries)
        self.clock = store.options.clock
        self.configuration = configuration
        self.blockingPool = blockingPool
        self.serverMetrics = serverMetrics
        self.answerBudget = AnswerBudget(limit: configuration.maxAnswerBytesInFlight)
    }

    /// Runs engine work off the event loop; errors become JSON error responses.
    func offload(_ request: Request, _ body: @escaping @Sendable () throws -> Response) -> Reply {
        .later(blockingPool.runIfActive(eventLoop: request.eventLoop) {
            do { return try body() } catch { return Response.error(APIError.from(error)) }
        })
    }

    /// `offload` for work that holds `bytes` of the answer budget: released
    /// here if the pool never runs it (shutting down).
    func offload(_ request: Request, releasingOnFailure bytes: Int,
                 _ body: @escaping @Sendable () throws -> Response) -> Reply {
        let budget = answerBudget
        let future = blockingPool.runIfActive(eventLoop: request.eventLoop) {
            do { return try body() } catch {
                budget.release(bytes)
                return Response.error(APIError.from(error))
            }
        }
        future.whenFailure { _ in budget.release(bytes) }
        return .later(future)
    }

    // MARK: Routes

    /// Keys with a TTL a held listing remembers from its page, soonest first
    /// (bounds its memory whatever the page size).
    static let expiriesTrackedPerListing = 64

    /// Largest value answered whole (and, when in memory, on the event
    /// loop itself); larger ones are streamed (`KVAPI+ValueAnswer`).
    static let inlineJSONLimit = 64 * 1024

    private static let healthResponse = Response(status: .ok, contentType: "text/plain; charset=utf-8", body: Array("ok".utf8))

    /// 200 "ok" while the store takes writes; 503 with the reason while it
    /// refuses them (a failed fsync, an index that cannot be written), so a
    /// load balancer or an alert sees a store that only serves reads.
    func health(_ request: Request) -> Reply {
        var response = Self.healthResponse
        if let refusal = store.writeRefusal {
            let reason = refusal == .diskFull
                ? "disk full: writes resume once a delete or a compaction frees space" : "\(refusal)"
            response = .error(APIError(.serviceUnavailable, "store cannot take writes: \(reason)"))
        }
        return .now(response)  // a HEAD answer loses its body in the encoder
    }

    func metricsText(_ request: Request) -> Reply {
        offload(request) { [self] in
            serverMetrics.refreshGauges(from: store, watches: watches)
            var body: [UInt8] = []
            configuration.metricsRegistry?.emit(into: &body)
            return Response(status: .ok, contentType: "text/plain; version=0.0.4; charset=utf-8", body: body)
        }
    }

    func get(_ request: Request) throws -> Reply {
        let key = request.key
        let raw = request.query["raw"] != nil
        let ifNoneMatch = request.headers.first(name: "if-none-match")
        let respond: @Sendable (LoadedValue, UInt64) -> Response = { [clock] loaded, index in
            let metadata: (seq: UInt64, writtenAt: Int64, expiresAt: Int64?)
            switch loaded.read {
            case .missing:
                var missing = Response.error(APIError.notFound("key not found"))
                missing.headers.add(name: "x-logkv-index", value: String(index))
                return missing
            case let .whole(stored): metadata = (stored.seq, stored.writtenAt, stored.expiresAt)
            case let .large(reader): metadata = (reader.seq, reader.writtenAt, reader.expiresAt)
            }
            var headers = HTTPHeaders()
            let etag = "\"\(metadata.seq)\""
            headers.add(name: "etag", value: etag)
            headers.add(name: "x-logkv-index", value: String(index))
            let now = clock()
            if let expires = metadata.expiresAt {
                headers.add(name: "x-logkv-ttl", value: String(max(0, (expires - now + 999) / 1000)))
            }
            if let ifNoneMatch, ETag.matches(ifNoneMatch, seq: metadata.seq) {
                return Response(status: .notModified, headers: headers)
            }
            if raw {
                switch loaded.read {
                case let .large(reader):
                    return Self.streamed(KVAPI.streamedBody(reader, shape: nil, prefix: [], suffix: []),
                                         contentType: "application/octet-stream", headers: headers)
                case let .whole(stored):
                    return Response(status: .ok, contentType: "application/octet-stream", body: stored.value, headers: headers)
                case .missing: preconditionFailure("answered above")
                }
            }
            var w = JSONWriter()
            w.beginObject()
            w.field("success", true)
            w.field("message", "ok")
            // logkv-store's type: integer Unix seconds of the write.
            w.field("timestamp", metadata.writtenAt / 1000)
            Self.writeKey(&w, key)
            var prefix: [UInt8]?
            var isText = true
            switch loaded.read {
            case let .whole(stored): w.valueField(stored.value)
            case .large:
                // The value's content is streamed between the two halves.
                isText = loaded.shape?.isText ?? false
                w.openStringField("value")
                prefix = w.bytes
                w.closeStringField()
                if !isText { w.field("encoding", "base64") }
            case .missing: preconditionFailure("answered above")
            }
            w.field("version", metadata.seq)
            if let expires = metadata.expiresAt {
                w.field("ttl", max(0, (expires - now + 999) / 1000))
                w.field("expires_at", rfc3339(millis: expires))
            }
            w.endObject()
            if let prefix, case let .large(reader) = loaded.read {
                let body = KVAPI.streamedBody(reader, shape: loaded.shape ?? JSONValueShape(), prefix: prefix,
                                              suffix: Array(w.bytes[prefix.count...]))
                return Self.streamed(body, contentType: "application/json", headers: headers)
            }
            var response = Response.json(w)
            response.headers.add(contentsOf: headers)
            return response  // a HEAD answer loses its body in the encoder
        }
        let watches = self.watches
        let store = self.store
        let outcome: @Sendable (LoadedValue) -> HeldRead.Outcome = { loaded in
            let index = loaded.seq.map { WatchIndex.write($0) } ?? watches.missingKeyIndex(key)
            return HeldRead.Outcome(response: respond(loaded, index), index: index, present: loaded.seq != nil,
                                    settling: loaded.seq == nil && store.hasWriteInFlight(key), expiresAt: loaded.expiresAt)
        }
        if let query = try BlockingQuery(request, maxWait: configuration.maxBlockingWait) {
            return .later(HeldRead.start(request, registry: watches, subject: .key(key), query: query, clock: clock) { [self] in
                readKey(request, raw: raw, outcome)
            })
        }
        // Small values in memory are answered on the event loop; anything
        // that needs the disk, and every large value (read, checked and
        // streamed in pieces), goes to the blocking pool.
        if case let .done(stored) = try store.getWithoutWaiting(key, valueUpTo: Self.inlineJSONLimit) {
            return .now(outcome(LoadedValue(read: stored.map { .whole($0) } ?? .missing)).response)
        }
        return offload(request) { [self] in outcome(try loadValue(key, raw: raw)).response }
    }

    /// A 200 whose body `source` streams.
    static func streamed(_ source: BodySource, contentType: String, headers: HTTPHeaders) -> Response {
        var response = Response(status: .ok, contentType: contentType, headers: headers)
        response.headers.add(name: "content-length", value: String(source.length))
        response.hasContentLength = true
        response.bodySource = source
        return response
    }

    /// Reads `key` into `make`'s outcome: on the event loop when that needs
    /// no disk and the value is small, else on the pool.
    private func readKey(_ request: Request, raw: Bool,
                         _ make: @escaping @Sendable (LoadedValue) -> HeldRead.Outcome) -> EventLoopFuture<HeldRead.Outcome> {
        do {
            if case let .done(stored) = try store.getWithoutWaiting(request.key, valueUpTo: Self.inlineJSONLimit) {
                return request.eventLoop.makeSucceededFuture(make(LoadedValue(read: stored.map { .whole($0) } ?? .missing)))
            }
        } catch {
            return request.eventLoop.makeFailedFuture(error)
        }
        return blockingPool.runIfActive(eventLoop: request.eventLoop) { [self, key = request.key] in make(try loadValue(key, raw: raw)) }
    }

    func putJSON(_ request: Request) throws -> Reply {
        let body = try WriteBody.read(from: request)
        let key = try body.keyBytes()
        let value = try body.valueBytes()
        return try store(request, key: key, value: value, expiresAt: try body.expiresAt(now: clock()))
    }

    func putRaw(_ request: Request) throws -> Reply {
        let expiresAt = try TTL.expiry(fromQuery: request.query["ttl"], now: clock())
        return try store(request, key: request.key, value: request.bodyBytes, expiresAt: expiresAt)
    }

    /// The write both PUT forms share: conditions from the headers, 204 with
    /// the new ETag.
    private func store(_ request: Request, key: [UInt8], value: [UInt8], expiresAt: Int64?) throws -> Reply {
        let condition = try ETag.condition(request.headers)
        let answer: @Sendable (UInt64) -> Response = { Response(status: .noContent, headers: ["etag": "\"\($0)\""]) }
        if condition != .none || store.writeWouldWait {
            // A condition is checked against the index under the writer
            // lock, which may read the disk, and a full index backlog holds
            // writers back until the flusher catches up: neither on the
            // event loop.
            return offload(request) { [store] in
                answer(try store.put(key, value, expiresAt: expiresAt, condition: condition))
            }
        }
        // Appended here only if that needs no waiting (the writer lock is
        // held across fsyncs by rotations); otherwise on the blocking pool.
        // Without `always` the append is the acknowledgement (the callback
        // runs before `putWithoutWaiting` returns); under `always` the
        // committer's fsync acknowledges it (group commit across every
        // connection; no thread waits).
        let promise = request.eventLoop.makePromise(of: Response.self)
        let respond: @Sendable (Result<UInt64, Error>) -> Void = { result in
            switch result {
            case let .success(seq): promise.succeed(answer(seq))
            case let .failure(error): promise.succeed(.error(APIError.from(error)))
            }
        }
        let outcome: LogKV.ImmediateWrite
        do {
            outcome = try store.putWithoutWaiting(key, value, expiresAt: expiresAt, whenDurable: respond)
        } catch {
            promise.succeed(.error(APIError.from(error)))  // refused before the append
            throw error
        }
        if case .wouldBlock = outcome {
            // Nothing was written and `respond` was not called. On the pool,
            // the callback form too: no pool thread waits for the fsync, and
            // the write joins the committer's group commit.
            blockingPool.submit { [store] state in
                guard case .active = state else {
                    promise.succeed(.error(APIError(.serviceUnavailable, "server is shutting down")))
                    return
                }
                do {
                    try store.put(key, value, expiresAt: expiresAt, whenDurable: respond)
                } catch {
                    respond(.failure(error))
                }
            }
        }
        return .later(promise.futureResult)
    }

    func delete(_ request: Request) throws -> Reply {
        let key = request.key
        let condition = try ETag.condition(request.headers)
        if condition == .ifAbsent { throw APIError(.badRequest, "If-None-Match is not meaningful on DELETE") }
        // A delete looks its key up under the writer lock (to answer 404),
        // which may read the disk: not on the event loop.
        return offload(request) { [store] in
            guard try store.delete(key, condition: condition) else { throw APIError.notFound("key not found") }
            return .noContent
        }
    }

    /// `PATCH /v1/kv/{key}?ttl=SECONDS`: a lease renewal. The key's current
    /// value gets a TTL of SECONDS from now (`ttl=0`: none) without being
    /// rewritten; its version (ETag) stays. 404 if the key is missing or
    /// expired; `If-Match` is checked against the value's version.
    func refreshTTL(_ request: Request) throws -> Reply {
        let key = request.key
        guard let text = request.query["ttl"] else {
            // The seed answers a bare PATCH with 405; only `?ttl=` makes it
            // a lease renewal here.
            throw APIError(.methodNotAllowed, "PATCH renews a lease and needs ?ttl=SECONDS (0 removes the TTL)",
                           headers: [("Allow", Self.allowedMethods(request.path))])
        }
        guard let seconds = Int64(text), seconds >= 0 else {
            throw APIError.badRequest("ttl must be a whole number of seconds, 0 or more")
        }
        let condition = try ETag.condition(request.headers)
        if condition == .ifAbsent { throw APIError(.badRequest, "If-None-Match is not meaningful on PATCH") }
        let expiresAt = seconds == 0 ? nil : try TTL.expiry(seconds: seconds, now: clock())
        // Like a delete, it looks its key up under the writer lock.
        return offload(request) { [store] in
            guard let version = try store.refreshTTL(key, expiresAt: expiresAt, condition: condition) else {
                throw APIError.notFound("key not found")
            }
            var w = JSONWriter()
            w.beginObject()
            w.field("success", true)
            w.field("message", "ok")
            Self.writeKey(&w, key)
            w.field("version", version)
            if let expiresAt {
                w.field("ttl", seconds)
                w.field("expires_at", rfc3339(millis: expiresAt))
            }
            w.endObject()
            var response = Response.json(w)
            response.headers.add(name: "etag", value: "\"\(version)\"")
            return response
        }
    }

    /// `GET /v1/keys`. Binary-safe: `prefix`/`after` are the exact bytes
    /// their percent-encoding gives (never re-read as text); `prefix_base64`
    /// and `after_base64` say the same in base64. Each page gives
    /// `next_after` (the last key as text, when it is UTF-8) and
    /// `next_after_base64` (always exact), and `keys_base64` when a key on
    /// the page is not UTF-8 (`keys` shows those percent-encoded, which a
    /// text key could look like).
    func listKeys(_ request: Request) throws -> Reply {
        func bytes(_ name: String) throws -> [UInt8] {
            if let b64 = request.query[name + "_base64"] {
                guard let data = Data(base64Encoded: b64) else { throw APIError.badRequest("\(name)_base64 is not valid base64") }
                return Array(data)
            }
            return request.queryBytes[name] ?? []
        }
        let prefix = try bytes("prefix")
        let after = try bytes("after")
        var limit = configuration.defaultPageSize
        if let text = request.query["limit"] {
            guard let n = Int(text), n > 0 else { throw APIError.badRequest("limit must be a positive integer") }
            guard n <= configuration.maxPageSize else {
                throw APIError.badRequest("limit must be at most \(configuration.maxPageSize)")
            }
            limit = n
        }
        let page: @Sendable (UInt64) throws -> (Response, [KeyInfo]) = { [store, limit] index in
            let page = try store.scan(prefix: prefix, after: after, limit: limit)
            var w = JSONWriter()
            w.beginObject()
            w.field("success", true)
            w.field("message", "ok")
            w.beginArray("keys")
            for info in page { w.element(Self.keyText(info.key)) }
            w.endArray()
            if page.contains(where: { !$0.key.isValidUTF8 }) {
                w.beginArray("keys_base64")
                for info in page { w.element(Data(info.key).base64EncodedString()) }
                w.endArray()
            }
            w.field("count", page.count)
            if page.count == limit, let last = page.last {
                if last.key.isValidUTF8 { w.field("next_after", utf8: last.key) } else { w.fieldNull("next_after") }
                w.field("next_after_base64", Data(last.key).base64EncodedString())
            } else {
                w.fieldNull("next_after")
                w.fieldNull("next_after_base64")
            }
            w.endObject()
            var response = Response.json(w)
            response.headers.add(name: "x-logkv-index", value: String(index))
            return (response, page)
        }
        let watches = self.watches
        // The index is taken before the page is read: a change in between
        // makes the next blocking query answer at once, never miss it.
        if let query = try BlockingQuery(request, maxWait: configuration.maxBlockingWait) {
            // Keys on the last page that expire, and when: the held listing
            // re-reads at the first expiry and reads the keys then due, so
            // their expiry is reported (and moves the index) even if no other
            // read or the sweep got there first.
            let expiring = NIOLockedValueBox<[[UInt8]: Int64]>([:])
            return .later(HeldRead.start(request, registry: watches, subject: .prefix(prefix), query: query, clock: clock) { [self, clock, store] in
                let now = clock()
                let due = expiring.withLockedValue { $0.filter { $0.value <= now }.map(\.key) }
                return blockingPool.runIfActive(eventLoop: request.eventLoop) {
                    // Metadata only (no value read); a failure here is the
                    // key's, not the listing's.
                    for key in due { _ = try? store.noticeExpiry(key) }
                    let index = watches.prefixIndex(prefix, track: true)
                    let (response, keys) = try page(index)
                    // The first few to expire are enough: the re-read then reads the page again.
                    let expiries = keys.compactMap { info in info.expiresAt.map { (info.key, $0) } }
                        .sorted { $0.1 < $1.1 }.prefix(Self.expiriesTrackedPerListing)
                    expiring.withLockedValue { $0 = Dictionary(Array(expiries), uniquingKeysWith: min) }
                    return HeldRead.Outcome(response: response, index: index, expiresAt: expiries.first?.1)
                }
            })
        }
        return offload(request) { try page(watches.prefixIndex(prefix, track: false)).0 }
    }

    func stats(_ request: Request) throws -> Reply {
        offload(request) { [store] in
            let s = try store.stats()
            var w = JSONWriter()
            w.beginObject()
            w.field("success", true)
            w.field("message", "ok")
            // As logkv-store means them: keys and value bytes, counting every
            // acknowledged write at once.
            w.field("total_keys", s.keys)
            w.field("total_size", s.valueBytes)
            w.field("segments", s.segments)
            w.field("segment_bytes", s.totalBytes)
            w.field("live_bytes", s.liveBytes)
            w.field("dead_bytes", s.deadBytes)
            w.field("pending_index_entries", s.pendingIndexEntries)
            w.field("last_version", s.lastSeq)
            w.field("fsync", store.options.fsync.rawValue)
            w.endObject()
            return Response.json(w)
        }
    }

    func compact(_ request: Request) -> Reply {
        guard store.startCompaction() else {
            return .now(.error(APIError(.conflict, "a compaction is already running")))
        }
        var w = JSONWriter()
        w.beginObject()
        w.field("success", true)
        w.field("message", "compaction started")
        w.endObject()
        return .now(.json(w, status: .accepted))
    }

    /// `GET /v1/admin/backup`: a consistent snapshot of the store streamed
    /// as a backup archive (see `BackupArchive`), as etcd and Consul stream
    /// theirs; `logkv restore` takes it. No request ever names a server path.
    /// Compaction waits while the stream runs; writes and reads go on.
    func backup(_ request: Request) -> Reply {
        .stream(ResponseStream { [store] start, send in
            try store.withBackupSnapshot { snapshot in
                var head = Response(status: .ok, contentType: "application/x-tar")
                head.headers.add(name: "content-length", value: String(BackupArchive.size(of: snapshot)))
                head.headers.add(name: "content-disposition", value: "attachment; filename=\"logkv-backup.tar\"")
                head.headers.add(name: "x-logkv-segments", value: String(snapshot.count))
                try start(head)
                try BackupArchive.write(snapshot, to: send)
            }
        })
    }

    // MARK: Helpers

    /// A key as text for JSON: itself when it is UTF-8, else percent-encoded
    /// (the form the path and `after` accept).
    static func keyText(_ key: [UInt8]) -> String {
        key.isValidUTF8 ? String(decoding: key, as: UTF8.self) : percentEncode(key)
    }

    static func writeKey(_ w: inout JSONWriter, _ key: [UInt8]) {
        if key.isValidUTF8 {
            w.field("key", utf8: key)
        } else {
            w.field("key", percentEncode(key))
            w.field("key_encoding", "percent")
        }
    }
}

/// The JSON write body `{"key", "value", "ttl"?, "encoding"?}`, as the
/// logkv-store clients send it. Also one operation of a batch.
struct WriteBody: Decodable, Equatable {
    var op: String?
    var key: String?
    var value: String?
    var ttl: Int64?
    var encoding: String?

    /// A write body: read in one pass when it has the usual shape, else
    /// decoded (and its errors reported) by `decode`.
    static func read(from request: Request) throws -> WriteBody {
        if let body = request.body, let read = body.withUnsafeReadableBytes({ WriteBodyReader.read($0) }) {
            return read
        }
        return try decode(WriteBody.self, from: request)
    }

    static func decode<T: Decodable>(_ type: T.Type, from request: Request) throws -> T {
        guard let body = request.body, body.readableBytes > 0 else { throw APIError.badRequest("request body is empty") }
        try checkStrictTypes(body)
        do {
            return try JSONDecoder().decode(T.self, from: Data(body.readableBytesView))
        } catch let DecodingError.typeMismatch(_, context), let DecodingError.valueNotFound(_, context) {
            let path = context.codingPath.map { $0.intValue.map(String.init) ?? $0.stringValue }.joined(separator: ".")
            throw APIError.badRequest("invalid JSON body: \"\(path)\" has the wrong type")
        } catch DecodingError.dataCorrupted(let context) {
            throw APIError.badRequest("malformed JSON body: \(context.debugDescription)")
        } catch {
            throw APIError.badRequest("invalid JSON body: \(error)")
        }
    }

    /// What JSONDecoder lets through but the schema does not: `null` for a
    /// field (it reads as absent) and `ttl: 1.0` (it reads as 1). Checked
    /// only when the body mentions "ttl" or null, so plain writes pay nothing.
    static func checkStrictTypes(_ body: ByteBuffer) throws {
        let bytes = body.readableBytesView
        func mentions(_ text: String) -> Bool {
            let marker = Array(text.utf8)
            guard bytes.count >= marker.count else { return false }
            return bytes.withContiguousStorageIfAvailable { buf in
                (0...(buf.count - marker.count)).contains { i in buf[i] == marker[0] && buf[i..<i + marker.count].elementsEqual(marker) }
            } ?? true
        }
        guard mentions("\"ttl\"") || mentions("null"),
              let json = try? JSONSerialization.jsonObject(with: Data(bytes)) else { return }
        var objects: [[String: Any]] = []
        if let object = json as? [String: Any] {
            objects.append(object)
            if let ops = object["ops"] as? [Any] { objects += ops.compactMap { $0 as? [String: Any] } }
        }
        for object in objects {
            for field in ["op", "key", "value", "ttl", "encoding", "ops"] where object[field] is NSNull {
                throw APIError.badRequest("\"\(field)\" must not be null")
            }
            guard let ttl = object["ttl"] else { continue }
            let isInteger = (ttl as? NSNumber).map { !["d", "f"].contains(String(cString: $0.objCType)) } ?? false
            if !isInteger { throw APIError.badRequest("\"ttl\" must be an integer number of seconds") }
        }
    }

    func keyBytes() throws -> [UInt8] {
        guard let key else { throw APIError.badRequest("\"key\" is required") }
        guard !key.isEmpty else { throw APIError.badRequest("\"key\" must not be empty") }
        return Array(key.utf8)
    }

    func valueBytes() throws -> [UInt8] {
        guard let value else { throw APIError.badRequest("\"value\" is required and must be a string") }
        switch encoding {
        case nil, "utf-8", "utf8": return Array(value.utf8)
        case "base64":
            guard let data = Data(base64Encoded: value) else { throw APIError.badRequest("\"value\" is not valid base64") }
            return Array(data)
        case let other?: throw APIError.badRequest("unknown encoding \"\(other)\"")
        }
    }

    func expiresAt(now: Int64) throws -> Int64? {
        try ttl.map { try TTL.expiry(seconds: $0, now: now) }
    }
}

/// TTLs: whole seconds, positive, at most ten years.
enum TTL {
    static let maxSeconds: Int64 = 10 * 365 * 24 * 3600

    static func expiry(fromQuery text: String?, now: Int64) throws -> Int64? {
        guard let text else { return nil }
        guard let seconds = Int64(text) else { throw APIError.badRequest("ttl must be a whole number of seconds") }
        return try expiry(seconds: seconds, now: now)
    }

    static func expiry(seconds: Int64, now: Int64) throws -> Int64 {
        guard seconds > 0 else { throw APIError.badRequest("ttl must be positive") }
        guard seconds <= maxSeconds else { throw APIError.badRequest("ttl must be at most \(maxSeconds) seconds") }
        return now + seconds * 1000
    }
}

/// ETags are a value's version (its seq) in quotes.
/// Entity tags (RFC 9110 §8.8.3): this server's are strong, `"<seq>"`.
enum ETag {
    /// One parsed element of an `If-Match`/`If-None-Match` list.
    enum Tag: Equatable { case any, strong(String), weak(String) }

    /// Parses `*` or a comma-separated list of entity tags (empty elements
    /// allowed, as the list rule says); nil if malformed.
    static func parseList(_ header: String) -> [Tag]? {
        let text = header.trimmingCharacters(in: .whitespaces)
        if text == "*" { return [.any] }
        var tags: [Tag] = []
        var rest = Substring(text)
        while true {
            rest = rest.drop { $0 == " " || $0 == "\t" }
            if rest.isEmpty { break }
            if rest.first == "," { rest = rest.dropFirst(); continue }
            var weak = false
            if rest.hasPrefix("W/") { weak = true; rest = rest.dropFirst(2) }
            guard rest.first == "\"" else { return nil }
            rest = rest.dropFirst()
            guard let close = rest.firstIndex(of: "\"") else { return nil }
            let opaque = rest[..<close]
            // etagc: %x21 / %x23-7E / obs-text
            guard opaque.utf8.allSatisfy({ $0 == 0x21 || ($0 >= 0x23 && $0 != 0x7F) }) else { return nil }
            tags.append(weak ? .weak(String(opaque)) : .strong(String(opaque)))
            rest = rest[rest.index(after: close)...].drop { $0 == " " || $0 == "\t" }
            guard rest.isEmpty || rest.first == "," else { return nil }
        }
        return tags
    }

    /// The seqs a list names with strong tags of this server's form.
    static func seqs(_ tags: [Tag]) -> [UInt64] {
        tags.compactMap { if case let .strong(opaque) = $0 { return UInt64(opaque).flatMap { $0 > 0 ? $0 : nil } } else { return nil } }
    }

    /// `If-None-Match` on a read (weak comparison): does `seq` match?
    static func matches(_ header: String, seq: UInt64) -> Bool {
        guard let tags = parseList(header) else { return false }
        if tags == [.any] { return true }
        return tags.contains { tag in
            switch tag {
            case .any: return true
            case let .strong(o), let .weak(o): return UInt64(o) == seq
            }
        }
    }

    /// The write condition from `If-Match` / `If-None-Match: *`. A
    /// well-formed tag this server never issued simply does not match (412);
    /// a malformed header is a 400.
    static func condition(_ headers: HTTPHeaders) throws -> WriteCondition {
        if let ifNoneMatch = headers.first(name: "if-none-match") {
            guard ifNoneMatch.trimmingCharacters(in: .whitespaces) == "*" else {
                throw APIError.badRequest("only If-None-Match: * is supported on writes")
            }
            return .ifAbsent
        }
        if let ifMatch = headers.first(name: "if-match"), !ifMatch.trimmingCharacters(in: .whitespaces).isEmpty {
            guard let tags = parseList(ifMatch) else {
                throw APIError.badRequest("If-Match must be * or a list of entity tags (\"<version>\")")
            }
            // Any current version: the key must exist (checked by the engine
            // atomically with the write).
            if tags.contains(.any) { return .ifPresent }
            // Strong comparison: weak tags never match.
            let wanted = seqs(tags)
            switch wanted.count {
            case 0: return .ifVersion(0)
            case 1: return .ifVersion(wanted[0])
            default: return .ifAnyVersion(wanted)
            }
        }
        return .none
    }
}

/// Streamed responses in flight, at most `limit` (a backup holds a blocking
/// thread and pins compaction while it runs, so stalled readers must not
/// pile up); closed at shutdown so none outlives the event loops.
///
/// Thread-safe.
final class ActiveStreams: Sendable {
    let limit: Int
    private let channels = NIOLockedValueBox<[ObjectIdentifier: Channel]>([:])

    init(limit: Int) { self.limit = limit }

    /// Streams running now.
    var count: Int { channels.withLockedValue { $0.count } }

    func begin(_ channel: Channel) -> Bool {
        channels.withLockedValue { open in
            guard open.count < limit else { return false }
            open[ObjectIdentifier(channel)] = channel
            return true
        }
    }

    func end(_ channel: Channel) {
        _ = channels.withLockedValue { $0.removeValue(forKey: ObjectIdentifier(channel)) }
    }

    /// Closes every stream's connection (their producers then stop).
    func closeAll() {
        for channel in channels.withLockedValue({ Array($0.values) }) { channel.close(promise: nil) }
    }
}
