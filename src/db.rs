//! SQLite metadata: manifests (exact signed bytes), the blob index and the
//! peers remembered across restarts.
//!
//! The only module with SQL. Schema changes only through the files in
//! `migrations/`, embedded at build time and applied in order inside a
//! transaction; `PRAGMA user_version` records how many were applied.
//! WAL mode, so a `publish` process and a running `serve` can share the file.

use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension};

use crate::hash::BlobHash;

/// Migrations, in order. Never edit an applied file: add a new one.
const MIGRATIONS: &[(&str, &str)] = &[
    ("0001_init.sql", include_str!("../migrations/0001_init.sql")),
    (
        "0002_peers.sql",
        include_str!("../migrations/0002_peers.sql"),
    ),
];

/// Database errors.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// SQLite failure.
    #[error("database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The file was written by a newer p2pcdn.
    #[error("database schema version {found} is newer than this build knows ({known})")]
    TooNew {
        /// Version in the file.
        found: i64,
        /// Versions this build has.
        known: i64,
    },
    /// A migration failed.
    #[error("migration {file} failed: {source}")]
    Migration {
        /// File name.
        file: &'static str,
        /// Cause.
        source: rusqlite::Error,
    },
}

/// A peer remembered across restarts (the `peers` table).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RememberedPeer {
    /// Normalized base URL.
    pub url: String,
    /// DNS name (the URL's host).
    pub name: String,
    /// The node key bound last time, as text.
    pub key: String,
    /// Addresses last known for the name.
    pub addresses: Vec<std::net::IpAddr>,
}

/// Lifecycle of a stored manifest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ManifestState {
    /// Accepted, blobs incomplete.
    Pending,
    /// All blobs present and verified.
    Complete,
    /// Superseded.
    Retired,
}

impl ManifestState {
    fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Complete => "complete",
            Self::Retired => "retired",
        }
    }
}

/// A stored manifest row.
#[derive(Debug, Clone)]
pub struct StoredManifest {
    /// Site name.
    pub site: String,
    /// Version.
    pub version: u64,
    /// Exact signed envelope bytes.
    pub envelope: Vec<u8>,
    /// Lifecycle state.
    pub state: ManifestState,
}

impl ManifestState {
    fn parse(s: &str) -> Self {
        match s {
            "complete" => Self::Complete,
            "pending" => Self::Pending,
            _ => Self::Retired,
        }
    }
}

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<StoredManifest> {
    Ok(StoredManifest {
        site: r.get(0)?,
        version: r.get::<_, i64>(1)?.max(0) as u64,
        envelope: r.get(2)?,
        state: ManifestState::parse(&r.get::<_, String>(3)?),
    })
}

/// A handle on the metadata database.
///
/// Reads that the federation loops run every round (`held_version`,
/// `newest_manifest`, `data_version`, ...) go through rusqlite's statement
/// cache (`prepare_cached`, 16 statements per connection; this module has
/// fewer), so SQL is parsed once per statement, not once per call.
pub struct Db {
    conn: Mutex<Connection>,
}

