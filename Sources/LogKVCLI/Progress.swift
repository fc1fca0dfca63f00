import Foundation

/// Progress on standard error: a bar redrawn in place on a terminal, plain
/// lines otherwise (logs, pipes, CI).
final class Progress: @unchecked Sendable {
    let label: String
    let isTerminal = isatty(STDERR_FILENO) != 0
    private var lastLine = Date.distantPast
    private let lock = NSLock()

    init(_ label: String) { self.label = label }

    func update(_ done: Int, _ total: Int, detail: String = "") {
        lock.lock()
        defer { lock.unlock() }
        let text: String
        if isTerminal {
            let width = 30
            let filled = total > 0 ? width * done / total : width
            text = "\r\(label) [\(String(repeating: "#", count: filled))\(String(repeating: ".", count: width - filled))] \(done)/\(total) \(detail)"
        } else {
            // At most a line a second, plus the last one.
            guard done == total || -lastLine.timeIntervalSinceNow >= 1 else { return }
            lastLine = Date()
            text = "\(label): \(done)/\(total) \(detail)\n"
        }
        FileHandle.standardError.write(Data(text.utf8))
    }

    func finish() {
        if isTerminal { FileHandle.standardError.write(Data("\n".utf8)) }
    }
}
