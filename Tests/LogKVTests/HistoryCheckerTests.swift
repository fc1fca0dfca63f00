import Testing
import LogKVTestSupport

/// The history checker itself, which `ConcurrentHistoryTests` and
/// `LiveHistoryTests` take on trust: hand-built histories with explicit
/// times (no clock), each a timeline small enough to judge by eye, and a
/// seeded randomized round trip against a reference model.
@Suite struct HistoryCheckerTests {
    // MARK: Linearizability

    @Test func aSequentialHistoryOfEveryKindOfOperationIsLinearizable() {
        var h = History()
        h.add(.put(writeID: 1), .ok(version: 1), 0...1)
        h.add(.get, .value(writeID: 1, version: 1), 2...3)
        h.add(.put(writeID: 2), .ok(version: 2), 4...5)
        h.add(.get, .value(writeID: 2, version: nil), 6...7)
        h.add(.refreshTTL, .ok(version: 2), 8...9)
        h.add(.delete, .deleted(true), 10...11)
        h.add(.get, .notFound, 12...13)
        h.add(.delete, .deleted(false), 14...15)
        h.add(.refreshTTL, .notFound, 16...17)
        h.add(.get, .value(writeID: nil, version: nil), 18...19)
        h.add(.putIfAbsent(writeID: 3), .ok(version: 3), 20...21)
        h.add(.putIfVersion(writeID: 4, expected: 3), .ok(version: 4), 22...23)
        h.add(.deleteIfVersion(expected: 4), .deleted(true), 24...25)
        #expect(checkLinearizable(h.ops) == .ok)

        var resurrected = h
        resurrected.add(.get, .value(writeID: 4, version: 4), 26...27)
        expectIllegal(checkLinearizable(resurrected.ops), on: "k")
    }

    @Test func overlappingWritesMayTakeEffectInEitherOrderButReadsCannotFlipFlop() {
        for (first, second) in [(1, 1), (2, 2), (1, 2), (2, 1)] as [(UInt64, UInt64)] {
            var h = History()
            h.add(.put(writeID: 1), .ok(version: nil), 0...10)
            h.add(.put(writeID: 2), .ok(version: nil), 1...9)
            h.add(.get, .value(writeID: first, version: nil), 5...12)
            h.add(.get, .value(writeID: second, version: nil), 13...14)
            #expect(checkLinearizable(h.ops) == .ok, "reads w\(first) then w\(second)")
        }
        // Once both writes have returned, the order between them is settled.
        var h = History()
        h.add(.put(writeID: 1), .ok(version: nil), 0...10)
        h.add(.put(writeID: 2), .ok(version: nil), 1...9)
        h.add(.get, .value(writeID: 2, version: nil), 11...12)
        h.add(.get, .value(writeID: 1, version: nil), 13...14)
        expectIllegal(checkLinearizable(h.ops), on: "k")
    }

    @Test func aStaleReadAfterACompletedWriteIsNotLinearizable() {
        var h = History()
        h.add(.put(writeID: 1), .ok(version: 1), 0...1, key: "a")
        h.add(.put(writeID: 2), .ok(version: 2), 2...3, key: "a")
        h.add(.put(writeID: 3), .ok(version: 3), 0...1, key: "b")
        h.add(.get, .value(writeID: 3, version: 3), 2...3, key: "b")
        h.add(.get, .value(writeID: 1, version: 1), 4...5, key: "a")
        // Only "a" is named: "b" on its own is fine.
        expectIllegal(checkLinearizable(h.ops), on: "a", containing: "replaced for good")
        #expect(checkLinearizable(h.ops.filter { $0.key == bytes("b") }) == .ok)
    }

    @Test func aReadOfAValueNeverWrittenIsIllegal() {
        var h = History()
        h.add(.put(writeID: 1), .ok(version: 1), 0...1)
        h.add(.get, .value(writeID: 9, version: nil), 2...3)
        expectIllegal(checkLinearizable(h.ops), on: "k", containing: "never written")
    }

