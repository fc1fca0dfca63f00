import NIOHTTP1

/// The route table: every route the server answers, in one place. The
/// OpenAPI document (`openapi.yaml`) is checked against it in tests.
///
/// `{key}` matches the rest of the path, slashes included, percent-decoded.
struct Route: Sendable {
    var method: HTTPMethod
    var template: String
    var requiresAuth: Bool
    var handler: @Sendable (KVAPI, Request) throws -> Reply
    /// The part before `{key}`, or nil for a fixed path (computed once).
    let keyPrefix: String?
    /// The route's position in `KVAPI.routes`: its metric series, without
    /// hashing strings per request.
    fileprivate(set) var slot = -1
    /// Admin routes answer only loopback clients while no token is set.
    var isAdmin: Bool { template.hasPrefix("/v1/admin/") }
    /// Whether requests carry a body: only writes and batches do. Any other
    /// request with a body is refused before the body is read.
    var takesBody: Bool { (method == .PUT || method == .POST) && !isAdmin }
    /// `/health` and `/metrics`: answered even past the connection cap.
    var isProbe: Bool { template == "/health" || template == "/metrics" }
    /// Whether the body is JSON (so a form's content type is never meant).
    var readsJSON: Bool { template == "/v1/kv" || template == "/v1/batch" }

    init(method: HTTPMethod, template: String, requiresAuth: Bool,
         handler: @escaping @Sendable (KVAPI, Request) throws -> Reply) {
        self.method = method
        self.template = template
        self.requiresAuth = requiresAuth
        self.handler = handler
        self.keyPrefix = template.hasSuffix("{key}") ? String(template.dropLast(5)) : nil
    }
}

extension KVAPI {
    static let routes: [Route] = numbered([
        Route(method: .GET, template: "/health", requiresAuth: false) { api, r in api.health(r) },
        Route(method: .HEAD, template: "/health", requiresAuth: false) { api, r in api.health(r) },
        Route(method: .GET, template: "/metrics", requiresAuth: false) { api, r in api.metricsText(r) },
        Route(method: .PUT, template: "/v1/kv", requiresAuth: true) { api, r in try api.putJSON(r) },
        Route(method: .POST, template: "/v1/kv", requiresAuth: true) { api, r in try api.putJSON(r) },
        Route(method: .GET, template: "/v1/kv/{key}", requiresAuth: true) { api, r in try api.get(r) },
        Route(method: .HEAD, template: "/v1/kv/{key}", requiresAuth: true) { api, r in try api.get(r) },
        Route(method: .PUT, template: "/v1/kv/{key}", requiresAuth: true) { api, r in try api.putRaw(r) },
        Route(method: .DELETE, template: "/v1/kv/{key}", requiresAuth: true) { api, r in try api.delete(r) },
        Route(method: .PATCH, template: "/v1/kv/{key}", requiresAuth: true) { api, r in try api.refreshTTL(r) },
        Route(method: .GET, template: "/v1/keys", requiresAuth: true) { api, r in try api.listKeys(r) },
        Route(method: .GET, template: "/v1/stats", requiresAuth: true) { api, r in try api.stats(r) },
        Route(method: .POST, template: "/v1/batch", requiresAuth: true) { api, r in try api.batch(r) },
        Route(method: .POST, template: "/v1/admin/compact", requiresAuth: true) { api, r in api.compact(r) },
        Route(method: .GET, template: "/v1/admin/backup", requiresAuth: true) { api, r in api.backup(r) },
    ])

    private static func numbered(_ table: [Route]) -> [Route] {
        table.enumerated().map { slot, route in
            var numbered = route
            numbered.slot = slot
            return numbered
        }
    }

    /// What a separate metrics listener (`--metrics-addr`) serves.
    static let metricsRoutes = routes.filter(\.isProbe)

    /// Finds the route for a request, or the error to answer: 404 for an
    /// unknown path, 405 (with `Allow`) for a known path and another method.
    static func match(_ request: inout Request, in table: [Route] = routes) -> Result<Route, APIError> {
        var pathMatched = false
        for route in table {
            guard let key = matchTemplate(route, request.path) else { continue }
            pathMatched = true
            guard route.method == request.method else { continue }
            if let key {
                guard let decoded = percentDecode(key) else {
                    return .failure(.badRequest("malformed percent-encoding in key"))
                }
                request.key = decoded
            }
            return .success(route)
        }
        if !pathMatched { return .failure(.notFound("no route for \(request.path)")) }
        return .failure(APIError(.methodNotAllowed, "method \(request.method.rawValue) not allowed on \(request.path)",
                                 headers: [("Allow", allowedMethods(request.path, in: table))]))
    }

    /// The `Allow` header's value for `path`: every method a route serves it with.
    static func allowedMethods(_ path: String, in table: [Route] = routes) -> String {
        table.filter { matchTemplate($0, path) != nil }.map(\.method.rawValue).joined(separator: ", ")
    }

    /// nil if the path does not match; .some(nil) for a match without
    /// `{key}`; .some(key) with the raw (encoded) key.
    static func matchTemplate(_ route: Route, _ path: String) -> String?? {
        if let prefix = route.keyPrefix {
            guard path.utf8.count > prefix.utf8.count, path.hasPrefix(prefix) else { return nil }
            return .some(String(path.utf8.dropFirst(prefix.utf8.count))!)
        }
        return route.template == path ? .some(nil) : nil
    }
}
