/// What a `LogKVClient` call can fail with.
public enum LogKVClientError: Error, Equatable, CustomStringConvertible {
    /// A bad address, TLS file or option, found before anything was sent.
    case invalidConfiguration(String)
    /// A key this client cannot send (see `LogKVClient`), found before
    /// anything was sent.
    case unsupportedKey(String)
    /// No connection (refused, unresolvable, TLS handshake failed).
    case unreachable(String)
    /// The call's total deadline passed.
    case timedOut(seconds: Double)
    /// 401: a missing or wrong token.
    case unauthorized(String)
    /// 412: the write's condition failed.
    case preconditionFailed(String)
    /// 413: the value or request is over the server's limit.
    case tooLarge(String)
    /// 429 or 503: the server is busy or cannot take writes now; retry.
    case unavailable(status: Int, message: String)
    /// Any other answer that is not what the call expects.
    case server(status: Int, message: String)
    /// The answer's body is over `Configuration.maxAnswerBytes`.
    case answerTooLarge(limit: Int)
    /// A streamed answer ended before its Content-Length.
    case truncated(received: Int64, expected: Int64)
    /// The answer is not what logkvd sends (a proxy, another server).
    case protocolError(String)

    static func from(_ answer: LogKVClient.Answer) -> LogKVClientError {
        switch answer.status {
        case 401: return .unauthorized(answer.message)
        case 412: return .preconditionFailed(answer.message)
        case 413: return .tooLarge(answer.message)
        case 429, 503: return .unavailable(status: answer.status, message: answer.message)
        default: return .server(status: answer.status, message: answer.message)
        }
    }

    public var description: String {
        switch self {
        case let .invalidConfiguration(m): return m
        case let .unsupportedKey(m): return m
        case let .unreachable(m): return m
        case let .timedOut(s): return "no complete answer within \(s) s"
        case let .unauthorized(m): return "unauthorized: \(m) (set LOGKV_TOKEN)"
        case let .preconditionFailed(m): return "precondition failed: \(m)"
        case let .tooLarge(m): return "too large: \(m)"
        case let .unavailable(status, m): return "server busy (\(status)): \(m)"
        case let .server(status, m): return "\(status): \(m)"
        case let .answerTooLarge(limit): return "the answer is over \(limit) bytes"
        case let .truncated(received, expected): return "the answer ended after \(received) of \(expected) bytes"
        case let .protocolError(m): return m
        }
    }
}
