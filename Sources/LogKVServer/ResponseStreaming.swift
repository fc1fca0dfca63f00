import Dispatch
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1

/// Produces a streamed answer (a backup) on a blocking-pool thread, writing
/// straight to the connection: the head once, then each chunk, each waited
/// for until it is on the socket, so memory holds one chunk per stream. A
/// client that takes nothing for `stallTimeout` is disconnected.
struct ResponseStreaming: Sendable {
    let channel: Channel
    let framing: ResponseEncoder.Framing
    let extraHeaders: [(String, String)]
    let stallTimeout: TimeAmount

    enum Outcome: Sendable {
        /// The whole answer is written.
        case sent(HTTPResponseStatus)
        /// The producer failed before the head: answer this instead.
        case failedBeforeStart(Response)
        /// Failed after the head (the client sees a short body and a
        /// closed connection), or the pool is shutting down.
        case broken
    }

    /// Runs the producer on the calling (blocking-pool) thread.
    func run(_ stream: ResponseStream) -> Outcome {
        var status: HTTPResponseStatus?
        do {
            try stream.produce({ response in
                status = response.status
                try send(ResponseEncoder.encodeHead(response, framing, extraHeaders: extraHeaders, allocator: channel.allocator))
            }, { chunk in
                try send(channel.allocator.buffer(bytes: chunk))
            })
        } catch {
            return status == nil ? .failedBeforeStart(.error(APIError.from(error))) : .broken
        }
        return status.map { .sent($0) } ?? .broken
    }

    /// Writes one buffer and waits until it is on the socket, closing the
    /// connection if that takes longer than the stall timeout.
    private func send(_ buffer: ByteBuffer) throws {
        // A timed wait, never `future.wait()`: if the event loop shuts down
        // meanwhile the future never completes, and this thread must not
        // hold the blocking pool's shutdown forever.
        let done = DispatchSemaphore(value: 0)
        let outcome = NIOLockedValueBox<Result<Void, Error>?>(nil)
        channel.writeAndFlush(buffer).whenComplete { result in
            outcome.withLockedValue { $0 = result }
            done.signal()
        }
        let seconds = Double(stallTimeout.nanoseconds) / 1e9
        guard done.wait(timeout: .now() + seconds) == .success else {
            channel.close(promise: nil)
            throw ChannelError.ioOnClosedChannel
        }
        try outcome.withLockedValue { $0 }?.get()
    }
}
