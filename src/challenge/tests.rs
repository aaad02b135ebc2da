use super::book::{Applied, Limits, TxtBook};
use super::*;

const NOW: u64 = 1_800_000_000;
const VALUE: &str = "LoqXcYV8q5ONbJQxbmR7SCTNo3tiAXDfowyjxAjEuX0";

struct Ctx {
    site: &'static str,
    mirrors: Vec<PublicKey>,
    bound: Vec<(PublicKey, &'static str)>,
}

impl Context for Ctx {
    fn serves(&self, name: &str) -> bool {
        name == "demo.p2pcdn.test" || name.ends_with(".demo.p2pcdn.test")
    }
    fn site_mirrors(&self, name: &str) -> Option<Vec<PublicKey>> {
        (name == self.site).then(|| self.mirrors.clone())
    }
    fn node_name(&self, key: &PublicKey) -> Option<String> {
        self.bound
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, n)| n.to_string())
    }
}

fn key() -> SecretKey {
    SecretKey::generate().unwrap()
}

fn req(k: &SecretKey, action: Action, name: &str) -> VerifiedRequest {
    let env = new_request(k, action, name, VALUE, NOW, 300).unwrap();
    verify(&env, NOW).unwrap()
}

#[test]
fn authorized_mirror_and_own_node_name_are_accepted() {
    let (m, n) = (key(), key());
    let ctx = Ctx {
        site: "www.demo.p2pcdn.test",
        mirrors: vec![m.public()],
        bound: vec![(n.public(), "ns2.demo.p2pcdn.test")],
    };
    assert_eq!(
        check(
            &req(&m, Action::Publish, "www.demo.p2pcdn.test").request,
            &ctx
        ),
        Ok(())
    );
    assert_eq!(
        check(
            &req(&n, Action::Publish, "ns2.demo.p2pcdn.test").request,
            &ctx
        ),
        Ok(())
    );
}

#[test]
fn unauthorized_other_names_and_outside_zones_are_refused() {
    let (m, n, stranger) = (key(), key(), key());
    let ctx = Ctx {
        site: "www.demo.p2pcdn.test",
        mirrors: vec![m.public()],
        bound: vec![(n.public(), "ns2.demo.p2pcdn.test")],
    };
    let refused = |k: &SecretKey, name: &str| check(&req(k, Action::Publish, name).request, &ctx);
    // A node that the manifest does not list.
    assert!(matches!(
        refused(&stranger, "www.demo.p2pcdn.test"),
        Err(Refusal::NotAuthorized { .. })
    ));
    // A listed mirror asking for a name that is not its site.
    assert!(matches!(
        refused(&m, "other.demo.p2pcdn.test"),
        Err(Refusal::NotAuthorized { .. })
    ));
    // A node asking for another node's name.
    assert!(matches!(
        refused(&m, "ns2.demo.p2pcdn.test"),
        Err(Refusal::NotAuthorized { .. })
    ));
    assert!(matches!(
        refused(&n, "ns3.demo.p2pcdn.test"),
        Err(Refusal::NotAuthorized { .. })
    ));
    // Names outside the zones served.
    assert!(matches!(
        refused(&m, "www.example.org"),
        Err(Refusal::OutsideZones(_))
    ));
    // An empty mirror list authorizes nobody for certificates.
    let open = Ctx {
        site: "www.demo.p2pcdn.test",
        mirrors: vec![],
        bound: vec![],
    };
    let r = req(&m, Action::Publish, "www.demo.p2pcdn.test").request;
    assert!(matches!(
        check(&r, &open),
        Err(Refusal::NotAuthorized { .. })
    ));
}

