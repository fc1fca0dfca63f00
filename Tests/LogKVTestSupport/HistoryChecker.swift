import Foundation

// Checks concurrent histories of the key-value store: `checkLinearizable`
// (is the live history linearizable?) and `checkRecovered` (could a crash
// have left the state the store recovered?). In the style of Porcupine:
// Wing & Gong's search over linearization orders, run per key (a history is
// linearizable iff each key's sub-history is), with Lowe's just-in-time
// entry list and a memo of (placed operations, state) so no node of the
// search is explored twice. On top of that, cheap refutations of the usual
// bugs run first, and the search prunes by facts particular to this model
// (see `refute`, `Search.successor` and `Search.run`): the search of a busy
// key may otherwise need to exhaust every order before it can say no.
//
// Model. A key holds nothing or one write, named by its write id: every
// write in a history writes a unique value, so a read names the write it
// saw and a write, once replaced, never comes back. A write's version is
// the store's seq for it: unique store-wide within one history, fixed, and
// kept by TTL refreshes. So versions are not part of the search state but a
// constant map write id → version, learned from every output reporting one
// (puts, conditional puts, reads) and from `initial`; a write reported with
// two versions, or two writes with one, is illegal. A condition naming
// version V (If-Match V, a refresh answering V) is judged against the
// key's current write w:
// - w's version is known: exactly, V == version(w);
// - V is known as another write's version: false (versions are unique);
// - neither is known: undetermined, and either outcome is accepted.
// So an unseen version never causes a false alarm, and the check is exact
// for the usual test, which only sends versions the store told it.
// Expiry is not modelled: tests must keep keys from expiring mid-history.

// MARK: - Histories

/// What a client asked of one key.
public enum KVOp: Hashable, Sendable {
    case put(writeID: UInt64)
    case delete
    /// Write only if the key's current version is `expected` (If-Match).
    case putIfVersion(writeID: UInt64, expected: UInt64)
    case putIfAbsent(writeID: UInt64)
    case deleteIfVersion(expected: UInt64)
    /// Lease renewal: keeps the key's value and version.
    case refreshTTL
    case get

    /// The write id this op writes, if it is a put.
    public var writeID: UInt64? {
        switch self {
        case let .put(w), let .putIfVersion(w, _), let .putIfAbsent(w): return w
        case .delete, .deleteIfVersion, .refreshTTL, .get: return nil
        }
    }
}

/// What the client was told. `.unknown` (timeout, crash, connection lost)
/// says nothing: a write may have applied at any time after its call, or
/// never; a read or refresh with it is dropped. `.failed` means certainly
/// not applied (refused before being attempted) and is dropped too.
public enum KVOutput: Hashable, Sendable {
    /// A write or refresh took effect: `version` is the write's (for a
    /// refresh, the renewed value's) if the answer carried it. For a delete:
    /// it took effect, whether the key existed not said.
    case ok(version: UInt64?)
    /// A delete's answer: whether the key existed (false: nothing changed).
    case deleted(_ existed: Bool)
    /// A condition did not hold; for a refresh, the key was absent.
    case preconditionFailed
    /// The key was absent (a read, a refresh, a delete, an If-Match).
    case notFound
    /// A read: the write it saw, nil if not found.
    case value(writeID: UInt64?, version: UInt64?)
    case failed
    case unknown
}

/// A key's state before the history, for `initial`: `value` is its write
/// id (nil: absent), which the history must not write again, and `version`
/// that write's version (0: unknown).
public struct KVState: Hashable, Sendable {
    public var value: UInt64?
    public var version: UInt64
    public init(value: UInt64?, version: UInt64 = 0) {
        self.value = value
        self.version = version
    }
    public static let absent = KVState(value: nil)
}

/// One operation of a history. (Not `Operation`, which would be ambiguous
/// with Foundation's in files importing both.)
public struct HistoryOperation: Hashable, Sendable {
    public var key: [UInt8]
    public var input: KVOp
    public var output: KVOutput
    /// Monotonic nanoseconds (`monotonicNanoseconds()`), taken before the
    /// request was sent and after its answer arrived; `returned` is nil while
    /// in flight. An op with an `.unknown` output may take effect at any time
    /// after `call`, whatever `returned` says; one with a known output and no
    /// `returned` at any time after `call`.
    public var call: UInt64
    public var returned: UInt64?
    public init(key: [UInt8], input: KVOp, output: KVOutput, call: UInt64, returned: UInt64?) {
        self.key = key
        self.input = input
        self.output = output
        self.call = call
        self.returned = returned
    }
}

public func monotonicNanoseconds() -> UInt64 { DispatchTime.now().uptimeNanoseconds }

/// Records a history from many client threads.
public final class HistoryRecorder: @unchecked Sendable {
    private let lock = NSLock()
    private var ops: [HistoryOperation] = []
    private var crashed: [Bool] = []

    public init() {}

    /// Call just before sending the request; returns the id for `finish`.
    public func call(key: [UInt8], op: KVOp) -> Int {
        let now = monotonicNanoseconds()
        return lock.withLock {
            ops.append(HistoryOperation(key: key, input: op, output: .unknown, call: now, returned: nil))
            crashed.append(false)
            return ops.count - 1
        }
    }

    /// Call once the answer is known: `.unknown` if the request timed out
    /// or its connection broke, since it may still take effect.
    public func finish(_ id: Int, _ output: KVOutput) {
        let now = monotonicNanoseconds()
        lock.withLock {
            // An answer arriving after `crashAll` came from a store that had
            // already been counted as gone: the op stays unknown.
            guard !crashed[id] else { return }
            ops[id].output = output
            ops[id].returned = now
        }
    }

    /// The store crashed: every operation still in flight is `.unknown`.
    public func crashAll() {
        lock.withLock {
            for i in ops.indices where ops[i].returned == nil {
                ops[i].output = .unknown
                crashed[i] = true
            }
        }
    }

    /// The history so far; ops still in flight read as `.unknown`.
    public var operations: [HistoryOperation] { lock.withLock { ops } }
}

// MARK: - Results and entry points

