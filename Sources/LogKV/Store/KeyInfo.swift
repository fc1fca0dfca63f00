/// A key in a listing.
public struct KeyInfo: Equatable, Sendable {
    public var key: [UInt8]
    /// The version of the key's value (its record's seq).
    public var seq: UInt64
    /// Unix ms, or nil when the key never expires.
    public var expiresAt: Int64?
    public var valueSize: Int
}
