//! Acknowledged writes survive a graceful restart and a kill -9.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crate::support::{self, NodeBuilder, eventually};

fn add(node: &crate::support::Node, list: &str, title: &str) {
    let response = node.request(
        "POST",
        &format!("/add_entry?list={list}&date=2024-01-15&title={title}"),
        &[],
        b"",
    );
    assert_eq!(response.status, 200, "{}", response.text());
}

fn titles(node: &crate::support::Node, list: &str) -> Vec<String> {
    let response = node.get(&format!("/entries?list={list}&date=2024-01-15"));
    assert_eq!(response.status, 200);
    response
        .text()
        .lines()
        .map(|line| line.trim_start_matches("2024-01-15 ").to_string())
        .collect()
}

#[test]
fn entries_survive_a_graceful_restart() {
    let data = tempfile::tempdir().expect("temp dir");
    let node = NodeBuilder::todo().data_dir(data.path()).start();
    for i in 0..20 {
        add(&node, "home", &format!("chore{i}"));
    }
    add(&node, "work", "report");
    let status = node.stop();
    assert_eq!(status.code(), Some(0), "graceful stop exits 0");

    let node = NodeBuilder::todo().data_dir(data.path()).start();
    let expected: Vec<String> = (0..20).map(|i| format!("chore{i}")).collect();
    assert_eq!(titles(&node, "home"), expected);
    assert_eq!(titles(&node, "work"), ["report"]);
    // Ids continue where they stopped.
    let created = node.post(
        "/lists/work/entries",
        r#"{"date":"2024-01-15","title":"next"}"#,
    );
    assert_eq!(created.json()["id"], 2);
}

#[test]
fn every_acknowledged_add_survives_kill_9() {
    let data = tempfile::tempdir().expect("temp dir");
    let node = NodeBuilder::todo().data_dir(data.path()).start();
    let lists = ["a", "b", "c", "d"];
    for i in 0..50 {
        add(&node, lists[i % lists.len()], &format!("e{i}"));
    }
    node.kill();

    let node = NodeBuilder::todo().data_dir(data.path()).start();
    for (index, list) in lists.iter().enumerate() {
        let expected: Vec<String> = (0..50)
            .filter(|i| i % lists.len() == index)
            .map(|i| format!("e{i}"))
            .collect();
        assert_eq!(titles(&node, list), expected, "list {list}");
    }
}

#[test]
fn every_acknowledged_add_survives_kill_9_in_the_middle_of_concurrent_writes() {
    const CLIENTS: usize = 6;
    const LISTS: usize = 4;
    let data = tempfile::tempdir().expect("temp dir");
    let node = NodeBuilder::todo().data_dir(data.path()).start();
    let port = node.port;
    let acknowledged_count = Arc::new(AtomicUsize::new(0));
    // Each client adds until the node is gone and returns what was
    // acknowledged (200 `OK`), per list.
    let clients: Vec<_> = (0..CLIENTS)
        .map(|client| {
            let acknowledged_count = acknowledged_count.clone();
            std::thread::spawn(move || {
                let mut acknowledged = Vec::new();
                for i in 0.. {
                    let list = format!("l{}", (client + i) % LISTS);
                    let title = format!("c{client}-{i}");
                    let path = format!("/add_entry?list={list}&date=2024-01-15&title={title}");
                    match support::try_request(port, "POST", &path, &[], b"") {
                        Some(r) if r.status == 200 && r.body == b"OK" => {
                            acknowledged.push((list, title));
                            acknowledged_count.fetch_add(1, Ordering::Relaxed);
                        }
                        Some(r) if r.status == 200 => panic!("200 without OK: {}", r.text()),
                        _ => break,
                    }
                }
                acknowledged
            })
        })
        .collect();
    eventually(Duration::from_secs(60), "300 acknowledged adds", || {
        acknowledged_count.load(Ordering::Relaxed) >= 300
    });
    node.kill();
    let mut acknowledged: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for client in clients {
        for (list, title) in client.join().expect("client thread") {
            acknowledged.entry(list).or_default().insert(title);
        }
    }

    let node = NodeBuilder::todo().data_dir(data.path()).start();
    for (list, titles_acknowledged) in &acknowledged {
        let stored = titles(&node, list);
        let stored_set: BTreeSet<String> = stored.iter().cloned().collect();
        assert_eq!(stored_set.len(), stored.len(), "no entry of {list} doubled");
        let lost: Vec<_> = titles_acknowledged.difference(&stored_set).collect();
        assert!(
            lost.is_empty(),
            "acknowledged adds lost from {list}: {lost:?}"
        );
    }
}

#[test]
fn sigint_stops_gracefully_too() {
    let data = tempfile::tempdir().expect("temp dir");
    let node = NodeBuilder::todo()
        .data_dir(data.path())
        .arg("--fsync")
        .start();
    add(&node, "x", "kept");
    let pid = node.pid();
    crate::support::signal(pid, "INT");
    let status = node.stop_after_signal();
    assert_eq!(status.code(), Some(0));
    let node = NodeBuilder::todo().data_dir(data.path()).start();
    assert_eq!(titles(&node, "x"), ["kept"]);
}
