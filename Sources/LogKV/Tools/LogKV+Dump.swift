import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Reading a stopped data directory without changing a byte of it (no lock
/// file written, no recovery, no index): for `logkv dump` and for telling a
/// logkv data directory from anything else.
extension LogKV {
    /// True when `path` holds `segments/` with at least one file that starts
    /// with a logkv segment header.
    public static func isDataDirectory(_ path: String) -> Bool {
        let dir = DataDirectory(path: path)
        guard let ids = try? dir.segmentIDs(), !ids.isEmpty else { return false }
        return ids.contains { id in
            guard let file = try? SegmentFile.open(fs: dir.fs, id: id, path: dir.segmentPath(id), writable: false) else { return false }
            return (try? file.loadHeader()) != nil
        }
    }

    /// Calls `body` with every live key and its value, in key order, as of
    /// the segments alone (for each key the record with the highest seq
    /// wins; deleted and, at `now`, expired keys are left out). Opens every
    /// file read-only and writes nothing. A damaged or torn record is
    /// skipped and counted in the result.
    ///
    /// - Throws: `.locked` if a process holds the directory; `.invalidArgument`
    ///   if it is not a logkv data directory; `.io`, `.corruption`.
    @discardableResult
    public static func forEachLiveRecord(readOnlyPath path: String, now: Int64 = LogKVOptions.systemMillis(),
                                         _ body: (_ key: [UInt8], _ value: StoredValue) throws -> Void) throws -> (keys: Int, damaged: Int) {
        guard isDataDirectory(path) else {
            throw LogKVError.invalidArgument("\(path) is not a logkv data directory")
        }
        let dir = DataDirectory(path: path)
        // A shared lock on an existing LOCK: refused while logkvd holds it.
        let lockFD = Glibc.open(dir.lockPath, O_RDONLY | O_CLOEXEC)
        // Held until the dump is done, then released explicitly: a child
        // forked meanwhile (by any thread) holds a copy of the descriptor
        // until its exec, and closing ours alone would leave the lock held
        // for that moment (an open right after would be refused).
        defer {
            if lockFD >= 0 {
                flock(lockFD, LOCK_UN)
                Glibc.close(lockFD)
            }
        }
        if lockFD >= 0 && flock(lockFD, LOCK_SH | LOCK_NB) != 0 {
            throw LogKVError.locked(path: dir.lockPath, holder: "a running process")
        }
        // Any number of segments, a bounded number of descriptors.
        let handles = SegmentHandleCache(limit: 64)
        /// A key's newest value record or tombstone; `refreshes` holds its
        /// newest TTL refresh (see `RecordFormat`).
        struct Latest {
            var seq: UInt64; var segment: SegmentFile; var offset: Int64; var length: Int
            var tombstone: Bool; var expiresAt: Int64
        }
        var latest: [KeyBytes: Latest] = [:]
        var refreshes: [KeyBytes: (seq: UInt64, renews: UInt64, expiresAt: Int64)] = [:]
        var damaged = 0
        var files: [SegmentFile] = []
        for id in try dir.segmentIDs() {
            let file = try SegmentFile.open(fs: dir.fs, id: id, path: dir.segmentPath(id), writable: false)
            guard (try? file.loadHeader()) != nil else { damaged += 1; continue }
            files.append(file)
        }
        let activeID = files.last { $0.kind == .log }?.id
        for file in files {
            file.markSealed()
            file.attach(to: handles)
            // The log ends where an open would end it (the same rule).
            var logEnd: Int64?
            if file.id == activeID, let tail = try SegmentScanner.unsyncedTail(of: file, from: file.dataStart),
               tail.recordsAfterHole > 0 {
                logEnd = tail.hole
                damaged += 1
            }
            var scanner = SegmentScanner(file: file, endingAt: logEnd)
            while true {
                do {
                    guard let entry = try scanner.next() else { break }
                    let h = entry.header
                    let key = KeyBytes(entry.key)
                    if h.isTTLRefresh {
                        if let seen = refreshes[key], seen.seq >= h.seq { continue }
                        refreshes[key] = (h.seq, RecordCodec.renewedSeq(entry.value)!, h.expiresAt)
                        continue
                    }
                    if let seen = latest[key], seen.seq >= h.seq { continue }
                    latest[key] = Latest(seq: h.seq, segment: file, offset: entry.offset, length: h.recordLength,
                                         tombstone: h.isTombstone, expiresAt: h.expiresAt)
                } catch is SegmentScanner.Stop {
                    damaged += 1
                    if try scanner.skipDamage() == nil { break }
                }
            }
        }
        var keys = 0
        for (key, var record) in latest.sorted(by: { $0.key < $1.key }) {
            if let refresh = refreshes[key], refresh.seq > record.seq {
                // The newest record renews this value, or hides it.
                guard refresh.renews == record.seq else { continue }
                record.expiresAt = refresh.expiresAt
            }
            guard !record.tombstone, !Supersession.isExpired(expiresAt: record.expiresAt, now: now) else { continue }
            let bytes = try record.segment.read(at: record.offset, count: record.length)
            guard let (header, keyEnd) = LogKV.verifiedRecord(bytes) else {
                damaged += 1  // changed since the scan: never dump garbage
                continue
            }
            try body(key.bytes, LogKV.storedValue(bytes, header: header, keyEnd: keyEnd, expiresAt: record.expiresAt))
            keys += 1
        }
        return (keys, damaged)
    }
}