public enum CheckResult: Equatable, Sendable, CustomStringConvertible {
    case ok
    /// No linearization (or, for `checkRecovered`, none ending as recovered)
    /// exists for `key`; also used for histories the model cannot produce.
    case illegal(key: [UInt8], explanation: String)
    /// The search budget ran out first: neither pass nor fail.
    case unknown(reason: String)

    public var isOk: Bool { self == .ok }
    public var isIllegal: Bool { if case .illegal = self { return true } else { return false } }
    public var description: String {
        switch self {
        case .ok: return "ok"
        case let .illegal(key, explanation): return "key \(formatKey(key)): \(explanation)"
        case let .unknown(reason): return "inconclusive: \(reason)"
        }
    }
}

/// What a recovered store must hold, per key.
public struct DurabilityPolicy: Hashable, Sendable {
    fileprivate let isPrefix: Bool
    fileprivate let mustInclude: Set<UInt64>

    /// fsync `always`: every acknowledged operation survived, so the
    /// recovered state is one some linearization of the whole history ends
    /// in: every acknowledged op applied, each `.unknown` one applied or not.
    public static let always = DurabilityPolicy(isPrefix: false, mustInclude: [])
    /// fsync `interval`/`never`: the recovered state is the state after some
    /// prefix of a linearization of the whole history. Judged per key, this
    /// is weaker than the store-wide guarantee (one prefix of the log for all
    /// keys): each key may pick its own cut.
    public static let prefix = DurabilityPolicy(isPrefix: true, mustInclude: [])
    /// As `prefix`, with the cut after every write of `mustInclude` (write
    /// ids acknowledged before the last completed sync began), each applied.
    public static func prefix(mustInclude: Set<UInt64>) -> DurabilityPolicy {
        DurabilityPolicy(isPrefix: true, mustInclude: mustInclude)
    }
}

/// Placements one key's search may try before giving up with `.unknown`.
/// Each stores at most one memo entry (tens of bytes) and costs well under
/// a microsecond: the default bounds a key at about a second and 100 MB.
public let defaultCheckBudget = 2_000_000

/// Is `history` linearizable, key by key?
public func checkLinearizable(_ history: [HistoryOperation], initial: [[UInt8]: KVState] = [:],
                              budget: Int = defaultCheckBudget) -> CheckResult {
    check(history, initial: initial, extraKeys: [], budget: budget) { _, _ in .linearizable }
}

/// For testing the checker: the search alone, without quick refutations.
func checkLinearizableBySearch(_ history: [HistoryOperation], budget: Int = defaultCheckBudget) -> CheckResult {
    check(history, initial: [:], extraKeys: [], budget: budget, refuting: false) { _, _ in .linearizable }
}

/// Could the store, having run `history` and crashed, have recovered as
/// `recovered` (write id per key; a key missing or nil is absent)? The
/// caller marks ops cut by the crash `.unknown` (`HistoryRecorder.crashAll`).
public func checkRecovered(history: [HistoryOperation], recovered: [[UInt8]: UInt64?], policy: DurabilityPolicy,
                           initial: [[UInt8]: KVState] = [:], budget: Int = defaultCheckBudget) -> CheckResult {
    check(history, initial: initial, extraKeys: Array(recovered.keys), budget: budget) { key, model in
        let target = (recovered[key] ?? nil).map { model.id($0) } ?? absentState
        return policy.isPrefix ? .prefixReaches(target, mustInclude: policy.mustInclude) : .endsIn(target)
    }
}

// MARK: - Preparing a key's history for the search

/// Search states are dense per-key write indices; these values are not.
private let absentState: Int32 = -1
private let noChange: Int32 = -2
/// Condition owners that are no write of this key.
private let ownedElsewhere: Int32 = -1
private let unowned: Int32 = -2

/// What an operation's output implies about the state it saw.
private enum Cond: Hashable {
    case any, absent, present
    case equals(Int32)
    /// Current version is V, V given as its owner (dense id, `ownedElsewhere`, `unowned`).
    case versionIs(Int32)
    case versionIsNot(Int32)
}

private struct PreparedOp {
    var source: Int  // index in the key's call-ordered ops, for messages
    var cond: Cond
    var effect: Int32  // new state, or `noChange`
    var optional: Bool  // outcome unknown: may be applied at any time after `call`, or never
    var mustInclude = false
    var call: UInt64
    var ret: UInt64
}

/// Version knowledge for the whole history: versions are store-wide.
private struct VersionBook {
    var versionOf: [UInt64: UInt64] = [:]
    var writerOf: [UInt64: UInt64] = [:]

    mutating func observe(write: UInt64, version: UInt64) -> String? {
        if let v = versionOf[write], v != version { return "write w\(write) reported with versions \(v) and \(version)" }
        if let w = writerOf[version], w != write { return "version \(version) reported for writes w\(w) and w\(write)" }
        versionOf[write] = version
        writerOf[version] = write
        return nil
    }
}

/// One key's writes as dense ids, and which versions are known.
private final class KeyModel {
    var ids: [UInt64: Int32] = [:]
    var writeIDs: [UInt64] = []
    var versionKnown: [Bool] = []
    /// The shared states of writes nothing names (see `anonymize`), by
    /// whether their version is known.
    private(set) var anonymous: [Int32?] = [nil, nil]
    let book: VersionBook
    init(book: VersionBook) { self.book = book }

    func anonymousID(versionKnown known: Bool) -> Int32 {
        if let a = anonymous[known ? 1 : 0] { return a }
        let a = Int32(writeIDs.count)
        writeIDs.append(.max)
        versionKnown.append(known)
        anonymous[known ? 1 : 0] = a
        return a
    }

    func id(_ write: UInt64) -> Int32 {
        if let i = ids[write] { return i }
        ids[write] = Int32(writeIDs.count)
        writeIDs.append(write)
        versionKnown.append(book.versionOf[write] != nil)
        return Int32(writeIDs.count - 1)
    }

    /// Ids must all be allocated first: "owned elsewhere" means no write of this key.
    func owner(ofVersion v: UInt64) -> Int32 {
        guard let w = book.writerOf[v] else { return unowned }
        return ids[w] ?? ownedElsewhere
    }

