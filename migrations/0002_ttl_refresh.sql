-- TTL refresh records (segment format 3): the seq of the refresh record that
-- set a row's expires_at, 0 when it is the value record's own. A row's seq
-- stays its value record's (the key's version); max(seq, ttl_seq) is the
-- key's newest record, which "newest wins" compares.
--
-- Refresh records count as dead bytes in `segments` from the start (they
-- are a few dozen bytes each and never read by a GET); compaction copies the
-- live ones forward.
ALTER TABLE keydir ADD COLUMN ttl_seq INTEGER NOT NULL DEFAULT 0;
