-- An agent reply the caller cut off (barge-in): its text is the part the caller heard.
ALTER TABLE call_transcripts ADD COLUMN IF NOT EXISTS interrupted boolean NOT NULL DEFAULT false;