    @Test func aReadFromTheFutureIsIllegal() {
        var h = History()
        h.add(.get, .value(writeID: 1, version: nil), 0...1)
        h.add(.put(writeID: 1), .ok(version: nil), 2...3)
        expectIllegal(checkLinearizable(h.ops), on: "k")

        // A read that returns just as the write is called counts as concurrent.
        var touching = History()
        touching.add(.get, .value(writeID: 1, version: nil), 0...5)
        touching.add(.put(writeID: 1), .ok(version: nil), 5...6)
        #expect(checkLinearizable(touching.ops) == .ok)
    }

    @Test func ifMatchFollowsTheVersionOfTheCurrentWrite() {
        var h = History()
        h.add(.put(writeID: 1), .ok(version: 10), 0...1)
        h.add(.putIfVersion(writeID: 2, expected: 10), .ok(version: 11), 2...3)
        h.add(.putIfVersion(writeID: 3, expected: 10), .preconditionFailed, 4...5)
        h.add(.get, .value(writeID: 2, version: 11), 6...7)
        h.add(.deleteIfVersion(expected: 10), .preconditionFailed, 8...9)
        h.add(.deleteIfVersion(expected: 11), .deleted(true), 10...11)
        h.add(.putIfVersion(writeID: 4, expected: 11), .preconditionFailed, 12...13)
        #expect(checkLinearizable(h.ops) == .ok)

        var supersededWins = History()
        supersededWins.add(.put(writeID: 1), .ok(version: 10), 0...1)
        supersededWins.add(.putIfVersion(writeID: 2, expected: 10), .ok(version: 11), 2...3)
        supersededWins.add(.putIfVersion(writeID: 3, expected: 10), .ok(version: 12), 4...5)
        expectIllegal(checkLinearizable(supersededWins.ops), on: "k")

        var currentRefused = History()
        currentRefused.add(.put(writeID: 1), .ok(version: 10), 0...1)
        currentRefused.add(.putIfVersion(writeID: 2, expected: 10), .preconditionFailed, 2...3)
        expectIllegal(checkLinearizable(currentRefused.ops), on: "k")

        // w1's version was never reported: 77 may be it, so no false alarm.
        var unseen = History()
        unseen.add(.put(writeID: 1), .ok(version: nil), 0...1)
        unseen.add(.putIfVersion(writeID: 2, expected: 77), .ok(version: nil), 2...3)
        #expect(checkLinearizable(unseen.ops) == .ok)

        // w1 is known to be v5, so v77 is not current.
        var otherVersion = History()
        otherVersion.add(.put(writeID: 1), .ok(version: 5), 0...1)
        otherVersion.add(.putIfVersion(writeID: 2, expected: 77), .ok(version: nil), 2...3)
        expectIllegal(checkLinearizable(otherVersion.ops), on: "k")

        // v77 belongs to a write of another key: versions are unique store-wide.
        var otherKeys = History()
        otherKeys.add(.put(writeID: 1), .ok(version: nil), 0...1)
        otherKeys.add(.put(writeID: 9), .ok(version: 77), 0...1, key: "other")
        otherKeys.add(.putIfVersion(writeID: 2, expected: 77), .ok(version: nil), 2...3)
        expectIllegal(checkLinearizable(otherKeys.ops), on: "k")
    }

    @Test func twoConcurrentIfMatchWritesOnOneVersionCannotBothWin() {
        var h = History()
        h.add(.put(writeID: 1), .ok(version: 10), 0...1)
        h.add(.putIfVersion(writeID: 2, expected: 10), .ok(version: nil), 2...6)
        h.add(.putIfVersion(writeID: 3, expected: 10), .ok(version: nil), 3...7)
        expectIllegal(checkLinearizable(h.ops), on: "k", containing: "both replace it")

        var oneWins = History()
        oneWins.add(.put(writeID: 1), .ok(version: 10), 0...1)
        oneWins.add(.putIfVersion(writeID: 2, expected: 10), .ok(version: nil), 2...6)
        oneWins.add(.putIfVersion(writeID: 3, expected: 10), .preconditionFailed, 3...7)
        oneWins.add(.get, .value(writeID: 2, version: nil), 8...9)
        #expect(checkLinearizable(oneWins.ops) == .ok)

        var readAfterReplaced = History()
        readAfterReplaced.add(.put(writeID: 1), .ok(version: 10), 0...1)
        readAfterReplaced.add(.putIfVersion(writeID: 2, expected: 10), .ok(version: nil), 2...6)
        readAfterReplaced.add(.get, .value(writeID: 1, version: 10), 8...9)
        expectIllegal(checkLinearizable(readAfterReplaced.ops), on: "k")
    }

