//! A rogue federation member for the hostile-peer tests: its own node key,
//! a certificate from the federation's CA for its own name (as a public CA
//! would give anyone with a domain), a real HTTPS server speaking the node
//! API (node document with a binding proof, health, sync, push, blobs), and
//! a pusher that sends it signed reports to victims. What it lies about is
//! set per test: the key its node document names, and how it serves blobs.

use std::collections::HashMap;
use std::io::BufReader;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use bytes::Bytes;
use p2pcdn::devca::DevCa;
use p2pcdn::federation::binding::{self, Nonce};
use p2pcdn::federation::gossip::PROTOCOL;
use p2pcdn::federation::wire::{NodeDoc, PushRequest};
use p2pcdn::hash::BlobHash;
use p2pcdn::keys::{PublicKey, SecretKey};
use p2pcdn::report::{Capacity, Held, Load, Point, Report};
use tokio::sync::watch;

/// How the rogue answers blob requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlobMode {
    /// The right bytes (it learned the content).
    Honest,
    /// 200, then one byte every 20 s.
    Trickle,
    /// size − 1 garbage bytes, then the end of the body.
    Garbage,
    /// The right first byte; zeros after it (it answers `bytes=0-0` right).
    PrefixOnly,
}

pub struct RogueState {
    key: SecretKey,
    pub name: String,
    pub url: String,
    /// The key its node document names (None: its own).
    pub claim_key: Mutex<Option<PublicKey>>,
    /// Answer like a node older than binding proofs (no `proof`).
    pub old_version: std::sync::atomic::AtomicBool,
    pub mode: Mutex<BlobMode>,
    blobs: Mutex<HashMap<BlobHash, Bytes>>,
    pub blob_requests: AtomicU64,
    pub node_requests: AtomicU64,
}

pub struct Rogue {
    pub state: Arc<RogueState>,
    pub addr: SocketAddr,
    pub key: PublicKey,
    ca_pem: Vec<u8>,
    clients: Mutex<HashMap<(String, SocketAddr), reqwest::Client>>,
    stop: watch::Sender<bool>,
}

