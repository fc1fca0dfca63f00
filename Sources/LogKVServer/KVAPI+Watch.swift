import Foundation
import LogKV
import NIOCore
import NIOHTTP1

/// `?index=N&wait=DURATION` on a read: answer once the read's index
/// (`WatchIndex`) is above N, or after `wait` with the current state.
struct BlockingQuery: Sendable {
    var index: UInt64
    var wait: TimeAmount

    static let defaultWait: TimeAmount = .minutes(5)

    /// nil when the request has no `index`; 400 on a malformed one. A wait
    /// longer than `maxWait` (`--max-wait`) is cut to it.
    init?(_ request: Request, maxWait: TimeAmount) throws {
        guard let text = request.query["index"] else {
            // Without index, wait means nothing (as in Consul); a malformed one is still an error.
            if let wait = request.query["wait"], Self.duration(wait) == nil {
                throw APIError.badRequest("wait must be a duration such as 30s, 5m or 1m30s")
            }
            return nil
        }
        // A 63-bit number, as the OpenAPI document's int64 says.
        guard let index = Int64(text), index >= 0 else {
            throw APIError.badRequest("index must be a whole number from 0 to 2^63-1 (an X-Logkv-Index)")
        }
        self.index = UInt64(index)
        var wait = min(Self.defaultWait, maxWait)
        if let text = request.query["wait"] {
            guard let parsed = Self.duration(text) else {
                throw APIError.badRequest("wait must be a duration such as 30s, 5m or 1m30s")
            }
            wait = min(parsed, maxWait)
        }
        // Up to 1/16 more, so watchers that started together do not all
        // come back at once (as Consul does).
        let jitter = wait.nanoseconds / 16
        self.wait = wait + .nanoseconds(jitter > 0 ? Int64.random(in: 0...jitter) : 0)
    }

    /// A duration as Go and Consul write it: `500ms`, `30s`, `5m`, `1h`,
    /// `1m30s`; a bare number is seconds.
    static func duration(_ text: String) -> TimeAmount? {
        if let seconds = Int64(text), seconds >= 0 { return .seconds(min(seconds, 3600)) }
        var total: Int64 = 0
        var rest = Substring(text)
        guard !rest.isEmpty else { return nil }
        while !rest.isEmpty {
            let digits = rest.prefix { $0.isASCII && $0.isNumber }
            guard !digits.isEmpty, digits.count <= 6, let value = Int64(digits) else { return nil }
            rest = rest.dropFirst(digits.count)
            let unit = rest.prefix { $0.isASCII && $0.isLetter }
            rest = rest.dropFirst(unit.count)
            let nanos: Int64
            switch unit {
            case "ms": nanos = 1_000_000
            case "s": nanos = 1_000_000_000
            case "m": nanos = 60_000_000_000
            case "h": nanos = 3_600_000_000_000
            default: return nil
            }
            // Anything past a day is cut to a day (the caller caps it lower).
            total = min(total + min(value, 24 * 3_600_000_000_000 / nanos) * nanos, 24 * 3_600_000_000_000)
        }
        return .nanoseconds(total)
    }
}

/// A blocking read held until its index moves past the one given, its wait
/// ends, the server shuts down or the client goes.
///
/// Registered with the `WatchRegistry` before its first read, so no change
/// can slip between reading and waiting; each wake-up re-reads (on the
/// blocking pool when the read needs the disk) and answers only if the
/// index moved. A key with a TTL is re-read when it expires.
///
/// Thread-safety: its state is touched only on `loop` (`wake` hops there).
final class HeldRead: @unchecked Sendable {
    /// One read: the response it makes, its index, and when the key it
    /// read expires (nil: never, or a listing).
    struct Outcome {
        var response: Response
        var index: UInt64
        /// Whether the read found its key (always true for a listing).
        var present = true
        /// Found missing while a write to the key was on its way (it may be
        /// a refresh judged before the expiry): not an answer yet.
        var settling = false
        var expiresAt: Int64?
    }

    private let loop: EventLoop
    private let registry: WatchRegistry
    private let subject: WatchRegistry.Subject
    private let query: BlockingQuery
    private let read: () -> EventLoopFuture<Outcome>
    private let clock: @Sendable () -> Int64
    private let promise: EventLoopPromise<Response>
    private let deadline: NIODeadline
    private var id: UInt64?
    private var connection: ConnectionEvents?
    private var timer: Scheduled<Void>?
    private var reading = false
    private var readAgain = false
    private var finished = false
    /// The expiry of the key as last read present, to tell an expiry that
    /// nobody reported from a key that never existed.
    private var lastReadExpiry: Int64?

