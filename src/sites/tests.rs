//! The lifecycle through the real database and store: offer, pending,
//! blob commits, completion, retirement, verify-once, rollback and freeze.

use std::collections::BTreeMap;

use super::*;
use crate::config::PlainHttp;
use crate::keys::SecretKey;
use crate::manifest::{FileEntry, Manifest, FORMAT};

const SITE: &str = "www.example.org";
const NOW: u64 = 1_800_000_000;

struct Fixture {
    _dir: tempfile::TempDir,
    owner: SecretKey,
    sites: Sites,
    store: BlobStore,
    db: Arc<Db>,
}

fn fixture(mirrors_me: Option<PublicKey>) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let owner = SecretKey::generate().unwrap();
    let store = BlobStore::open(dir.path()).unwrap();
    let db = Arc::new(Db::open(&dir.path().join("p2pcdn.db")).unwrap());
    let cfg = SiteConfig {
        hostname: SITE.into(),
        zone: "example.org".into(),
        owner_key: owner.public(),
        tls: None,
        plain_http: PlainHttp::Serve,
        mirror: true,
        mirrors: vec![],
    };
    let sites = Sites::new(&[cfg], db.clone(), store.clone(), mirrors_me);
    Fixture {
        _dir: dir,
        owner,
        sites,
        store,
        db,
    }
}

fn manifest(version: u64, contents: &[&[u8]], mirrors: Vec<PublicKey>) -> Manifest {
    Manifest {
        format: FORMAT,
        site: SITE.into(),
        version,
        issued: NOW - 10,
        expires: NOW + 3600,
        default_document: "index.html".into(),
        cache_ttl: 60,
        mirrors,
        files: contents
            .iter()
            .enumerate()
            .map(|(i, c)| FileEntry {
                path: format!("f{i}"),
                blake3: BlobHash::of(c),
                size: c.len() as u64,
                content_type: "text/plain".into(),
                headers: BTreeMap::new(),
            })
            .collect(),
        zone: None,
    }
}

fn put(store: &BlobStore, c: &[u8]) {
    store
        .put_reader(BlobHash::of(c), c.len() as u64, c)
        .unwrap();
}

fn served(f: &Fixture) -> Option<u64> {
    f.sites
        .catalog()
        .load()
        .site(SITE)
        .and_then(|s| s.current.as_ref().map(|m| m.manifest.version))
}

#[test]
fn offer_pending_commit_complete_retire() {
    let f = fixture(None);
    let name = SiteName::new(SITE);
    let mut published = f.sites.subscribe();
    // v1 complete at once: its blob is already stored.
    put(&f.store, b"one");
    let v1 = crate::manifest::sign(&manifest(1, &[b"one"], vec![]), &f.owner).unwrap();
    assert_eq!(
        f.sites.offer(&v1, NOW).unwrap(),
        Imported::Complete { version: 1 }
    );
    assert_eq!(served(&f), Some(1));
    assert!(published.has_changed().unwrap());
    published.mark_unchanged();

    // v2 waits for two blobs.
    let v2 = crate::manifest::sign(&manifest(2, &[b"two", b"three"], vec![]), &f.owner).unwrap();
    let Imported::Pending {
        version: 2,
        missing,
    } = f.sites.offer(&v2, NOW).unwrap()
    else {
        panic!("v2 should be pending");
    };
    assert_eq!(missing.len(), 2);
    assert!(matches!(
        f.sites.stage(&name, Version(2)),
        Some(Stage::Pending { missing }) if missing.len() == 2
    ));
    put(&f.store, b"two");
    assert!(f
        .sites
        .blob_committed(&BlobHash::of(b"two"), NOW)
        .is_empty());
    assert_eq!(served(&f), Some(1), "a pending version is never served");
    put(&f.store, b"three");
    assert_eq!(
        f.sites.blob_committed(&BlobHash::of(b"three"), NOW),
        vec![(name.clone(), Version(2))]
    );
    assert_eq!(f.sites.stage(&name, Version(2)), Some(Stage::Complete));
    assert_eq!(served(&f), Some(2));
    assert!(published.has_changed().unwrap());
    // v1 retired: forgotten in memory, retired in the database (its blob
    // is garbage once older than the store's grace period).
    assert_eq!(f.sites.stage(&name, Version(1)), None);
    assert_eq!(
        f.db.manifest(SITE, 1).unwrap().unwrap().state,
        ManifestState::Retired
    );
    assert!(f.store.contains(&BlobHash::of(b"two"), 3));
}

