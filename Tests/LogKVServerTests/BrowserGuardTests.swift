import Foundation
import NIOHTTP1
import Testing
@testable import LogKVServer

/// With auth off, a web page in a browser on the same machine must not be
/// able to use the server: not by DNS rebinding (its own name re-pointed at
/// 127.0.0.1, so the request comes from loopback with that name as Host),
/// and not by a cross-site form or `fetch` that needs no preflight.
@Suite struct BrowserGuardTests {
    @Test func adminRoutesRefuseARequestAddressedToAnotherNameEvenFromLoopback() async throws {
        try await withServer { s in
            try s.store.put(Array("secret".utf8), Array("v".utf8))
            let c = try s.client()
            for host in ["rebind.attacker.example", "rebind.attacker.example:8080", "evil.localhost.example"] {
                let backup = try c.request("GET", "/v1/admin/backup", headers: ["Host": host])
                #expect(backup.status == 403, "Host \(host)")
                #expect(backup.body.count < 1000, "no archive for Host \(host)")
                #expect(try c.request("POST", "/v1/admin/compact", headers: ["Host": host]).status == 403)
            }
            for host in ["localhost", "localhost:8080", "127.0.0.1:8080", "[::1]:8080", "LOCALHOST."] {
                #expect(try c.request("GET", "/v1/admin/backup", headers: ["Host": host]).status == 200, "Host \(host)")
            }
        }
    }

    @Test func aTokenMakesTheHostIrrelevantForAdminRoutes() async throws {
        try await withServer(token: "t0ken") { s in
            let r = try s.client().request("POST", "/v1/admin/compact", headers: ["Host": "db.internal.example", "Authorization": "Bearer t0ken"])
            #expect(r.status == 202)
        }
    }

    @Test func crossOriginWritesAreRefusedAndNothingIsWritten() async throws {
        try await withServer { s in
            // A refused request's body is never read, so the server ends
            // that connection: each request gets its own.
            let c = Fresh(server: s)
            let evil = ["Origin": "http://attacker.example"]
            // A text/plain POST needs no preflight: the browser sends it.
            let post = try c.request("POST", "/v1/kv", headers: evil.merging(["Content-Type": "text/plain"]) { a, _ in a },
                                     body: Array(#"{"key":"planted","value":"x"}"#.utf8))
            #expect(post.status == 403)
            #expect(try c.request("PUT", "/v1/kv/planted", headers: evil, body: Array("x".utf8)).status == 403)
            #expect(try c.request("DELETE", "/v1/kv/planted", headers: evil).status == 403)
            #expect(try c.request("POST", "/v1/admin/compact", headers: evil).status == 403)
            #expect(try s.store.get(Array("planted".utf8)) == nil)
            // Reads stay open to any origin (a browser cannot read the answer
            // without CORS); clients that send no Origin are unaffected.
            #expect(try c.request("GET", "/v1/keys", headers: evil).status == 200)
            #expect(try c.request("PUT", "/v1/kv/planted", body: Array("x".utf8)).status == 204)
        }
    }

    @Test func aFormContentTypeOnAJSONPostIsRefusedEvenWithoutAnOrigin() async throws {
        try await withServer { s in
            let c = Fresh(server: s)
            for type in ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", "TEXT/PLAIN;charset=utf-8"] {
                let r = try c.request("POST", "/v1/kv", headers: ["Content-Type": type], body: Array(#"{"key":"form","value":"x"}"#.utf8))
                #expect(r.status == 415, "\(type)")
                #expect(r.json["message"] is String)
                let batch = try c.request("POST", "/v1/batch", headers: ["Content-Type": type], body: Array(#"{"ops":[]}"#.utf8))
                #expect(batch.status == 415, "\(type)")
            }
            #expect(try s.store.get(Array("form".utf8)) == nil)
            #expect(try c.request("POST", "/v1/kv", json: #"{"key":"form","value":"x"}"#).status == 204)
            // PUT is never a form method: curl's default form type stays accepted there.
            #expect(try c.request("PUT", "/v1/kv", headers: ["Content-Type": "application/x-www-form-urlencoded"],
                                  body: Array(#"{"key":"curl","value":"x"}"#.utf8)).status == 204)
        }
    }

    @Test func anOriginListedInCorsOriginsMayWrite() async throws {
        try await withServer(configure: { $0.corsOrigins = ["https://app.example"] }) { s in
            let r = try s.client().request("PUT", "/v1/kv/k", headers: ["Origin": "https://app.example"], body: Array("v".utf8))
            #expect(r.status == 204)
            #expect(r.headers["access-control-allow-origin"] == "https://app.example")
        }
    }
}

/// A new connection per request.
private struct Fresh {
    let server: TestServer
    func request(_ method: String, _ path: String, headers: [String: String] = [:], body: [UInt8]? = nil) throws -> HTTPTestClient.Response {
        try server.client().request(method, path, headers: headers, body: body)
    }
    func request(_ method: String, _ path: String, json: String) throws -> HTTPTestClient.Response {
        try server.client().request(method, path, json: json)
    }
}
