/// A bounded in-memory cache of KeyDir rows in front of SQLite.
///
/// Eviction is CLOCK (second chance): cheap, and close to LRU for the skewed
/// reads a KV store sees. The budget counts key bytes plus a fixed overhead
/// per entry, so memory stays bounded whatever the key set.
///
/// Thread-safety: none of its own; the store calls it under its state lock.
struct KeyDirCache {
    private struct Slot {
        var key: KeyBytes
        var location: RecordLocation
        var referenced: Bool
    }

    /// Approximate bytes per entry beyond the key: dictionary slot, array
    /// slot, the location and array headers.
    static let entryOverhead = 120

    let budgetBytes: Int
    private var slots: [Slot] = []
    private var indexByKey: [KeyBytes: Int] = [:]
    private var hand = 0
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
        let cost = key.bytes.count + Self.entryOverhead
        guard cost <= budgetBytes else { return }
        if let i = indexByKey[key] {
            slots[i].location = location
            slots[i].referenced = true
            return
        }
        while usedBytes + cost > budgetBytes, !slots.isEmpty {
            let victim = nextVictim()
            forget(slots[victim])
            if usedBytes + cost <= budgetBytes {
                // The new entry takes the victim's slot, just behind the
                // hand: it gets a whole turn of the clock to be read again.
                // (Appending it instead, with the hand parked on the slot
                // the last entry was moved into, made every insert evict the
                // one before: a full cache never took in a new working set.)
                slots[victim] = Slot(key: key, location: location, referenced: false)
                indexByKey[key] = victim
                usedBytes += cost
                hand = victim + 1
                return
            }
            removeSlot(victim)
        }
        indexByKey[key] = slots.count
        slots.append(Slot(key: key, location: location, referenced: false))
        usedBytes += cost
    }

    /// Updates the entry if present; never adds one.
    mutating func updateIfPresent(_ key: KeyBytes, _ location: RecordLocation) {
        if let i = indexByKey[key] { slots[i].location = location }
    }

    mutating func remove(_ key: KeyBytes) {
        guard let i = indexByKey[key] else { return }
        forget(slots[i])
        removeSlot(i)
    }

    mutating func removeAll() {
        slots.removeAll()
        indexByKey.removeAll()
        usedBytes = 0
        hand = 0
    }

    /// The slot the clock hand stops at: the first unreferenced entry from
    /// the hand on; referenced ones it passes lose their mark (second chance).
    private mutating func nextVictim() -> Int {
        while true {
            if hand >= slots.count { hand = 0 }
            if !slots[hand].referenced { return hand }
            slots[hand].referenced = false
            hand += 1
        }
    }

    /// Drops a slot's entry from the map and the budget (the slot stays).
    private mutating func forget(_ slot: Slot) {
        indexByKey[slot.key] = nil
        usedBytes -= slot.key.bytes.count + Self.entryOverhead
    }

    /// Removes a forgotten slot: the last one moves into its place.
    private mutating func removeSlot(_ i: Int) {
        let last = slots.count - 1
        if i != last {
            slots[i] = slots[last]
            indexByKey[slots[i].key] = i
        }
        slots.removeLast()
        if hand >= slots.count { hand = 0 }
    }
}