    @Test func conditionalOperationsFindAnAbsentKeyAbsent() {
        var h = History()
        h.add(.putIfVersion(writeID: 2, expected: 1), .preconditionFailed, 2...3)
        h.add(.deleteIfVersion(expected: 1), .preconditionFailed, 4...5)
        h.add(.putIfAbsent(writeID: 3), .ok(version: 4), 6...7)
        h.add(.putIfAbsent(writeID: 4), .preconditionFailed, 8...9)
        h.add(.refreshTTL, .ok(version: 4), 10...11)
        #expect(checkLinearizable(h.ops) == .ok)

        var ifMatchOnNothing = History()
        ifMatchOnNothing.add(.putIfVersion(writeID: 2, expected: 1), .ok(version: nil), 2...3)
        expectIllegal(checkLinearizable(ifMatchOnNothing.ops), on: "k")

        var bothCreate = History()
        bothCreate.add(.putIfAbsent(writeID: 3), .ok(version: nil), 0...5)
        bothCreate.add(.putIfAbsent(writeID: 4), .ok(version: nil), 1...6)
        expectIllegal(checkLinearizable(bothCreate.ops), on: "k")
    }

    @Test func deleteOfAnAbsentKeyChangesNothing() {
        var h = History()
        h.add(.put(writeID: 1), .ok(version: 1), 0...1)
        h.add(.delete, .deleted(true), 2...3)
        h.add(.delete, .deleted(false), 4...5)
        h.add(.deleteIfVersion(expected: 1), .deleted(false), 6...7)
        h.add(.get, .notFound, 8...9)
        // Overlapping a put, a delete that found nothing went first.
        h.add(.put(writeID: 2), .ok(version: 2), 10...20)
        h.add(.delete, .deleted(false), 11...19)
        h.add(.get, .value(writeID: 2, version: 2), 21...22)
        #expect(checkLinearizable(h.ops) == .ok)

        var existedFromNowhere = History()
        existedFromNowhere.add(.delete, .deleted(true), 0...1)
        expectIllegal(checkLinearizable(existedFromNowhere.ops), on: "k")

        var missedAPresentKey = History()
        missedAPresentKey.add(.put(writeID: 1), .ok(version: 1), 0...1)
        missedAPresentKey.add(.delete, .deleted(false), 2...3)
        expectIllegal(checkLinearizable(missedAPresentKey.ops), on: "k")
    }

    @Test func aWriteKeepsOneVersionForLife() {
        var refreshed = History()
        refreshed.add(.put(writeID: 3), .ok(version: 4), 0...1)
        refreshed.add(.refreshTTL, .ok(version: 5), 2...3)
        expectIllegal(checkLinearizable(refreshed.ops), on: "k")

        var read = History()
        read.add(.put(writeID: 3), .ok(version: 4), 0...1)
        read.add(.get, .value(writeID: 3, version: 6), 2...3)
        expectIllegal(checkLinearizable(read.ops), on: "k", containing: "versions 4 and 6")

        // Versions are unique store-wide, across keys.
        var twoWritesOneVersion = History()
        twoWritesOneVersion.add(.put(writeID: 1), .ok(version: 4), 0...1, key: "a")
        twoWritesOneVersion.add(.put(writeID: 2), .ok(version: 4), 0...1, key: "b")
        expectIllegal(checkLinearizable(twoWritesOneVersion.ops), on: "b", containing: "reported for writes w1 and w2")
    }

    @Test func theHistoryStartsFromTheInitialState() {
        var h = History()
        h.add(.get, .value(writeID: 100, version: nil), 0...1)
        h.add(.putIfVersion(writeID: 5, expected: 3), .ok(version: 8), 2...3)
        #expect(checkLinearizable(h.ops, initial: [bytes("k"): KVState(value: 100, version: 3)]) == .ok)
        expectIllegal(checkLinearizable(h.ops), on: "k")
        expectIllegal(checkLinearizable(h.ops, initial: [bytes("k"): .absent]), on: "k")
    }

