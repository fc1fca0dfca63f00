/// A value read from the store.
public struct StoredValue: Equatable, Sendable {
    public var value: [UInt8]
    /// The version of this value: its record's seq, strictly increasing per
    /// write across the store. Usable as an ETag.
    public var seq: UInt64
    /// Unix ms when written.
    public var writtenAt: Int64
    /// Unix ms, or nil when the key never expires.
    public var expiresAt: Int64?
}