    private init(loop: EventLoop, registry: WatchRegistry, subject: WatchRegistry.Subject, query: BlockingQuery,
                 clock: @escaping @Sendable () -> Int64, read: @escaping () -> EventLoopFuture<Outcome>) {
        self.loop = loop
        self.registry = registry
        self.subject = subject
        self.query = query
        self.clock = clock
        self.read = read
        self.promise = loop.makePromise(of: Response.self)
        self.deadline = .now() + query.wait
    }

    /// Starts holding a read; the future is its answer.
    static func start(_ request: Request, registry: WatchRegistry, subject: WatchRegistry.Subject, query: BlockingQuery,
                      clock: @escaping @Sendable () -> Int64,
                      read: @escaping () -> EventLoopFuture<Outcome>) -> EventLoopFuture<Response> {
        let held = HeldRead(loop: request.eventLoop, registry: registry, subject: subject, query: query, clock: clock, read: read)
        held.id = registry.add(subject, WatchRegistry.Waiter { [loop = request.eventLoop] in
            loop.execute { held.reread() }
        })
        // The connection has one request in flight: its close ends this one.
        request.connection?.onClose = { held.finish(nil) }
        held.connection = request.connection
        held.reread()
        return held.promise.futureResult
    }

    private func reread() {
        guard !finished else { return }
        if reading {
            readAgain = true
            return
        }
        reading = true
        read().hop(to: loop).whenComplete { [self] result in
            reading = false
            switch result {
            case let .failure(error):
                finish(.error(APIError.from(error)))
            case let .success(outcome):
                decide(outcome)
            }
            if readAgain && !finished {
                readAgain = false
                reread()
            }
        }
    }

    private func decide(_ outcome: Outcome) {
        var outcome = outcome
        let now = clock()
        if outcome.settling && id != nil && NIODeadline.now() < deadline && !registry.isClosed {
            // The write wakes this read when it lands; a short re-read covers
            // a write that fails.
            timer?.cancel()
            timer = loop.scheduleTask(in: .milliseconds(5)) { [self] in reread() }
            return
        }
        if case .key = subject, !outcome.present, let expired = lastReadExpiry, expired <= now {
            // Read present with this expiry, missing now: it expired, even
            // if no read or sweep reported it yet.
            outcome.index = max(outcome.index, query.index &+ 1)
        }
        // A listing index above the current one comes from before a restart
        // (listing indexes restart lower): answer, the client re-syncs.
        let fromBeforeRestart = { if case .prefix = self.subject { return query.index > outcome.index }; return false }()
        if outcome.index > query.index || fromBeforeRestart || NIODeadline.now() >= deadline || registry.isClosed {
            finish(outcome)
            return
        }
        guard id != nil else {
            // Not registered (too many held): answered only when it need not wait.
            finish(.error(APIError(.tooManyRequests,
                                   "too many blocking queries held (\(registry.limit)); retry later or raise --max-watches",
                                   headers: [("Retry-After", "1")])))
            return
        }
        lastReadExpiry = outcome.expiresAt
        var wakeAt = deadline
        let untilDeadline = (deadline - .now()).nanoseconds / 1_000_000
        if let expires = outcome.expiresAt, expires - now < untilDeadline {
            wakeAt = .now() + .milliseconds(max(0, expires - now) + 1)
        }
        timer?.cancel()
        timer = loop.scheduleTask(deadline: wakeAt) { [self] in reread() }
    }

    private func finish(_ outcome: Outcome) {
        var response = outcome.response
        response.headers.replaceOrAdd(name: "x-logkv-index", value: String(outcome.index))
        finish(response)
    }

    /// Answers (nil: the client is gone) and stops waiting.
    private func finish(_ response: Response?) {
        guard !finished else { return }
        finished = true
        timer?.cancel()
        timer = nil
        connection?.onClose = nil
        connection = nil
        if let id { registry.remove(subject, id: id) }
        if let response {
            promise.succeed(response)
        } else {
            promise.fail(ChannelError.ioOnClosedChannel)
        }
    }
}

/// What a connection tells the request it is serving: that it closed.
///
/// Thread-safety: used only on its channel's event loop.
final class ConnectionEvents: @unchecked Sendable {
    var onClose: (() -> Void)?

    func closed() {
        let handler = onClose
        onClose = nil
        handler?()
    }
}
