import Foundation
import LogKVTestSupport
import Testing
@testable import LogKV

/// A backup is restored whole or not at all: its completion marker lists
/// every segment with its length and CRC-32, and a backup that differs from
/// it (a segment missing, added, cut short or changed) is refused with
/// nothing left behind. Restoring part of a store brings deleted keys back.
@Suite struct BackupRestoreTests {
    static func options() -> LogKVOptions {
        var options = LogKVOptions.testing()
        options.segmentSize = 2048
        options.autoCompaction = false
        options.logger.logLevel = .critical
        return options
    }

    /// A store of several segments where an early segment holds values a
    /// later segment's tombstones delete.
    static func storeWithDeletes(_ dir: TempDir) throws -> LogKV {
        let store = try LogKV(path: dir.path, options: options())
        for i in 0..<60 { try store.put(bytes("k\(i)"), bytes(String(repeating: "v", count: 40) + "\(i)")) }
        for i in 0..<10 { _ = try store.delete(bytes("k\(i)")) }
        for i in 60..<80 { try store.put(bytes("k\(i)"), bytes(String(repeating: "w", count: 40) + "\(i)")) }
        #expect(store.logSegmentIDs.count >= 3)
        return store
    }

    static func archive(of store: LogKV) throws -> [UInt8] {
        var out: [UInt8] = []
        try store.withBackupSnapshot { snapshot in try BackupArchive.write(snapshot) { out += $0 } }
        return out
    }

    /// The archive's entries: (header, content blocks), the end marker left off.
    static func entries(_ archive: [UInt8]) -> [(name: String, blocks: ArraySlice<UInt8>)] {
        var entries: [(String, ArraySlice<UInt8>)] = []
        var offset = 0
        while offset + 512 <= archive.count, archive[offset..<offset + 512].contains(where: { $0 != 0 }) {
            let header = archive[offset..<offset + 512]
            let name = String(decoding: header.prefix(100).prefix { $0 != 0 }, as: UTF8.self)
            let sizeText = String(decoding: header.dropFirst(124).prefix(11), as: UTF8.self)
            let size = Int(sizeText, radix: 8)!
            let end = offset + 512 + (size + 511) / 512 * 512
            entries.append((name, archive[offset..<end]))
            offset = end
        }
        return entries
    }

    static func restoreRefused(_ backup: String, _ reason: String) {
        let target = backup + "-restored"
        defer { try? FileManager.default.removeItem(atPath: target) }
        #expect(throws: LogKVError.self, "\(reason)") { try LogKV.restore(from: backup, to: target, options: options()) }
        #expect(!FileManager.default.fileExists(atPath: target), "\(reason): a refused restore left files behind")
    }

    @Test func anArchiveMissingASegmentIsRefusedAndNothingIsRestored() throws {
        let dir = TempDir()
        let store = try Self.storeWithDeletes(dir)
        defer { try? store.close() }
        let archive = try Self.archive(of: store)
        let entries = Self.entries(archive)
        let segments = entries.filter { $0.name.hasPrefix("segments/") }
        #expect(segments.count >= 3 && entries.last?.name == "BACKUP_COMPLETE")
        for dropped in [segments.first!.name, segments.last!.name] {
            let cut = entries.filter { $0.name != dropped }.flatMap { Array($0.blocks) } + [UInt8](repeating: 0, count: 1024)
            let path = dir.path + "-without-\(dropped.split(separator: "/").last!).tar"
            defer { try? FileManager.default.removeItem(atPath: path) }
            try Data(cut).write(to: URL(fileURLWithPath: path))
            Self.restoreRefused(path, "archive without \(dropped)")
        }
        // The whole archive restores every live key and none of the deleted.
        let whole = dir.path + "-whole.tar"
        let target = dir.path + "-whole"
        defer { try? FileManager.default.removeItem(atPath: whole); try? FileManager.default.removeItem(atPath: target) }
        try Data(archive).write(to: URL(fileURLWithPath: whole))
        let stats = try LogKV.restore(from: whole, to: target, options: Self.options())
        #expect(stats.keys == 70)
    }

