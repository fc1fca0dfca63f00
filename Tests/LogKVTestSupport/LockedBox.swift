import Foundation

/// A value shared between threads (a callback's result, a counter, a stop
/// flag), guarded by a lock.
public final class LockedBox<T>: @unchecked Sendable {
    private let lock = NSLock()
    private var value: T
    public init(_ value: T) { self.value = value }
    public func set(_ new: T) { lock.withLock { value = new } }
    public func get() -> T { lock.withLock { value } }
    /// Changes the value and returns what `body` returns, atomically.
    public func update<R>(_ body: (inout T) -> R) -> R { lock.withLock { body(&value) } }
}

extension LockedBox where T == UInt64 {
    /// The current value, then one more: unique ids across threads.
    public func next() -> UInt64 { update { v in defer { v += 1 }; return v } }
}
