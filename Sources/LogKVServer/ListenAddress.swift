/// A listen address as operators write it: `:8080` (all interfaces),
/// `127.0.0.1:9000`, `[::1]:8080`, `localhost:8080`.
public struct ListenAddress: Equatable, Sendable, CustomStringConvertible {
    public var host: String
    public var port: Int

    public init(host: String, port: Int) {
        self.host = host
        self.port = port
    }

    /// Parses an address; nil when it is not `[host]:port` with a port in
    /// 0...65535. No host (`:8080`) means every address, IPv6 and IPv4.
    public init?(parsing text: String) {
        var rest = Substring(text)
        if rest.hasPrefix("http://") { rest = rest.dropFirst(7) }
        while rest.hasSuffix("/") { rest = rest.dropLast() }
        guard let colon = rest.lastIndex(of: ":"), let port = Int(rest[rest.index(after: colon)...]),
              (0...65535).contains(port) else { return nil }
        var host = String(rest[..<colon])
        if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        if host.isEmpty { host = "::" }  // IPv6 and IPv4
        self.host = host
        self.port = port
    }

    /// True for addresses only this machine can reach (127.0.0.0/8, ::1, localhost).
    public var isLoopback: Bool {
        host == "localhost" || host == "::1" || host.hasPrefix("127.")
    }

    /// True for "every address" (0.0.0.0, ::), which names no host.
    public var isWildcard: Bool { host == "0.0.0.0" || host == "::" || host == "*" }

    public var description: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }
}
