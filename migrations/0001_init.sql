-- p2pcdn schema, version 1.
-- Applied in order by src/db.rs; PRAGMA user_version records the last applied file.

-- Every manifest envelope accepted for a site, exactly as signed.
-- state: 'pending'  = accepted, blobs still being fetched (not served)
--        'complete' = every blob present and verified (the newest complete one is served)
--        'retired'  = superseded by a newer complete version (kept for audit; blobs may be gone)
CREATE TABLE manifests (
    site        TEXT    NOT NULL,
    version     INTEGER NOT NULL,
    envelope    BLOB    NOT NULL,
    issued      INTEGER NOT NULL,
    expires     INTEGER NOT NULL,
    received_at INTEGER NOT NULL,
    state       TEXT    NOT NULL CHECK (state IN ('pending', 'complete', 'retired')),
    PRIMARY KEY (site, version)
) STRICT;

CREATE INDEX manifests_by_state ON manifests (site, state, version);

-- Blobs known to be in the store (written through the verifying path).
CREATE TABLE blobs (
    hash     TEXT    PRIMARY KEY,
    size     INTEGER NOT NULL,
    added_at INTEGER NOT NULL
) STRICT;
