import Foundation
import Testing
import LogKVTestSupport
@testable import LogKV

/// The change observer (`KeyChange`): called with no lock of the store held,
/// once per change, in the order changes became visible.
@Suite struct ChangeObserverTests {
    func openStore(_ root: TempDir, fsync: FsyncPolicy, clock: ManualClock? = nil) throws -> LogKV {
        var options = LogKVOptions.testing(clock: clock, fsync: fsync)
        options.autoCompaction = false
        options.expirySweepPerSecond = 0
        options.logger.logLevel = .critical
        return try LogKV(path: root.path, options: options)
    }

    @Test(.timeLimit(.minutes(1)), arguments: [FsyncPolicy.always, .interval, .never])
    func anObserverMayReadTheStoreBecauseItRunsWithNoLockOfTheStoreHeld(fsync: FsyncPolicy) throws {
        let root = TempDir("observer-reads")
        let clock = ManualClock()
        let store = try openStore(root, fsync: fsync, clock: clock)
        defer { try? store.close() }
        let seen = LockedBox<[(KeyChange, StoredValue?)]>([])
        store.setChangeObserver { change in
            // Under an engine lock this would deadlock.
            let value = try? store.get(change.key)
            seen.update { $0.append((change, value)) }
        }
        try store.put(bytes("a"), bytes("1"))
        try store.put(bytes("t"), bytes("short-lived"), expiresAt: clock.now + 1000)
        try store.refreshTTL(bytes("t"), expiresAt: clock.now + 2000)
        #expect(try store.delete(bytes("a")))
        clock.advance(5000)
        #expect(try store.get(bytes("t")) == nil)  // noticed: an expiry
        store.setChangeObserver(nil)

        let changes = seen.get()
        let kinds = changes.map { (String(decoding: $0.0.key, as: UTF8.self), $0.0.kind) }
        #expect(kinds.contains { $0 == ("a", .put) })
        #expect(kinds.contains { $0 == ("t", .ttlRefresh) })
        #expect(kinds.contains { $0 == ("a", .delete) })
        #expect(kinds.contains { $0 == ("t", .expire) })
        // The change was visible before the observer heard of it.
        for (change, value) in changes where change.kind == .put {
            #expect((value?.seq ?? .max) >= change.seq)
        }
    }

    @Test(.timeLimit(.minutes(2)), arguments: [FsyncPolicy.always, .interval])
    func concurrentWritersChangesReachTheObserverOnceEachInTheOrderTheyBecameVisible(fsync: FsyncPolicy) throws {
        let root = TempDir("observer-order")
        let store = try openStore(root, fsync: fsync)
        defer { try? store.close() }
        let observed = LockedBox<[KeyChange]>([])
        let inObserver = LockedBox(0)
        let overlapped = LockedBox(false)
        store.setChangeObserver { change in
            // One call at a time.
            if inObserver.update({ n in n += 1; return n }) > 1 { overlapped.set(true) }
            observed.update { $0.append(change) }
            inObserver.update { $0 -= 1 }
        }
        let acknowledged = LockedBox<[(key: [UInt8], seq: UInt64)]>([])
        let writers = 8, writesEach = 150
        DispatchQueue.concurrentPerform(iterations: writers) { writer in
            for n in 0..<writesEach {
                let key = bytes("key-\(n % 4)")
                if writer % 2 == 0 {
                    if let seq = try? store.put(key, bytes("w\(writer)-\(n)")) { acknowledged.update { $0.append((key, seq)) } }
                } else {
                    let done = DispatchSemaphore(value: 0)
                    do {
                        try store.put(key, bytes("w\(writer)-\(n)")) { result in
                            if case let .success(seq) = result { acknowledged.update { $0.append((key, seq)) } }
                            done.signal()
                        }
                        done.wait()
                    } catch {}
                }
            }
        }
        try store.sync()
        store.setChangeObserver(nil)

        #expect(!overlapped.get())
        let changes = observed.get()
        #expect(changes.allSatisfy { $0.kind == .put })
        // Each write once...
        let seqs = changes.map(\.seq)
        #expect(Set(seqs).count == seqs.count)
        // ...every acknowledged one among them...
        let acked = acknowledged.get()
        #expect(acked.count == writers * writesEach)
        #expect(Set(acked.map(\.seq)).isSubset(of: Set(seqs)))
        // ...and in the order they became visible, which for one key is
        // version order.
        var lastPerKey: [[UInt8]: UInt64] = [:]
        for change in changes {
            #expect(change.seq > lastPerKey[change.key, default: 0])
            lastPerKey[change.key] = change.seq
        }
    }
}