    func describe(_ s: Int32) -> String {
        guard s >= 0 else { return "absent" }
        if anonymous.contains(s) { return "a write nothing reads" }
        let w = writeIDs[Int(s)]
        return "w\(w)" + (book.versionOf[w].map { " (v\($0))" } ?? " (version unseen)")
    }
}

/// Translates one op; nil: it says nothing (dropped); throws `String` for
/// an output the model cannot give that op.
private func prepare(_ o: HistoryOperation, source: Int, _ m: KeyModel) throws(Malformed) -> PreparedOp? {
    func make(_ cond: Cond, _ effect: Int32, optional: Bool = false) -> PreparedOp {
        PreparedOp(source: source, cond: cond, effect: effect, optional: optional, call: o.call,
                   ret: optional ? .max : o.returned ?? .max)
    }
    switch (o.input, o.output) {
    case (_, .failed), (.get, .unknown), (.refreshTTL, .unknown): return nil
    case let (.put(w), .ok): return make(.any, m.id(w))
    case let (.put(w), .unknown): return make(.any, m.id(w), optional: true)
    case let (.putIfVersion(w, v), .ok): return make(.versionIs(m.owner(ofVersion: v)), m.id(w))
    case let (.putIfVersion(_, v), .preconditionFailed): return make(.versionIsNot(m.owner(ofVersion: v)), noChange)
    case let (.putIfVersion(w, v), .unknown): return make(.versionIs(m.owner(ofVersion: v)), m.id(w), optional: true)
    case let (.putIfAbsent(w), .ok): return make(.absent, m.id(w))
    case (.putIfAbsent, .preconditionFailed): return make(.present, noChange)
    case let (.putIfAbsent(w), .unknown): return make(.absent, m.id(w), optional: true)
    case (.delete, .deleted(true)): return make(.present, absentState)
    case (.delete, .ok): return make(.any, absentState)  // existence not reported
    case (.delete, .unknown): return make(.any, absentState, optional: true)
    case let (.deleteIfVersion(v), .deleted(true)), let (.deleteIfVersion(v), .ok):
        return make(.versionIs(m.owner(ofVersion: v)), absentState)
    case let (.deleteIfVersion(v), .preconditionFailed): return make(.versionIsNot(m.owner(ofVersion: v)), noChange)
    case let (.deleteIfVersion(v), .unknown): return make(.versionIs(m.owner(ofVersion: v)), absentState, optional: true)
    case (.refreshTTL, .ok(nil)): return make(.present, noChange)
    case let (.refreshTTL, .ok(v?)): return make(.versionIs(m.owner(ofVersion: v)), noChange)
    case (.get, .value(nil, _?)): throw Malformed(text: "a read cannot report a version without a value")
    case let (.get, .value(w, _)): return make(.equals(w.map { m.id($0) } ?? absentState), noChange)
    case (.get, .notFound): return make(.equals(absentState), noChange)
    // Answers that mean "the key was absent": a 404, or a delete that found nothing.
    case (.delete, .deleted(false)), (.delete, .notFound), (.deleteIfVersion, .deleted(false)),
         (.deleteIfVersion, .notFound), (.putIfVersion, .notFound), (.refreshTTL, .notFound),
         (.refreshTTL, .preconditionFailed):
        return make(.absent, noChange)
    default: throw Malformed(text: "\(format(o.input)) cannot answer \(format(o.output))")
    }
}

private struct Malformed: Error { var text: String }

// MARK: - Driver

private enum Goal {
    case linearizable
    case endsIn(Int32)
    case prefixReaches(Int32, mustInclude: Set<UInt64>)

    var target: Int32? {
        switch self {
        case .linearizable: return nil
        case let .endsIn(t), let .prefixReaches(t, _): return t
        }
    }
}

