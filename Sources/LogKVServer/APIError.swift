#if canImport(Glibc)
import Glibc
#endif
import LogKV
import NIOHTTP1

/// An error answered to a client: a status and a one-line message, sent as
/// `{"success": false, "message": ...}`.
///
/// Every engine error becomes an HTTP status here, and only here.
public struct APIError: Error, Equatable, Sendable {
    public var status: HTTPResponseStatus
    public var message: String
    /// Extra headers (e.g. `Allow` on 405, `WWW-Authenticate` on 401).
    public var headers: [(String, String)] = []

    public init(_ status: HTTPResponseStatus, _ message: String, headers: [(String, String)] = []) {
        self.status = status
        self.message = message
        self.headers = headers
    }

    public static func == (a: APIError, b: APIError) -> Bool { a.status == b.status && a.message == b.message }

    static func badRequest(_ m: String) -> APIError { APIError(.badRequest, m) }

    /// SQLite's primary result codes for a disk that failed under it:
    /// SQLITE_IOERR, SQLITE_CORRUPT (what it reports when a read came back
    /// wrong after an I/O error; `logkv check` tells lasting damage),
    /// SQLITE_FULL, SQLITE_CANTOPEN.
    static let sqliteIOCodes: Set<Int32> = [10, 11, 13, 14]
    /// A disk or the system failing for now (a retry may succeed), as
    /// opposed to a missing or forbidden file.
    static let transientErrnos: Set<Int32> = [EIO, ENOSPC, EDQUOT, EMFILE, ENFILE, EAGAIN, EINTR, ENOMEM, EBUSY]
    static func notFound(_ m: String) -> APIError { APIError(.notFound, m) }

    /// The status and message for any error thrown while serving a request.
    public static func from(_ error: Error) -> APIError {
        if let api = error as? APIError { return api }
        guard let kv = error as? LogKVError else {
            return APIError(.internalServerError, "internal error: \(error)")
        }
        switch kv {
        case .keyTooLarge, .valueTooLarge:
            return APIError(.payloadTooLarge, kv.description)
        case .invalidKey, .invalidArgument:
            return APIError(.badRequest, kv.description)
        case .preconditionFailed:
            return APIError(.preconditionFailed, kv.description)
        case .diskFull, .readOnly, .closed:
            return APIError(.serviceUnavailable, kv.description)
        case let .io(_, _, err) where Self.transientErrnos.contains(err):
            // The disk failed this request: a retry may succeed elsewhere
            // or later; nothing was served from it.
            return APIError(.serviceUnavailable, "storage I/O error: \(kv.description)")
        case let .index(code, _) where Self.sqliteIOCodes.contains(code & 0xFF):
            return APIError(.serviceUnavailable, "the index could not be read from the disk: \(kv.description)")
        case .locked, .corruption, .index, .io:
            return APIError(.internalServerError, kv.description)
        }
    }
}
