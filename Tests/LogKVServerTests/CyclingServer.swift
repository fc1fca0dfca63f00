import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A misbehaving server on loopback: every request gets the same 200 JSON
/// answer (a listing page whose cursor never moves forward), so clients
/// that trust cursors would page forever.
final class CyclingServer: @unchecked Sendable {
    let port: Int
    private let listener: Int32

    init(answer: String) {
        let (fd, port) = Self.listenOnLoopback()
        listener = fd
        self.port = port
        let response = Array("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: \(answer.utf8.count)\r\n\r\n\(answer)".utf8)
        Thread.detachNewThread {
            while true {
                let client = accept(fd, nil, nil)
                if client < 0 { return }
                Thread.detachNewThread {
                    var buffer = [UInt8](repeating: 0, count: 65536)
                    var pending: [UInt8] = []
                    while true {
                        let n = recv(client, &buffer, buffer.count, 0)
                        if n <= 0 { break }
                        pending += buffer[0..<n]
                        // One answer per request head (no request here has a body).
                        while let end = pending.firstRange(of: [13, 10, 13, 10]) {
                            pending.removeSubrange(0..<end.upperBound)
                            _ = response.withUnsafeBytes { send(client, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
                        }
                    }
                    close(client)
                }
            }
        }
    }

    /// A socket listening on 127.0.0.1 at a port the kernel picks: it
    /// accepts connections (the kernel does) and answers nothing itself.
    static func listenOnLoopback() -> (fd: Int32, port: Int) {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var yes: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &yes, socklen_t(MemoryLayout<Int32>.size))
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) } }
        _ = listen(fd, 16)
        _ = withUnsafeMutablePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) } }
        return (fd, Int(UInt16(bigEndian: addr.sin_port)))
    }

    func stop() { shutdown(listener, Int32(SHUT_RDWR)); close(listener) }
}

/// A server that starts a large answer and then sends nothing more: a
/// download from it is in progress until the client gives up.
final class StallingServer: @unchecked Sendable {
    let port: Int
    private let listener: Int32

    init(declaredLength: Int = 10_000_000, sentBytes: Int = 100_000) {
        let (fd, port) = CyclingServer.listenOnLoopback()
        listener = fd
        self.port = port
        let head = Array("HTTP/1.1 200 OK\r\nContent-Type: application/x-tar\r\nContent-Length: \(declaredLength)\r\n\r\n".utf8)
        let body = [UInt8](repeating: 0x61, count: sentBytes)
        Thread.detachNewThread {
            while true {
                let client = accept(fd, nil, nil)
                if client < 0 { return }
                var buffer = [UInt8](repeating: 0, count: 65536)
                _ = recv(client, &buffer, buffer.count, 0)
                for part in [head, body] {
                    _ = part.withUnsafeBytes { send(client, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
                }
                // Held open, silent, until the test ends.
            }
        }
    }

    func stop() { shutdown(listener, Int32(SHUT_RDWR)); close(listener) }
}