private func check(_ history: [HistoryOperation], initial: [[UInt8]: KVState], extraKeys: [[UInt8]], budget: Int,
                   refuting: Bool = true, goal: ([UInt8], KeyModel) -> Goal) -> CheckResult {
    var byKey = Dictionary(grouping: history, by: \.key)
    for key in extraKeys + Array(initial.keys) where byKey[key] == nil { byKey[key] = [] }

    // Versions first: a condition on one key may name another key's version.
    var book = VersionBook()
    var writers: [UInt64: [UInt8]] = [:]
    for (key, s) in initial {
        if let w = s.value, s.version != 0, let e = book.observe(write: w, version: s.version) {
            return .illegal(key: key, explanation: e)
        }
    }
    for o in history {
        switch (o.input, o.output) {
        case let (.put(w), _), let (.putIfVersion(w, _), _), let (.putIfAbsent(w), _):
            if let k = writers.updateValue(o.key, forKey: w) {
                return .illegal(key: o.key, explanation: "malformed history: write id w\(w) reused (also on \(formatKey(k)))")
            }
            if case let .ok(v?) = o.output, let e = book.observe(write: w, version: v) {
                return .illegal(key: o.key, explanation: e)
            }
        case let (.get, .value(w?, v?)):
            if let e = book.observe(write: w, version: v) { return .illegal(key: o.key, explanation: e) }
        default: break
        }
        if o.output != .unknown, let r = o.returned, r < o.call {
            return .illegal(key: o.key, explanation: "malformed history: \(format(o.input)) returned before its call")
        }
    }

    for (key, s) in initial {
        if let w = s.value, writers[w] != nil {
            return .illegal(key: key, explanation: "malformed history: initial value w\(w) is written again")
        }
    }

    var inconclusive: String?
    for key in byKey.keys.sorted(by: { $0.lexicographicallyPrecedes($1) }) {
        let ops = byKey[key]!.enumerated().sorted { ($0.element.call, $0.offset) < ($1.element.call, $1.offset) }
            .map(\.element)
        let model = KeyModel(book: book)
        // Allocate every write id before judging ownership of versions.
        let start = initial[key]?.value.map { model.id($0) } ?? absentState
        for o in ops {
            switch (o.input, o.output) {
            case let (.put(w), _), let (.putIfVersion(w, _), _), let (.putIfAbsent(w), _), let (.get, .value(w?, _)):
                _ = model.id(w)
            default: break
            }
        }
        var prepared: [PreparedOp] = []
        for (i, o) in ops.enumerated() {
            do throws(Malformed) {
                if let p = try prepare(o, source: i, model) { prepared.append(p) }
            } catch {
                return .illegal(key: key, explanation: "op #\(i): \(error.text)\n" + listing(ops, around: i))
            }
        }
        let g = goal(key, model)
        if case let .prefixReaches(_, must) = g {
            for j in prepared.indices {
                prepared[j].mustInclude = ops[prepared[j].source].input.writeID.map(must.contains) ?? false
            }
        }
        anonymize(&prepared, model, start: start, goal: g)
        if refuting, let (focus, related, why) = refute(prepared, ops, model, start: start, goal: g) {
            return .illegal(key: key, explanation: why + "\n" + listing(ops, around: focus, also: related))
        }
        var search = Search(prepared, model: model, start: start, goal: g, budget: budget)
        switch search.run() {
        case .ok: continue
        case .budgetExceeded:
            inconclusive = inconclusive ?? "key \(formatKey(key)): no verdict within \(budget) search steps (\(ops.count) ops)"
        case .illegal:
            var why = "not linearizable"
            if let t = g.target {
                var plain = Search(prepared, model: model, start: start, goal: .linearizable, budget: budget)
                switch plain.run() {
                case .ok:
                    let kind = if case .endsIn = g { "ends in" } else { "has a prefix (after the required writes) ending in" }
                    why = "no linearization \(kind) the recovered state \(model.describe(t))"
                    return .illegal(key: key, explanation: why + "\n" + listing(ops, around: nil))
                case .budgetExceeded:
                    why = "no linearization reaches the recovered state \(model.describe(t))"
                        + " (whether any linearization exists was not settled within the budget)"
                    return .illegal(key: key, explanation: why + "\n" + listing(ops, around: nil))
                case .illegal:
                    why += " (so the recovered state \(model.describe(t)) was not judged)"
                    search = plain
                }
            }
            let stuck = search.stuckOp.map { prepared[$0].source }
            why += "; the longest partial linearization placed \(search.deepest) ops, reaching state "
                + model.describe(search.deepestState)
            if let stuck { why += ", and then op #\(stuck) could not be placed" }
            return .illegal(key: key, explanation: why + "\n" + listing(ops, around: stuck))
        }
    }
    return inconclusive.map { .unknown(reason: $0) } ?? .ok
}

/// Writes that nothing names (no op reads them or has a condition on their
/// version, not the start or the recovered state, not required) differ to
/// other ops only in whether their version is known (an unseen version may
/// be the one a condition names). So they write one of two shared anonymous
/// states, and the search treats such writes as interchangeable
/// (`Search.successor`) instead of trying every order and subset of them.
private func anonymize(_ prepared: inout [PreparedOp], _ model: KeyModel, start: Int32, goal: Goal) {
    var named: Set<Int32> = [start]
    if let t = goal.target { named.insert(t) }
    for p in prepared {
        switch p.cond {
        case let .equals(x), let .versionIs(x), let .versionIsNot(x): named.insert(x)
        default: break
        }
    }
    for j in prepared.indices {
        let p = prepared[j]
        if !p.mustInclude && p.effect >= 0 && !named.contains(p.effect) {
            prepared[j].effect = model.anonymousID(versionKnown: model.versionKnown[Int(p.effect)])
        }
    }
}

/// The write an op needs current when it takes effect (a read of it, a
/// condition on its version), or -1. Unknown-outcome ops need nothing: they
/// may be left out.
private func neededWrite(_ o: PreparedOp) -> Int32 {
    guard !o.optional else { return -1 }
    switch o.cond {
    case let .equals(x) where x >= 0: return x
    case let .versionIs(x) where x >= 0: return x
    default: return -1
    }
}

/// Quick refutations, found in O(n log n) before any search: an op needing
/// write x current (1) with x never written, (2) returning before x's write
/// was called, or (3) called after some acknowledged change C returned,
/// where C was called after x's write returned — x was replaced for good,
/// as write ids are unique; (4) see below. With `.endsIn(x)`, the recovered state is
/// judged like an op called at the end. These are the usual bugs (stale
/// reads, reads from nowhere, lost writes), and a search that must exhaust
/// every linearization of a busy key to refute them can run out of budget.
private func refute(_ prepared: [PreparedOp], _ ops: [HistoryOperation], _ model: KeyModel, start: Int32,
                    goal: Goal) -> (focus: Int, related: [Int], why: String)? {
    var writer = [Int?](repeating: nil, count: model.writeIDs.count)
    for (j, p) in prepared.enumerated() where p.effect >= 0 { writer[Int(p.effect)] = j }
    // Acknowledged changes by call time, with the earliest return among those called later.
    let changers = prepared.indices.filter { !prepared[$0].optional && prepared[$0].effect != noChange }
        .sorted { prepared[$0].call < prepared[$1].call }
    var earliestReturn = [Int](repeating: -1, count: changers.count + 1)
    for c in changers.indices.reversed() {
        let best = earliestReturn[c + 1]
        earliestReturn[c] = best >= 0 && prepared[best].ret <= prepared[changers[c]].ret ? best : changers[c]
    }
    var related: [Int] = []
    func name(_ j: Int) -> String {
        related.append(prepared[j].source)
        return "#\(prepared[j].source) (\(format(ops[prepared[j].source])))"
    }
    /// Why `x` cannot be current for something called at `call`, if it cannot.
    func gone(_ x: Int32, before call: UInt64) -> String? {
        let w = writer[Int(x)]
        if w == nil && x != start { return "it is never written" }
        if let w, prepared[w].optional { return nil }
        // A changer called after x's write returned (any, for the initial value).
        var lo = 0, hi = changers.count
        while lo < hi {
            let m = (lo + hi) / 2
            if let w, prepared[changers[m]].call <= prepared[w].ret { lo = m + 1 } else { hi = m }
        }
        guard lo < changers.count else { return nil }
        let c = earliestReturn[lo]
        guard prepared[c].ret < call else { return nil }
        let origin = w.map { "its write \(name($0)) returned" } ?? "the history began"
        return "it was replaced for good: \(name(c)) was called after \(origin), and returned first"
    }
    // (4) Two ops needing x that both replace it (a lost update), or one
    // that replaces x and returns before another needing x is called.
    var replacerOf = [Int?](repeating: nil, count: model.writeIDs.count)
    for (j, p) in prepared.enumerated() {
        let x = neededWrite(p)
        guard x >= 0, p.effect != noChange, p.effect != x else { continue }
        if let k = replacerOf[Int(x)] {
            return (p.source, related, "not linearizable: \(name(k)) and \(name(j)) both need \(model.describe(x)) current, and both replace it")
        }
        replacerOf[Int(x)] = j
    }
    for (j, p) in prepared.enumerated() {
        let x = neededWrite(p)
        guard x >= 0 else { continue }
        if let k = replacerOf[Int(x)], k != j, prepared[k].ret < p.call {
            return (p.source, related, "not linearizable: \(name(j)) needs \(model.describe(x)) current, but \(name(k)), which replaced it, returned before it was called")
        }
        if let w = writer[Int(x)], prepared[w].call > p.ret {
            return (p.source, related, "not linearizable: \(name(j)) returned before \(model.describe(x))'s write \(name(w)) was called")
        }
        if let why = gone(x, before: p.call) {
            return (p.source, related, "not linearizable: \(name(j)) needs \(model.describe(x)) current, but " + why)
        }
    }
    if case let .endsIn(t) = goal, t >= 0, let why = gone(t, before: .max) {
        return (related.last ?? 0, related, "no linearization ends in the recovered state \(model.describe(t)): " + why)
    }
    return nil
}

