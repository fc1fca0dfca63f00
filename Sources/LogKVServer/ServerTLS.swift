import NIOConcurrencyHelpers
import NIOCore
import NIOSSL

/// TLS for the API listener: a certificate and key (PEM files), and for
/// mutual TLS the CA whose certificates clients must present.
public struct TLSSettings: Sendable, Equatable {
    public var certificatePath: String
    public var keyPath: String
    /// With it, every client must present a certificate this CA signed.
    public var clientCAPath: String?

    public init(certificatePath: String, keyPath: String, clientCAPath: String? = nil) {
        self.certificatePath = certificatePath
        self.keyPath = keyPath
        self.clientCAPath = clientCAPath
    }
}

/// A TLS file that could not be used, with what and why.
public struct TLSSettingsError: Error, CustomStringConvertible {
    public var description: String
}

/// The server's TLS context, read from `TLSSettings`' files; `reload()`
/// (SIGHUP) reads them again, so a renewed certificate is used by new
/// connections while open ones keep theirs. A reload that fails keeps the
/// context that works.
///
/// Thread-safe.
final class ServerTLS: Sendable {
    let settings: TLSSettings
    private let current: NIOLockedValueBox<NIOSSLContext>

    init(_ settings: TLSSettings) throws {
        self.settings = settings
        current = NIOLockedValueBox(try Self.context(settings))
    }

    func reload() throws {
        let context = try Self.context(settings)
        current.withLockedValue { $0 = context }
    }

    /// The first handler of a new connection.
    func handler() -> NIOSSLServerHandler {
        NIOSSLServerHandler(context: current.withLockedValue { $0 })
    }

    private static func context(_ settings: TLSSettings) throws -> NIOSSLContext {
        let chain: [NIOSSLCertificate]
        let key: NIOSSLPrivateKey
        do {
            chain = try NIOSSLCertificate.fromPEMFile(settings.certificatePath)
        } catch {
            throw TLSSettingsError(description: "cannot read the TLS certificate \(settings.certificatePath): \(error)")
        }
        guard !chain.isEmpty else {
            throw TLSSettingsError(description: "no certificate in \(settings.certificatePath)")
        }
        do {
            key = try NIOSSLPrivateKey(file: settings.keyPath, format: .pem)
        } catch {
            throw TLSSettingsError(description: "cannot read the TLS key \(settings.keyPath): \(error)")
        }
        var configuration = TLSConfiguration.makeServerConfiguration(certificateChain: chain.map { .certificate($0) },
                                                                     privateKey: .privateKey(key))
        configuration.minimumTLSVersion = .tlsv12
        if let ca = settings.clientCAPath {
            do {
                configuration.trustRoots = .certificates(try NIOSSLCertificate.fromPEMFile(ca))
            } catch {
                throw TLSSettingsError(description: "cannot read the client CA \(ca): \(error)")
            }
            // Client certificates name no host to check.
            configuration.certificateVerification = .noHostnameVerification
        }
        do {
            return try NIOSSLContext(configuration: configuration)
        } catch {
            throw TLSSettingsError(description: "the TLS certificate and key do not make a usable context (does the key match?): \(error)")
        }
    }
}
