//! Signed manifests: `p2pcdn::manifest::{accept, verify_signature, peek_site, sign}`.
//!
//! The first byte picks a mode (and the held version); the rest is:
//! - mode 0/1 (raw): an arbitrary envelope for `accept` + `peek_site`;
//! - mode 2 (signed body): arbitrary manifest *body* bytes, wrapped in an
//!   envelope correctly signed by the fixed owner key, so the body parser and
//!   the file-table rules are reached;
//! - mode 3 (structured): a `Manifest` built from the bytes (arbitrary crate),
//!   signed with `manifest::sign`; `accept` must succeed exactly when an
//!   independent model of the rules says so, and round-trip the manifest.
#![no_main]

use std::collections::BTreeMap;

use arbitrary::{Arbitrary, Result as AResult, Unstructured};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use libfuzzer_sys::fuzz_target;
use p2pcdn::hash::BlobHash;
use p2pcdn::manifest::{
    self, accept, normalize_site, peek_site, verify_signature, Acceptance, FileEntry, Manifest,
    ManifestError, SignedManifest, VerifiedManifest, ZoneDoc, SIGNING_DOMAIN,
};
use p2pcdn_fuzz::{fixed_key, NOW, SITE};

fn rules(held: Option<u64>) -> Acceptance<'static> {
    static OWNER: std::sync::OnceLock<p2pcdn::keys::PublicKey> = std::sync::OnceLock::new();
    Acceptance {
        site: SITE,
        owner: OWNER.get_or_init(|| fixed_key().public()),
        held_version: held,
        now: NOW,
    }
}

/// Invariants of any accepted manifest.
fn check_accepted(vm: &VerifiedManifest, envelope: &[u8], held: Option<u64>) {
    let m = &vm.manifest;
    assert_eq!(m.format, manifest::FORMAT);
    assert_eq!(m.site, normalize_site(SITE));
    if let Some(h) = held {
        assert!(m.version > h, "accepted version {} <= held {h}", m.version);
    }
    assert!(m.expires > NOW, "accepted an expired manifest");
    assert!(m.issued <= NOW + manifest::MAX_CLOCK_SKEW);
    assert!(m.expires > m.issued);
    assert_eq!(vm.envelope, envelope);
    assert!(clean(&m.default_document) && !m.default_document.contains('/'));
    for w in m.files.windows(2) {
        assert!(w[0].path < w[1].path, "file table not sorted/unique");
    }
    for f in &m.files {
        assert!(clean(&f.path), "unclean path accepted: {:?}", f.path);
        assert_eq!(vm.file(&f.path), Some(f));
        for k in f.headers.keys() {
            assert!(manifest::is_allowed_extra_header(k));
        }
    }
    let blobs = vm.blobs();
    for w in blobs.windows(2) {
        assert!(w[0] < w[1]);
    }
    // Routing by peek_site must agree with what was verified.
    assert_eq!(peek_site(envelope).as_deref(), Ok(m.site.as_str()));
    // The canonical form of what was accepted re-signs and is accepted again.
    let again = manifest::sign(m, fixed_key()).expect("re-sign");
    let vm2 = accept(&again, rules(held)).expect("canonical re-signed manifest refused");
    assert_eq!(&vm2.manifest, m);
}

/// Independent model of a clean relative path.
fn clean(p: &str) -> bool {
    !p.is_empty()
        && p.len() <= 4096
        && !p.chars().any(|c| c == '\\' || c.is_control())
        && p.split('/').all(|s| !s.is_empty() && s != "." && s != "..")
}

fn raw(data: &[u8], held: Option<u64>) {
    let peek = peek_site(data);
    let verified = verify_signature(data, SITE, &fixed_key().public());
    match accept(data, rules(held)) {
        Ok(vm) => {
            check_accepted(&vm, data, held);
            assert!(verified.is_ok());
        }
        Err(e) => {
            // accept = verify_signature + version + time rules.
            if let Err(ve) = &verified {
                assert_eq!(&e, ve, "accept and verify_signature disagree");
            }
        }
    }
    if let Ok(vm) = verified {
        assert_eq!(peek.as_deref(), Ok(vm.manifest.site.as_str()));
    }
}

fn envelope_for(body: &[u8]) -> Vec<u8> {
    let key = fixed_key();
    let mut msg = SIGNING_DOMAIN.to_vec();
    msg.extend_from_slice(body);
    let env = SignedManifest {
        manifest: STANDARD.encode(body),
        key: key.public(),
        signature: STANDARD.encode(key.sign(&msg)),
    };
    serde_json::to_vec(&env).expect("envelope serializes")
}

fn signed_body(body: &[u8], held: Option<u64>) {
    let env = envelope_for(body);
    match accept(&env, rules(held)) {
        Ok(vm) => check_accepted(&vm, &env, held),
        Err(ManifestError::BadSignature) | Err(ManifestError::WrongKey { .. }) => {
            panic!("a correctly signed envelope was refused for its signature")
        }
        Err(_) => {}
    }
}

fn pick_str(u: &mut Unstructured<'_>, choices: &[&str]) -> AResult<String> {
    let i = u.int_in_range(0..=choices.len())?;
    Ok(match choices.get(i) {
        Some(s) => (*s).to_string(),
        None => String::arbitrary(u)?,
    })
}

