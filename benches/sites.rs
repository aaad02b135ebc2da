//! Catalog publication cost: what verifying each envelope once saves.
//! Timed with `std::time::Instant` only. Run with:
//!
//! ```text
//! cargo bench --bench sites
//! ```
//!
//! 200 sites, each with one complete version of 100 files, in a temporary
//! data directory. "Cold" is a fresh `Sites` publishing the catalog: every
//! envelope is parsed and its ed25519 signature verified, which is what every
//! catalog rebuild (each database change, and every minute) cost before
//! `sites` kept verified manifests in memory. "Warm" is the same `Sites`
//! publishing again: the envelopes are compared with the verified ones and
//! only the expiry is checked. Both read the same rows from SQLite. Bounded:
//! 10 cold and 50 warm publications.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use p2pcdn::config::{PlainHttp, SiteConfig};
use p2pcdn::db::Db;
use p2pcdn::hash::BlobHash;
use p2pcdn::keys::SecretKey;
use p2pcdn::manifest::{self, FileEntry, Manifest, FORMAT};
use p2pcdn::sites::Sites;
use p2pcdn::store::BlobStore;

const SITES: usize = 200;
const FILES: usize = 100;

fn main() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let db = Arc::new(Db::open(&dir.path().join("p2pcdn.db")).expect("database"));
    let store = BlobStore::open(dir.path()).expect("store");
    let owner = SecretKey::generate().expect("key");
    let now = p2pcdn::catalog::unix_now();
    let configs: Vec<SiteConfig> = (0..SITES)
        .map(|i| SiteConfig {
            hostname: format!("s{i}.example.org"),
            zone: "example.org".into(),
            owner_key: owner.public(),
            tls: None,
            plain_http: PlainHttp::Serve,
            mirror: true,
            mirrors: vec![],
        })
        .collect();
    for c in &configs {
        let m = Manifest {
            format: FORMAT,
            site: c.hostname.clone(),
            version: 1,
            issued: now,
            expires: now + 86_400,
            default_document: "index.html".into(),
            cache_ttl: 60,
            mirrors: vec![],
            files: (0..FILES)
                .map(|f| {
                    let body = format!("{}/{f}", c.hostname);
                    FileEntry {
                        path: format!("f{f:03}.txt"),
                        blake3: BlobHash::of(body.as_bytes()),
                        size: body.len() as u64,
                        content_type: "text/plain".into(),
                        headers: BTreeMap::new(),
                    }
                })
                .collect(),
            zone: None,
        };
        let env = manifest::sign(&m, &owner).expect("sign");
        db.insert_manifest(&m, &env, now, p2pcdn::db::ManifestState::Complete)
            .expect("insert");
    }
    let time = |n: usize, f: &mut dyn FnMut()| {
        let t = Instant::now();
        for _ in 0..n {
            f();
        }
        t.elapsed().as_secs_f64() * 1000.0 / n as f64
    };
    let cold = time(10, &mut || {
        let s = Sites::new(&configs, db.clone(), store.clone(), None);
        let (_, c) = s.publish(now);
        assert_eq!(c.versions().len(), SITES);
    });
    let warm_sites = Sites::new(&configs, db.clone(), store.clone(), None);
    warm_sites.publish(now);
    let warm = time(50, &mut || {
        let (_, c) = warm_sites.publish(now);
        assert_eq!(c.versions().len(), SITES);
    });
    println!("| catalog publication, {SITES} sites × {FILES} files | ms per publication |");
    println!("|---|---|");
    println!("| cold (every envelope verified, as every rebuild did before) | {cold:.1} |");
    println!("| warm (verified once, kept in memory) | {warm:.1} |");
}
