import Foundation

/// Helpers for tests that run real processes (shared by both test targets).

/// How a child process ended.
public enum ChildExit: Equatable, Sendable {
    case exited(Int32)
    case signaled(Int32)
    case stillRunning

    public var code: Int32 {
        switch self {
        case let .exited(code): return code
        case let .signaled(signal): return 128 + signal
        case .stillRunning: return -1
        }
    }
}

/// Waits for a child started with Foundation's `Process`, at most `timeout`
/// seconds. `Process.waitUntilExit` can miss the exit of one of many children
/// started from parallel tests and wait forever; this polls, and reaps the
/// child itself if Foundation has not.
public func waitForExit(_ process: Process, timeout: TimeInterval = 60) -> ChildExit {
    let deadline = Date(timeIntervalSinceNow: timeout)
    while Date() < deadline {
        if !process.isRunning {
            return process.terminationReason == .uncaughtSignal
                ? .signaled(process.terminationStatus) : .exited(process.terminationStatus)
        }
        var status: Int32 = 0
        if waitpid(process.processIdentifier, &status, WNOHANG) == process.processIdentifier {
            return status & 0x7f == 0 ? .exited((status >> 8) & 0xff) : .signaled(status & 0x7f)
        }
        usleep(5_000)
    }
    return .stillRunning
}

/// Locates an executable SwiftPM built next to the test bundle.
public func builtProduct(_ name: String) -> String {
    var dir = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
    // swift-testing on Linux may run from inside the .xctest bundle path.
    for _ in 0..<4 {
        let candidate = dir.appendingPathComponent(name).path
        if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
        dir = dir.deletingLastPathComponent()
    }
    return URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent(".build/debug/\(name)").path
}

private let spawnLock = NSLock()

/// `process.run()`, serialized with every other spawn in the test process
/// (see `runRetryingSpawnRaces`).
public func spawnSerialized(_ process: Process) throws {
    try spawnLock.withLock { try process.run() }
}

/// Starts `process`, retrying a few times when Foundation fails to spawn it
/// with EBADF, which it does now and then when many tests start children at
/// once (a descriptor race inside `Process.run`, not the child's fault).
///
/// Spawns are serialized across the whole test process: Foundation's
/// `Process.run` juggles descriptors (pipes it dups, then closes in the
/// parent), and two spawns overlapping from parallel tests have closed each
/// other's pipe ends.
public func runRetryingSpawnRaces(_ makeProcess: () -> Process) throws -> Process {
    var attempt = 0
    while true {
        let process = makeProcess()
        do {
            try spawnLock.withLock { try process.run() }
            return process
        } catch let error as NSError where attempt < 4
                    && (error.userInfo[NSUnderlyingErrorKey] as? NSError)?.code == Int(EBADF) {
            attempt += 1
            usleep(50_000)
        }
    }
}
