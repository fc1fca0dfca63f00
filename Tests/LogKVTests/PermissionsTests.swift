import Foundation
import Logging
import LogKVTestSupport
import Synchronization
import Testing
@testable import LogKV

/// Every value sits in the data directory's files: only their owner may
/// read them (etcd refuses a data directory looser than 0700).
@Suite struct PermissionsTests {
    static func mode(_ path: String) -> UInt32 {
        var info = stat()
        #expect(stat(path, &info) == 0, "\(path)")
        return UInt32(info.st_mode) & 0o777
    }

    @Test func aNewDataDirectoryAndEveryFileInItAreOwnerOnly() throws {
        let parent = TempDir()
        let path = parent.path + "/data"
        let store = try LogKV(path: path, options: .testing())
        for i in 0..<50 { try store.put(bytes("k\(i)"), bytes("secret \(i)")) }
        try store.flushIndex()
        try store.compact()
        let listing = try FileManager.default.subpathsOfDirectory(atPath: path)
        #expect(Self.mode(path) == 0o700)
        #expect(Self.mode(path + "/segments") == 0o700)
        #expect(listing.contains("index.sqlite") && listing.contains { $0.hasSuffix(".seg") })
        for name in listing {
            let expected: UInt32 = name == "segments" ? 0o700 : 0o600
            #expect(Self.mode(path + "/" + name) == expected, "\(name)")
        }
        try store.close()
    }

    @Test func aDataDirectoryOpenToOtherUsersIsWarnedAboutAndLeftAsItIs() throws {
        let dir = TempDir()
        _ = try LogKV(path: dir.path, options: .testing()).close()
        chmod(dir.path, 0o755)
        let warnings = Lines()
        var options = LogKVOptions.testing()
        options.logger = Logger(label: "test") { _ in WarningCollector(warnings) }
        let store = try LogKV(path: dir.path, options: options)
        try store.close()
        #expect(warnings.value.withLock { $0.contains { $0.contains("open to other users") } })
        #expect(Self.mode(dir.path) == 0o755)
    }
}

private struct WarningCollector: LogHandler {
    let lines: Lines
    init(_ lines: Lines) { self.lines = lines }
    var metadata: Logger.Metadata = [:]
    var logLevel: Logger.Level = .warning
    subscript(metadataKey key: String) -> Logger.Metadata.Value? { get { nil } set {} }
    func log(event: LogEvent) {
        if event.level >= .warning { lines.value.withLock { $0.append("\(event.message)") } }
    }
}

private final class Lines: Sendable {
    let value = Mutex<[String]>([])
}
