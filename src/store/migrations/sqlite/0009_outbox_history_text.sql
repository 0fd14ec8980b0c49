-- What the conversation's history keeps of each reply: the Markdown the agent wrote (on a text's
-- first part), a summary of a media, interactive, location or reaction message, or '' (later
-- parts of a split text). NULL on replies queued before: their text body is read instead.
ALTER TABLE outbox ADD COLUMN history_text TEXT;