// MARK: - The search

private enum Outcome { case ok, illegal, budgetExceeded }

/// Wing & Gong's depth-first search over one key's ops, with Lowe's entry
/// list: call and return events in time order; placing an op lifts both of
/// its events out, so the list's first return event is always the op that
/// must be placed before anything called after it. Unknown-outcome ops have
/// no return event: they may be placed at any time or never, and the search
/// succeeds once every op with a known outcome is placed (and the goal holds).
private struct Search {
    let ops: [PreparedOp]
    let goal: Goal
    /// `goal` unpacked for the hot path: the recovered state a prefix must reach, if any.
    let prefixTarget: Int32?
    let versionKnown: [Bool]
    let budget: Int
    var state: Int32
    var cut = false  // .prefixReaches: the cut has been taken
    var finiteLeft = 0, mustLeft = 0, placedOps = 0
    // Entry list: entries 0..<n, head sentinel at n, -1 ends it; and the
    // return entries of state-changing ops alone, in the same order.
    var list = Links(), changes = Links()
    /// The call entries of unplaced helpers (see `run`), in the same order.
    var helpers = Links()
    var entryOp: [Int32] = [], entryIsCall: [Bool] = [], retEntry: [Int32] = []
    // Placed ops as a bitset: known-outcome ops (in call order) in words
    // 0..<finiteWords, unknown-outcome ops after. The placed known-outcome
    // ops are nearly a prefix, so memo keys keep only the words past the
    // leading full ones (`lead`) up to the last non-empty one.
    var bit: [Int] = [], bits: [UInt64] = [], fullMask: [UInt64] = []
    var finiteWords = 0, lead = 0
    var zobrist: [UInt64] = [], hash: UInt64 = 0
    var visited = Memo(), scratch: [UInt64] = []
    var deepest = 0, deepestState: Int32 = absentState, stuckOp: Int?
    /// Per write: how many unplaced known-outcome ops need it current (see `successor`).
    var needed: [Int32] = [], need: [Int32] = []
    /// Per write: the latest call of a known-outcome op needing it current.
    var lastNeedCall: [UInt64] = []
    /// For interchangeable ops (see `successor`): the op that must be placed first, or -1.
    var predecessor: [Int] = []
    /// Unknown-outcome ops placed only to enable the next op (see `run`),
    /// and the ops some helper's effect might make legal.
    var isHelper: [Bool] = [], mayUseHelper: [Bool] = []

