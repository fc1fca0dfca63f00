import Foundation
import Testing
@testable import LogKV

@Suite struct MigrationsTests {
    @Test func embeddedSchemaMatchesMigrationFilesByteForByte() throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent()
        let dir = root.appendingPathComponent("migrations")
        let files = try FileManager.default.contentsOfDirectory(atPath: dir.path).filter { $0.hasSuffix(".sql") }.sorted()
        #expect(files == Migrations.all.map(\.name))
        for (file, migration) in zip(files, Migrations.all) {
            let onDisk = try Data(contentsOf: dir.appendingPathComponent(file))
            #expect(Array(onDisk) == Array(migration.sql.utf8), "\(file) differs; run scripts/gen-migrations.py")
        }
    }

    @Test func migrationsSetUserVersion() throws {
        let dir = TempDir()
        let index = try IndexWriter(path: dir.path + "/i.sqlite")
        #expect(try index.db.scalarInt("PRAGMA user_version") == Int64(Migrations.all.count))
    }
}
