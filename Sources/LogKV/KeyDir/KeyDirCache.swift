/// A bounded in-memory cache of KeyDir rows in front of SQLite.
///
/// Eviction is CLOCK (second chance): cheap, and close to LRU for the skewed
/// reads a KV store sees. The entries form a ring with a hand; a victim is
/// the first entry from the hand on that was not read since the hand last
/// passed it (the hand clears the marks it passes). A new entry goes just
/// behind the hand, so it gets a whole turn to be read again before it can
/// be evicted. Entries never move in storage: a removal unlinks its slot
/// and leaves it for reuse. (An earlier version kept a dense array, moving
/// the last entry into each freed slot under the hand: the newest entry was
/// then the next victim, and a full cache never took in a new working set.)
///
/// The budget counts key bytes plus a fixed overhead per entry, so memory
/// stays bounded whatever the key set.
///
/// Thread-safety: none of its own; the store calls it under its state lock.
struct KeyDirCache {
    private struct Slot {
        var key: KeyBytes
        var location: RecordLocation
        var referenced: Bool
        /// Neighbours in the ring (slot indices).
        var previous: Int
        var next: Int
    }

    /// Approximate bytes per entry beyond the key: dictionary slot, ring
    /// slot (location, links), the key's array header.
    static let entryOverhead = 136

    let budgetBytes: Int
    private var slots: [Slot] = []
    /// Slots unlinked from the ring, to reuse.
    private var freeSlots: [Int] = []
    private var indexByKey: [KeyBytes: Int] = [:]
    /// nil when the cache is empty.
    private var hand: Int?
    private(set) var usedBytes = 0

    init(budgetBytes: Int) {
        self.budgetBytes = budgetBytes
    }

    var count: Int { indexByKey.count }

    mutating func get(_ key: KeyBytes) -> RecordLocation? {
        guard let i = indexByKey[key] else { return nil }
        slots[i].referenced = true
        return slots[i].location
    }

    mutating func insert(_ key: KeyBytes, _ location: RecordLocation) {
        let cost = Self.cost(key)
        guard cost <= budgetBytes else { return }
        if let i = indexByKey[key] {
            slots[i].location = location
            slots[i].referenced = true
            return
        }
        while usedBytes + cost > budgetBytes, let victim = nextVictim() { unlink(victim) }
        linkBehindHand(Slot(key: key, location: location, referenced: false, previous: 0, next: 0))
    }

    /// Updates the entry if present; never adds one.
    mutating func updateIfPresent(_ key: KeyBytes, _ location: RecordLocation) {
        if let i = indexByKey[key] { slots[i].location = location }
    }

    mutating func remove(_ key: KeyBytes) {
        if let i = indexByKey[key] { unlink(i) }
    }

    mutating func removeAll() {
        slots.removeAll()
        freeSlots.removeAll()
        indexByKey.removeAll()
        hand = nil
        usedBytes = 0
    }

    private static func cost(_ key: KeyBytes) -> Int { key.bytes.count + entryOverhead }

    /// Moves the hand to the first unread entry, clearing the marks of those
    /// it passes; nil when the cache is empty.
    private mutating func nextVictim() -> Int? {
        guard var i = hand else { return nil }
        while slots[i].referenced {
            slots[i].referenced = false
            i = slots[i].next
        }
        hand = i
        return i
    }

    private mutating func linkBehindHand(_ slot: Slot) {
        let i: Int
        if let reused = freeSlots.popLast() {
            slots[reused] = slot
            i = reused
        } else {
            slots.append(slot)
            i = slots.count - 1
        }
        if let h = hand {
            let p = slots[h].previous
            slots[i].previous = p
            slots[i].next = h
            slots[p].next = i
            slots[h].previous = i
        } else {
            slots[i].previous = i
            slots[i].next = i
            hand = i
        }
        indexByKey[slot.key] = i
        usedBytes += Self.cost(slot.key)
    }

    private mutating func unlink(_ i: Int) {
        let slot = slots[i]
        indexByKey[slot.key] = nil
        usedBytes -= Self.cost(slot.key)
        if slot.next == i {
            hand = nil
        } else {
            slots[slot.previous].next = slot.next
            slots[slot.next].previous = slot.previous
            if hand == i { hand = slot.next }
        }
        slots[i].key = KeyBytes([])  // the key's bytes go now, not at reuse
        freeSlots.append(i)
    }

    /// For tests: the ring holds exactly the mapped entries, each linked both
    /// ways, and the budget adds up and holds.
    var isConsistent: Bool {
        var seen = 0
        var bytes = 0
        if let start = hand {
            var i = start
            repeat {
                let slot = slots[i]
                guard indexByKey[slot.key] == i, slots[slot.next].previous == i, seen < slots.count else { return false }
                seen += 1
                bytes += Self.cost(slot.key)
                i = slot.next
            } while i != start
        }
        return seen == indexByKey.count && seen + freeSlots.count == slots.count
            && bytes == usedBytes && usedBytes <= budgetBytes
    }
}