    init(_ ops: [PreparedOp], model: KeyModel, start: Int32, goal: Goal, budget: Int) {
        self.ops = ops
        self.goal = goal
        if case let .prefixReaches(t, _) = goal { prefixTarget = t } else { prefixTarget = nil }
        versionKnown = model.versionKnown
        self.budget = budget
        state = start
        deepestState = start
        var events: [(time: UInt64, isReturn: Bool, op: Int)] = []
        var finite = 0, optional = 0
        for (i, o) in ops.enumerated() {
            events.append((o.call, false, i))
            if !o.optional { events.append((o.ret, true, i)); finite += 1 } else { optional += 1 }
            if o.mustInclude { mustLeft += 1 }
        }
        // Ties put calls first: ops that merely touch count as concurrent.
        events.sort { ($0.time, $0.isReturn ? 1 : 0, $0.op) < ($1.time, $1.isReturn ? 1 : 0, $1.op) }
        let n = events.count
        list = Links(Array(0..<n))
        changes = Links(n, events.indices.filter { events[$0].isReturn && ops[events[$0].op].effect != noChange })
        entryOp = events.map { Int32($0.op) }
        entryIsCall = events.map { !$0.isReturn }
        retEntry = Array(repeating: -1, count: ops.count)
        for (e, ev) in events.enumerated() where ev.isReturn { retEntry[ev.op] = Int32(e) }
        finiteLeft = finite
        finiteWords = (finite + 63) / 64
        bits = Array(repeating: 0, count: finiteWords + (optional + 63) / 64)
        fullMask = (0..<finiteWords).map { w in
            let r = finite - w * 64
            return r >= 64 ? ~0 : (1 << UInt64(r)) - 1
        }
        var f = 0, p = finiteWords * 64
        bit = ops.map { o in
            defer { if o.optional { p += 1 } else { f += 1 } }
            return o.optional ? p : f
        }
        var seed: UInt64 = 0x9E37_79B9_7F4A_7C15
        zobrist = (0..<(bits.count * 64)).map { _ in splitmix(&seed) }
        if case let .prefixReaches(t, _) = goal { cut = state == t && mustLeft == 0 }
        needed = Array(repeating: 0, count: model.writeIDs.count)
        need = ops.map(neededWrite)
        lastNeedCall = Array(repeating: 0, count: model.writeIDs.count)
        for (i, x) in need.enumerated() where x >= 0 {
            needed[Int(x)] += 1
            lastNeedCall[Int(x)] = max(lastNeedCall[Int(x)], ops[i].call)
        }
        isHelper = ops.map { o in o.optional && !o.mustInclude && o.effect != goal.target }
        helpers = Links(n, events.indices.filter { !events[$0].isReturn && isHelper[events[$0].op] })
        let helperEffects = Set(ops.indices.filter { isHelper[$0] }.map { ops[$0].effect })
        mayUseHelper = ops.map { o in
            switch o.cond {
            case .any: return false  // illegal only for reasons a helper cannot fix
            case .absent: return helperEffects.contains(absentState)
            case .present: return helperEffects.contains { $0 >= 0 }
            case let .equals(x): return helperEffects.contains(x)
            case let .versionIs(x): return x >= 0 ? helperEffects.contains(x) : helperEffects.contains { $0 >= 0 }
            case .versionIsNot: return !helperEffects.isEmpty
            }
        }
        // Ops are in call order; an unknown outcome's return is infinite.
        struct ClassKey: Hashable { var cond: Cond, effect: Int32, optional: Bool }
        var classes: [ClassKey: [Int]] = [:]
        predecessor = Array(repeating: -1, count: ops.count)
        for (i, o) in ops.enumerated() where !o.mustInclude && (o.effect == absentState || model.anonymous.contains(o.effect)) {
            let key = ClassKey(cond: o.cond, effect: o.effect, optional: o.optional)
            let earlier = classes[key, default: []]
            predecessor[i] = earlier.last(where: { ops[$0].ret <= o.ret }) ?? -1
            classes[key] = earlier + [i]
        }
        if case let .endsIn(t) = goal, t >= 0 {  // never placed: always needed
            needed[Int(t)] += 1
            lastNeedCall[Int(t)] = .max
        }
    }

    private var goalMet: Bool {
        guard finiteLeft == 0 else { return false }
        switch goal {
        case .linearizable: return true
        case let .endsIn(t): return state == t
        case .prefixReaches: return cut
        }
    }

    /// The state after placing op `i` now, or nil if it cannot go now.
    /// Besides its condition, a placement may not replace a write something
    /// still needs current (an unplaced read of it, a condition naming its
    /// version, the recovered state): write ids are unique, so a replaced
    /// write never comes back. Pruning this at once, rather than when the
    /// read's return is reached, keeps wrong early guesses from growing.
    private mutating func successor(_ i: Int) -> Int32? {
        let op = ops[i]
        // Ops with the same condition and effect (deletes, anonymous writes)
        // are interchangeable: if A was called and returns no later than B,
        // A can take B's place in any linearization and B A's, so only
        // orders placing A first are tried.
        if predecessor[i] >= 0 && !placed(predecessor[i]) { return nil }
        guard holds(op.cond, state) else { return nil }
        let s = op.effect == noChange ? state : op.effect
        if state >= 0 && s != state {
            if needed[Int(state)] - (need[i] == state ? 1 : 0) > 0 { return nil }
            if !cut, prefixTarget == state { return nil }
        }
        // Writing s is futile if a change still to place returned before
        // something needing s was called: that change will replace s first.
        if s >= 0 && s != state && lastNeedCall[Int(s)] > 0 {
            var e = changes.first
            if e >= 0 && Int(entryOp[e]) == i { e = Int(changes.next[e]) }
            if e >= 0 && ops[Int(entryOp[e])].ret < lastNeedCall[Int(s)] { return nil }
        }
        return s
    }

    private func holds(_ c: Cond, _ s: Int32) -> Bool {
        /// Is the version of state `s` the one owned by `o`? nil: undetermined.
        func versionMatches(_ o: Int32) -> Bool? {
            if s < 0 { return false }
            if o >= 0 { return s == o }
            if o == ownedElsewhere { return false }
            return versionKnown[Int(s)] ? false : nil
        }
        switch c {
        case .any: return true
        case .absent: return s < 0
        case .present: return s >= 0
        case let .equals(x): return s == x
        case let .versionIs(o): return versionMatches(o) != false
        case let .versionIsNot(o): return versionMatches(o) != true
        }
    }

    private func placed(_ i: Int) -> Bool { bits[bit[i] >> 6] & (1 << UInt64(bit[i] & 63)) != 0 }

    private mutating func flip(_ i: Int, on: Bool) {
        let b = bit[i], w = b >> 6
        bits[w] ^= 1 << UInt64(b & 63)
        hash ^= zobrist[b]
        guard w < finiteWords else { return }
        if on {
            while lead < finiteWords && bits[lead] == fullMask[lead] { lead += 1 }
        } else if w < lead {
            lead = w
        }
    }

    /// Records node (placed ops, `s`, `cut`); false if explored before.
    private mutating func visit(_ s: Int32, _ cut: Bool) -> Bool {
        var end = finiteWords
        while end > lead && bits[end - 1] == 0 { end -= 1 }
        scratch.removeAll(keepingCapacity: true)
        scratch.append(UInt64(lead) | UInt64(end) << 32)
        scratch.append(UInt64(UInt32(bitPattern: s)) | (cut ? 1 << 32 : 0))
        scratch += bits[lead..<end]
        scratch += bits[finiteWords...]
        var h = hash ^ scratch[1]
        return visited.insert(scratch, hash: splitmix(&h))
    }

    private mutating func lift(_ e: Int) {
        list.unlink(e)
        if isHelper[Int(entryOp[e])] { helpers.unlink(e) }
        let r = Int(retEntry[Int(entryOp[e])])
        if r >= 0 {
            list.unlink(r)
            if ops[Int(entryOp[e])].effect != noChange { changes.unlink(r) }
        }
    }

