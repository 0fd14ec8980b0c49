-- A dead letter's replays: when it was last parsed again, how that ended (`ingested`: its
-- messages and statuses went through the normal path; `unreadable`: still not an envelope) and
-- why, and how many times it was replayed.
ALTER TABLE dead_letters ADD COLUMN replayed_at INTEGER;
ALTER TABLE dead_letters ADD COLUMN replay_outcome TEXT;
ALTER TABLE dead_letters ADD COLUMN replay_detail TEXT;
ALTER TABLE dead_letters ADD COLUMN replays INTEGER NOT NULL DEFAULT 0;
