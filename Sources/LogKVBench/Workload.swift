import Foundation

/// Deterministic keys and values, the same for ours and the baseline.
struct Workload {
    struct Rng: RandomNumberGenerator {
        var state: UInt64
        mutating func next() -> UInt64 {
            state &+= 0x9E37_79B9_7F4A_7C15
            var z = state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
    }

    /// Key i: 24 bytes, spread uniformly over the key space (random order).
    static func key(_ i: Int) -> [UInt8] {
        var rng = Rng(state: UInt64(i) &* 0x2545_F491_4F6C_DD1D)
        return Array(String(format: "key-%016llx-%03d", rng.next(), i % 1000).utf8.prefix(24))
    }

    static func value(_ i: Int, size: Int) -> [UInt8] {
        var rng = Rng(state: UInt64(i) ^ 0xABCD)
        var out = [UInt8](repeating: 0, count: size)
        var j = 0
        while j < size {
            var x = rng.next()
            for _ in 0..<8 where j < size {
                out[j] = UInt8(truncatingIfNeeded: x)
                x >>= 8
                j += 1
            }
        }
        return out
    }
}

func seconds(_ body: () throws -> Void) rethrows -> Double {
    let start = DispatchTime.now()
    try body()
    return Double(DispatchTime.now().uptimeNanoseconds - start.uptimeNanoseconds) / 1e9
}

func tempPath(_ name: String) -> String {
    let path = NSTemporaryDirectory() + "logkv-bench-\(name)-\(getpid())"
    try? FileManager.default.removeItem(atPath: path)
    return path
}

/// Resident and peak memory of this process, bytes.
func residentMemory() -> (rss: Int, peak: Int) {
    guard let text = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8) else { return (0, 0) }
    func field(_ name: String) -> Int {
        for line in text.split(separator: "\n") where line.hasPrefix(name) {
            let digits = line.split(separator: " ").compactMap { Int($0) }.first ?? 0
            return digits * 1024
        }
        return 0
    }
    return (field("VmRSS:"), field("VmHWM:"))
}

func directorySize(_ path: String) -> Int64 {
    guard let walker = FileManager.default.enumerator(atPath: path) else { return 0 }
    var total: Int64 = 0
    while let name = walker.nextObject() as? String {
        let attrs = try? FileManager.default.attributesOfItem(atPath: path + "/" + name)
        total += (attrs?[.size] as? NSNumber)?.int64Value ?? 0
    }
    return total
}
