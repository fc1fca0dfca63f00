// A writer for the crash tests: opens a store with fsync=always and writes
// forever, printing one line per acknowledged write. The test kills it with
// SIGKILL at a random moment and checks every acknowledged write survived.
//
// usage: LogKVCrashWriter DIR SEED
// output: "put KEY N" or "del KEY N" after each acknowledged write, where the
// value written for put is "KEY=N".
import Foundation
import LogKV

struct Random {
    var state: UInt64
    mutating func next() -> UInt64 {
        state = state &* 6364136223846793005 &+ 1442695040888963407
        return state >> 33
    }
}

func say(_ line: String) {
    FileHandle.standardOutput.write((line + "\n").data(using: .utf8)!)
}

let args = CommandLine.arguments
guard args.count >= 3, let seed = UInt64(args[2]) else {
    FileHandle.standardError.write("usage: LogKVCrashWriter DIR SEED [compact-crash STEP]\n".data(using: .utf8)!)
    exit(2)
}
if args.count >= 5 && args[3] == "compact-crash" {
    compactAndCrash(dir: args[1], seed: seed, step: args[4])
}
var options = LogKVOptions()
options.fsync = .always
options.segmentSize = 64 * 1024  // rotate often, so crashes land mid-rotation too
options.maxPendingEntries = 2000
let store: LogKV
do {
    store = try LogKV(path: args[1], options: options)
} catch {
    FileHandle.standardError.write("open failed: \(error)\n".data(using: .utf8)!)
    exit(1)
}
var rng = Random(state: seed)
var counter = 0
say("ready")
while true {
    counter += 1
    let key = "key\(rng.next() % 200)"
    do {
        if rng.next() % 10 == 0 {
            say("try del \(key) \(counter)")
            if try store.delete(Array(key.utf8)) { say("del \(key) \(counter)") }
        } else {
            let padding = String(repeating: "x", count: Int(rng.next() % 300))
            say("try put \(key) \(counter)")
            try store.put(Array(key.utf8), Array("\(key)=\(counter)\(padding)".utf8))
            say("put \(key) \(counter)")
        }
    } catch {
        FileHandle.standardError.write("write failed: \(error)\n".data(using: .utf8)!)
        exit(1)
    }
}

/// Writes a known data set with lots of garbage, records the expected live
/// state in DIR.expected, then compacts and SIGKILLs itself at `step`.
func compactAndCrash(dir: String, seed: UInt64, step: String) -> Never {
    var options = LogKVOptions()
    options.fsync = .always
    options.segmentSize = 16 * 1024
    options.autoCompaction = false
    options.compactionBytesPerSecond = 0
    options.compactionFailpoint = { reached in
        if reached == step { kill(getpid(), SIGKILL) }
    }
    do {
        let store = try LogKV(path: dir, options: options)
        var rng = Random(state: seed)
        var expected: [String: String] = [:]
        for i in 0..<3000 {
            let key = "key\(rng.next() % 150)"
            if rng.next() % 7 == 0 {
                if try store.delete(Array(key.utf8)) { expected[key] = nil }
            } else {
                let value = "\(key)=\(i)" + String(repeating: "v", count: Int(rng.next() % 200))
                try store.put(Array(key.utf8), Array(value.utf8))
                expected[key] = value
            }
        }
        try store.flushIndex()
        let text = expected.map { "\($0.key)\t\($0.value)" }.sorted().joined(separator: "\n")
        try text.write(toFile: dir + ".expected", atomically: true, encoding: .utf8)
        try store.compact()
        try store.close()
        exit(0)
    } catch {
        FileHandle.standardError.write("compact-crash failed: \(error)\n".data(using: .utf8)!)
        exit(1)
    }
}