    /// An answer the operation cannot give, a write id used twice, a return before the call.
    @Test func aMalformedHistoryIsIllegal() {
        var notFoundPut = History()
        notFoundPut.add(.put(writeID: 1), .notFound, 0...1)
        expectIllegal(checkLinearizable(notFoundPut.ops), on: "k", containing: "cannot answer")

        var reusedWriteID = History()
        reusedWriteID.add(.put(writeID: 1), .ok(version: 1), 0...1)
        reusedWriteID.add(.put(writeID: 1), .ok(version: 1), 2...3)
        expectIllegal(checkLinearizable(reusedWriteID.ops), on: "k", containing: "reused")

        var returnedBeforeCall = History()
        returnedBeforeCall.ops.append(HistoryOperation(key: bytes("k"), input: .get, output: .notFound,
                                                       call: 5, returned: 4))
        expectIllegal(checkLinearizable(returnedBeforeCall.ops), on: "k", containing: "returned before its call")
    }

    // MARK: Unknown outcomes

    @Test func aWriteWithUnknownOutcomeMayTakeEffectLaterOrNever() {
        let cases: [(reads: [UInt64?], linearizable: Bool)] = [
            ([2], true), ([1], true), ([1, 2], true), ([1, 2, 2], true),
            ([2, 1], false),  // once seen, w2 replaced w1 for good
            ([nil], false),  // no op makes the key absent
        ]
        for (reads, linearizable) in cases {
            var h = History()
            h.add(.put(writeID: 1), .ok(version: nil), 0...1)
            h.addUnknown(.put(writeID: 2), calledAt: 2)
            var t: UInt64 = 10
            for r in reads {
                h.add(.get, .value(writeID: r, version: nil), t...t + 1)
                t += 2
            }
            let seen = "reads " + reads.map { $0.map { "w\($0)" } ?? "absent" }.joined(separator: ", ")
            if linearizable {
                #expect(checkLinearizable(h.ops) == .ok, "\(seen)")
            } else {
                expectIllegal(checkLinearizable(h.ops), on: "k", "\(seen)")
            }
        }

        // A delete that timed out takes effect after reads that came later
        // still saw the value; unknown reads and failed ops say nothing.
        var late = History()
        late.add(.put(writeID: 1), .ok(version: nil), 0...1)
        late.addUnknown(.delete, calledAt: 2)
        late.add(.get, .value(writeID: 1, version: nil), 3...4)
        late.add(.get, .notFound, 5...6)
        late.addUnknown(.get, calledAt: 7)
        late.add(.get, .failed, 7...8)
        late.add(.put(writeID: 7), .failed, 7...8)
        #expect(checkLinearizable(late.ops) == .ok)
        // ... but a failed write certainly did not apply.
        late.add(.get, .value(writeID: 7, version: nil), 9...10)
        expectIllegal(checkLinearizable(late.ops), on: "k")
    }

    @Test func anUnknownOutcomeStillObeysItsCallTimeAndCondition() {
        var seenBeforeCall = History()
        seenBeforeCall.add(.get, .value(writeID: 2, version: nil), 0...1)
        seenBeforeCall.addUnknown(.put(writeID: 2), calledAt: 2)
        expectIllegal(checkLinearizable(seenBeforeCall.ops), on: "k")

        var createOverPresent = History()
        createOverPresent.add(.put(writeID: 1), .ok(version: 1), 0...1)
        createOverPresent.addUnknown(.putIfAbsent(writeID: 3), calledAt: 3)
        createOverPresent.add(.get, .value(writeID: 3, version: nil), 10...11)
        expectIllegal(checkLinearizable(createOverPresent.ops), on: "k")

        var ifMatchAfterReplaced = History()
        ifMatchAfterReplaced.add(.put(writeID: 1), .ok(version: 10), 0...1)
        ifMatchAfterReplaced.addUnknown(.putIfVersion(writeID: 2, expected: 10), calledAt: 2)
        ifMatchAfterReplaced.add(.putIfVersion(writeID: 3, expected: 10), .ok(version: 12), 3...4)
        ifMatchAfterReplaced.add(.get, .value(writeID: 2, version: nil), 5...6)
        expectIllegal(checkLinearizable(ifMatchAfterReplaced.ops), on: "k")
    }

