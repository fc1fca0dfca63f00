import Foundation

/// One of the store's background threads (flusher, syncer, committer,
/// maintenance), started and stopped the same way.
///
/// Its flags are guarded by `condition`, the lock the loop's own state lives
/// under: the loop reads `stopRequested` holding it and waits on it, so a
/// `stop()` (which broadcasts) wakes it. The thread keeps running its loop
/// until the loop returns; `stop()` returns only after that.
final class BackgroundThread: @unchecked Sendable {
    let name: String
    let condition: NSCondition
    /// Guarded by `condition`.
    private var started = false
    /// Guarded by `condition`.
    private(set) var stopRequested = false
    /// Guarded by `condition`.
    private var exited = false

    init(name: String, condition: NSCondition) {
        self.name = name
        self.condition = condition
    }

    /// Started and not yet asked to stop. Read with `condition` locked.
    var isRunning: Bool { started && !stopRequested }

    /// Started and its loop not yet returned (it may be finishing work
    /// after a stop request). Read with `condition` locked.
    var isAlive: Bool { started && !exited }

    /// Runs `loop` on a new thread. Call once.
    func start(_ loop: @escaping @Sendable () -> Void) {
        condition.withLock {
            precondition(!started, "\(name) started twice")
            started = true
        }
        let thread = Thread { [self] in
            loop()
            condition.withLock {
                exited = true
                condition.broadcast()
            }
        }
        thread.name = name
        thread.start()
    }

    /// Asks the loop to stop and waits until it has returned. Does nothing
    /// for a thread never started. Call with `condition` unlocked.
    func stop() {
        condition.lock()
        defer { condition.unlock() }
        guard started else { return }
        stopRequested = true
        condition.broadcast()
        while !exited { condition.wait() }
    }
}