fn time(u: &mut Unstructured<'_>) -> AResult<u64> {
    Ok(match u.int_in_range(0..=3u8)? {
        0 => u64::arbitrary(u)?,
        _ => NOW.wrapping_add_signed(i64::from(i16::arbitrary(u)?)),
    })
}

fn build(u: &mut Unstructured<'_>) -> AResult<Manifest> {
    let nfiles = u.int_in_range(0..=6usize)?;
    let mut files = Vec::with_capacity(nfiles);
    for _ in 0..nfiles {
        let path = pick_str(
            u,
            &["index.html", "a/b.css", "a", "./x", "a/../b", "/abs", "a//b", "x y/✓.png", "a\\b", "dir/"],
        )?;
        let nh = u.int_in_range(0..=2usize)?;
        let mut headers = BTreeMap::new();
        for _ in 0..nh {
            let k = pick_str(u, &["Content-Disposition", "link", "X-Robots-Tag", "set-cookie", "Location"])?;
            let v = pick_str(u, &["inline", "<a>; rel=preload", "x\ny", ""])?;
            headers.insert(k, v);
        }
        files.push(FileEntry {
            path,
            blake3: BlobHash::from_bytes(<[u8; 32]>::arbitrary(u)?),
            size: u64::arbitrary(u)?,
            content_type: pick_str(u, &["text/html", "text/css; charset=utf-8", "", "a\u{7f}b"])?,
            headers,
        });
    }
    let zone = if bool::arbitrary(u)? {
        Some(ZoneDoc {
            origin: pick_str(u, &["t.test", "www.t.test", "T.test", "t.test.", "other.test", "test"])?,
            text: String::arbitrary(u)?,
        })
    } else {
        None
    };
    let nmirrors = u.int_in_range(0..=2usize)?;
    Ok(Manifest {
        format: if u.ratio(1, 8)? { u32::arbitrary(u)? } else { manifest::FORMAT },
        site: pick_str(u, &[SITE, "WWW.t.test.", "www.t.test.", "img.t.test", "www.t.test.."])?,
        version: u64::arbitrary(u)?,
        issued: time(u)?,
        expires: time(u)?,
        default_document: pick_str(u, &["index.html", "a/index.html", "..", "", "x\0"])?,
        cache_ttl: u32::arbitrary(u)?,
        mirrors: vec![fixed_key().public(); nmirrors],
        files,
        zone,
    })
}

/// Independent model of the acceptance rules for a manifest signed by the owner.
fn expected_ok(m: &Manifest, held: Option<u64>) -> bool {
    let mut files = m.files.clone();
    files.sort_by(|a, b| a.path.cmp(&b.path));
    let files_ok = files.windows(2).all(|w| w[0].path != w[1].path)
        && files.iter().all(|f| {
            clean(&f.path)
                && !f.content_type.is_empty()
                && f.content_type.len() <= 255
                && !f.content_type.bytes().any(|b| b.is_ascii_control())
                && f.headers.iter().all(|(k, v)| {
                    [
                        "content-disposition",
                        "content-language",
                        "content-security-policy",
                        "link",
                        "x-robots-tag",
                        "access-control-allow-origin",
                        "referrer-policy",
                    ]
                    .contains(&k.to_ascii_lowercase().as_str())
                        && v.len() <= 1024
                        && !v.bytes().any(|b| b.is_ascii_control())
                })
        });
    let zone_ok = m.zone.as_ref().is_none_or(|z| {
        let o = z.origin.trim_end_matches('.').to_ascii_lowercase();
        o == z.origin
            && (m.site == o || m.site.ends_with(&format!(".{o}")))
            && z.text.len() <= manifest::MAX_ZONE_TEXT
    });
    m.format == manifest::FORMAT
        && m.site == "www.t.test"
        && m.expires > m.issued
        && clean(&m.default_document)
        && !m.default_document.contains('/')
        && zone_ok
        && files_ok
        && held.is_none_or(|h| m.version > h)
        && m.expires > NOW
        && m.issued <= NOW + manifest::MAX_CLOCK_SKEW
}

fn structured(data: &[u8], held: Option<u64>) {
    let mut u = Unstructured::new(data);
    let Ok(m) = build(&mut u) else { return };
    let env = manifest::sign(&m, fixed_key()).expect("sign");
    assert_eq!(peek_site(&env), Ok(normalize_site(&m.site)));
    let got = accept(&env, rules(held));
    let want = expected_ok(&m, held);
    match got {
        Ok(vm) => {
            assert!(want, "accepted a manifest the rules refuse: {m:?}");
            let mut sorted = m.clone();
            sorted.files.sort_by(|a, b| a.path.cmp(&b.path));
            assert_eq!(vm.manifest, sorted, "manifest did not round-trip");
            check_accepted(&vm, &env, held);
        }
        Err(e) => assert!(!want, "refused a valid manifest ({e}): {m:?}"),
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let held = if sel & 4 == 0 { None } else { Some(u64::from(sel >> 3)) };
    match sel & 3 {
        0 | 1 => raw(rest, held),
        2 => signed_body(rest, held),
        _ => structured(rest, held),
    }
});
