import Foundation
import LogKV

/// `POST /v1/batch`: `{"ops": [{"op": "put"|"delete"|"get", "key", "value"?, "ttl"?, "encoding"?}, ...]}`.
///
/// Every operation is validated before any runs (a malformed batch changes
/// nothing); then they run in order, each on its own: the batch is not a
/// transaction. The answer lists one result per operation.
///
/// The answer is bounded by `maxBatchResponseBytes`: a get whose value would
/// take it past the budget answers status 413 with a message instead of the
/// value (ask for it alone), so no batch can make the server build a huge
/// response; and it is reserved from the server-wide answer budget before
/// any operation runs (503, nothing applied, while that is spent) until it
/// is written.
extension KVAPI {
    struct BatchBody: Decodable { var ops: [WriteBody] }

    /// Bytes `writeKey` writes for `key`: escaped text, or percent-encoded
    /// bytes with their `key_encoding`.
    static func writtenKeySize(_ key: [UInt8]) -> Int {
        key.isValidUTF8 ? key.reduce(8) { $0 + JSONWriter.escapedCount($1) } : key.count * 3 + 40
    }

    enum BatchOp: Sendable {
        case put([UInt8], [UInt8], Int64?)
        case delete([UInt8])
        case get([UInt8])

        var key: [UInt8] {
            switch self { case let .put(k, _, _), let .delete(k), let .get(k): return k }
        }
    }

    func batch(_ request: Request) throws -> Reply {
        let body = try WriteBody.decode(BatchBody.self, from: request)
        guard !body.ops.isEmpty else { throw APIError.badRequest("\"ops\" must not be empty") }
        guard body.ops.count <= configuration.maxBatchOperations else {
            throw APIError.badRequest("at most \(configuration.maxBatchOperations) operations per batch")
        }
        let now = clock()
        var ops: [BatchOp] = []
        for (i, op) in body.ops.enumerated() {
            do {
                let key = try op.keyBytes()
                switch op.op {
                case "put", "set": ops.append(.put(key, try op.valueBytes(), try op.expiresAt(now: now)))
                case "delete": ops.append(.delete(key))
                case "get": ops.append(.get(key))
                default: throw APIError.badRequest("\"op\" must be put, delete or get")
                }
            } catch let error as APIError {
                throw APIError(error.status, "operation \(i): \(error.message)")
            }
        }
        // The answer is held whole until written, so it is reserved from the
        // server-wide answer budget before any operation runs: a batch is
        // refused (503) with nothing applied, never after its writes. Each
        // result costs its escaped key and a little; gets may add values up
        // to `maxBatchResponseBytes`.
        let resultBytes = ops.reduce(1024) { $0 + 256 + Self.writtenKeySize($1.key) }
        let hasGets = ops.contains { if case .get = $0 { return true } else { return false } }
        // Gets get what the budget has free, up to `maxBatchResponseBytes`
        // (those past it answer 413 each), so a batch never waits and
        // never holds more than its answer can use.
        guard let reserved = answerBudget.tryReserve(atLeast: resultBytes,
                                                     atMost: resultBytes + (hasGets ? configuration.maxBatchResponseBytes : 0)) else {
            throw APIError(.serviceUnavailable, "the server is sending too many large answers; retry later (nothing was applied)",
                           headers: [("Retry-After", "1")])
        }
        let budget = max(0, min(configuration.maxBatchResponseBytes, reserved - resultBytes))
        return offload(request, releasingOnFailure: reserved) { [store, ops, answerBudget] in
            var w = JSONWriter()
            w.beginObject()
            w.field("success", true)
            w.beginArray("results")
            for op in ops {
                w.beginObject()
                Self.writeKey(&w, op.key)
                do {
                    switch op {
                    case let .put(key, value, expiresAt):
                        w.field("op", "put")
                        let seq = try store.put(key, value, expiresAt: expiresAt)
                        w.field("success", true)
                        w.field("status", 204)
                        w.field("version", seq)
                    case let .delete(key):
                        w.field("op", "delete")
                        let existed = try store.delete(key)
                        w.field("success", existed)
                        w.field("status", existed ? 204 : 404)
                    case let .get(key):
                        w.field("op", "get")
                        if let stored = try store.get(key) {
                            // Exactly what `valueField` writes: escapes take
                            // up to 6 bytes a byte, base64 4 per 3.
                            let encoded = stored.value.isValidUTF8
                                ? stored.value.reduce(0) { $0 + JSONWriter.escapedCount($1) } : (stored.value.count + 2) / 3 * 4
                            guard w.bytes.count + encoded <= budget else {
                                w.field("success", false)
                                w.field("status", 413)
                                w.field("message", "value of \(stored.value.count) bytes left out: the batch response would exceed \(budget) bytes; get it on its own")
                                w.endObject()
                                continue
                            }
                            w.field("success", true)
                            w.field("status", 200)
                            w.valueField(stored.value)
                            w.field("version", stored.seq)
                        } else {
                            w.field("success", false)
                            w.field("status", 404)
                        }
                    }
                } catch {
                    let api = APIError.from(error)
                    w.field("success", false)
                    w.field("status", Int(api.status.code))
                    w.field("message", api.message)
                }
                w.endObject()
            }
            w.endArray()
            w.endObject()
            // What the answer does not use goes back at once; the rest when
            // it is written.
            let held = min(w.bytes.count, reserved)
            answerBudget.release(reserved - held)
            var response = Response.json(w)
            response.answerBudgetBytes = held
            return response
        }
    }
}
