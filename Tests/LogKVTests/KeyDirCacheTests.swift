import LogKVTestSupport
import Testing
@testable import LogKV

/// The KeyDir cache in front of SQLite: bounded, and it follows the working
/// set: once full of keys read once, the keys read again and again replace
/// them (the read path inserts after every miss, as `LogKV` does).
@Suite struct KeyDirCacheTests {
    /// Keys of 8 bytes, as the budgets below count them.
    func key(_ name: String) -> KeyBytes {
        KeyBytes(Array((name + String(repeating: "_", count: max(0, 8 - name.utf8.count))).utf8))
    }
    func location(_ n: Int) -> RecordLocation {
        RecordLocation(segment: 1, offset: Int64(n) * 100, length: 100, seq: UInt64(n) + 1, expiresAt: 0)
    }

    /// A read as the store does it: the cache, else "SQLite" and an insert.
    func read(_ cache: inout KeyDirCache, _ name: String, _ n: Int) -> Bool {
        if cache.get(key(name)) != nil { return true }
        cache.insert(key(name), location(n))
        return false
    }

    @Test func aHotSetReadAfterAColdScanTakesOverTheFullCache() {
        // Room for about 1,000 entries.
        var cache = KeyDirCache(budgetBytes: 1000 * (8 + KeyDirCache.entryOverhead))
        var generator = SystemRandomNumberGenerator()
        // A cold scan: 20,000 keys read once each, then a few read twice.
        for n in 0..<20_000 { _ = read(&cache, "c\(n)", n) }
        for n in stride(from: 19_000, to: 20_000, by: 7) { _ = read(&cache, "c\(n)", n) }
        let capacity = cache.count
        #expect(capacity > 900 && capacity <= 1000)
        // Then 300 hot keys, read at random.
        for _ in 0..<30_000 { let n = Int.random(in: 0..<300, using: &generator); _ = read(&cache, "h\(n)", n) }
        var hits = 0
        for _ in 0..<10_000 {
            let n = Int.random(in: 0..<300, using: &generator)
            if read(&cache, "h\(n)", n) { hits += 1 }
        }
        #expect(hits == 10_000, "the hot set should be cached whole; \(hits) of 10,000 reads hit")
        #expect(cache.count == capacity)
        #expect(cache.usedBytes <= cache.budgetBytes)
    }

    @Test func entriesReadAgainOutliveEntriesReadOnce() {
        var cache = KeyDirCache(budgetBytes: 100 * (8 + KeyDirCache.entryOverhead))
        for n in 0..<100 { _ = read(&cache, "k\(n)", n) }
        // Half are read again (referenced), then a stream of new keys
        // pushes out 50 entries: the referenced half stays.
        for n in stride(from: 0, to: 100, by: 2) { #expect(read(&cache, "k\(n)", n)) }
        for n in 0..<50 { _ = read(&cache, "new\(n)", n) }
        for n in stride(from: 0, to: 100, by: 2) { #expect(cache.get(key("k\(n)")) != nil, "k\(n)") }
        // The newcomers pushed out the other half, not one another.
        for n in 0..<50 { #expect(cache.get(key("new\(n)")) != nil, "new\(n)") }
        for n in stride(from: 1, to: 100, by: 2) { #expect(cache.get(key("k\(n)")) == nil, "k\(n)") }
        #expect(cache.isConsistent)
    }

    @Test func aNewEntryIsNotTheNextVictimWhateverTheKeySizes() {
        // Room for 20 entries of 8-byte keys. A long key (costing about two)
        // goes in first, then 18 short ones: full.
        let small = 8 + KeyDirCache.entryOverhead
        var cache = KeyDirCache(budgetBytes: 20 * small)
        let long = String(repeating: "L", count: small)
        cache.insert(key("a" + long), location(100))
        for n in 0..<18 { cache.insert(key("k\(n)"), location(n)) }
        // s1 evicts the long entry and leaves room for s2 with no eviction;
        // then another long key needs two evictions: neither newcomer may
        // be one of them (the oldest short keys are).
        cache.insert(key("s1"), location(101))
        cache.insert(key("s2"), location(102))
        cache.insert(key("b" + long), location(103))
        #expect(cache.get(key("a" + long)) == nil)
        for name in ["s1", "s2", "b" + long] { #expect(cache.get(key(name)) != nil, "\(name)") }
        #expect(cache.get(key("k0")) == nil)
        #expect(cache.isConsistent)
    }

    @Test func randomInsertsReadsAndRemovalsKeepTheCacheConsistentAndBounded() {
        var generator = SplitMix(seed: 42)
        var cache = KeyDirCache(budgetBytes: 50 * (8 + KeyDirCache.entryOverhead))
        for step in 0..<20_000 {
            let name = "k\(Int.random(in: 0..<200, using: &generator))"
            let padding = String(repeating: "p", count: Int.random(in: 0..<40, using: &generator))
            let k = KeyBytes(Array((name + padding).utf8))
            switch Int.random(in: 0..<10, using: &generator) {
            case 0..<5: cache.insert(k, location(step))
            case 5..<8: _ = cache.get(k)
            case 8: cache.remove(k)
            default: cache.updateIfPresent(k, location(step))
            }
            if step % 97 == 0 || step > 19_900 { #expect(cache.isConsistent, "after step \(step)") }
        }
        cache.removeAll()
        #expect(cache.count == 0 && cache.usedBytes == 0 && cache.isConsistent)
        cache.insert(key("again"), location(1))
        #expect(cache.get(key("again")) == location(1))
    }

    @Test func removedAndUpdatedEntriesAreSeenAsSuch() {
        var cache = KeyDirCache(budgetBytes: 10 * (8 + KeyDirCache.entryOverhead))
        for n in 0..<10 { cache.insert(key("k\(n)"), location(n)) }
        cache.remove(key("k3"))
        #expect(cache.get(key("k3")) == nil)
        cache.updateIfPresent(key("k4"), location(44))
        cache.updateIfPresent(key("k3"), location(33))
        #expect(cache.get(key("k4")) == location(44))
        #expect(cache.get(key("k3")) == nil)
        for n in 10..<30 { cache.insert(key("k\(n)"), location(n)) }
        #expect(cache.count <= 10)
        #expect(cache.usedBytes <= cache.budgetBytes)
        #expect(cache.isConsistent)
    }
}

