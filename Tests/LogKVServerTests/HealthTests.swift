import Foundation
import LogKV
@testable import LogKVServer
import LogKVTestSupport
import Testing

/// `/health` tells a store that takes writes from one that only serves reads.
@Suite struct HealthTests {
    /// Plain POSIX files whose fsync starts failing when `failing` is set.
    final class FailingSyncFileSystem: FileSystem, @unchecked Sendable {
        let posix = PosixFileSystem()
        let lock = NSLock()
        private var _failing = false
        var failing: Bool {
            get { lock.withLock { _failing } }
            set { lock.withLock { _failing = newValue } }
        }
        /// While set, writes to segment files fail with ENOSPC; removing
        /// the reserve file makes room again.
        private var _full = false
        var full: Bool {
            get { lock.withLock { _full } }
            set { lock.withLock { _full = newValue } }
        }

        final class File: StorageFile, @unchecked Sendable {
            let inner: any StorageFile
            unowned let fs: FailingSyncFileSystem
            init(_ inner: any StorageFile, _ fs: FailingSyncFileSystem) { self.inner = inner; self.fs = fs }
            var path: String { inner.path }
            func size() throws -> Int64 { try inner.size() }
            func write(_ head: UnsafeRawBufferPointer, _ tail: UnsafeRawBufferPointer, at offset: Int64) throws {
                if fs.full && path.contains("/segments/") { throw LogKVError.io(operation: "write", path: path, errno: ENOSPC) }
                try inner.write(head, tail, at: offset)
            }
            func read(into buffer: UnsafeMutableRawBufferPointer, at offset: Int64) throws -> Int {
                try inner.read(into: buffer, at: offset)
            }
            func readIfCached(into buffer: UnsafeMutableRawBufferPointer, at offset: Int64) -> Bool {
                inner.readIfCached(into: buffer, at: offset)
            }
            func sync() throws {
                if fs.failing { throw LogKVError.io(operation: "fsync", path: path, errno: EIO) }
                try inner.sync()
            }
            func truncate(to length: Int64) throws { try inner.truncate(to: length) }
        }

        func open(_ path: String, _ mode: FileOpenMode) throws -> any StorageFile { File(try posix.open(path, mode), self) }
        func list(_ directory: String) throws -> [String] { try posix.list(directory) }
        func makeDirectory(_ path: String) throws { try posix.makeDirectory(path) }
        func syncDirectory(_ directory: String) throws { try posix.syncDirectory(directory) }
        func rename(_ from: String, to: String) throws { try posix.rename(from, to: to) }
        func remove(_ path: String) throws {
            try posix.remove(path)
            if path.hasSuffix("/RESERVE") { full = false }
        }
        func exists(_ path: String) -> Bool { posix.exists(path) }
        func lockDirectory(lockPath: String, holder: String) throws -> AnyObject {
            try posix.lockDirectory(lockPath: lockPath, holder: holder)
        }
        func indexWillCommit(path: String) throws {}
        func indexCommitted(path: String, durable: Bool) {}
    }

    @Test func healthIs503NamingTheReasonOnceAnFsyncFailed() async throws {
        let fs = FailingSyncFileSystem()
        var options = LogKVOptions()
        options.fsync = .always
        options.fileSystem = fs
        options.logger.logLevel = .critical
        let s = try await TestServer(options: options)
        do {
            let c = try s.client()
            #expect(try c.request("GET", "/health").status == 200)
            #expect(try c.request("PUT", "/v1/kv/a", body: utf8("1")).status == 204)
            fs.failing = true
            #expect(try c.request("PUT", "/v1/kv/b", body: utf8("2")).status == 503)
            fs.failing = false
            // Final until restart (rule 6): no later write is acknowledged.
            #expect(try c.request("PUT", "/v1/kv/c", body: utf8("3")).status == 503)
            let health = try c.request("GET", "/health")
            #expect(health.status == 503)
            #expect((health.json["message"] as? String)?.contains("fsync failed") == true, "\(health.text)")
            // Reads go on; the failed write is not visible.
            #expect(try c.request("GET", "/v1/kv/a?raw").text == "1")
            #expect(try c.request("GET", "/v1/kv/b").status == 404)
            let metrics = try c.request("GET", "/metrics").text
            #expect(metrics.contains("logkv_store_read_only 1"), "\(metrics.split(separator: "\n").filter { $0.contains("read_only") })")
        }
        // close() reports the failed fsync; the directory is released all the same.
        await #expect(throws: LogKVError.self) { try await s.stop() }
        try? FileManager.default.removeItem(atPath: s.dir)
    }

    @Test func healthIs503NamingAFullDiskAndADeleteStillFreesSpace() async throws {
        let fs = FailingSyncFileSystem()
        var options = LogKVOptions()
        options.fsync = .always
        options.fileSystem = fs
        options.diskReserveBytes = 64 * 1024
        options.logger.logLevel = .critical
        let s = try await TestServer(options: options)
        do {
            let c = try s.client()
            #expect(try c.request("PUT", "/v1/kv/a", body: utf8("1")).status == 204)
            fs.full = true
            let refused = try c.request("PUT", "/v1/kv/b", body: utf8("2"))
            #expect(refused.status == 503)
            #expect((refused.json["message"] as? String)?.contains("disk full") == true, "\(refused.text)")
            let health = try c.request("GET", "/health")
            #expect(health.status == 503)
            #expect((health.json["message"] as? String)?.contains("disk full") == true, "\(health.text)")
            let metrics = try c.request("GET", "/metrics").text
            #expect(metrics.contains("logkv_store_disk_full 1"))
            #expect(metrics.contains("logkv_store_read_only 0"))
            // A delete may use the reserve: it frees space; once the reserve
            // is made again, writes work again.
            #expect(try c.request("DELETE", "/v1/kv/a").status == 204)
            #expect(eventually { (try? c.request("GET", "/health").status) == 200 })
            #expect(try c.request("PUT", "/v1/kv/b", body: utf8("2")).status == 204)
        }
        try await s.stop()
        try? FileManager.default.removeItem(atPath: s.dir)
    }
}
