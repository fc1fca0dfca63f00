import Foundation
@testable import LogKVServer
import Testing

@Suite struct OpenAPITests {
    @Test func openAPIDocumentDescribesExactlyTheRouteTable() throws {
        let url = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("docs/openapi.json")
        let doc = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: url)) as? [String: Any])
        #expect((doc["openapi"] as? String)?.hasPrefix("3.") == true)
        let paths = try #require(doc["paths"] as? [String: [String: Any]])
        var documented = Set<String>()
        for (path, operations) in paths {
            for method in operations.keys where method != "parameters" {
                documented.insert("\(method.uppercased()) \(path)")
            }
        }
        let served = Set(KVAPI.routes.map { "\($0.method.rawValue) \($0.template)" })
        #expect(documented == served)
    }
}
