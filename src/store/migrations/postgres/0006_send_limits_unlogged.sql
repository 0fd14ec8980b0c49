-- The cluster-wide send buckets are pacing state, not records: kept out of the WAL, a send's
-- bucket update commits without waiting for a disk flush (and the table starts empty after a
-- server crash, which only lets the first sends after it go unpaced for one bucket's burst).
ALTER TABLE send_limits SET UNLOGGED;
