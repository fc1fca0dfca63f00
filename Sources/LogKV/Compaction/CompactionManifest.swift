/// The `COMPACTION` file: which compaction is swapping which segments.
///
/// Written durably before a compaction's first output exists, rewritten as
/// each output is named (before it is created, so a crash never leaves a
/// file nobody knows about), and removed once the inputs are gone. An open
/// that finds it settles the compaction (`Recovery.settleCompaction`); its
/// one encoding is here:
///
///     id <compaction id>      matched against the index's
///                             `compaction_committed` (absent in files
///                             from before compactions had ids)
///     old <id> <id> ...       the inputs
///     new <id> <id> ...       the outputs named so far
struct CompactionManifest: Equatable, Sendable {
    var compactionID: UInt64?
    var inputs: [UInt64]
    var outputs: [UInt64]

    var encoded: [UInt8] {
        var text = ""
        if let compactionID { text += "id \(compactionID)\n" }
        text += "old " + inputs.map(String.init).joined(separator: " ") + "\n"
        text += "new " + outputs.map(String.init).joined(separator: " ") + "\n"
        return Array(text.utf8)
    }

    init(compactionID: UInt64?, inputs: [UInt64], outputs: [UInt64]) {
        self.compactionID = compactionID
        self.inputs = inputs
        self.outputs = outputs
    }

    /// Reads a manifest; a missing line reads as empty (a torn rewrite
    /// cannot happen: it is replaced by rename).
    init(decoding bytes: [UInt8]) {
        let lines = String(decoding: bytes, as: UTF8.self).split(separator: "\n")
        func ids(_ tag: String) -> [UInt64] {
            lines.first { $0.hasPrefix(tag + " ") || $0 == Substring(tag) }?
                .split(separator: " ").dropFirst().compactMap { UInt64($0) } ?? []
        }
        self.init(compactionID: ids("id").first, inputs: ids("old"), outputs: ids("new"))
    }
}
