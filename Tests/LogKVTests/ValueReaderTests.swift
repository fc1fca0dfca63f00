import Foundation
import LogKVTestSupport
import Testing
@testable import LogKV

/// Large values read in pieces (`openValue`, `read(_:wholeUpTo:)`): checked
/// whole before the first piece, checked again as the pieces go out, and
/// readable to the end even if compaction removes their segment meanwhile.
@Suite struct ValueReaderTests {
    static let value = (0..<300_000).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ $0 >> 9) }

    static func options() -> LogKVOptions {
        var options = LogKVOptions.testing()
        options.segmentSize = 1 << 20
        options.autoCompaction = false
        return options
    }

    static func readAll(_ reader: ValueReader, piece: Int = 65_536) throws -> [UInt8] {
        var out: [UInt8] = []
        while out.count < reader.length { out += try reader.read(at: out.count, count: piece) }
        return out
    }

    /// The last segment's path and the offset of `value`'s first byte in it.
    static func valueOffset(_ dir: TempDir) throws -> (String, Int) {
        let path = try #require(dir.segmentFiles().last)
        let bytes = try [UInt8](Data(contentsOf: URL(fileURLWithPath: path)))
        let start = try #require((0...(bytes.count - 64)).first { bytes[$0..<$0 + 64].elementsEqual(value.prefix(64)) })
        return (path, start)
    }

    static func flip(_ path: String, at offset: Int) throws {
        let handle = try #require(FileHandle(forUpdatingAtPath: path))
        try handle.seek(toOffset: UInt64(offset))
        let byte = try #require(try handle.read(upToCount: 1))
        try handle.seek(toOffset: UInt64(offset))
        try handle.write(contentsOf: Data([byte[0] ^ 0x20]))
        try handle.close()
    }

    @Test func smallValuesComeWholeAndLargeOnesInPiecesThatMakeTheValue() throws {
        let dir = TempDir()
        let store = try LogKV(path: dir.path, options: Self.options())
        defer { try? store.close() }
        try store.put(bytes("small"), bytes("s"))
        try store.put(bytes("large"), Self.value, expiresAt: LogKVOptions.systemMillis() + 60_000)
        guard case let .whole(small) = try store.read(bytes("small"), wholeUpTo: 1024) else { Issue.record("small not whole"); return }
        #expect(small.value == bytes("s"))
        guard case let .large(reader) = try store.read(bytes("large"), wholeUpTo: 1024) else { Issue.record("large not large"); return }
        #expect(reader.length == Self.value.count && reader.expiresAt != nil)
        #expect(reader.seq == (try store.get(bytes("large")))?.seq)
        #expect(try Self.readAll(reader) == Self.value)
        guard case .missing = try store.read(bytes("none"), wholeUpTo: 1024) else { Issue.record("missing key found"); return }
    }

    @Test func aFlippedByteIsCaughtBeforeAnyPieceAndAByteFlippedAfterTheCheckEndsTheRead() throws {
        let dir = TempDir()
        let store = try LogKV(path: dir.path, options: Self.options())
        defer { try? store.close() }
        try store.put(bytes("large"), Self.value)
        try store.sync()
        let (path, start) = try Self.valueOffset(dir)
        // Changed after the check: the read that would complete the value throws.
        let reader = try #require(try store.openValue(bytes("large")))
        try Self.flip(path, at: start + 1000)
        #expect(throws: LogKVError.self) { _ = try Self.readAll(reader) }
        // Changed before: nothing is handed out.
        #expect(throws: LogKVError.self) { _ = try store.openValue(bytes("large")) }
    }

    @Test func aValueBeingReadOutlivesTheCompactionThatRemovesItsSegment() throws {
        let dir = TempDir()
        let store = try LogKV(path: dir.path, options: Self.options())
        defer { try? store.close() }
        try store.put(bytes("large"), Self.value)
        for i in 0..<5 { try store.put(bytes("filler\(i)"), [UInt8](repeating: 1, count: 300_000)) }
        let reader = try #require(try store.openValue(bytes("large")))
        let first = try reader.read(at: 0, count: 1000)
        let firstSegment = try #require(dir.segmentFiles().first)
        try store.put(bytes("large"), bytes("replaced"))
        for i in 0..<5 { _ = try store.delete(bytes("filler\(i)")) }
        try store.flushIndex()
        _ = try store.compact()
        #expect(try store.get(bytes("large"))?.value == bytes("replaced"))
        #expect(!FileManager.default.fileExists(atPath: firstSegment), "compaction removed the segment being read")
        var rest = first
        while rest.count < reader.length { rest += try reader.read(at: rest.count, count: 65_536) }
        #expect(rest == Self.value)
    }
}
