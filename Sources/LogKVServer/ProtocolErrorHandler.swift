import NIOCore
import NIOHTTP1

/// Answers a request NIO's parser cannot read with a JSON 400 (every error
/// body is JSON) and closes the connection. Replaces NIO's
/// `HTTPServerProtocolErrorHandler`, which answers with an empty body; like
/// it, it stays silent if a response is already under way.
final class ProtocolErrorHandler: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias InboundOut = HTTPServerRequestPart
    typealias OutboundIn = HTTPServerResponsePart
    typealias OutboundOut = HTTPServerResponsePart

    private var responseUnderway = false

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        guard let parserError = error as? HTTPParserError else {
            context.fireErrorCaught(error)
            return
        }
        if !responseUnderway {
            let status: HTTPResponseStatus = parserError == .headerOverflow ? .requestHeaderFieldsTooLarge : .badRequest
            HTTPHandler.write(context: context, .error(APIError(status, "malformed HTTP request: \(parserError)")),
                              version: .http1_1, keepAlive: false)
        } else {
            context.close(promise: nil)
        }
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        switch unwrapOutboundIn(data) {
        case let .head(head) where head.status.code >= 200: responseUnderway = true
        case .end: responseUnderway = false
        default: break
        }
        context.write(data, promise: promise)
    }
}
