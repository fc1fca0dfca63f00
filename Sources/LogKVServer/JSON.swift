import Foundation

/// A minimal JSON writer for responses on the hot path: the shapes are
/// fixed, and building them by hand is several times faster than
/// JSONSerialization. Strings are escaped per RFC 8259.
struct JSONWriter {
    private(set) var bytes: [UInt8] = []
    private var needsComma = false

    init() { bytes.reserveCapacity(256) }

    mutating func beginObject() { separate(); bytes.append(UInt8(ascii: "{")); needsComma = false }
    mutating func endObject() { bytes.append(UInt8(ascii: "}")); needsComma = true }
    mutating func beginArray(_ key: String) { self.key(key); bytes.append(UInt8(ascii: "[")); needsComma = false }
    mutating func endArray() { bytes.append(UInt8(ascii: "]")); needsComma = true }

    mutating func key(_ name: String) {
        separate()
        appendString(name.utf8)
        bytes.append(UInt8(ascii: ":"))
        needsComma = false
    }

    mutating func field(_ name: String, _ value: String) { key(name); appendString(value.utf8); needsComma = true }
    mutating func field(_ name: String, _ value: Bool) { key(name); bytes.append(contentsOf: (value ? "true" : "false").utf8); needsComma = true }
    mutating func field<I: BinaryInteger>(_ name: String, _ value: I) { key(name); bytes.append(contentsOf: String(value).utf8); needsComma = true }
    mutating func fieldNull(_ name: String) { key(name); bytes.append(contentsOf: "null".utf8); needsComma = true }

    /// A value: as text when it is UTF-8, else base64 with `"encoding": "base64"`.
    mutating func valueField(_ value: [UInt8]) {
        if value.isValidUTF8 {
            field("value", utf8: value)
        } else {
            field("value", Data(value).base64EncodedString())
            field("encoding", "base64")
        }
    }

    /// A string element of an array.
    mutating func element(_ value: String) { separate(); appendString(value.utf8); needsComma = true }

    /// A field whose value is text already known to be valid UTF-8.
    mutating func field(_ name: String, utf8 value: [UInt8]) { key(name); appendString(value); needsComma = true }

    private mutating func separate() {
        if needsComma { bytes.append(UInt8(ascii: ",")) }
    }

    /// Writes `"name":"`, the opening of a string field whose content the
    /// caller writes (escaped by `appendEscaped`) elsewhere — a value
    /// streamed in pieces; `closeStringField` ends it.
    mutating func openStringField(_ name: String) { key(name); bytes.append(UInt8(ascii: "\"")) }
    mutating func closeStringField() { bytes.append(UInt8(ascii: "\"")); needsComma = true }

    private static let hex: [UInt8] = Array("0123456789abcdef".utf8)

    private mutating func appendString<S: Sequence>(_ utf8: S) where S.Element == UInt8 {
        bytes.append(UInt8(ascii: "\""))
        for b in utf8 { Self.appendEscaped(b, to: &bytes) }
        bytes.append(UInt8(ascii: "\""))
    }

    /// One byte of UTF-8 text inside a JSON string, escaped per RFC 8259
    /// (bytes of multi-byte characters pass as they are, so text may be
    /// escaped in pieces cut anywhere).
    @inline(__always)
    static func appendEscaped(_ b: UInt8, to out: inout [UInt8]) {
        switch b {
        case UInt8(ascii: "\""): out.append(contentsOf: [92, 34])
        case UInt8(ascii: "\\"): out.append(contentsOf: [92, 92])
        case 0x0A: out.append(contentsOf: [92, UInt8(ascii: "n")])
        case 0x0D: out.append(contentsOf: [92, UInt8(ascii: "r")])
        case 0x09: out.append(contentsOf: [92, UInt8(ascii: "t")])
        case 0..<0x20:
            out.append(contentsOf: [92, UInt8(ascii: "u"), UInt8(ascii: "0"), UInt8(ascii: "0"), hex[Int(b >> 4)], hex[Int(b & 0xF)]])
        default: out.append(b)
        }
    }

    /// How many bytes `appendEscaped` writes for `b`.
    @inline(__always)
    static func escapedCount(_ b: UInt8) -> Int {
        switch b {
        case UInt8(ascii: "\""), UInt8(ascii: "\\"), 0x0A, 0x0D, 0x09: return 2
        case 0..<0x20: return 6
        default: return 1
        }
    }
}

/// UTF-8 validity of bytes that arrive in pieces cut anywhere (RFC 3629:
/// no overlong forms, no surrogates, nothing above U+10FFFF).
struct UTF8Validator {
    private(set) var isValid = true
    /// Continuation bytes still expected, and the range the next one must
    /// fall in (narrower right after some lead bytes).
    private var pending = 0
    private var low: UInt8 = 0x80
    private var high: UInt8 = 0xBF

    mutating func feed(_ b: UInt8) {
        guard isValid else { return }
        if pending > 0 {
            guard b >= low && b <= high else { isValid = false; return }
            pending -= 1
            low = 0x80
            high = 0xBF
            return
        }
        switch b {
        case 0x00...0x7F: return
        case 0xC2...0xDF: pending = 1
        case 0xE0: pending = 2; low = 0xA0
        case 0xE1...0xEC, 0xEE...0xEF: pending = 2
        case 0xED: pending = 2; high = 0x9F
        case 0xF0: pending = 3; low = 0x90
        case 0xF1...0xF3: pending = 3
        case 0xF4: pending = 3; high = 0x8F
        default: isValid = false
        }
    }

    /// Valid once every piece is in.
    var isCompleteAndValid: Bool { isValid && pending == 0 }
}

extension Array where Element == UInt8 {
    /// True when the bytes are valid UTF-8 (so they can travel as a JSON string).
    var isValidUTF8: Bool {
        var iterator = makeIterator()
        var decoder = UTF8()
        while true {
            switch decoder.decode(&iterator) {
            case .scalarValue: continue
            case .emptyInput: return true
            case .error: return false
            }
        }
    }
}

/// RFC 3339 time in UTC with milliseconds, as Go's encoding/json writes
/// time.Time (which the logkv-store clients parse).
func rfc3339(millis: Int64) -> String {
    var seconds = time_t(millis / 1000)
    var parts = tm()
    gmtime_r(&seconds, &parts)
    // Digits written by hand: Foundation's String(format:) costs more than
    // the rest of a small GET answer.
    var out = [UInt8]()
    out.reserveCapacity(24)
    func digits(_ value: Int, _ width: Int) {
        var divisor = 1
        for _ in 1..<width { divisor *= 10 }
        var rest = value
        while divisor > 0 {
            out.append(UInt8(ascii: "0") + UInt8(rest / divisor % 10))
            rest %= divisor
            divisor /= 10
        }
    }
    let year = Int(parts.tm_year) + 1900
    digits(year, max(4, String(year).count)); out.append(UInt8(ascii: "-"))
    digits(Int(parts.tm_mon) + 1, 2); out.append(UInt8(ascii: "-"))
    digits(Int(parts.tm_mday), 2); out.append(UInt8(ascii: "T"))
    digits(Int(parts.tm_hour), 2); out.append(UInt8(ascii: ":"))
    digits(Int(parts.tm_min), 2); out.append(UInt8(ascii: ":"))
    digits(Int(parts.tm_sec), 2); out.append(UInt8(ascii: "."))
    digits(Int(millis % 1000), 3); out.append(UInt8(ascii: "Z"))
    return String(decoding: out, as: UTF8.self)
}
