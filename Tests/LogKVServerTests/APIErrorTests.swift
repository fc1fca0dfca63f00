import Foundation
import LogKV
@testable import LogKVServer
import NIOHTTP1
import Testing

/// Every engine error becomes one status: a disk failing now is 503 (retry
/// later or elsewhere), lasting damage or a missing file is 500.
@Suite struct APIErrorTests {
    @Test func aDiskThatFailsUnderARequestAnswers503WithAClearMessage() {
        let io = APIError.from(LogKVError.io(operation: "read", path: "/d/segments/1.seg", errno: EIO))
        #expect(io.status == .serviceUnavailable)
        #expect(io.message.hasPrefix("storage I/O error"))
        let malformed = APIError.from(LogKVError.index(code: 11, message: "database disk image is malformed"))
        #expect(malformed.status == .serviceUnavailable)
        #expect(malformed.message.contains("could not be read from the disk"))
        #expect(APIError.from(LogKVError.index(code: 10 | (13 << 8), message: "disk I/O error")).status == .serviceUnavailable)
        #expect(APIError.from(LogKVError.diskFull).status == .serviceUnavailable)
    }

    @Test func lastingDamageAndMissingFilesAnswer500() {
        #expect(APIError.from(LogKVError.io(operation: "open", path: "/d/x", errno: ENOENT)).status == .internalServerError)
        #expect(APIError.from(LogKVError.index(code: 26, message: "file is not a database")).status == .internalServerError)
        #expect(APIError.from(LogKVError.corruption(segment: 1, offset: 64, reason: "checksum mismatch")).status == .internalServerError)
    }
}
