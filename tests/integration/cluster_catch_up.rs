//! A node that joins late receives everything written before it came:
//! through a snapshot of the data when the cluster is founded on a node
//! that has some, and through the log otherwise.

use std::time::Duration;

use crate::support::cluster::{COOKIE, connect, stored_entries, todo_node, wait_for_members};
use crate::support::{Epmd, Node, NodeBuilder, eventually};

const ADDS: usize = 10_000;

/// Adds `count` entries to `list` through `node`, from 8 connections at
/// once.
fn add_many(node: &Node, list: &str, count: usize) {
    let port = node.port;
    let workers: Vec<_> = (0..8)
        .map(|worker| {
            let list = list.to_string();
            std::thread::spawn(move || {
                for i in (worker..count).step_by(8) {
                    let response = crate::support::request(
                        port,
                        "POST",
                        &format!("/add_entry?list={list}&date=2024-04-04&title=e{i}"),
                        &[],
                        b"",
                    );
                    assert_eq!(response.status, 200, "{}", response.text());
                }
            })
        })
        .collect();
    for worker in workers {
        worker.join().expect("worker");
    }
}

fn assert_has_all(node: Node, list: &str) {
    let (dir, _kept) = node.kill_keeping_data();
    let stored = stored_entries(&dir, list);
    assert_eq!(
        stored.len(),
        ADDS,
        "{} holds {} entries",
        dir.display(),
        stored.len()
    );
    let mut titles: Vec<&str> = stored.iter().map(|entry| entry.title.as_str()).collect();
    titles.sort_unstable();
    titles.dedup();
    assert_eq!(titles.len(), ADDS);
}

fn applied(node: &Node) -> u64 {
    node.metric("host_cluster_applied_index")
}

#[test]
fn a_node_joining_after_ten_thousand_adds_has_all_of_them() {
    let epmd = Epmd::start();
    // Through the log: two nodes in a cluster take the adds, a third joins.
    let a = NodeBuilder::todo()
        .clustered("a", &epmd, COOKIE)
        .metrics()
        .start();
    let b = NodeBuilder::todo()
        .clustered("b", &epmd, COOKIE)
        .metrics()
        .start();
    connect(&epmd, &b, &a);
    add_many(&a, "logged", ADDS);
    let late = NodeBuilder::todo()
        .clustered("late", &epmd, COOKIE)
        .metrics()
        .start();
    connect(&epmd, &late, &a);
    wait_for_members(&epmd, &late, &[&a, &b, &late]);
    eventually(
        Duration::from_secs(30),
        "the late node applied the whole log",
        || applied(&late) >= applied(&a),
    );
    assert_eq!(
        late.get("/lists/logged/entries")
            .json()
            .as_array()
            .map(Vec::len),
        Some(ADDS)
    );
    assert_has_all(late, "logged");
    drop((a, b));

    // Through a snapshot: a lone node's data becomes the cluster's.
    let lone = NodeBuilder::todo()
        .clustered("lone", &epmd, COOKIE)
        .metrics()
        .start();
    add_many(&lone, "local", ADDS);
    let joiner = NodeBuilder::todo()
        .clustered("joiner", &epmd, COOKIE)
        .metrics()
        .start();
    connect(&epmd, &joiner, &lone);
    eventually(
        Duration::from_secs(30),
        "the joiner applied the snapshot",
        || applied(&joiner) >= applied(&lone),
    );
    assert!(
        joiner.logs().contains("installed a snapshot"),
        "{}",
        joiner.logs()
    );
    assert_has_all(joiner, "local");
}

#[test]
fn two_nodes_with_data_of_their_own_refuse_to_merge() {
    let epmd = Epmd::start();
    let a = todo_node(&epmd, "a");
    let b = todo_node(&epmd, "b");
    for node in [&a, &b] {
        let response = node.request(
            "POST",
            "/add_entry?list=mine&date=2024-04-04&title=x",
            &[],
            b"",
        );
        assert_eq!(response.status, 200);
    }
    let out = crate::support::cluster::tool(&epmd, COOKIE, &["connect", &b.name, &a.name]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("both hold data"), "{stderr}");
    assert!(
        stderr.contains(&b.data_dir.display().to_string()),
        "names B's data dir: {stderr}"
    );
    // Nothing changed: both still alone, with their data, and writable.
    for node in [&a, &b] {
        let response = node.request(
            "POST",
            "/add_entry?list=mine&date=2024-04-04&title=y",
            &[],
            b"",
        );
        assert_eq!(response.status, 200, "{}", response.text());
        assert_eq!(
            node.get("/entries?list=mine&date=2024-04-04").text(),
            "2024-04-04 x\n2024-04-04 y"
        );
    }
}
