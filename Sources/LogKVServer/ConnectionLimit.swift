import NIOConcurrencyHelpers
import NIOCore

/// Open client connections across every listener, against a cap, and a
/// few more past it for health checks and scrapes: an orchestrator that
/// finds `/health` refused at the cap would kill a server that is only busy.
///
/// Thread-safe.
final class ConnectionCounter: Sendable {
    static var probeReserve: Int { ServerConfiguration.probeConnectionReserve }

    enum Admission { case full, probesOnly, refused }

    let limit: Int
    private let open = NIOLockedValueBox((regular: 0, probes: 0))

    init(limit: Int) { self.limit = limit }

    /// Admits a connection; `close(_:)` with the same admission when it ends.
    func tryOpen() -> Admission {
        open.withLockedValue { n in
            if n.regular < limit {
                n.regular += 1
                return .full
            }
            if n.probes < Self.probeReserve {
                n.probes += 1
                return .probesOnly
            }
            return .refused
        }
    }

    func close(_ admission: Admission) {
        open.withLockedValue { n in
            switch admission {
            case .full: n.regular -= 1
            case .probesOnly: n.probes -= 1
            case .refused: break
            }
        }
    }

    var count: Int { open.withLockedValue { $0.regular + $0.probes } }
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
        // Under TLS the answer waits for a handshake the client may never
        // make: the connection goes regardless, so refused sockets cannot
        // pile up.
        let channel = context.channel
        context.eventLoop.scheduleTask(in: .seconds(2)) { channel.close(promise: nil) }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {}
}
