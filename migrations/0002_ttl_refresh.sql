-- TTL refresh records (segment format 3). A row's seq stays its value
-- record's (the key's version); ttl_seq is the seq of the refresh record that
-- set expires_at (0 when it is the value record's own), and ttl_segment,
-- ttl_offset, ttl_length say where that record lies: it is live data, counted
-- in `segments.live_bytes` and moved by compaction like the value.
-- max(seq, ttl_seq) is the key's newest record, which "newest wins" compares.
ALTER TABLE keydir ADD COLUMN ttl_seq INTEGER NOT NULL DEFAULT 0;
ALTER TABLE keydir ADD COLUMN ttl_segment INTEGER NOT NULL DEFAULT 0;
ALTER TABLE keydir ADD COLUMN ttl_offset INTEGER NOT NULL DEFAULT 0;
ALTER TABLE keydir ADD COLUMN ttl_length INTEGER NOT NULL DEFAULT 0;
