import Foundation
import Testing
import LogKVTestSupport
@testable import LogKV

/// `dump`'s shared lock is released when it returns, even while other
/// threads spawn processes (a child holds a copy of every descriptor until
/// its exec): an open or `check` right after a dump is never refused.
@Suite struct DumpLockTests {
    @Test(.timeLimit(.minutes(2)))
    func aDumpLeavesTheDirectoryUnlockedWhileOtherThreadsSpawnProcesses() throws {
        let dir = TempDir("dump-lock")
        var options = LogKVOptions.testing()
        options.logger.logLevel = .critical
        let store = try LogKV(path: dir.path, options: options)
        try store.put("k", "v")
        try store.close()

        let stop = LockedBox(false)
        let spawner = Thread {
            while !stop.get() {
                let child = Process()
                child.executableURL = URL(fileURLWithPath: "/bin/true")
                if (try? spawnSerialized(child)) != nil { _ = waitForExit(child) }
            }
        }
        spawner.start()
        defer { stop.set(true) }
        let deadline = Date(timeIntervalSinceNow: 5)
        var rounds = 0
        while Date() < deadline {
            _ = try LogKV.forEachLiveRecord(readOnlyPath: dir.path) { _, _ in }
            let lock = try DataDirectory(path: dir.path).lock(clock: { 0 })  // refused if the dump's lock lingers
            withExtendedLifetime(lock) {}
            rounds += 1
        }
        #expect(rounds > 0)
    }
}
