import ArgumentParser
import Foundation

/// `logkv`: client for logkvd over HTTP, and offline admin of a stopped data
/// directory.
///
/// Exit codes: 0 ok, 1 not found, 2 usage, 3 server, network or data error.
@main
struct LogkvCLI: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "logkv",
        abstract: "Client and admin tool for logkv.",
        discussion: "Exit codes: 0 ok, 1 not found, 2 usage error, 3 server, network or data error.",
        subcommands: [
            Get.self, Set.self, Delete.self, List.self, Stats.self, TTL.self, Batch.self,
            Check.self, RebuildIndex.self, Compact.self, Backup.self, Restore.self, Dump.self, Load.self,
        ])

    static func main() {
        do {
            var command = try parseAsRoot()
            try command.run()
        } catch let failure as Failure {
            FileHandle.standardError.write(Data("logkv: \(failure.message)\n".utf8))
            Foundation.exit(failure.code)
        } catch {
            let code = exitCode(for: error)
            if code == .success {
                print(fullMessage(for: error))
                Foundation.exit(0)
            }
            let message = fullMessage(for: error)
            if !message.isEmpty { FileHandle.standardError.write(Data((message + "\n").utf8)) }
            // Usage errors are 2 (argument-parser says 64); anything else is 3.
            Foundation.exit(code == .validationFailure ? 2 : (code.rawValue == 1 ? 1 : 3))
        }
    }
}

/// A failure with its exit code and a one-line message.
struct Failure: Error {
    var code: Int32
    var message: String
    static func notFound(_ m: String) -> Failure { Failure(code: 1, message: m) }
    static func usage(_ m: String) -> Failure { Failure(code: 2, message: m) }
    static func server(_ m: String) -> Failure { Failure(code: 3, message: m) }
}

/// Options every client command takes.
struct ClientOptions: ParsableArguments {
    @Option(help: "Server address: http://host:port, https://host:port, host:port, [v6]:port or :port. (env LOGKV_ADDR, default :8080)")
    var addr: String?
    @Flag(help: "Print JSON for scripts instead of text for people.")
    var json = false
    @OptionGroup var tls: TLSOptions

    func client() throws -> KVClient {
        let env = ProcessInfo.processInfo.environment
        return try KVClient(address: addr ?? env["LOGKV_ADDR"] ?? ":8080", token: env["LOGKV_TOKEN"], tls: tls.files)
    }
}

/// TLS for an https:// address.
struct TLSOptions: ParsableArguments {
    @Option(help: "PEM file of the CA that signed the server's certificate. (env LOGKV_CACERT)")
    var cacert: String?
    @Option(help: "PEM client certificate, for a server that asks for one. (env LOGKV_CERT)")
    var cert: String?
    @Option(help: "PEM key of --cert. (env LOGKV_KEY)")
    var key: String?

    var files: KVClient.TLSFiles {
        let env = ProcessInfo.processInfo.environment
        return KVClient.TLSFiles(caFile: cacert ?? env["LOGKV_CACERT"], certificateFile: cert ?? env["LOGKV_CERT"],
                                 keyFile: key ?? env["LOGKV_KEY"])
    }
}
