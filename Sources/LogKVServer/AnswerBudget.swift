import NIOConcurrencyHelpers
import NIOCore

/// A body too large to hold in memory (a big value), pulled in pieces on
/// the blocking pool. `HTTPConnectionHandler` writes each piece and waits
/// until it is on the socket before it pulls the next, so an answer holds
/// one piece in memory, and no thread waits on a slow client.
struct BodySource: Sendable {
    /// The body's exact length (the answer's Content-Length).
    let length: Int
    /// The next piece, at most `AnswerBudget.pieceSize` bytes; called one at
    /// a time, off the event loop, until `length` bytes came.
    let next: @Sendable () throws -> [UInt8]
}

/// Bytes of streamed answers (`BodySource` pieces) held in memory across
/// every connection. A piece is reserved before it is read and released
/// once it is on the socket; a connection that finds the budget spent waits
/// its turn (first come, first served) without holding a thread. A client
/// that reads nothing holds one piece until the stall timeout ends it.
///
/// Thread-safe.
final class AnswerBudget: Sendable {
    /// The largest piece a `BodySource` hands out.
    static let pieceSize = 128 * 1024

    let limit: Int
    private struct Waiter { var id: Int; var bytes: Int; var loop: EventLoop; var granted: @Sendable () -> Void }
    private struct State { var used = 0; var nextID = 0; var waiters = CircularBuffer<Waiter>() }
    private let state = NIOLockedValueBox(State())

    init(limit: Int) { self.limit = max(limit, Self.pieceSize) }

    /// Calls `granted` on `loop` once `bytes` are reserved: at once if the
    /// budget has room and nobody waits, else after releases make room.
    /// Returns nil when granted at once, else the waiter's id for `cancel`.
    @discardableResult
    func reserve(_ bytes: Int, on loop: EventLoop, _ granted: @escaping @Sendable () -> Void) -> Int? {
        let waiting: Int? = state.withLockedValue { state in
            if state.waiters.isEmpty && state.used + bytes <= limit {
                state.used += bytes
                return nil
            }
            state.nextID += 1
            state.waiters.append(Waiter(id: state.nextID, bytes: bytes, loop: loop, granted: granted))
            return state.nextID
        }
        if waiting == nil { granted() }
        return waiting
    }

    /// Forgets a waiter whose connection closed (and what its closure
    /// holds: a value's descriptor). True if it was still waiting; false
    /// if it was granted meanwhile (its `granted` then releases).
    @discardableResult
    func cancel(_ id: Int) -> Bool {
        state.withLockedValue { state in
            guard let index = state.waiters.firstIndex(where: { $0.id == id }) else { return false }
            state.waiters.remove(at: index)
            return true
        }
    }

    /// Reserves `bytes` now if the budget has room; false (taking nothing)
    /// otherwise. For answers held whole (a batch), which then need not
    /// queue behind streams.
    func tryReserve(_ bytes: Int) -> Bool {
        state.withLockedValue { state in
            guard state.used + bytes <= limit else { return false }
            state.used += bytes
            return true
        }
    }

    /// Reserves as much of `atMost` as the budget has free, if that is at
    /// least `atLeast`; returns the bytes reserved, or nil (taking nothing).
    func tryReserve(atLeast: Int, atMost: Int) -> Int? {
        state.withLockedValue { state in
            let free = limit - state.used
            guard free >= atLeast else { return nil }
            let taken = min(max(atLeast, atMost), free)
            state.used += taken
            return taken
        }
    }

    func release(_ bytes: Int) {
        guard bytes > 0 else { return }
        let ready: [Waiter] = state.withLockedValue { state in
            state.used -= bytes
            var ready: [Waiter] = []
            while let first = state.waiters.first, state.used + first.bytes <= limit {
                state.used += first.bytes
                ready.append(state.waiters.removeFirst())
            }
            return ready
        }
        for waiter in ready { waiter.loop.execute(waiter.granted) }
    }

    var inUse: Int { state.withLockedValue { $0.used } }
    var waiting: Int { state.withLockedValue { $0.waiters.count } }
}
