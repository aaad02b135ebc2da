-- p2pcdn schema, version 2: peers remembered across restarts.
-- A row is written when a peer's node key is bound to its URL over TLS, and
-- refreshed while the peer is seen; at start the most recently seen rows are
-- queued for binding again, so an instance whose bootstrap peers are down
-- rejoins through any peer it knew. Nothing here is trusted: every row is
-- bound again (TLS + proof of possession) before it is used.
CREATE TABLE peers (
    url       TEXT    PRIMARY KEY,   -- normalized https://host[:port]
    name      TEXT    NOT NULL,      -- the host part, the peer's DNS name
    node_key  TEXT    NOT NULL,      -- the key bound last time (informational)
    addresses TEXT    NOT NULL,      -- space-separated IP addresses last known
    bound_at  INTEGER NOT NULL,      -- unix seconds of the first binding
    last_seen INTEGER NOT NULL       -- unix seconds the peer was last bound or up
) STRICT;

CREATE INDEX peers_by_last_seen ON peers (last_seen);
