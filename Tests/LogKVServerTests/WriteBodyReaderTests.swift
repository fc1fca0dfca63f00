import Foundation
@testable import LogKVServer
import Testing

/// The one-pass write-body reader must read exactly what JSONDecoder reads,
/// or give up and leave the body to it.
@Suite struct WriteBodyReaderTests {
    func viaReader(_ text: [UInt8]) -> WriteBody? { text.withUnsafeBytes { WriteBodyReader.read($0) } }
    func viaDecoder(_ text: [UInt8]) -> WriteBody? { try? JSONDecoder().decode(WriteBody.self, from: Data(text)) }

    static let usual: [String] = [
        #"{"key":"k","value":"v"}"#,
        #"{ "key" : "user:42" , "value" : "hello world", "ttl": 60 }"#,
        "{\n\t\"value\": \"x\",\r\n \"key\": \"a/b\"\n}",
        #"{"key":"k","value":"aGVsbG8=","encoding":"base64"}"#,
        #"{"op":"put","key":"k","value":"v","ttl":0}"#,
        #"{"key":"é✓😀","value":"\u00e9\u2713\ud83d\ude00 \"q\" \\ \/ \b\f\n\r\t"}"#,
        #"{"key":"k","value":"","ttl":-5}"#,
        #"{"key":"k","value":"v","ttl":9223372036854775807}"#,
        #"{"key":"k","value":"v","ttl":-9223372036854775808}"#,
        #"{"key":"k","value":"\u0000"}"#,
        #"{}"#,
    ]

    static let unusual: [String] = [
        #"{"key":"k","value":"v","ttl":1.0}"#, #"{"key":"k","value":"v","ttl":1e3}"#, #"{"key":"k","value":"v","ttl":01}"#,
        #"{"key":"k","value":"v","ttl":9223372036854775808}"#, #"{"key":"k","value":"v","ttl":"5"}"#,
        #"{"key":"k","value":null}"#, #"{"key":"k","value":"v","extra":{"a":[1,2]}}"#, #"{"key":"k","key":"j","value":"v"}"#,
        #"{"key":"k","value":"\ud800"}"#, #"{"key":"k","value":"\udc00"}"#, #"{"key":"k","value":"\x"}"#,
        #"{"key":"k","value":"v",}"#, #"{"key":"k" "value":"v"}"#, #"{"key":"k","value":"v"} x"#, #"["key"]"#,
        #"{"key":"k","value":"v""#, "{\"key\":\"k\",\"value\":\"tab\there\"}", #"{"ke\u0079":"k","value":"v"}"#, "",
        #"{"key":"k","value":"\u12"}"#, #"{"key":"k","value":"v","ttl":-}"#, #"{"key":"k","value":"v","ttl":-0}"#,
    ]

    @Test func usualBodiesAreReadInOnePassToWhatJSONDecoderReads() {
        for text in Self.usual {
            let bytes = Array(text.utf8)
            let fast = viaReader(bytes)
            #expect(fast != nil, "\(text)")
            #expect(fast == viaDecoder(bytes), "\(text)")
        }
    }

    @Test func anythingElseIsLeftToJSONDecoderOrReadTheSame() {
        var bodies = Self.unusual.map { Array($0.utf8) }
        bodies.append(Array(#"{"key":"k","value":""#.utf8) + [0xC3, 0x28] + Array(#""}"#.utf8))  // invalid UTF-8
        for bytes in bodies {
            if let fast = viaReader(bytes) {
                #expect(fast == viaDecoder(bytes), "\(String(decoding: bytes, as: UTF8.self))")
            }
        }
        // Bodies JSONDecoder refuses are never accepted by the reader.
        for bytes in bodies where viaDecoder(bytes) == nil {
            #expect(viaReader(bytes) == nil, "\(String(decoding: bytes, as: UTF8.self))")
        }
    }

    @Test func randomMutationsOfUsualBodiesNeverReadDifferently() {
        var generator = SystemRandomNumberGenerator()
        let alphabet = Array(#"{}[]":,\ u0123456789abcdefDCBA-+.eE"#.utf8) + [0x00, 0x0A, 0xC3, 0xFF]
        for _ in 0..<20_000 {
            var bytes = Array(Self.usual.randomElement(using: &generator)!.utf8)
            for _ in 0..<Int.random(in: 1...3, using: &generator) where !bytes.isEmpty {
                let at = Int.random(in: 0..<bytes.count, using: &generator)
                switch Int.random(in: 0..<3, using: &generator) {
                case 0: bytes[at] = alphabet.randomElement(using: &generator)!
                case 1: bytes.insert(alphabet.randomElement(using: &generator)!, at: at)
                default: bytes.remove(at: at)
                }
            }
            if let fast = viaReader(bytes) {
                #expect(fast == viaDecoder(bytes), "\(String(decoding: bytes, as: UTF8.self))")
            }
        }
    }
}