    @Test func unknownOutcomesCanEnableOneAnother() {
        // The delete makes room for the put-if-absent that the read sees.
        var chain = History()
        chain.add(.put(writeID: 1), .ok(version: 1), 0...1)
        chain.addUnknown(.delete, calledAt: 2)
        chain.addUnknown(.putIfAbsent(writeID: 3), calledAt: 3)
        chain.add(.get, .value(writeID: 3, version: nil), 10...11)
        #expect(checkLinearizable(chain.ops) == .ok)
        #expect(checkRecovered(history: chain.ops, recovered: [bytes("k"): 3], policy: .always) == .ok)
        expectIllegal(checkRecovered(history: chain.ops, recovered: [bytes("k"): nil], policy: .always), on: "k")

        // An unknown put lets a later delete find the key.
        var enablesDelete = History()
        enablesDelete.add(.delete, .deleted(true), 5...6)
        enablesDelete.addUnknown(.put(writeID: 2), calledAt: 2)
        #expect(checkLinearizable(enablesDelete.ops) == .ok)

        // Two unknown puts nothing reads still count, once each.
        var anonymous = History()
        anonymous.add(.delete, .deleted(false), 0...1)
        anonymous.addUnknown(.put(writeID: 5), calledAt: 2)
        anonymous.addUnknown(.put(writeID: 6), calledAt: 2)
        anonymous.add(.delete, .deleted(true), 10...11)
        anonymous.add(.delete, .deleted(true), 12...13)
        #expect(checkLinearizable(anonymous.ops) == .ok)
        anonymous.add(.delete, .deleted(true), 14...15)
        expectIllegal(checkLinearizable(anonymous.ops), on: "k")
    }

    // MARK: Recovered states

    @Test func anAcknowledgedWriteMissingAfterACrashFailsTheAlwaysCheck() {
        var h = History()
        h.add(.put(writeID: 1), .ok(version: 1), 0...1)
        h.add(.put(writeID: 2), .ok(version: 2), 2...3)
        #expect(checkRecovered(history: h.ops, recovered: [bytes("k"): 2], policy: .always) == .ok)
        expectIllegal(checkRecovered(history: h.ops, recovered: [bytes("k"): 1], policy: .always),
                      on: "k", containing: "recovered state w1")
        expectIllegal(checkRecovered(history: h.ops, recovered: [:], policy: .always), on: "k")
        expectIllegal(checkRecovered(history: h.ops, recovered: [bytes("k"): 5], policy: .always), on: "k")

        // A write cut by the crash may have survived or not; nothing older may.
        h.addUnknown(.put(writeID: 3), calledAt: 4)
        #expect(checkRecovered(history: h.ops, recovered: [bytes("k"): 3], policy: .always) == .ok)
        #expect(checkRecovered(history: h.ops, recovered: [bytes("k"): 2], policy: .always) == .ok)
        expectIllegal(checkRecovered(history: h.ops, recovered: [bytes("k"): 1], policy: .always), on: "k")
        expectIllegal(checkRecovered(history: h.ops, recovered: [:], policy: .always), on: "k")
        h.addUnknown(.delete, calledAt: 4)
        #expect(checkRecovered(history: h.ops, recovered: [bytes("k"): nil], policy: .always) == .ok)
    }

