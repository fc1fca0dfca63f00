import NIOConcurrencyHelpers
import NIOCore

/// Open client connections across every listener, against a cap.
///
/// Thread-safe.
final class ConnectionCounter: Sendable {
    let limit: Int
    private let open = NIOLockedValueBox(0)

    init(limit: Int) { self.limit = limit }

    func tryOpen() -> Bool {
        open.withLockedValue { n in
            guard n < limit else { return false }
            n += 1
            return true
        }
    }

    func close() { open.withLockedValue { $0 -= 1 } }

    var count: Int { open.withLockedValue { $0 } }
}

/// The whole pipeline of a connection over the cap: a plain 503 (JSON body,
/// `Connection: close`), then the connection closes; none of its bytes are
/// parsed, so a flood of sockets cannot exhaust descriptors or memory.
/// Connections under the cap never see this handler (the cap is checked
/// once, when the connection's pipeline is built).
final class ConnectionRefusalHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer

    private let limit: Int

    init(limit: Int) { self.limit = limit }

    func channelActive(context: ChannelHandlerContext) {
        let refusal = Response.error(APIError(.serviceUnavailable, "too many connections (limit \(limit)); retry later",
                                              headers: [("Retry-After", "1")]))
        let framing = ResponseEncoder.Framing(version: .http1_1, keepAlive: false, isHEAD: false, requestHeaders: [:])
        let buffer = ResponseEncoder.encode(refusal, framing, allocator: context.channel.allocator)
        context.writeAndFlush(NIOAny(buffer)).assumeIsolated().whenComplete { _ in context.close(promise: nil) }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {}
}
