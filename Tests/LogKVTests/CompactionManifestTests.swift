import Testing
@testable import LogKV

/// The `COMPACTION` file has one encoding (`CompactionManifest`): what a
/// compaction writes, recovery reads back the same.
@Suite struct CompactionManifestTests {
    @Test func aManifestReadsBackAsWritten() {
        let manifest = CompactionManifest(compactionID: 9_007_199_254_740_993, inputs: [3, 4, 7], outputs: [12, 13])
        #expect(CompactionManifest(decoding: manifest.encoded) == manifest)
        let unnamed = CompactionManifest(compactionID: 5, inputs: [3], outputs: [])
        #expect(CompactionManifest(decoding: unnamed.encoded) == unnamed)
    }

    @Test func aManifestFromBeforeCompactionsHadIdsReadsWithoutOne() {
        let old = CompactionManifest(decoding: Array("old 1 2\nnew 5\n".utf8))
        #expect(old == CompactionManifest(compactionID: nil, inputs: [1, 2], outputs: [5]))
    }

    @Test func theFileFormatIsTheDocumentedOne() {
        let manifest = CompactionManifest(compactionID: 42, inputs: [1, 2], outputs: [9])
        #expect(String(decoding: manifest.encoded, as: UTF8.self) == "id 42\nold 1 2\nnew 9\n")
    }
}
