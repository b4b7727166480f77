-- Call admission (issue 13): one lease per admitted call (commands/admission.py), taken under
-- the lock of its space's row in admission_spaces, so that counting the live leases and taking
-- one is atomic per space and one space's admissions never wait for another's.
-- Not a read model: this is live state, written only by adapters/postgres/admission.py.
CREATE TABLE IF NOT EXISTS admission_spaces (
    space_id text PRIMARY KEY                 -- the row an admit locks (SELECT ... FOR UPDATE)
);
CREATE TABLE IF NOT EXISTS call_leases (
    call_id    text PRIMARY KEY,              -- one lease per call: admitting twice returns it
    space_id   text        NOT NULL,
    agent_id   text        NOT NULL,
    granted_at timestamptz NOT NULL,
    expires_at timestamptz NOT NULL           -- pushed forward by each renewal
);
-- counting a space's (and an agent's) live leases; removing the expired ones
CREATE INDEX IF NOT EXISTS call_leases_space ON call_leases (space_id, agent_id, expires_at);
CREATE INDEX IF NOT EXISTS call_leases_expiry ON call_leases (space_id, expires_at);
