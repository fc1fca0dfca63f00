import ArgumentParser
import Foundation

struct Get: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Print a key's value (raw bytes, so `> file` round-trips).")
    @OptionGroup var options: ClientOptions
    @Argument(help: "The key.") var key: String

    func run() throws {
        let client = try options.client()
        if !options.json && !stdoutIsTerminal {
            // Raw bytes into a pipe or file: streamed as they come, never
            // held whole.
            try client.stream("/v1/kv/\(KVClient.path(key))?raw", key: key, to: STDOUT_FILENO)
            return
        }
        let reply = try client.request("GET", "/v1/kv/\(KVClient.path(key))" + (options.json ? "" : "?raw"))
        try reply.require(200, key: key)
        if options.json {
            FileHandle.standardOutput.write(reply.body + Data("\n".utf8))
        } else {
            writeOutput(Array(reply.body), newline: stdoutIsTerminal)
        }
    }

    func validate() throws {
        if key.isEmpty { throw ValidationError("the key must not be empty") }
    }
}

struct Set: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Store a value: from the argument, --file, or standard input.")
    @OptionGroup var options: ClientOptions
    @Argument(help: "The key.") var key: String
    @Argument(help: "The value; omit it to read --file or standard input.") var value: String?
    @Option(help: "Read the value from this file.") var file: String?
    @Option(help: "Expire after this many seconds.") var ttl: Int?

    func validate() throws {
        if key.isEmpty { throw ValidationError("the key must not be empty") }
        if value != nil && file != nil { throw ValidationError("give the value as an argument or --file, not both") }
        if let ttl, ttl <= 0 { throw ValidationError("--ttl must be a positive number of seconds") }
    }

    func run() throws {
        let body = try value.map { Data($0.utf8) } ?? readInput(file: file)
        let client = try options.client()
        let reply = try client.request("PUT", "/v1/kv/\(KVClient.path(key))" + (ttl.map { "?ttl=\($0)" } ?? ""), body: body,
                                       contentType: "application/octet-stream")
        guard reply.status == 204 else { throw Failure.server("\(reply.status): \(reply.message)") }
        if options.json { printJSON(["success": true, "key": key, "version": reply.headers["etag"]?.trimmingCharacters(in: CharacterSet(charactersIn: "\"")) ?? ""]) }
    }
}

struct Delete: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Delete a key.")
    @OptionGroup var options: ClientOptions
    @Argument(help: "The key.") var key: String

    func validate() throws {
        if key.isEmpty { throw ValidationError("the key must not be empty") }
    }

    func run() throws {
        let reply = try options.client().request("DELETE", "/v1/kv/\(KVClient.path(key))")
        try reply.require(204, key: key)
        if options.json { printJSON(["success": true, "key": key]) }
    }
}

struct List: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "List keys in key order, paging through all of them.")
    @OptionGroup var options: ClientOptions
    @Option(help: "Only keys starting with this.") var prefix = ""
    @Option(help: "Page size.") var pageSize = 1000

    /// Pages with the exact cursor (`next_after_base64` → `after_base64`),
    /// so any key bytes page correctly. Keys print raw into a pipe (one per
    /// line), escaped on a terminal; --json gives text keys as strings and
    /// others as {"base64": ...}.
    func run() throws {
        let client = try options.client()
        var after = ""
        var all: [Any] = []
        var seen = 0
        while true {
            let reply = try client.request("GET", "/v1/keys?prefix=\(KVClient.query(prefix))&after_base64=\(KVClient.query(after))&limit=\(pageSize)")
            guard reply.status == 200 else { throw Failure.server("\(reply.status): \(reply.message)") }
            let keys: [[UInt8]]
            if let exact = reply.json["keys_base64"] as? [String] {
                keys = exact.map { Array(Data(base64Encoded: $0) ?? Data()) }
            } else {
                keys = (reply.json["keys"] as? [String] ?? []).map { Array($0.utf8) }
            }
            seen += keys.count
            for key in keys {
                if options.json {
                    all.append(key.isValidUTF8Text ? String(decoding: key, as: UTF8.self) as Any : ["base64": Data(key).base64EncodedString()])
                } else {
                    writeOutput(key, newline: true)
                }
            }
            guard let next = reply.json["next_after_base64"] as? String, !keys.isEmpty else { break }
            // A cursor that does not move forward (a proxy or server that
            // cycles) would page forever.
            let from = Array(Data(base64Encoded: after) ?? Data()), to = Array(Data(base64Encoded: next) ?? Data())
            guard after.isEmpty || from.lexicographicallyPrecedes(to) else {
                throw Failure.server("the listing's cursor did not move forward after \(seen) keys: the server or a proxy is cycling")
            }
            after = next
        }
        if options.json { printJSON(all) }
    }

    func validate() throws {
        if pageSize <= 0 { throw ValidationError("--page-size must be positive") }
    }
}

struct Stats: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Show store statistics.")
    @OptionGroup var options: ClientOptions

    func run() throws {
        let reply = try options.client().request("GET", "/v1/stats")
        guard reply.status == 200 else { throw Failure.server("\(reply.status): \(reply.message)") }
        if options.json { printJSON(reply.json); return }
        for (name, value) in reply.json.sorted(by: { $0.key < $1.key }) where name != "success" {
            print("\(name): \(value)")
        }
    }
}

struct TTL: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ttl",
        abstract: "Show the seconds left before a key expires (or \"none\"); with SECONDS, set a new TTL from now without rewriting the value (0 removes it).")
    @OptionGroup var options: ClientOptions
    @Argument(help: "The key.") var key: String
    @Argument(help: "Seconds from now; 0 removes the TTL. Omit to show the TTL.") var seconds: Int?

    func validate() throws {
        if key.isEmpty { throw ValidationError("the key must not be empty") }
        if let seconds, seconds < 0 { throw ValidationError("seconds must be 0 or more") }
    }

    func run() throws {
        let client = try options.client()
        if let seconds {
            let reply = try client.request("PATCH", "/v1/kv/\(KVClient.path(key))?ttl=\(seconds)")
            try reply.require(200, key: key)
            if options.json { FileHandle.standardOutput.write(reply.body + Data("\n".utf8)) }
            return
        }
        let reply = try client.request("HEAD", "/v1/kv/\(KVClient.path(key))?raw")
        try reply.require(200, key: key)
        let ttl = reply.headers["x-logkv-ttl"].flatMap(Int.init)
        if options.json { printJSON(["key": key, "ttl": ttl as Any? ?? NSNull()]) } else { print(ttl.map(String.init) ?? "none") }
    }
}

struct Batch: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run many operations in one request.",
        discussion: #"Input (a file or standard input): {"ops": [{"op": "put", "key": "a", "value": "1"}, {"op": "get", "key": "a"}, ...]}"#)
    @OptionGroup var options: ClientOptions
    @Argument(help: "JSON file; standard input when omitted.") var file: String?

    func run() throws {
        let body = try readInput(file: file)
        let reply = try options.client().request("POST", "/v1/batch", body: body, contentType: "application/json")
        guard reply.status == 200 else { throw Failure(code: reply.status == 400 ? 2 : 3, message: reply.message) }
        FileHandle.standardOutput.write(reply.body + Data("\n".utf8))
    }
}
