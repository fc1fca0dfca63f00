import Foundation
import Synchronization

/// Hands changes to the store's observer in the order they became visible,
/// with no engine lock held.
///
/// The engine `enqueue`s a change inside the `state` section that makes it
/// visible (so the queue's order is the order readers see changes in), and
/// every thread that may have enqueued calls `deliver` once it holds no
/// engine lock. One thread delivers at a time, oldest first; a thread that
/// finds another delivering returns at once (the deliverer picks its changes
/// up), so a caller never waits on the observer. An observer may therefore
/// read the store; it must not write to it or wait for it (the deliverer
/// may be the flusher, which such a write could be waiting for). A slow
/// observer slows its deliverer, which may be a writer, the committer or
/// an event loop: keep it to bookkeeping.
///
/// Ordering rules kept here:
/// - Every enqueued change is delivered exactly once, in enqueue order: a
///   deliverer loops until the queue is empty, and after releasing
///   `deliveryLock` looks once more, since a change enqueued after its last
///   look and whose own `deliver` found the lock taken would otherwise wait
///   for the next caller.
/// - Changes enqueued while no observer is set are dropped (nobody asked).
/// - Once `setObserver` returns, the old observer is never called again.
///
/// Locks: `lock` guards `queue` and `observer` and is a leaf;
/// `deliveryLock` is held only while calling the observer and is never
/// waited for (`try`).
final class ChangeOutbox: @unchecked Sendable {
    typealias Observer = @Sendable (KeyChange) -> Void

    private let lock = NSLock()
    /// Guarded by `lock`.
    private var queue: [KeyChange] = []
    /// Guarded by `lock`.
    private var observer: Observer?
    /// Held by the one thread delivering.
    private let deliveryLock = NSLock()
    /// Changes queued and not yet taken by a deliverer (changed under
    /// `lock`): lets `deliver` return without locking when there are none,
    /// as on every write of a store nobody observes.
    private let queued = Atomic<Int>(0)

    /// Replaces the observer, waiting for a delivery to the old one in
    /// progress to end. Not to be called from the observer.
    func setObserver(_ observer: Observer?) {
        lock.withLock {
            self.observer = observer
            if observer == nil {
                queued.subtract(queue.count, ordering: .sequentiallyConsistent)
                queue.removeAll()
            }
        }
        // A deliverer took the old observer with its batch: wait it out.
        deliveryLock.lock()
        deliveryLock.unlock()
    }

    /// Queues a change for the observer. Cheap; called inside engine locks.
    func enqueue(_ change: @autoclosure () -> KeyChange) {
        lock.withLock {
            guard observer != nil else { return }
            queue.append(change())
            queued.add(1, ordering: .sequentiallyConsistent)
        }
    }

    /// Delivers every queued change, unless another thread is delivering.
    /// Call with no engine lock held.
    func deliver() {
        while queued.load(ordering: .sequentiallyConsistent) > 0 {
            guard deliveryLock.try() else { return }
            while true {
                let (batch, observer) = lock.withLock { () -> ([KeyChange], Observer?) in
                    defer {
                        queued.subtract(queue.count, ordering: .sequentiallyConsistent)
                        queue.removeAll(keepingCapacity: queue.count < 4096)
                    }
                    return (queue, self.observer)
                }
                guard !batch.isEmpty else { break }
                if let observer { for change in batch { observer(change) } }
            }
            deliveryLock.unlock()
            // Looks again (the loop's condition): a change queued after the
            // last batch, whose own `deliver` found the lock taken.
        }
    }
}