    @Test func aKeyThatAppearsFromNowhereAfterACrashIsIllegal() {
        var h = History()
        h.add(.put(writeID: 2), .ok(version: 2), 0...1)
        expectIllegal(checkRecovered(history: h.ops, recovered: [bytes("k"): 2, bytes("x"): 9], policy: .always),
                      on: "x")
        expectIllegal(checkRecovered(history: h.ops, recovered: [bytes("k"): 2, bytes("x"): 9], policy: .prefix),
                      on: "x")
        // Unless it was there all along.
        #expect(checkRecovered(history: h.ops, recovered: [bytes("k"): 2, bytes("x"): 9], policy: .always,
                               initial: [bytes("x"): KVState(value: 9)]) == .ok)
        // ... and then losing it is a loss like any other.
        expectIllegal(checkRecovered(history: h.ops, recovered: [bytes("k"): 2], policy: .always,
                                     initial: [bytes("x"): KVState(value: 9)]), on: "x")
    }

    @Test func anOlderValueAfterACrashPassesThePrefixCheckButNotAWriteAckedBeforeASync() {
        var h = History()
        h.add(.put(writeID: 1), .ok(version: 1), 0...1)
        h.add(.put(writeID: 2), .ok(version: 2), 2...3)
        h.add(.put(writeID: 3), .ok(version: 3), 4...5)
        h.addUnknown(.put(writeID: 4), calledAt: 6)
        // (recovered, passes .prefix, passes .prefix(mustInclude: [w2]))
        let cases: [(UInt64?, Bool, Bool)] = [
            (nil, true, false), (1, true, false), (2, true, true), (3, true, true), (4, true, true),
            (9, false, false),  // never written
        ]
        for (recovered, prefix, synced) in cases {
            let state: [[UInt8]: UInt64?] = [bytes("k"): recovered]
            let plain = checkRecovered(history: h.ops, recovered: state, policy: .prefix)
            let afterSync = checkRecovered(history: h.ops, recovered: state, policy: .prefix(mustInclude: [2]))
            let name = recovered.map { "w\($0)" } ?? "absent"
            if prefix {
                #expect(plain == .ok, "recovered \(name)")
            } else {
                expectIllegal(plain, on: "k", "recovered \(name)")
            }
            if synced {
                #expect(afterSync == .ok, "recovered \(name), w2 synced")
            } else {
                expectIllegal(afterSync, on: "k", "recovered \(name), w2 synced")
            }
        }
        // Under .always only the last acknowledged write or the unknown one will do.
        #expect(checkRecovered(history: h.ops, recovered: [bytes("k"): 3], policy: .always) == .ok)
        expectIllegal(checkRecovered(history: h.ops, recovered: [bytes("k"): 2], policy: .always), on: "k")
    }

    @Test func thePrefixCheckStillRequiresALinearizableHistoryAndAConsistentCut() {
        var stale = History()
        stale.add(.put(writeID: 1), .ok(version: 1), 0...1)
        stale.add(.put(writeID: 2), .ok(version: 2), 2...3)
        stale.add(.get, .value(writeID: 1, version: nil), 4...5)
        expectIllegal(checkRecovered(history: stale.ops, recovered: [bytes("k"): 1], policy: .prefix),
                      on: "k", containing: "not linearizable")

        // The read orders w2 before w1: a prefix may end at w2, but a
        // store that acknowledged everything durably must end at w1.
        var overlapping = History()
        overlapping.add(.put(writeID: 1), .ok(version: nil), 0...10)
        overlapping.add(.put(writeID: 2), .ok(version: nil), 0...10)
        overlapping.add(.get, .value(writeID: 1, version: nil), 11...12)
        #expect(checkRecovered(history: overlapping.ops, recovered: [bytes("k"): 2], policy: .prefix) == .ok)
        #expect(checkRecovered(history: overlapping.ops, recovered: [bytes("k"): 1], policy: .always) == .ok)
        expectIllegal(checkRecovered(history: overlapping.ops, recovered: [bytes("k"): 2], policy: .always), on: "k")
    }

    // MARK: Recorder

    @Test func theRecorderMarksWhatWasInFlightAtACrashAsUnknown() {
        let recorder = HistoryRecorder()
        let first = recorder.call(key: bytes("k"), op: .put(writeID: 1))
        recorder.finish(first, .ok(version: 1))
        let cut = recorder.call(key: bytes("k"), op: .put(writeID: 2))
        _ = recorder.call(key: bytes("k"), op: .get)
        recorder.crashAll()
        recorder.finish(cut, .ok(version: 2))  // an answer from a store already counted as gone

        let ops = recorder.operations
        #expect(ops.map(\.output) == [.ok(version: 1), .unknown, .unknown])
        #expect(ops.map { $0.returned != nil } == [true, false, false])
        #expect(ops[0].call <= ops[0].returned ?? 0)
        #expect(checkLinearizable(ops) == .ok)
        #expect(checkRecovered(history: ops, recovered: [bytes("k"): 1], policy: .always) == .ok)
        #expect(checkRecovered(history: ops, recovered: [bytes("k"): 2], policy: .always) == .ok)
        expectIllegal(checkRecovered(history: ops, recovered: [:], policy: .always), on: "k")
    }

    // MARK: Randomized

    /// Histories of a reference store, run one op at a time and then widened
    /// into overlapping intervals around each op's instant, are linearizable
    /// by construction; making one read stale must be caught. Seeded: a
    /// failure names its seed, which replays exactly.
    @Test func randomHistoriesWidenedIntoOverlapsPassAndOneStaleReadFails() {
        var injected = 0, unknowns = 0
        for seed in 0..<UInt64(300) {
            var rng = SplitMix(seed: seed)
            let history = randomHistory(&rng)
            unknowns += history.filter { $0.output == .unknown }.count
            let result = checkLinearizable(history)
            #expect(result == .ok, "seed \(seed)")
            guard result == .ok, let (stale, key) = injectStaleRead(history, &rng) else { continue }
            injected += 1
            let bad = checkLinearizable(stale)
            expectIllegal(bad, on: String(decoding: key, as: UTF8.self), "seed \(seed), stale read")
        }
        // The generator must exercise what it claims to.
        #expect(injected >= 200)
        #expect(unknowns >= 500)
    }
}

