/// Under `.always`: the changes appended to the log but not yet covered by
/// an fsync, which writers see and readers do not (rule 1).
///
/// Ordering rules kept here:
/// - `takeCovered(upTo:)` hands out every change an fsync covers, each
///   once, in append (seq) order, each as appended: publishing only the
///   newest per key would skip an acknowledged change whenever another
///   write to its key was appended during the fsync (rule 11).
/// - `newest(_:)` is what writers judge conditions against: a key's
///   changes joined by the one rule (`KeyDirChange.superseding`); a key
///   leaves once its newest change is handed out.
///
/// A value type, part of `KeyDir` (`staged`).
struct UnsyncedChanges {
    /// The newest change per key, joined.
    private var newestByKey: [KeyBytes: KeyDirChange] = [:]
    /// Every change in append order; `head` is the first not handed out.
    private var queue: [(key: KeyBytes, change: KeyDirChange)] = []
    private var head = 0

    /// Records a change just appended (seqs only grow).
    mutating func append(_ key: KeyBytes, _ change: KeyDirChange) {
        newestByKey[key] = change.superseding(newestByKey[key])
        queue.append((key, change))
    }

    /// The key's newest unsynced change, joined with the ones before it.
    func newest(_ key: KeyBytes) -> KeyDirChange? { newestByKey[key] }

    func contains(_ key: KeyBytes) -> Bool { newestByKey[key] != nil }

    var isEmpty: Bool { head == queue.count }

    /// Hands out, in seq order, every change with seq at most `seq` (an
    /// fsync covered them) to `body`, and forgets them.
    mutating func takeCovered(upTo seq: UInt64, _ body: (KeyBytes, KeyDirChange) -> Void) {
        while head < queue.count, queue[head].change.seq <= seq {
            let (key, change) = queue[head]
            head += 1
            if newestByKey[key]?.seq == change.seq { newestByKey[key] = nil }
            body(key, change)
        }
        if head == queue.count {
            queue.removeAll(keepingCapacity: queue.count < 65_536)
            head = 0
        } else if head >= 4096 && head * 2 >= queue.count {
            // Under steady load the queue is never empty after an fsync:
            // drop the handed-out head so it does not grow with every write.
            queue.removeFirst(head)
            head = 0
        }
    }
}
