import Foundation
import Metrics

/// The read path's internals: where a key's live record is (memory, then
/// the row cache, then SQLite, with the flush epoch that says whether a row
/// read from SQLite may be cached or judged expired), reading and verifying
/// a record, and expiring a key a read found expired. The public reads
/// (`get`, `getWithoutWaiting`, `read(_:wholeUpTo:)`) are built on these.
extension LogKV {
    /// Where the latest record of `key` lives, or nil if it has none (or its
    /// latest change is a delete or an expiry).
    func locate(_ keyBytes: [UInt8]) throws -> RecordLocation? {
        try locateObserving(keyBytes).location
    }

    /// A location and the flush epoch it was observed at; `epoch` is nil when
    /// it came from `pending`/`flushing` (which need no epoch check).
    struct Observed { var location: RecordLocation?; var epoch: UInt64? }

    /// What memory alone says about `key`: nil when only SQLite can tell;
    /// otherwise the answer, with `epoch` for cache hits. `epochNow` is the
    /// flush epoch at the time of looking, for a SQLite read that follows.
    ///
    /// `renewal`: a TTL refresh still in memory of a value only SQLite
    /// holds; the caller joins it to the row (`joined`).
    func locateInMemory(_ key: KeyBytes) throws -> (answer: Observed?, renewal: Renewal?, epochNow: UInt64) {
        var answer: Observed?
        var renewal: Renewal?
        var epoch: UInt64 = 0
        var closed = false
        state.withLock {
            closed = !indexFlusher.thread.isAlive && indexFlusher.thread.stopRequested
            epoch = keyDir.epoch
            switch keyDir.lookup(key) {
            case let (.put(location), fromCache)?:
                answer = Observed(location: location, epoch: fromCache ? epoch : nil)
            case let (.renew(pendingRenewal), _)?:
                renewal = pendingRenewal
            case .some:
                answer = Observed(location: nil, epoch: nil)
            case nil:
                break
            }
        }
        if closed { throw LogKVError.closed }
        return (answer, renewal, epoch)
    }

    /// A row read from SQLite, with the renewal memory holds for it: as
    /// observed from `pending` (no epoch) when there is one.
    func joined(_ row: RecordLocation?, _ renewal: Renewal?, epoch: UInt64) -> Observed {
        guard let renewal else { return Observed(location: row, epoch: epoch) }
        return Observed(location: row.map { Supersession.join($0, renewal) }, epoch: nil)
    }

    /// `locateObserving` without waiting on the disk: memory first, then
    /// SQLite if the pages it needs are in the page cache; nil otherwise.
    func locateWithoutWaiting(_ keyBytes: [UInt8]) throws -> Observed? {
        let key = KeyBytes(keyBytes)
        let (answer, renewal, epoch) = try locateInMemory(key)
        if let answer {
            metrics.lookupMemory.increment()
            return answer
        }
        guard let found = readers.lookupWithoutWaiting(keyBytes) else { return nil }
        metrics.lookupIndexNoWait.increment()
        if let found {
            state.withLock { keyDir.cacheRow(key, found, epochRead: epoch) }
        }
        return joined(found, renewal, epoch: epoch)
    }

    func locateObserving(_ keyBytes: [UInt8]) throws -> Observed {
        let key = KeyBytes(keyBytes)
        let (answer, renewal, epoch) = try locateInMemory(key)
        if let answer {
            metrics.lookupMemory.increment()
            return answer
        }
        metrics.lookupIndexBlocking.increment()
        let location = try readers.withReader { try $0.lookup(keyBytes) }
        if let location {
            state.withLock { keyDir.cacheRow(key, location, epochRead: epoch) }
        }
        return joined(location, renewal, epoch: epoch)
    }