// MARK: - Helpers

/// A history built by hand: each op at explicit times.
private struct History {
    var ops: [HistoryOperation] = []

    /// An op called at `interval`'s start that returned at its end.
    mutating func add(_ input: KVOp, _ output: KVOutput, _ interval: ClosedRange<UInt64>, key: String = "k") {
        ops.append(HistoryOperation(key: bytes(key), input: input, output: output,
                                    call: interval.lowerBound, returned: interval.upperBound))
    }

    /// An op called at `call` whose outcome is unknown (timeout, lost connection, crash).
    mutating func addUnknown(_ input: KVOp, calledAt call: UInt64, key: String = "k") {
        ops.append(HistoryOperation(key: bytes(key), input: input, output: .unknown, call: call, returned: nil))
    }
}

/// Expects `result` to reject the history on `key` (and its explanation to
/// mention `containing`); a failure prints the whole result.
private func expectIllegal(_ result: CheckResult, on key: String, containing: String? = nil, _ context: String = "",
                           sourceLocation: SourceLocation = #_sourceLocation) {
    let prefix = context.isEmpty ? "" : context + ": "
    guard case let .illegal(badKey, explanation) = result else {
        Issue.record("\(prefix)expected illegal on \"\(key)\", got \(result)", sourceLocation: sourceLocation)
        return
    }
    #expect(badKey == bytes(key), "\(prefix)\(result)", sourceLocation: sourceLocation)
    if let containing {
        #expect(explanation.contains(containing), "\(prefix)\(result)", sourceLocation: sourceLocation)
    }
}

