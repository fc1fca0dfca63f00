import ArgumentParser
import NIOCore
import NIOHTTP1
import NIOPosix

/// HTTP ceilings for `scripts/bench-http.sh` and the README: a bare SwiftNIO
/// server answering every request with "ok", nothing else. By default NIO's
/// whole HTTP/1.1 pipeline (NIOHTTP1); `--decoder-only`, NIO's request parser
/// and the answer written as bytes (the shape logkvd's server has);
/// `--raw`, no HTTP parsing at all (NIO's own ceiling).
struct HelloServer: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "hello-server", shouldDisplay: false)
    @Option var port = 18182
    @Flag(help: "No HTTP parser: one fixed answer per blank line.") var raw = false
    @Flag(help: "NIO's request parser, the answer written as bytes.") var decoderOnly = false

    /// NIO's request decoder, the answer written as bytes.
    final class DecodedHello: ChannelInboundHandler {
        typealias InboundIn = HTTPServerRequestPart
        typealias OutboundOut = ByteBuffer
        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            guard case .end = unwrapInboundIn(data) else { return }
            let out = context.channel.allocator.buffer(string: RawHello.answer)
            context.writeAndFlush(wrapOutboundOut(out), promise: nil)
        }
    }

    /// No HTTP parser at all: one fixed answer per blank line seen. NIO's own ceiling.
    final class RawHello: ChannelInboundHandler {
        typealias InboundIn = ByteBuffer
        typealias OutboundOut = ByteBuffer
        var state = 0
        static let answer = "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 2\r\n\r\nok"
        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            let buffer = unwrapInboundIn(data)
            var count = 0
            buffer.withUnsafeReadableBytes { bytes in
                for b in bytes {
                    if b == 13 { continue }
                    if b == 10 { state += 1; if state == 2 { count += 1; state = 0 } } else { state = 0 }
                }
            }
            guard count > 0 else { return }
            var out = context.channel.allocator.buffer(capacity: 80 * count)
            for _ in 0..<count { out.writeString(Self.answer) }
            context.writeAndFlush(wrapOutboundOut(out), promise: nil)
        }
    }

    final class Hello: ChannelInboundHandler {
        typealias InboundIn = HTTPServerRequestPart
        typealias OutboundOut = HTTPServerResponsePart

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            guard case let .end(_) = unwrapInboundIn(data) else { return }
            var headers = HTTPHeaders()
            headers.add(name: "content-type", value: "text/plain; charset=utf-8")
            headers.add(name: "content-length", value: "2")
            context.write(wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: .ok, headers: headers))), promise: nil)
            var buffer = context.channel.allocator.buffer(capacity: 2)
            buffer.writeString("ok")
            context.write(wrapOutboundOut(.body(.byteBuffer(buffer))), promise: nil)
            context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
        }
    }

    func run() throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: System.coreCount)
        let channel = try ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 1024)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.tcpOption(.tcp_nodelay), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    if decoderOnly {
                        try channel.pipeline.syncOperations.addHandler(ByteToMessageHandler(HTTPRequestDecoder(leftOverBytesStrategy: .dropBytes)))
                        try channel.pipeline.syncOperations.addHandler(DecodedHello())
                    } else if raw {
                        try channel.pipeline.syncOperations.addHandler(RawHello())
                    } else {
                        try channel.pipeline.syncOperations.configureHTTPServerPipeline()
                        try channel.pipeline.syncOperations.addHandler(Hello())
                    }
                }
            }
            .bind(host: "127.0.0.1", port: port).wait()
        try channel.closeFuture.wait()
    }
}