    private mutating func unlift(_ e: Int) {
        let r = Int(retEntry[Int(entryOp[e])])
        if r >= 0 {
            if ops[Int(entryOp[e])].effect != noChange { changes.relink(r) }
            list.relink(r)
        }
        list.relink(e)
        if isHelper[Int(entryOp[e])] { helpers.relink(e) }
    }


    /// Depth-first search, with two prunings beyond Porcupine's.
    ///
    /// Forced moves: an op that never changes the state (a read, a refused
    /// condition, a delete that found nothing) and is legal now is placed at
    /// once, and if that fails the node fails. Every op still to place was
    /// called no later than the first pending return, so moving such an op
    /// up to now breaks no real-time order and changes no state. (An op that
    /// merely changes nothing *now*, like a delete of an absent key, is
    /// excluded: later it might.)
    ///
    /// Helpers: an unknown-outcome op A (other than a required write or one
    /// writing the recovered state) is only placed right before an op Y
    /// that is illegal without it. In any linearization, if the op after A
    /// is legal without A, then either it changes the state (so dropping A
    /// changes nothing) or it does not (so it can move before A); repeating
    /// leaves every such A right before an op that needs it, or last, where
    /// it can be dropped. This keeps the search from trying each unknown
    /// write at every point of the history, applied or not.
    mutating func run() -> Outcome {
        if goalMet { return .ok }
        var stack: [Frame] = []
        var steps = 0
        // The cursor at the current node: candidate op `y` (a call entry)
        // and, once y alone was tried, the helper entry `a` to try with it
        // (-1: no more helpers).
        let tryAlone = -2
        var y = -1, a = tryAlone
        var frontier = -2  // the node's first return entry (-1: none), once needed (-2: not yet)
        var fresh = true  // at a node just entered: look for a forced move first
        while true {
            if fresh {
                fresh = false
                frontier = -2
                y = list.first
                a = tryAlone
                var e = y
                while e >= 0 && entryIsCall[e] {
                    let op = ops[Int(entryOp[e])]
                    if op.effect == noChange, holds(op.cond, state) { break }
                    e = Int(list.next[e])
                }
                if e >= 0 && entryIsCall[e] {
                    steps += 1
                    if steps > budget { return .budgetExceeded }
                    if commit(e, state, helper: -1, forced: true, &stack) {
                        if goalMet { return .ok }
                        fresh = true
                        continue
                    }
                    y = -1  // explored before, so failed: this node fails too
                }
            }
            if y < 0 || !entryIsCall[y] {
                // Nothing more can go next here: undo the last placement.
                guard let top = stack.popLast() else { return .illegal }
                frontier = -2
                state = top.state
                cut = top.cut
                unplace(top.entry)
                if top.helper >= 0 { unplace(top.helper) }
                if top.forced {
                    y = -1
                } else if top.helper >= 0 {
                    y = top.entry
                    a = Int(helpers.next[top.helper])
                } else {
                    y = Int(list.next[top.entry])
                    a = tryAlone
                }
                continue
            }
            let yi = Int(entryOp[y])
            if a == tryAlone {
                if let s = successor(yi) {
                    // Legal alone, so not worth a helper.
                    if !isHelper[yi] {
                        steps += 1
                        if steps > budget { return .budgetExceeded }
                        if commit(y, s, helper: -1, forced: false, &stack) {
                            if goalMet { return .ok }
                            fresh = true
                            continue
                        }
                    }
                    y = Int(list.next[y])
                    continue
                }
                guard mayUseHelper[yi] else {
                    y = Int(list.next[y])
                    continue
                }
                a = helpers.first
            }
            // Try y right after the next helper candidate: one called before
            // the first pending return (entries are numbered in time order).
            if frontier == -2 {
                frontier = list.first
                while frontier >= 0 && entryIsCall[frontier] { frontier = Int(list.next[frontier]) }
            }
            if a == y { a = Int(helpers.next[a]) }
            if a < 0 || (frontier >= 0 && a > frontier) {
                y = Int(list.next[y])
                a = tryAlone
                continue
            }
            let ai = Int(entryOp[a])
            if let sa = successor(ai), sa != state {
                let before = state
                flip(ai, on: true)
                state = sa
                let sy = successor(yi)
                flip(ai, on: false)
                state = before
                if let sy {
                    steps += 1
                    if steps > budget { return .budgetExceeded }
                    if commit(y, sy, helper: a, forced: false, &stack) {
                        if goalMet { return .ok }
                        fresh = true
                        continue
                    }
                }
            }
            a = Int(helpers.next[a])
        }
    }

    private struct Frame {
        var entry: Int, state: Int32, cut: Bool, forced: Bool
        var helper: Int  // call entry placed just before `entry`, or -1
    }

    /// Places the op of call entry `e` (after `helper`'s, if any), reaching
    /// state `s`, unless that node was explored before.
    private mutating func commit(_ e: Int, _ s: Int32, helper: Int, forced: Bool, _ stack: inout [Frame]) -> Bool {
        let i = Int(entryOp[e])
        let h = helper >= 0 ? Int(entryOp[helper]) : -1
        let must = mustLeft - (ops[i].mustInclude ? 1 : 0)
        var c = cut
        if let t = prefixTarget, !c { c = s == t && must == 0 }
        if h >= 0 { flip(h, on: true) }
        flip(i, on: true)
        guard visit(s, c) else {
            flip(i, on: false)
            if h >= 0 { flip(h, on: false) }
            return false
        }
        stack.append(Frame(entry: e, state: state, cut: cut, forced: forced, helper: helper))
        state = s
        cut = c
        if h >= 0 {
            lift(helper)
            count(h, by: -1)
        }
        lift(e)
        count(i, by: -1)
        if placedOps > deepest { noteDeepest() }
        return true
    }

    /// Undoes the placement of call entry `e`'s op, state aside (see `run`).
    private mutating func unplace(_ e: Int) {
        let i = Int(entryOp[e])
        flip(i, on: false)
        unlift(e)
        count(i, by: 1)
    }