    /// Reads and verifies the record at `location`.
    func readValue(key: [UInt8], at location: RecordLocation) throws -> StoredValue {
        guard let segment = state.withLock({ segments[location.segment] }) else {
            if state.withLock({ segments.isRetired(location.segment) }) { throw SegmentGone.gone }
            throw LogKVError.corruption(segment: location.segment, offset: location.offset,
                                        reason: "index points at a segment that does not exist")
        }
        let bytes: [UInt8]
        do {
            bytes = try segment.read(at: location.offset, count: location.length)
        } catch LogKVError.io(_, _, let err) where err == ENOENT && state.withLock({ segments.isRetired(location.segment) }) {
            // Compaction removed the file after this reader found it (its
            // descriptor had been closed by the cache): the key moved.
            throw SegmentGone.gone
        } catch let error as LogKVError {
            metrics.readCorrupt.increment()
            throw error
        }
        return try decodeRecord(bytes, key: key, at: location)
    }

    /// Verifies a record read from `location` and returns its value; never
    /// returns bytes that fail the checksum or belong to another key.
    func decodeRecord(_ bytes: [UInt8], key: [UInt8], at location: RecordLocation) throws -> StoredValue {
        guard let (header, keyEnd) = Self.verifiedRecord(bytes) else {
            metrics.readCorrupt.increment()
            logger.error("checksum mismatch on read", metadata: [
                "segment": "\(location.segment)", "offset": "\(location.offset)"])
            throw LogKVError.corruption(segment: location.segment, offset: location.offset, reason: "checksum mismatch")
        }
        guard header.seq == location.seq, bytes[RecordFormat.recordHeaderSize..<keyEnd].elementsEqual(key) else {
            metrics.readCorrupt.increment()
            throw LogKVError.corruption(segment: location.segment, offset: location.offset,
                                        reason: "index points at a different record")
        }
        return Self.storedValue(bytes, header: header, keyEnd: keyEnd, expiresAt: location.expiresAt)
    }

    /// The header of a whole record and where its key ends, or nil if the
    /// bytes are not exactly one record with a matching checksum.
    static func verifiedRecord(_ bytes: [UInt8]) -> (header: RecordHeader, keyEnd: Int)? {
        let header = bytes.withUnsafeBytes { RecordCodec.decodeHeader($0) }
        guard header.recordLength == bytes.count,
              bytes.withUnsafeBytes({ RecordCodec.crcMatches($0, expected: header.crc) }) else { return nil }
        return (header, RecordFormat.recordHeaderSize + Int(header.keyLength))
    }

    /// `expiresAt`: the key's expiry, which a TTL refresh may have changed
    /// since the record was written.
    static func storedValue(_ bytes: [UInt8], header: RecordHeader, keyEnd: Int, expiresAt: Int64) -> StoredValue {
        StoredValue(value: Array(bytes[keyEnd...]), seq: header.seq, writtenAt: header.writtenAt,
                    expiresAt: expiresAt == 0 ? nil : expiresAt)
    }

    /// Removes an expired key from the KeyDir, unless a newer write won.
    ///
    /// - Parameter observedEpoch: the flush epoch at which `location` was read
    ///   from the cache or SQLite (nil if it came from `pending`/`flushing`).
    ///   If a flush committed since, the row may have changed: skip, a later
    ///   read or the sweep will catch it.
    @discardableResult
    func expireLazily(_ keyBytes: [UInt8], _ location: RecordLocation, observedEpoch: UInt64?,
                      counter: Counter? = nil) -> Bool {
        let key = KeyBytes(keyBytes)
        let counted: Bool = state.withLock {
            // A write to the key is on its way (a refresh judged before this
            // expiry, or any write waiting for its fsync): it decides.
            if writeInFlight(key) { return false }
            if let current = keyDir.unflushed(key) {
                switch current {
                case .put, .renew: guard current.seq == location.latestSeq else { return false }
                case .delete, .expire: return false
                }
            } else if let observedEpoch {
                if observedEpoch != keyDir.epoch { return false }
            } else {
                // Seen in pending/flushing, now in neither: it was flushed,
                // and a newer write may have been flushed after it.
                return false
            }
            publish(key, .expire(seq: location.latestSeq))
            return true
        }
        changes.deliver()
        if counted { (counter ?? metrics.expiredRead).increment() }
        return counted
    }
}

/// A location pointed into a segment that compaction has since removed.
enum SegmentGone: Error { case gone }
