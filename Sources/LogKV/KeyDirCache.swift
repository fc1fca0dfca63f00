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
        while usedBytes + cost > budgetBytes, !slots.isEmpty { evictOne() }
        indexByKey[key] = slots.count
        slots.append(Slot(key: key, location: location, referenced: false))
        usedBytes += cost
    }

    /// Updates the entry if present; never adds one.
    mutating func updateIfPresent(_ key: KeyBytes, _ location: RecordLocation) {
        if let i = indexByKey[key] { slots[i].location = location }
    }

    mutating func remove(_ key: KeyBytes) {
        guard let i = indexByKey.removeValue(forKey: key) else { return }
        usedBytes -= slots[i].key.bytes.count + Self.entryOverhead
        let last = slots.count - 1
        if i != last {
            slots[i] = slots[last]
            indexByKey[slots[i].key] = i
        }
        slots.removeLast()
        if hand >= slots.count { hand = 0 }
    }

    mutating func removeAll() {
        slots.removeAll()
        indexByKey.removeAll()
        usedBytes = 0
        hand = 0
    }

    private mutating func evictOne() {
        while true {
            if hand >= slots.count { hand = 0 }
            if slots[hand].referenced {
                slots[hand].referenced = false
                hand += 1
            } else {
                remove(slots[hand].key)
                return
            }
        }
    }
}
