import Foundation

/// A key as a dictionary key: hashes its bytes in one call and orders them
/// with memcmp (the order SQLite uses for BLOBs), where `[UInt8]` would hash
/// and compare byte by byte.
struct KeyBytes: Hashable, Comparable, Sendable {
    let bytes: [UInt8]

    init(_ bytes: [UInt8]) { self.bytes = bytes }

    func hash(into hasher: inout Hasher) {
        bytes.withUnsafeBytes { hasher.combine(bytes: $0) }
    }

    static func == (a: KeyBytes, b: KeyBytes) -> Bool { a.bytes == b.bytes }

    static func < (a: KeyBytes, b: KeyBytes) -> Bool { compare(a.bytes, b.bytes) < 0 }

    static func compare(_ a: [UInt8], _ b: [UInt8]) -> Int {
        let n = min(a.count, b.count)
        let c = a.withUnsafeBytes { pa in b.withUnsafeBytes { pb in n == 0 ? 0 : memcmp(pa.baseAddress!, pb.baseAddress!, n) } }
        if c != 0 { return Int(c) }
        return a.count - b.count
    }
}