    @Test func aBackupDirectoryWithASegmentMissingCutShortOrChangedIsRefused() throws {
        let dir = TempDir()
        let store = try Self.storeWithDeletes(dir)
        let ids = store.logSegmentIDs
        try store.close()
        func freshBackup(_ label: String) throws -> String {
            let path = dir.path + "-backup-\(label)"
            try? FileManager.default.removeItem(atPath: path)
            let store = try LogKV(path: dir.path, options: Self.options())
            try store.backup(to: path)
            try store.close()
            return path
        }
        let first = DataDirectory.segmentName(ids.first!)
        let missing = try freshBackup("missing")
        try FileManager.default.removeItem(atPath: missing + "/segments/" + first)
        Self.restoreRefused(missing, "segment missing")
        // A shorter segment reads like a torn tail: without the marker's
        // lengths the restore would keep the intact records and drop the rest.
        let short = try freshBackup("short")
        let handle = try #require(FileHandle(forUpdatingAtPath: short + "/segments/" + first))
        try handle.truncate(atOffset: try handle.seekToEnd() - 100)
        try handle.close()
        Self.restoreRefused(short, "segment cut short")
        let extra = try freshBackup("extra")
        try FileManager.default.copyItem(atPath: extra + "/segments/" + first,
                                         toPath: extra + "/segments/" + DataDirectory.segmentName(ids.last! + 100))
        Self.restoreRefused(extra, "segment not listed")
        for path in [missing, short, extra] { try? FileManager.default.removeItem(atPath: path) }
        let whole = try freshBackup("whole")
        let target = whole + "-restored"
        defer { try? FileManager.default.removeItem(atPath: whole); try? FileManager.default.removeItem(atPath: target) }
        #expect(try LogKV.restore(from: whole, to: target, options: Self.options()).keys == 70)
    }

    @Test func aMarkerFromBeforeSegmentListsIsCheckedByItsTotals() throws {
        let dir = TempDir()
        let store = try Self.storeWithDeletes(dir)
        let backup = dir.path + "-legacy"
        defer { try? FileManager.default.removeItem(atPath: backup) }
        try store.backup(to: backup)
        try store.close()
        let manifest = try BackupManifest.decode(Array(try Data(contentsOf: URL(fileURLWithPath: backup + "/BACKUP_COMPLETE"))))
        let legacy = "segments \(manifest.count)\nbytes \(manifest.totalBytes)\n"
        try Data(legacy.utf8).write(to: URL(fileURLWithPath: backup + "/BACKUP_COMPLETE"))
        let target = backup + "-accepted"
        defer { try? FileManager.default.removeItem(atPath: target) }
        #expect(try LogKV.restore(from: backup, to: target, options: Self.options()).keys == 70)
        try Data("segments \(manifest.count + 1)\nbytes \(manifest.totalBytes)\n".utf8).write(to: URL(fileURLWithPath: backup + "/BACKUP_COMPLETE"))
        Self.restoreRefused(backup, "legacy totals that do not match")
    }

    @Test func theMarkerRoundTripsAndItsSizeIsKnownBeforeTheCRCs() throws {
        let manifest = BackupManifest(segments: [.init(id: 1, length: 4096, crc: 0xDEAD_BEEF), .init(id: 12, length: 7, crc: 1)])
        #expect(try BackupManifest.decode(manifest.encoded()) == manifest)
        #expect(BackupManifest.encodedSize(lengths: [4096, 7]) == manifest.encoded().count)
        for bad in ["", "logkv-backup 3\nsegments 0\nbytes 0\n", "logkv-backup 2\nsegments 1\nbytes 7\n",
                    "logkv-backup 2\nsegments 1\nbytes 7\nsegment 000000000001.seg 7 zz\n", "segments 1\nbytes 1\nsegment 000000000001.seg 1 00000001\n"] {
            #expect(throws: LogKVError.self, "\(bad)") { try BackupManifest.decode(Array(bad.utf8)) }
        }
    }
}