impl Rogue {
    /// Starts a rogue HTTPS node on `ip` (port chosen by the kernel) with a
    /// certificate from the CA in `ca_dir` for `name` and `extra_names`.
    pub async fn start(
        ca_dir: &std::path::Path,
        ip: IpAddr,
        name: &str,
        extra_names: &[&str],
    ) -> Rogue {
        let key = SecretKey::generate().unwrap();
        let public = key.public();
        let ca = DevCa::open_or_create(ca_dir).unwrap();
        let dir = ca_dir.join(format!("rogue-{name}"));
        std::fs::create_dir_all(&dir).unwrap();
        let mut sans = vec![name.to_string()];
        sans.extend(extra_names.iter().map(|s| s.to_string()));
        let (cert, keyf) = ca.issue(&dir, "rogue", &sans).unwrap();
        let certs: Vec<_> =
            rustls_pemfile::certs(&mut BufReader::new(std::fs::File::open(&cert).unwrap()))
                .collect::<Result<_, _>>()
                .unwrap();
        let pk =
            rustls_pemfile::private_key(&mut BufReader::new(std::fs::File::open(&keyf).unwrap()))
                .unwrap()
                .unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut sc = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(certs, pk)
            .unwrap();
        sc.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let listener = tokio::net::TcpListener::bind((ip, 0)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let url = format!("https://{name}:{}", addr.port());
        let state = Arc::new(RogueState {
            key,
            name: name.to_string(),
            url,
            claim_key: Mutex::new(None),
            old_version: std::sync::atomic::AtomicBool::new(false),
            mode: Mutex::new(BlobMode::Honest),
            blobs: Mutex::new(HashMap::new()),
            blob_requests: AtomicU64::new(0),
            node_requests: AtomicU64::new(0),
        });
        let app = Router::new()
            .route("/.well-known/p2pcdn/v1/node", get(node))
            .route("/.well-known/p2pcdn/v1/health", get(health))
            .route("/.well-known/p2pcdn/v1/sync", post(sync))
            .route("/.well-known/p2pcdn/v1/push", post(push))
            .route("/.well-known/p2pcdn/v1/blob/{hash}", get(blob))
            .with_state(state.clone());
        let (stop, rx) = watch::channel(false);
        let metrics = Arc::new(p2pcdn::metrics::Metrics::new());
        tokio::spawn(p2pcdn::http::listen::serve(
            listener,
            Some(tokio_rustls::TlsAcceptor::from(Arc::new(sc))),
            app,
            Default::default(),
            Default::default(),
            Arc::new(p2pcdn::http::rtt::ClientRtt::new(metrics)),
            rx,
        ));
        let ca_pem = std::fs::read(&ca.cert_path).unwrap();
        Rogue {
            state,
            addr,
            key: public,
            ca_pem,
            clients: Mutex::new(HashMap::new()),
            stop,
        }
    }

    /// Learns the content of every file under `dir` (to serve it, or its first bytes).
    pub fn learn_dir(&self, dir: &std::path::Path) {
        for e in walkdir::WalkDir::new(dir).into_iter().flatten() {
            if e.file_type().is_file() {
                let b = std::fs::read(e.path()).unwrap();
                self.state
                    .blobs
                    .lock()
                    .unwrap()
                    .insert(BlobHash::of(&b), Bytes::from(b));
            }
        }
    }

    pub fn set_mode(&self, m: BlobMode) {
        *self.state.mode.lock().unwrap() = m;
    }

    /// A report signed with the rogue's own key.
    pub fn report(
        &self,
        addresses: &[IpAddr],
        location: Option<(f64, f64)>,
        holds: &[(&str, u64)],
    ) -> Vec<u8> {
        self.report_as(
            &self.state.url,
            &self.state.name,
            addresses,
            location,
            holds,
        )
    }

    /// A report signed with the rogue's own key naming any URL and name.
    pub fn report_as(
        &self,
        url: &str,
        name: &str,
        addresses: &[IpAddr],
        location: Option<(f64, f64)>,
        holds: &[(&str, u64)],
    ) -> Vec<u8> {
        signed_report(&self.state.key, url, name, addresses, location, holds)
    }

    /// POSTs `reports` to the push endpoint of the node `name` at `addr`.
    pub async fn push(&self, name: &str, addr: SocketAddr, reports: &[Vec<u8>]) -> u16 {
        let c = self
            .clients
            .lock()
            .unwrap()
            .entry((name.to_string(), addr))
            .or_insert_with(|| client(&self.ca_pem, name, addr))
            .clone();
        let bundle = PushRequest {
            v: PROTOCOL,
            reports: reports
                .iter()
                .map(|r| serde_json::from_slice(r).unwrap())
                .collect(),
            ..Default::default()
        };
        match c
            .post(format!(
                "https://{name}:{}/.well-known/p2pcdn/v1/push",
                addr.port()
            ))
            .json(&bundle)
            .send()
            .await
        {
            Ok(r) => r.status().as_u16(),
            Err(_) => 0,
        }
    }
}

impl Drop for Rogue {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// A client trusting the test CA that resolves `name` to `addr`.
pub fn client(ca_pem: &[u8], name: &str, addr: SocketAddr) -> reqwest::Client {
    reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(ca_pem).unwrap())
        .resolve(name, addr)
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

/// A signed report (any key; the tests sign floods with fresh keys).
pub fn signed_report(
    key: &SecretKey,
    url: &str,
    name: &str,
    addresses: &[IpAddr],
    location: Option<(f64, f64)>,
    holds: &[(&str, u64)],
) -> Vec<u8> {
    let now = p2pcdn::catalog::unix_now();
    let seq = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let r = Report {
        format: p2pcdn::report::FORMAT,
        node: key.public(),
        name: name.to_string(),
        url: url.to_string(),
        addresses: addresses.to_vec(),
        location: location.map(|(lat, lon)| Point { lat, lon }),
        capacity: Capacity {
            rps: 1e9,
            bps: 1e12,
        },
        load: Load {
            rps: 0.0,
            bps: 0.0,
            connections: 0,
        },
        holds: holds
            .iter()
            .map(|(s, v)| Held {
                site: s.to_string(),
                version: *v,
            })
            .collect(),
        mirrors: vec![],
        rtt_ms: Default::default(),
        client_rtt: vec![],
        certs: None,
        seq,
        issued: now,
        expires: now + 30,
    };
    p2pcdn::report::sign(&r, key).unwrap()
}

async fn node(State(st): State<Arc<RogueState>>, uri: Uri) -> Response {
    st.node_requests.fetch_add(1, Ordering::Relaxed);
    let nonce = uri
        .query()
        .and_then(|q| q.strip_prefix("challenge="))
        .and_then(Nonce::parse);
    let key = st.claim_key.lock().unwrap().unwrap_or(st.key.public());
    Json(NodeDoc {
        name: st.name.clone(),
        key: key.to_string(),
        url: st.url.clone(),
        protocol: Some(PROTOCOL),
        // Signed with the key it holds: a claimed foreign key cannot verify.
        proof: nonce
            .filter(|_| !st.old_version.load(Ordering::Relaxed))
            .map(|n| binding::prove(&st.key, &n, &st.name, &st.url)),
    })
    .into_response()
}

async fn health() -> Response {
    Json(serde_json::json!({"status": "ok"})).into_response()
}

async fn sync() -> Response {
    // Protocol 2: holds no manifest and agrees with every fingerprint.
    Json(serde_json::json!({"v": PROTOCOL, "sites": {}})).into_response()
}

async fn push() -> Response {
    StatusCode::NO_CONTENT.into_response()
}

fn parse_range(h: &HeaderMap, size: usize) -> Option<(usize, usize)> {
    let r = h
        .get(header::RANGE)?
        .to_str()
        .ok()?
        .strip_prefix("bytes=")?;
    let (a, b) = r.split_once('-')?;
    let a: usize = a.parse().ok()?;
    let b: usize = if b.is_empty() {
        size - 1
    } else {
        b.parse().ok()?
    };
    (a <= b && b < size).then_some((a, b))
}

async fn blob(
    State(st): State<Arc<RogueState>>,
    Path(hash): Path<String>,
    headers: HeaderMap,
) -> Response {
    st.blob_requests.fetch_add(1, Ordering::Relaxed);
    let mode = *st.mode.lock().unwrap();
    let h: BlobHash = match hash.parse() {
        Ok(h) => h,
        Err(_) => return StatusCode::BAD_REQUEST.into_response(),
    };
    let known = st.blobs.lock().unwrap().get(&h).cloned();
    match mode {
        BlobMode::Trickle => {
            let s = futures_util::stream::unfold(0u32, |i| async move {
                if i > 0 {
                    tokio::time::sleep(Duration::from_secs(20)).await;
                }
                Some((Ok::<_, std::io::Error>(Bytes::from_static(b"x")), i + 1))
            });
            (StatusCode::OK, Body::from_stream(s)).into_response()
        }
        BlobMode::Garbage => {
            let size = known.map_or(1000, |b| b.len());
            let s = futures_util::stream::iter(vec![Ok::<_, std::io::Error>(Bytes::from(
                vec![0xAB; size.saturating_sub(1)],
            ))]);
            (StatusCode::OK, Body::from_stream(s)).into_response()
        }
        BlobMode::Honest | BlobMode::PrefixOnly => {
            let Some(b) = known else {
                return StatusCode::NOT_FOUND.into_response();
            };
            let body = if mode == BlobMode::Honest {
                b.to_vec()
            } else {
                let mut v = vec![0u8; b.len()];
                if let (Some(d), Some(s)) = (v.first_mut(), b.first()) {
                    *d = *s;
                }
                v
            };
            match parse_range(&headers, body.len()) {
                Some((a, e)) => (
                    StatusCode::PARTIAL_CONTENT,
                    [(
                        header::CONTENT_RANGE,
                        format!("bytes {a}-{e}/{}", body.len()),
                    )],
                    body[a..=e].to_vec(),
                )
                    .into_response(),
                None => (StatusCode::OK, body).into_response(),
            }
        }
    }
}
