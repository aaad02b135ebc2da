//! Peers persist across restarts: an instance whose only bootstrap peer is
//! down rejoins the federation through a peer it bound in an earlier run
//! (the `peers` table, migration 0002), while a fresh instance with the same
//! bootstrap peer and no memory stays alone.

mod common;

use std::time::Duration;

use common::eventually;
use common::fed::{self, Fed};
use p2pcdn::instance::Instance;

/// Rewrites node `i`'s config so that its only bootstrap peer is node `boot`.
fn only_bootstrap(f: &Fed, i: usize, boot: usize) {
    let path = &f.nodes[i].config_path;
    let text = std::fs::read_to_string(path).unwrap();
    let keep = format!("https://{}:", f.nodes[boot].name);
    let out: Vec<&str> = text
        .lines()
        .filter(|l| !l.trim_start().starts_with("{ url = ") || l.contains(&keep))
        .collect();
    std::fs::write(path, out.join("\n") + "\n").unwrap();
    let cfg = f.config(i);
    assert_eq!(cfg.federation.peers.len(), 1, "one bootstrap peer");
}

/// Node `i` has bound node `j` and holds a report from it.
fn knows(insts: &[Option<Instance>], f: &Fed, i: usize, j: usize) -> bool {
    insts[i].as_ref().is_some_and(|x| {
        x.federation
            .peers()
            .iter()
            .any(|p| p.key == f.nodes[j].key && p.report.is_some())
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn restarted_instances_rejoin_through_remembered_peers() {
    let f = fed::build(51, [10_000.0; 5]);
    // Nodes 1, 2 and 3 know only node 0; node 0 knows everyone.
    for i in [1, 2, 3] {
        only_bootstrap(&f, i, 0);
    }
    let mut insts: Vec<Option<Instance>> = (0..5).map(|_| None).collect();
    for i in [0, 1, 2] {
        insts[i] = Some(f.start(i).await);
    }
    // Nodes 1 and 2 learn each other from node 0's gossip and bind.
    assert!(
        eventually(30, async || knows(&insts, &f, 2, 1)
            && knows(&insts, &f, 1, 2))
        .await,
        "nodes 1 and 2 found each other through their bootstrap peer"
    );
    // Everything stops; nodes 1 and 2 come back while node 0 stays down.
    for i in [2, 1, 0] {
        insts[i].take().unwrap().shutdown().await;
    }
    for i in [1, 2] {
        insts[i] = Some(f.start(i).await);
    }
    let t0 = std::time::Instant::now();
    assert!(
        eventually(20, async || knows(&insts, &f, 2, 1)
            && knows(&insts, &f, 1, 2))
        .await,
        "restarted nodes rejoined through the peers they remembered"
    );
    let took = t0.elapsed();
    for i in [1, 2] {
        let unbound = insts[i]
            .as_ref()
            .unwrap()
            .federation
            .unbound_bootstrap_peers();
        assert_eq!(
            unbound.len(),
            1,
            "the bootstrap peer is still down: {unbound:?}"
        );
        assert!(unbound[0].0.contains(&f.nodes[0].name));
    }

    // Control: node 3 has the same single bootstrap peer, no memory, and
    // nobody up knows it; in the same time it binds nobody.
    insts[3] = Some(f.start(3).await);
    tokio::time::sleep(took.max(Duration::from_secs(3))).await;
    let alone = insts[3].as_ref().unwrap().federation.peers();
    assert!(
        alone.is_empty(),
        "a fresh instance cannot find the federation: {:?}",
        alone.iter().map(|p| &p.name).collect::<Vec<_>>()
    );
    for i in insts.into_iter().flatten() {
        i.shutdown().await;
    }
}