#[test]
fn forged_malformed_and_stale_requests_are_refused() {
    let k = key();
    let env = new_request(&k, Action::Publish, "www.demo.p2pcdn.test", VALUE, NOW, 300).unwrap();
    // Forged: the body changed after signing.
    let mut e: serde_json::Value = serde_json::from_slice(&env).unwrap();
    let body = STANDARD.decode(e["request"].as_str().unwrap()).unwrap();
    let forged = String::from_utf8(body)
        .unwrap()
        .replace("www.demo", "evil.demo");
    e["request"] = STANDARD.encode(forged).into();
    assert_eq!(
        verify(&serde_json::to_vec(&e).unwrap(), NOW).unwrap_err(),
        Refusal::BadSignature
    );
    // Another key's signature over the same body.
    let other = key();
    let mut r: ChallengeRequest = serde_json::from_slice(
        &STANDARD
            .decode(
                serde_json::from_slice::<serde_json::Value>(&env).unwrap()["request"]
                    .as_str()
                    .unwrap(),
            )
            .unwrap(),
    )
    .unwrap();
    let resigned = sign(&r, &other).unwrap();
    assert_eq!(verify(&resigned, NOW).unwrap_err(), Refusal::BadSignature);
    // Stale: expired, from the future, too long.
    assert!(matches!(verify(&env, NOW + 301), Err(Refusal::Stale(_))));
    assert!(matches!(
        verify(&env, NOW - MAX_SKEW - 1),
        Err(Refusal::Stale(_))
    ));
    r.expires = r.issued + MAX_LIFETIME + 1;
    assert!(matches!(
        verify(&sign(&r, &k).unwrap(), NOW),
        Err(Refusal::Stale(_))
    ));
    // Malformed values and names.
    for (name, value) in [
        ("www.demo.p2pcdn.test", "short"),
        ("WWW.demo.p2pcdn.test", VALUE),
        ("*.demo.p2pcdn.test", VALUE),
        ("www.demo.p2pcdn.test.", VALUE),
        ("bad name", VALUE),
    ] {
        let env = new_request(&k, Action::Publish, "x.test", VALUE, NOW, 300).unwrap();
        let mut r: ChallengeRequest = serde_json::from_slice(
            &STANDARD
                .decode(
                    serde_json::from_slice::<serde_json::Value>(&env).unwrap()["request"]
                        .as_str()
                        .unwrap(),
                )
                .unwrap(),
        )
        .unwrap();
        r.name = name.into();
        r.value = value.into();
        assert!(
            matches!(
                verify(&sign(&r, &k).unwrap(), NOW),
                Err(Refusal::Malformed(_))
            ),
            "{name} {value}"
        );
    }
    assert!(matches!(verify(b"{}", NOW), Err(Refusal::Malformed(_))));
    assert!(matches!(
        verify(&vec![b' '; MAX_REQUEST_BYTES + 1], NOW),
        Err(Refusal::Malformed(_))
    ));
}

#[test]
fn book_serves_coexisting_values_withdraws_and_refuses_replays() {
    let book = TxtBook::new(Limits::default());
    let (a, b) = (key(), key());
    let name = "www.demo.p2pcdn.test";
    let owner = "_acme-challenge.www.demo.p2pcdn.test";
    let pa = req(&a, Action::Publish, name);
    let mut pb = req(&b, Action::Publish, name);
    pb.request.value = "B".repeat(43);
    assert_eq!(book.apply(&pa, NOW), Ok(Applied::Published));
    assert_eq!(book.apply(&pb, NOW), Ok(Applied::Published));
    assert_eq!(
        book.values(owner, NOW).len(),
        2,
        "concurrent mirrors' values coexist"
    );
    // The same request again (relayed by another authority): idempotent.
    assert_eq!(book.apply(&pa, NOW + 1), Ok(Applied::AlreadyPublished));
    // Withdrawal removes only the signer's value.
    assert_eq!(
        book.apply(&req(&a, Action::Withdraw, name), NOW + 2),
        Ok(Applied::Withdrawn)
    );
    assert_eq!(book.values(owner, NOW + 2), vec!["B".repeat(43)]);
    // Replaying the withdrawn publish request is refused and serves nothing.
    assert_eq!(book.apply(&pa, NOW + 3), Err(Refusal::Replay));
    assert_eq!(book.values(owner, NOW + 3), vec!["B".repeat(43)]);
    // Values expire with their request.
    assert!(book.values(owner, NOW + 300).is_empty());
    assert!(book.apply(&pb, NOW + 301).is_ok() || book.is_empty());
}

#[test]
fn book_rate_limits_signers_and_names() {
    let limits = Limits {
        requests_per_signer: 3,
        window_secs: 600,
        values_per_signer: 2,
        values_per_name: 3,
        values_total: 100,
    };
    let book = TxtBook::new(limits);
    let a = key();
    let value = |i: usize| format!("{i:0>43}");
    let publish = |k: &SecretKey, name: &str, i: usize| {
        let mut r = req(k, Action::Publish, name);
        r.request.value = value(i);
        r
    };
    assert!(book
        .apply(&publish(&a, "a.demo.p2pcdn.test", 1), NOW)
        .is_ok());
    assert!(book
        .apply(&publish(&a, "b.demo.p2pcdn.test", 2), NOW)
        .is_ok());
    // A third live value from the same signer: flooding.
    assert!(matches!(
        book.apply(&publish(&a, "c.demo.p2pcdn.test", 3), NOW),
        Err(Refusal::RateLimited(_))
    ));
    // Refreshing an existing value is allowed, until the request budget is spent.
    assert!(book
        .apply(&publish(&a, "a.demo.p2pcdn.test", 1), NOW)
        .is_ok());
    assert!(matches!(
        book.apply(&publish(&a, "a.demo.p2pcdn.test", 1), NOW),
        Err(Refusal::RateLimited(_))
    ));
    // Per-name cap: several signers on one name.
    for i in 0..3 {
        assert!(book
            .apply(&publish(&key(), "n.demo.p2pcdn.test", 10 + i), NOW)
            .is_ok());
    }
    assert!(matches!(
        book.apply(&publish(&key(), "n.demo.p2pcdn.test", 20), NOW),
        Err(Refusal::RateLimited(_))
    ));
    // The window slides.
    assert!(book
        .apply(&publish(&a, "a.demo.p2pcdn.test", 1), NOW + 601)
        .is_ok());
}
