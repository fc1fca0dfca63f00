-- KeyDir mirror: where each key's latest record lives. Derived from the
-- segments; can be rebuilt from them at any time.
CREATE TABLE keydir (
    key        BLOB PRIMARY KEY,
    segment    INTEGER NOT NULL,
    offset     INTEGER NOT NULL,
    length     INTEGER NOT NULL,
    seq        INTEGER NOT NULL,
    expires_at INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;

CREATE INDEX keydir_expires_at ON keydir(expires_at) WHERE expires_at > 0;

-- Per-segment accounting read by compaction and metrics. Dead bytes are
-- size_bytes - live_bytes.
CREATE TABLE segments (
    id         INTEGER PRIMARY KEY,
    size_bytes INTEGER NOT NULL DEFAULT 0,
    live_bytes INTEGER NOT NULL DEFAULT 0,
    live_keys  INTEGER NOT NULL DEFAULT 0
);

-- The log position up to which every record is reflected in keydir, written
-- in the same transaction as the rows.
CREATE TABLE checkpoint (
    id      INTEGER PRIMARY KEY CHECK (id = 1),
    segment INTEGER NOT NULL,
    offset  INTEGER NOT NULL,
    max_seq INTEGER NOT NULL
);

-- store_id ties the index to its data directory; key_count is kept exactly
-- by the flusher so stats never count rows.
CREATE TABLE meta (
    name  TEXT PRIMARY KEY,
    value ANY
) WITHOUT ROWID;
