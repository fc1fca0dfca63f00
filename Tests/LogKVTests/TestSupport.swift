import Foundation
import LogKVTestSupport
@testable import LogKV

/// A fresh temporary directory, removed when the test is done with it.
final class TempDir: @unchecked Sendable {
    let path: String

    /// `inMemory`: under `/dev/shm` where there is one (tests that open and
    /// close thousands of stores, whose fsyncs would dominate on a disk).
    init(_ name: String = "logkv", inMemory: Bool = false) {
        let shm = "/dev/shm/"
        let base = inMemory && access(shm, W_OK) == 0 ? shm : NSTemporaryDirectory()
        path = base + "\(name)-\(UUID().uuidString)"
        try! FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    }

    deinit { try? FileManager.default.removeItem(atPath: path) }

    var segmentsPath: String { path + "/segments" }
    var indexPath: String { path + "/index.sqlite" }

    func segmentFiles() -> [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: segmentsPath)) ?? [])
            .filter { $0.hasSuffix(".seg") }.sorted().map { segmentsPath + "/" + $0 }
    }

    /// What a process crash leaves: a copy of every file as it is now, the
    /// lock released.
    func crashCopy() throws -> TempDir {
        let copy = TempDir("crash-copy", inMemory: path.hasPrefix("/dev/shm/"))
        try FileManager.default.removeItem(atPath: copy.path)
        try FileManager.default.copyItem(atPath: path, toPath: copy.path)
        try? FileManager.default.removeItem(atPath: copy.path + "/LOCK")
        return copy
    }

    func size(_ file: String) -> Int64 {
        ((try? FileManager.default.attributesOfItem(atPath: file)[.size]) as? NSNumber)?.int64Value ?? -1
    }
}

/// A clock the test moves by hand.
final class ManualClock: @unchecked Sendable {
    private let lock = NSLock()
    private var millis: Int64

    init(_ start: Int64 = 1_700_000_000_000) { millis = start }

    var now: Int64 { lock.lock(); defer { lock.unlock() }; return millis }

    func advance(_ ms: Int64) { lock.lock(); millis += ms; lock.unlock() }
}

extension LogKVOptions {
    static func testing(clock: ManualClock? = nil, fsync: FsyncPolicy = .never) -> LogKVOptions {
        var options = LogKVOptions()
        options.fsync = fsync
        options.cacheBudgetBytes = 1 << 20
        options.diskReserveBytes = 0  // simulated disks keep every file in memory
        if let clock { options.clock = { clock.now } }
        return options
    }
}

func bytes(_ s: String) -> [UInt8] { Array(s.utf8) }
