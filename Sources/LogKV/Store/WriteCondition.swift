/// A condition on a write, checked atomically with it.
public enum WriteCondition: Equatable, Sendable {
    case none
    /// Only if the key's current version has this seq (0, never issued,
    /// never matches).
    case ifVersion(UInt64)
    /// Only if the key's current version is one of these.
    case ifAnyVersion([UInt64])
    /// Only if the key does not exist (or has expired).
    case ifAbsent
    /// Only if the key exists, whatever its version.
    case ifPresent
}
