/// A one-pass reader for the write body as clients send it: one flat JSON
/// object whose members are the strings `key`, `value`, `encoding`, `op`
/// and the integer `ttl`. Foundation's `JSONDecoder` builds a tree of the
/// whole document first; for this shape that was a large part of a PUT.
///
/// It reads a strict subset of what `JSONDecoder` reads, to the same
/// result: anything else (another member, nesting, `null`, a number that is
/// not a plain integer, a duplicate member, a lone surrogate, invalid
/// UTF-8, control characters in a string) makes it give up (nil), and the
/// body goes to `JSONDecoder`, whose answer or error stands. A differential
/// test holds the two to the same results.
enum WriteBodyReader {
    static func read(_ bytes: UnsafeRawBufferPointer) -> WriteBody? {
        var reader = Cursor(bytes: bytes)
        return reader.object()
    }

    private struct Cursor {
        let bytes: UnsafeRawBufferPointer
        var at = 0

        mutating func skipSpace() {
            while at < bytes.count, bytes[at] == 0x20 || bytes[at] == 0x0A || bytes[at] == 0x0D || bytes[at] == 0x09 {
                at += 1
            }
        }

        mutating func take(_ byte: UInt8) -> Bool {
            guard at < bytes.count, bytes[at] == byte else { return false }
            at += 1
            return true
        }

        mutating func object() -> WriteBody? {
            var body = WriteBody()
            var seen = Set<String>()
            skipSpace()
            guard take(UInt8(ascii: "{")) else { return nil }
            skipSpace()
            if !take(UInt8(ascii: "}")) {
                repeat {
                    skipSpace()
                    guard let name = string(), seen.insert(name).inserted else { return nil }
                    skipSpace()
                    guard take(UInt8(ascii: ":")) else { return nil }
                    skipSpace()
                    switch name {
                    case "key": guard let v = string() else { return nil }; body.key = v
                    case "value": guard let v = string() else { return nil }; body.value = v
                    case "encoding": guard let v = string() else { return nil }; body.encoding = v
                    case "op": guard let v = string() else { return nil }; body.op = v
                    case "ttl": guard let v = integer() else { return nil }; body.ttl = v
                    default: return nil
                    }
                    skipSpace()
                } while take(UInt8(ascii: ","))
                guard take(UInt8(ascii: "}")) else { return nil }
            }
            skipSpace()
            return at == bytes.count ? body : nil
        }

        /// `-?(0|[1-9][0-9]*)` that fits an Int64, not followed by a
        /// fraction or an exponent.
        mutating func integer() -> Int64? {
            let negative = take(UInt8(ascii: "-"))
            let start = at
            var magnitude: UInt64 = 0
            while at < bytes.count, bytes[at] >= 0x30, bytes[at] <= 0x39 {
                let (times10, o1) = magnitude.multipliedReportingOverflow(by: 10)
                let (sum, o2) = times10.addingReportingOverflow(UInt64(bytes[at] - 0x30))
                guard !o1, !o2 else { return nil }
                magnitude = sum
                at += 1
            }
            let digits = at - start
            guard digits > 0, !(digits > 1 && bytes[start] == 0x30) else { return nil }
            if at < bytes.count, bytes[at] == UInt8(ascii: ".") || bytes[at] == UInt8(ascii: "e") || bytes[at] == UInt8(ascii: "E") {
                return nil
            }
            if negative {
                guard magnitude <= UInt64(Int64.max) + 1 else { return nil }
                return magnitude == UInt64(Int64.max) + 1 ? Int64.min : -Int64(magnitude)
            }
            guard magnitude <= UInt64(Int64.max) else { return nil }
            return Int64(magnitude)
        }

        /// A JSON string with its escapes resolved; nil if it is anything
        /// `JSONDecoder` might read differently or refuse.
        mutating func string() -> String? {
            guard take(UInt8(ascii: "\"")) else { return nil }
            var out: [UInt8] = []
            while at < bytes.count {
                let byte = bytes[at]
                at += 1
                switch byte {
                case UInt8(ascii: "\""):
                    return String(validating: out, as: UTF8.self)
                case UInt8(ascii: "\\"):
                    guard at < bytes.count else { return nil }
                    let escape = bytes[at]
                    at += 1
                    switch escape {
                    case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"): out.append(escape)
                    case UInt8(ascii: "b"): out.append(0x08)
                    case UInt8(ascii: "f"): out.append(0x0C)
                    case UInt8(ascii: "n"): out.append(0x0A)
                    case UInt8(ascii: "r"): out.append(0x0D)
                    case UInt8(ascii: "t"): out.append(0x09)
                    case UInt8(ascii: "u"):
                        guard let unit = hex4() else { return nil }
                        var scalar: Unicode.Scalar?
                        if (0xD800..<0xDC00).contains(unit) {
                            guard take(UInt8(ascii: "\\")), take(UInt8(ascii: "u")), let low = hex4(),
                                  (0xDC00..<0xE000).contains(low) else { return nil }
                            scalar = Unicode.Scalar(0x10000 + ((UInt32(unit) - 0xD800) << 10) + (UInt32(low) - 0xDC00))
                        } else {
                            scalar = Unicode.Scalar(UInt32(unit))  // nil for a lone low surrogate
                        }
                        guard let scalar else { return nil }
                        out.append(contentsOf: Array(String(Character(scalar)).utf8))
                    default:
                        return nil
                    }
                case 0x00..<0x20:
                    return nil
                default:
                    out.append(byte)
                }
            }
            return nil
        }

        mutating func hex4() -> UInt16? {
            guard at + 4 <= bytes.count else { return nil }
            var value: UInt16 = 0
            for _ in 0..<4 {
                let c = bytes[at]
                let digit: UInt8
                switch c {
                case UInt8(ascii: "0")...UInt8(ascii: "9"): digit = c - UInt8(ascii: "0")
                case UInt8(ascii: "a")...UInt8(ascii: "f"): digit = c - UInt8(ascii: "a") + 10
                case UInt8(ascii: "A")...UInt8(ascii: "F"): digit = c - UInt8(ascii: "A") + 10
                default: return nil
                }
                value = value << 4 | UInt16(digit)
                at += 1
            }
            return value
        }
    }
}
