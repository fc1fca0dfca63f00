import CZlib
import Foundation
@testable import LogKVServer
import Testing

@Suite struct ResponseCompressionTests {
    @Test(arguments: [
        (["gzip"], ResponseCompression.Algorithm.gzip), (["deflate"], .deflate), (["gzip, deflate"], .gzip),
        (["gzip;q=0.5, deflate;q=0.8"], .deflate), (["*"], .gzip), (["x-gzip"], .gzip),
        // `*` stands only for the codings not named.
        (["gzip;q=0, *"], .deflate), (["gzip;q=0", "*;q=0.1"], .deflate),
    ])
    func theClientsBestAcceptedCodingIsChosen(header: [String], expected: ResponseCompression.Algorithm) {
        #expect(ResponseCompression.negotiate(header) == expected)
    }

    @Test func nothingIsCompressedForAClientThatRefusesEveryCoding() {
        for header in [[], ["identity"], ["*;q=0"], ["gzip;q=0, deflate;q=0"], ["gzip;q=0, deflate;q=0, *"], ["br"]] {
            #expect(ResponseCompression.negotiate(header) == nil, "\(header)")
        }
    }

    @Test func onlyTextAnswersBetweenOneKiBAndOneMiBAreWorthCompressing() {
        #expect(ResponseCompression.eligible(contentType: "application/json", bodyCount: 4096))
        #expect(ResponseCompression.eligible(contentType: "text/plain; version=0.0.4", bodyCount: 4096))
        #expect(!ResponseCompression.eligible(contentType: "application/json", bodyCount: 1000))
        #expect(!ResponseCompression.eligible(contentType: "application/json", bodyCount: 2 << 20))
        #expect(!ResponseCompression.eligible(contentType: "application/octet-stream", bodyCount: 4096))
    }

    @Test func compressedBodiesInflateToTheOriginal() throws {
        let body = Array(String(repeating: #"{"key":"k","value":"v"},"#, count: 200).utf8)
        for algorithm in [ResponseCompression.Algorithm.gzip, .deflate] {
            let compressed = try #require(ResponseCompression.compress(body, algorithm))
            #expect(compressed.count < body.count / 4)
            if algorithm == .gzip { #expect(compressed.starts(with: [0x1F, 0x8B])) }
            #expect(Self.inflate(compressed, windowBits: algorithm == .gzip ? 31 : 15) == body)
        }
    }

    /// Over HTTP: a small answer is compressed on the event loop, a larger
    /// one (over 16 KiB) on the blocking pool; both inflate to the answer a
    /// client that accepts no coding gets, and the connection goes on.
    @Test func answersSmallAndLargeAreCompressedToWhatInflatesToTheUncompressedAnswer() async throws {
        try await withServer { s in
            for i in 0..<2000 { try s.store.put(Array("key/\(i)".utf8), Array("v".utf8)) }
            let c = try s.client()
            for limit in [100, 2000] {
                let plain = try c.request("GET", "/v1/keys?limit=\(limit)")
                #expect(plain.headers["content-encoding"] == nil)
                #expect((limit == 100) == (plain.body.count <= ResponseCompression.maximumOnEventLoop), "\(plain.body.count) bytes")
                let gzip = try c.request("GET", "/v1/keys?limit=\(limit)", headers: ["Accept-Encoding": "gzip"])
                #expect(gzip.headers["content-encoding"] == "gzip" && gzip.headers["vary"] == "Accept-Encoding")
                #expect(Self.inflate(gzip.body, windowBits: 31) == plain.body, "limit \(limit)")
            }
            #expect(try c.request("GET", "/health").status == 200)
        }
    }

    /// zlib's inflate, one call: the whole output fits `capacity`.
    static func inflate(_ input: [UInt8], windowBits: Int32, capacity: Int = 1 << 20) -> [UInt8]? {
        var stream = z_stream()
        guard inflateInit2_(&stream, windowBits, ZLIB_VERSION, Int32(MemoryLayout<z_stream>.size)) == Z_OK else { return nil }
        defer { inflateEnd(&stream) }
        var out = [UInt8](repeating: 0, count: capacity)
        let status: Int32 = input.withUnsafeBufferPointer { inp in
            out.withUnsafeMutableBufferPointer { outp in
                stream.next_in = UnsafeMutablePointer(mutating: inp.baseAddress)
                stream.avail_in = uInt(inp.count)
                stream.next_out = outp.baseAddress
                stream.avail_out = uInt(outp.count)
                return CZlib.inflate(&stream, Z_FINISH)
            }
        }
        guard status == Z_STREAM_END else { return nil }
        return Array(out.prefix(Int(stream.total_out)))
    }
}