fn i(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl Db {
    /// Opens (creating and migrating if needed) the database at `path`.
    pub fn open(path: &Path) -> Result<Self, DbError> {
        let mut conn = Connection::open(path)?;
        conn.busy_timeout(Duration::from_secs(10))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        migrate(&mut conn)?;
        Ok(Self {
            conn: Mutex::new(conn),
        })
    }

    fn with<T>(&self, f: impl FnOnce(&Connection) -> Result<T, DbError>) -> Result<T, DbError> {
        let guard = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        f(&guard)
    }

    /// Changes whenever another connection commits (cheap change detection).
    pub fn data_version(&self) -> Result<i64, DbError> {
        self.with(|c| {
            Ok(c.prepare_cached("PRAGMA data_version")?
                .query_row([], |r| r.get(0))?)
        })
    }

    /// Highest version ever accepted for `site` (any state): the rollback floor.
    pub fn held_version(&self, site: &str) -> Result<Option<u64>, DbError> {
        self.with(|c| {
            let v: Option<i64> = c
                .prepare_cached("SELECT max(version) FROM manifests WHERE site = ?1")?
                .query_row([site], |r| r.get(0))?;
            Ok(v.map(|v| v.max(0) as u64))
        })
    }

    /// Stores an accepted manifest with its exact envelope bytes, atomically
    /// refusing it if an equal or newer version of the site is already held
    /// (two peers delivering at once). Returns false when refused.
    pub fn insert_manifest(
        &self,
        m: &crate::manifest::Manifest,
        envelope: &[u8],
        now: u64,
        state: ManifestState,
    ) -> Result<bool, DbError> {
        self.with(|c| {
            let n = c.execute(
                "INSERT INTO manifests (site, version, envelope, issued, expires, received_at, state)
                 SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7
                 WHERE NOT EXISTS (SELECT 1 FROM manifests WHERE site = ?1 AND version >= ?2)",
                params![m.site, i(m.version), envelope, i(m.issued), i(m.expires), i(now), state.as_str()],
            )?;
            Ok(n == 1)
        })
    }

    /// Marks `site@version` complete and retires every older version, atomically.
    pub fn complete(&self, site: &str, version: u64) -> Result<(), DbError> {
        let mut guard = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        let tx = guard.transaction()?;
        tx.execute(
            "UPDATE manifests SET state = 'complete' WHERE site = ?1 AND version = ?2",
            params![site, i(version)],
        )?;
        tx.execute(
            "UPDATE manifests SET state = 'retired' WHERE site = ?1 AND version < ?2 AND state != 'retired'",
            params![site, i(version)],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// The newest complete manifest of every site.
    pub fn current_manifests(&self) -> Result<Vec<StoredManifest>, DbError> {
        self.with(|c| {
            let mut st = c.prepare_cached(
                "SELECT site, version, envelope, state FROM manifests m
                 WHERE state = 'complete'
                   AND version = (SELECT max(version) FROM manifests
                                  WHERE site = m.site AND state = 'complete')",
            )?;
            let rows = st.query_map([], row)?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
    }

    /// Manifests that still need their blobs (pending or complete).
    pub fn live_manifests(&self) -> Result<Vec<StoredManifest>, DbError> {
        self.with(|c| {
            let mut st = c.prepare_cached(
                "SELECT site, version, envelope, state FROM manifests WHERE state IN ('pending', 'complete')",
            )?;
            let rows = st.query_map([], row)?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
    }

    /// A specific manifest, if held.
    pub fn manifest(&self, site: &str, version: u64) -> Result<Option<StoredManifest>, DbError> {
        self.with(|c| {
            Ok(c.prepare_cached(
                "SELECT site, version, envelope, state FROM manifests WHERE site = ?1 AND version = ?2",
            )?
            .query_row(
                params![site, i(version)],
                row,
            )
            .optional()?)
        })
    }

    /// The newest accepted manifest of `site`, any state.
    pub fn newest_manifest(&self, site: &str) -> Result<Option<StoredManifest>, DbError> {
        self.with(|c| {
            Ok(c.prepare_cached(
                "SELECT site, version, envelope, state FROM manifests WHERE site = ?1 ORDER BY version DESC LIMIT 1",
            )?
            .query_row(
                [site],
                row,
            )
            .optional()?)
        })
    }

    /// Records that a verified blob is in the store.
    pub fn record_blob(&self, h: &BlobHash, size: u64, now: u64) -> Result<(), DbError> {
        self.with(|c| {
            c.prepare_cached(
                "INSERT OR IGNORE INTO blobs (hash, size, added_at) VALUES (?1, ?2, ?3)",
            )?
            .execute(params![h.to_hex(), i(size), i(now)])?;
            Ok(())
        })
    }

    /// Forgets blobs (after GC or quarantine).
    pub fn forget_blobs(&self, hashes: &[BlobHash]) -> Result<(), DbError> {
        let mut guard = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        let tx = guard.transaction()?;
        for h in hashes {
            tx.execute("DELETE FROM blobs WHERE hash = ?1", [h.to_hex()])?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Remembers peers seen now (bound, or probed up): inserts new rows,
    /// refreshes `last_seen`, name, key and addresses of known ones; then
    /// forgets rows not seen for `forget_after` seconds and keeps at most
    /// `cap` rows (the most recently seen), all in one transaction.
    pub fn remember_peers(
        &self,
        seen: &[RememberedPeer],
        now: u64,
        forget_after: u64,
        cap: usize,
    ) -> Result<(), DbError> {
        let mut guard = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        let tx = guard.transaction()?;
        for p in seen {
            let addrs: Vec<String> = p.addresses.iter().map(|a| a.to_string()).collect();
            tx.execute(
                "INSERT INTO peers (url, name, node_key, addresses, bound_at, last_seen)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?5)
                 ON CONFLICT (url) DO UPDATE SET name = excluded.name,
                   node_key = excluded.node_key,
                   addresses = CASE WHEN excluded.addresses = '' THEN peers.addresses
                                    ELSE excluded.addresses END,
                   last_seen = excluded.last_seen",
                params![p.url, p.name, p.key, addrs.join(" "), i(now)],
            )?;
        }
        tx.execute(
            "DELETE FROM peers WHERE last_seen < ?1",
            [i(now.saturating_sub(forget_after))],
        )?;
        tx.execute(
            "DELETE FROM peers WHERE url NOT IN
               (SELECT url FROM peers ORDER BY last_seen DESC, url LIMIT ?1)",
            [i(cap as u64)],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Up to `max` remembered peers, the most recently seen first. Rows
    /// whose addresses do not parse keep the ones that do.
    pub fn remembered_peers(&self, max: usize) -> Result<Vec<RememberedPeer>, DbError> {
        self.with(|c| {
            let mut st = c.prepare_cached(
                "SELECT url, name, node_key, addresses FROM peers
                 ORDER BY last_seen DESC, url LIMIT ?1",
            )?;
            let rows = st.query_map([i(max as u64)], |r| {
                let addrs: String = r.get(3)?;
                Ok(RememberedPeer {
                    url: r.get(0)?,
                    name: r.get(1)?,
                    key: r.get(2)?,
                    addresses: addrs
                        .split_ascii_whitespace()
                        .filter_map(|a| a.parse().ok())
                        .collect(),
                })
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
    }

    /// Number of blobs in the index.
    pub fn blob_count(&self) -> Result<u64, DbError> {
        self.with(|c| {
            let n: i64 = c
                .prepare_cached("SELECT count(*) FROM blobs")?
                .query_row([], |r| r.get(0))?;
            Ok(n.max(0) as u64)
        })
    }
}

fn migrate(conn: &mut Connection) -> Result<(), DbError> {
    let applied: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    let known = MIGRATIONS.len() as i64;
    if applied > known {
        return Err(DbError::TooNew {
            found: applied,
            known,
        });
    }
    for (n, (file, sql)) in MIGRATIONS.iter().enumerate().skip(applied.max(0) as usize) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)
            .map_err(|source| DbError::Migration { file, source })?;
        tx.pragma_update(None, "user_version", (n + 1) as i64)?;
        tx.commit()?;
        tracing::info!(migration = file, "applied database migration");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(site: &str, version: u64) -> crate::manifest::Manifest {
        crate::manifest::Manifest {
            format: 1,
            site: site.into(),
            version,
            issued: 0,
            expires: 9,
            default_document: "index.html".into(),
            cache_ttl: 1,
            mirrors: vec![],
            files: vec![],
            zone: None,
        }
    }

    #[test]
    fn remembered_peers_round_trip_expire_and_cap() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("p.db")).unwrap();
        let p = |n: u32, addrs: &str| RememberedPeer {
            url: format!("https://n{n}.test"),
            name: format!("n{n}.test"),
            key: format!("key{n}"),
            addresses: addrs
                .split_ascii_whitespace()
                .map(|a| a.parse().unwrap())
                .collect(),
        };
        db.remember_peers(&[p(1, "10.0.0.1 ::1"), p(2, "10.0.0.2")], 100, 1000, 10)
            .unwrap();
        // Seen again later with no addresses known: the old ones stay.
        db.remember_peers(&[p(2, "")], 200, 1000, 10).unwrap();
        let got = db.remembered_peers(10).unwrap();
        assert_eq!(
            got,
            vec![p(2, "10.0.0.2"), p(1, "10.0.0.1 ::1")],
            "newest first"
        );
        assert_eq!(db.remembered_peers(1).unwrap().len(), 1);
        // Not seen for longer than forget_after: forgotten.
        db.remember_peers(&[], 1150, 1000, 10).unwrap();
        assert_eq!(db.remembered_peers(10).unwrap(), vec![p(2, "10.0.0.2")]);
        // The cap keeps the most recently seen.
        let many: Vec<_> = (10..20).map(|n| p(n, "10.0.0.9")).collect();
        db.remember_peers(&many, 1200, 1000, 4).unwrap();
        assert_eq!(db.remembered_peers(100).unwrap().len(), 4);
    }

    #[test]
    fn migrate_idempotent_and_current() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.db");
        {
            let db = Db::open(&p).unwrap();
            db.insert_manifest(&m("s", 1), b"e1", 0, ManifestState::Complete)
                .unwrap();
            db.insert_manifest(&m("s", 2), b"e2", 0, ManifestState::Pending)
                .unwrap();
            assert_eq!(db.held_version("s").unwrap(), Some(2));
            assert_eq!(db.current_manifests().unwrap()[0].version, 1);
            db.complete("s", 2).unwrap();
        }
        let db = Db::open(&p).unwrap();
        let cur = db.current_manifests().unwrap();
        assert_eq!(cur.len(), 1);
        assert_eq!(cur[0].version, 2);
        assert_eq!(cur[0].envelope, b"e2");
        assert!(!db
            .insert_manifest(&m("s", 2), b"x", 0, ManifestState::Pending)
            .unwrap());
        assert!(!db
            .insert_manifest(&m("s", 1), b"x", 0, ManifestState::Pending)
            .unwrap());
        assert_eq!(db.held_version("nope").unwrap(), None);
    }
}