    /// Adjusts the counts of ops still to place for op `i` (placed: -1).
    private mutating func count(_ i: Int, by d: Int) {
        placedOps -= d
        if !ops[i].optional { finiteLeft += d }
        if ops[i].mustInclude { mustLeft += d }
        if need[i] >= 0 { needed[Int(need[i])] += Int32(d) }
    }

    /// For the failure message: the op whose return blocks the deepest node.
    private mutating func noteDeepest() {
        deepest = placedOps
        deepestState = state
        var e = list.first
        while e >= 0 && entryIsCall[e] { e = Int(list.next[e]) }
        stuckOp = e >= 0 ? Int(entryOp[e]) : nil
    }
}

/// A doubly linked list over entries 0..<n, with its head sentinel at n
/// and -1 for its end. Unlinked entries keep their links, so relinking in
/// the reverse order of unlinking restores the list (dancing links).
private struct Links {
    var next: [Int32] = [], prev: [Int32] = []

    init() {}

    init(_ count: Int, _ members: [Int]) {
        next = Array(repeating: -1, count: count + 1)
        prev = next
        var last = count
        for m in members {
            next[last] = Int32(m)
            prev[m] = Int32(last)
            last = m
        }
    }

    init(_ members: [Int]) { self.init(members.count, members) }

    var first: Int { Int(next[next.count - 1]) }

    mutating func unlink(_ x: Int) {
        let p = Int(prev[x]), n = next[x]
        next[p] = n
        if n >= 0 { prev[Int(n)] = Int32(p) }
    }

    mutating func relink(_ x: Int) {
        let p = Int(prev[x]), n = next[x]
        next[p] = Int32(x)
        if n >= 0 { prev[Int(n)] = Int32(x) }
    }
}

/// The explored nodes: open addressing over one flat pool of key words,
/// since a set of arrays would allocate for every node.
private struct Memo {
    private var slots = [Int32](repeating: -1, count: 1 << 10)
    private var hashes: [UInt64] = []
    private var starts: [Int] = [0]
    private var pool: [UInt64] = []

    /// Adds `key`; false if it was there.
    mutating func insert(_ key: [UInt64], hash: UInt64) -> Bool {
        if (hashes.count + 1) * 4 > slots.count * 3 { grow() }
        let mask = slots.count - 1
        var s = Int(truncatingIfNeeded: hash) & mask
        while slots[s] >= 0 {
            let e = Int(slots[s])
            if hashes[e] == hash && pool[starts[e]..<starts[e + 1]].elementsEqual(key) { return false }
            s = (s + 1) & mask
        }
        slots[s] = Int32(hashes.count)
        hashes.append(hash)
        pool += key
        starts.append(pool.count)
        return true
    }

    private mutating func grow() {
        slots = Array(repeating: -1, count: slots.count * 2)
        let mask = slots.count - 1
        for (e, h) in hashes.enumerated() {
            var s = Int(truncatingIfNeeded: h) & mask
            while slots[s] >= 0 { s = (s + 1) & mask }
            slots[s] = Int32(e)
        }
    }
}

private func splitmix(_ x: inout UInt64) -> UInt64 {
    x &+= 0x9E37_79B9_7F4A_7C15
    var z = x
    z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
    z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
    return z ^ (z >> 31)
}

// MARK: - Messages

private func formatKey(_ key: [UInt8]) -> String {
    if key.allSatisfy({ $0 >= 0x20 && $0 < 0x7F }) { return "\"" + String(decoding: key, as: UTF8.self) + "\"" }
    return "0x" + key.map { String(format: "%02x", $0) }.joined()
}

private func format(_ o: HistoryOperation) -> String { "\(format(o.input)) -> \(format(o.output))" }

private func format(_ op: KVOp) -> String {
    switch op {
    case let .put(w): return "put(w\(w))"
    case .delete: return "delete"
    case let .putIfVersion(w, v): return "put(w\(w), if v\(v))"
    case let .putIfAbsent(w): return "put(w\(w), if absent)"
    case let .deleteIfVersion(v): return "delete(if v\(v))"
    case .refreshTTL: return "refreshTTL"
    case .get: return "get"
    }
}

private func format(_ out: KVOutput) -> String {
    switch out {
    case let .ok(v): return "ok" + (v.map { "(v\($0))" } ?? "")
    case let .deleted(existed): return existed ? "deleted" : "deleted(nothing)"
    case .preconditionFailed: return "precondition failed"
    case .notFound: return "not found"
    case let .value(w?, v): return "w\(w)" + (v.map { " (v\($0))" } ?? "")
    case .value(nil, _): return "not found"
    case .failed: return "failed"
    case .unknown: return "unknown"
    }
}

/// The key's ops in call order (times in µs from the first call); when
/// there are too many, those around `focus`, `also`, and the write `focus` read.
private func listing(_ ops: [HistoryOperation], around focus: Int?, also: [Int] = [], limit: Int = 60) -> String {
    guard let t0 = ops.first?.call else { return "  (no operations)" }
    var shown = Set(ops.indices)
    if ops.count > limit {
        let f = focus ?? ops.count - 1
        shown = Set(max(0, f - limit / 2)..<min(ops.count, f + limit / 2)).union(also)
        if let f = focus, case let .value(w?, _) = ops[f].output {
            for (i, o) in ops.enumerated() where o.input.writeID == w { shown.insert(i) }
        }
    }
    func us(_ t: UInt64) -> String { String(format: "%.1f", Double(t &- t0) / 1000) }
    var lines = ["  \(ops.count) ops in call order, [call, return] in µs from the first call" +
                 (shown.count < ops.count ? " (\(ops.count - shown.count) not shown)" : "") + ":"]
    for i in shown.sorted() {
        let o = ops[i]
        let ret = o.output == .unknown ? "∞" : o.returned.map(us) ?? "?"
        lines.append("  \(i == focus ? "→" : " ")#\(i) [\(us(o.call)), \(ret)] \(format(o))")
    }
    return lines.joined(separator: "\n")
}
