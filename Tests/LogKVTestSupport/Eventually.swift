import Foundation

/// Polls `condition` until it holds or `timeout` seconds pass, and says
/// whether it held. For a test waiting on something another thread or
/// process does: generous by default, since the whole suite runs in
/// parallel on two cores and a starved test may wait tens of seconds.
@discardableResult
public func eventually(timeout: TimeInterval = 60, pollingEvery microseconds: useconds_t = 10_000,
                       _ condition: () throws -> Bool) rethrows -> Bool {
    let deadline = Date(timeIntervalSinceNow: timeout)
    while true {
        if try condition() { return true }
        if Date() >= deadline { return false }
        usleep(microseconds)
    }
}