/// A random sequential history of a reference store on 1-3 keys (1-200
/// ops), op i taking effect at instant 1000 + 100·i, then widened: each call
/// moved up to `widen` (< 1000) earlier and each return up to `widen` later,
/// so ops overlap up to 8 neighbours but every instant stays inside its
/// interval. Some ops end `.unknown` (a write applied or not), some
/// `.failed` (not applied), and some answers leave the version out.
private func randomHistory(_ rng: inout SplitMix) -> [HistoryOperation] {
    let keys = Int.random(in: 1...3, using: &rng)
    let count = Int.random(in: 1...200, using: &rng)
    let widen = [0, 50, 150, 400].randomElement(using: &rng)! as UInt64
    let unknownPercent = [0, 3, 10].randomElement(using: &rng)!
    var state: [Int: (write: UInt64, version: UInt64)] = [:]
    var seq: UInt64 = 0
    var ops: [HistoryOperation] = []
    for i in 0..<count {
        let k = Int.random(in: 0..<keys, using: &rng)
        let current = state[k]
        let w = UInt64(i + 1)
        // If-Match names the current version half the time, else any version so far (or the next).
        let expected: UInt64
        if let current, Bool.random(using: &rng) {
            expected = current.version
        } else {
            expected = .random(in: 1...seq + 1, using: &rng)
        }
        func reported(_ v: UInt64) -> UInt64? { Int.random(in: 0..<4, using: &rng) == 0 ? nil : v }
        func write(_ w: UInt64) -> (UInt64, UInt64) { seq += 1; return (w, seq) }
        let roll = Int.random(in: 0..<100, using: &rng)
        let input: KVOp
        var output: KVOutput
        var next = current
        switch roll {
        case 0..<35:
            input = .put(writeID: w)
            next = write(w)
            output = .ok(version: reported(seq))
        case 35..<60:
            input = .get
            output = current.map { .value(writeID: $0.write, version: reported($0.version)) } ?? .notFound
        case 60..<68:
            input = .delete
            output = .deleted(current != nil)
            next = nil
        case 68..<80:
            input = .putIfVersion(writeID: w, expected: expected)
            if current?.version == expected {
                next = write(w)
                output = .ok(version: reported(seq))
            } else {
                output = current == nil && Bool.random(using: &rng) ? .notFound : .preconditionFailed
            }
        case 80..<86:
            input = .putIfAbsent(writeID: w)
            if current == nil {
                next = write(w)
                output = .ok(version: reported(seq))
            } else {
                output = .preconditionFailed
            }
        case 86..<92:
            input = .deleteIfVersion(expected: expected)
            if current?.version == expected {
                next = nil
                output = .deleted(true)
            } else {
                output = current == nil ? .deleted(false) : .preconditionFailed
            }
        default:
            input = .refreshTTL
            output = current.map { .ok(version: reported($0.version)) } ?? .notFound
        }
        let fate = Int.random(in: 0..<100, using: &rng)
        if fate < unknownPercent {
            output = .unknown
            if Bool.random(using: &rng) { next = current }  // cut before it applied
        } else if fate < unknownPercent + 2 {
            output = .failed  // refused: not applied (a version it took is simply never seen)
            next = current
        }
        state[k] = next
        let instant = 1000 + 100 * UInt64(i)
        let call = instant - UInt64.random(in: 0...widen, using: &rng)
        let returned = output == .unknown ? nil : instant + UInt64.random(in: 0...widen, using: &rng)
        ops.append(HistoryOperation(key: bytes("key\(k)"), input: input, output: output, call: call, returned: returned))
    }
    return ops
}

/// Makes one read stale, if some read R has, on its key, an acknowledged
/// change C that returned before R was called, and an acknowledged write P
/// that returned before C was called: R answering P's write is then
/// impossible, as C replaced it and write ids never come back.
private func injectStaleRead(_ history: [HistoryOperation], _ rng: inout SplitMix)
    -> (ops: [HistoryOperation], key: [UInt8])? {
    func acknowledgedWrite(_ o: HistoryOperation) -> UInt64? {
        guard case .ok = o.output else { return nil }
        return o.input.writeID
    }
    func acknowledgedChange(_ o: HistoryOperation) -> Bool {
        acknowledgedWrite(o) != nil || o.output == .deleted(true)
    }
    let reads = history.indices.filter {
        guard history[$0].input == .get else { return false }
        switch history[$0].output {
        case .value, .notFound: return true
        default: return false
        }
    }
    for r in reads.shuffled(using: &rng) {
        let read = history[r]
        let sameKey = history.filter { $0.key == read.key }
        guard let change = sameKey.filter({ acknowledgedChange($0) && ($0.returned ?? .max) < read.call })
            .max(by: { $0.call < $1.call }),
            let old = sameKey.filter({ $0.returned.map { $0 < change.call } ?? false })
                .compactMap(acknowledgedWrite).randomElement(using: &rng)
        else { continue }
        var ops = history
        ops[r].output = .value(writeID: old, version: nil)
        return (ops, read.key)
    }
    return nil
}
