/// Every error the engine reports. One type for the whole layer; the server
/// maps these to HTTP statuses in one place.
public enum LogKVError: Error, Equatable, Sendable, CustomStringConvertible {
    /// Another process (or another open store in this process) holds the data
    /// directory's lock. `holder` is what the holder wrote into `LOCK`.
    case locked(path: String, holder: String)
    /// The key is longer than `LogKVOptions.maxKeySize`, or empty.
    case invalidKey(String)
    /// The value is larger than `LogKVOptions.maxValueSize`.
    case valueTooLarge(size: Int, limit: Int)
    /// The key is larger than `LogKVOptions.maxKeySize`.
    case keyTooLarge(size: Int, limit: Int)
    /// A conditional write found a different current version.
    case preconditionFailed(currentSeq: UInt64?)
    /// A record failed its checksum or could not be decoded.
    case corruption(segment: UInt64, offset: Int64, reason: String)
    /// The disk is full; the write was not made and nothing was lost.
    case diskFull
    /// The store cannot take writes any more (a previous write failed in a way
    /// that left the log in an unknown state); reads may still work.
    case readOnly(reason: String)
    /// An operating-system call failed.
    case io(operation: String, path: String, errno: Int32)
    /// SQLite reported an error on the index.
    case index(code: Int32, message: String)
    /// A setting or argument is invalid.
    case invalidArgument(String)
    /// The store has been closed.
    case closed

    var isIO: Bool {
        if case .io = self { return true }
        return false
    }

    public var description: String {
        switch self {
        case let .locked(path, holder):
            return "data directory \(path) is locked by another process (\(holder))"
        case let .invalidKey(why): return "invalid key: \(why)"
        case let .valueTooLarge(size, limit): return "value of \(size) bytes exceeds the limit of \(limit) bytes"
        case let .keyTooLarge(size, limit): return "key of \(size) bytes exceeds the limit of \(limit) bytes"
        case let .preconditionFailed(seq):
            return seq.map { "precondition failed: current version is \($0)" } ?? "precondition failed: key does not exist"
        case let .corruption(segment, offset, reason):
            return "corruption in segment \(segment) at offset \(offset): \(reason)"
        case .diskFull: return "disk full: the write was not stored"
        case let .readOnly(reason): return "store is read-only: \(reason)"
        case let .io(op, path, err): return "\(op) \(path): \(String(cString: strerror(err)))"
        case let .index(code, message): return "index error \(code): \(message)"
        case let .invalidArgument(why): return "invalid argument: \(why)"
        case .closed: return "store is closed"
        }
    }
}

extension LogKVError {
    /// The disk (or the user's quota) had no room: nothing was written,
    /// and the same operation may succeed once space is freed.
    var isOutOfSpace: Bool {
        switch self {
        case .diskFull: return true
        case let .io(_, _, err): return err == ENOSPC || err == EDQUOT
        default: return false
        }
    }

    /// An fsync (of a file or a directory) failed: final (rule 6), whatever
    /// the errno.
    var isFromSync: Bool {
        if case let .io(operation, _, _) = self { return operation.contains("sync") }
        return false
    }
}

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