#[test]
fn rollback_and_freeze_are_refused() {
    let f = fixture(None);
    put(&f.store, b"x");
    let v5 = crate::manifest::sign(&manifest(5, &[b"x"], vec![]), &f.owner).unwrap();
    f.sites.offer(&v5, NOW).unwrap();
    for v in [4, 5] {
        let old = crate::manifest::sign(&manifest(v, &[b"x"], vec![]), &f.owner).unwrap();
        assert!(matches!(
            f.sites.offer(&old, NOW),
            Err(IngestError::Manifest(ManifestError::NotNewer { .. }))
        ));
    }
    let mut m = manifest(6, &[b"x"], vec![]);
    m.expires = NOW - 1;
    let expired = crate::manifest::sign(&m, &f.owner).unwrap();
    assert!(matches!(
        f.sites.offer(&expired, NOW),
        Err(IngestError::Manifest(ManifestError::Expired { .. }))
    ));
    // A stored version that expires stops being served (freeze).
    assert_eq!(served(&f), Some(5));
    f.sites.publish(NOW + 7200);
    assert_eq!(served(&f), None);
    // Someone else's signature is refused.
    let mallory = SecretKey::generate().unwrap();
    let forged = crate::manifest::sign(&manifest(9, &[b"x"], vec![]), &mallory).unwrap();
    assert!(matches!(
        f.sites.offer(&forged, NOW),
        Err(IngestError::Manifest(ManifestError::WrongKey { .. }))
    ));
    // An unknown site is refused.
    let mut other = manifest(1, &[b"x"], vec![]);
    other.site = "other.example.org".into();
    let other = crate::manifest::sign(&other, &f.owner).unwrap();
    assert!(matches!(
        f.sites.offer(&other, NOW),
        Err(IngestError::UnknownSite(_))
    ));
}

#[test]
fn verified_once_unless_the_row_changes() {
    let f = fixture(None);
    put(&f.store, b"x");
    let v1 = crate::manifest::sign(&manifest(1, &[b"x"], vec![]), &f.owner).unwrap();
    f.sites.offer(&v1, NOW).unwrap();
    let row = f.db.newest_manifest(SITE).unwrap().unwrap();
    let a = f.sites.verified(&row, NOW).unwrap();
    let b = f.sites.verified(&row, NOW).unwrap();
    assert!(
        Arc::ptr_eq(&a, &b),
        "the verified manifest is kept, not re-verified"
    );
    // A row whose bytes differ (a tampered database) is verified again, and refused.
    let mut tampered = row.clone();
    let text = String::from_utf8(tampered.envelope.clone()).unwrap();
    tampered.envelope = text
        .replacen("\"signature\": \"", "\"signature\": \"A", 1)
        .into_bytes();
    assert!(f.sites.verified(&tampered, NOW).is_err());
    // Expiry is checked on every call.
    assert!(f.sites.verified(&row, NOW + 7200).is_err());
}

#[test]
fn authorization_follows_the_newest_manifest() {
    let me = SecretKey::generate().unwrap().public();
    let other = SecretKey::generate().unwrap().public();
    let f = fixture(Some(me));
    put(&f.store, b"x");
    let v1 = crate::manifest::sign(&manifest(1, &[b"x"], vec![me]), &f.owner).unwrap();
    f.sites.offer(&v1, NOW).unwrap();
    assert!(f.sites.authorizes(SITE, &me));
    assert!(!f.sites.authorizes(SITE, &other));
    assert_eq!(served(&f), Some(1));
    // v2 (pending) drops this node: v1 is no longer served either.
    let v2 = crate::manifest::sign(&manifest(2, &[b"y"], vec![other]), &f.owner).unwrap();
    f.sites.offer(&v2, NOW).unwrap();
    // Published by the offer itself.
    assert!(!f.sites.authorizes(SITE, &me));
    assert_eq!(served(&f), None);
    assert!(!f.sites.catalog().load().site(SITE).unwrap().authorized);
    assert!(authorized(&[], &me));
}

#[test]
fn invalid_stored_manifests_are_warned_once() {
    let f = fixture(None);
    let bad = || vec![("www.example.org".to_string(), 5, "expired".to_string())];
    assert_eq!(f.sites.warn_invalid(bad()), 1);
    assert_eq!(
        f.sites.warn_invalid(bad()),
        0,
        "not again at the next rebuild"
    );
    assert_eq!(f.sites.warn_invalid(vec![]), 0);
    assert_eq!(f.sites.warn_invalid(bad()), 1, "again after it went away");
}
