//! Hot swap across a cluster of three: one operation recorded in the Raft
//! log, followed by every node (rolling by default), with the real Todo
//! component's versions (guest_todo.wasm 1.0.0, guest_todo_v2.wasm 2.0.0,
//! guest_todo_v2_faulty.wasm whose lists named `faulty...` trap when they
//! move up). Every node is started with version 1's file: what it runs
//! after that comes from the cluster.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use crate::support::cluster::{COOKIE, connect, todo_cluster, wait_for_members};
use crate::support::swap::{assert_unchanged, book_entries, fill, names, rpc, swap};
use crate::support::{Epmd, Node, NodeBuilder, eventually};

/// Long enough for a rollout of a few hundred processes over three nodes
/// on a loaded machine.
const ROLLOUT_TIMEOUT: Duration = Duration::from_secs(120);

const V1: &str = "1.0.0";
const V2: &str = "2.0.0";

/// Waits until `node` runs `version` with no swap of its own left.
fn wait_current(epmd: &Epmd, node: &Node, version: &str) {
    eventually(
        ROLLOUT_TIMEOUT,
        &format!("{} runs {version}", node.name),
        || {
            let versions = rpc(epmd, node, "versions");
            versions.contains(&format!("current: {version} (")) && !versions.contains("  swap:")
        },
    );
}

/// Waits until `node`'s view of the rollout contains `text`.
fn wait_rollout(epmd: &Epmd, node: &Node, text: &str) -> String {
    let mut seen = String::new();
    eventually(
        ROLLOUT_TIMEOUT,
        &format!("the rollout says {text:?}"),
        || {
            seen = rpc(epmd, node, "versions");
            seen.contains(text)
        },
    );
    seen
}

/// `ps` of `node`'s own processes.
fn local_ps(epmd: &Epmd, node: &Node) -> String {
    rpc(epmd, node, &format!("ps --node {} --limit 1000", node.name))
}

/// Restarts a member killed with -9 on its own data.
fn restart(epmd: &Epmd, name: &str, data_dir: &std::path::Path) -> Node {
    NodeBuilder::todo()
        .clustered(name, epmd, COOKIE)
        .data_dir(data_dir)
        .metrics()
        .start()
}

#[test]
fn a_rolling_swap_moves_every_node_under_writes_and_a_node_joining_later_runs_it() {
    let epmd = Epmd::start();
    let nodes = todo_cluster(&epmd, 3, &[]);
    let all: Vec<&Node> = nodes.iter().collect();
    let lists = names("groceries", 24);
    let before = fill(&nodes[0], &lists);

    // A writer through each node, each to its own list, in order.
    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(AtomicUsize::new(0));
    let writers: Vec<_> = nodes
        .iter()
        .enumerate()
        .map(|(i, node)| {
            let (stop, failures, port) = (stop.clone(), failures.clone(), node.port);
            std::thread::spawn(move || {
                let list = format!("busy-{i}");
                let mut acknowledged = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    let path =
                        format!("/add_entry?list={list}&date=2023-01-01&title=w{acknowledged:05}");
                    let response = crate::support::request(port, "POST", &path, &[], b"");
                    if response.status == 200 {
                        acknowledged += 1;
                    } else {
                        failures.fetch_add(1, Ordering::Relaxed);
                        eprintln!("{list}: {} {}", response.status, response.text());
                    }
                }
                (list, acknowledged)
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));

    // Issued on a node of the three, it is the cluster's: every node swaps,
    // one after another, then it is committed.
    let (ok, printed) = swap(&epmd, &nodes[1], "guest_todo_v2", &["--commit"]);
    assert!(ok, "{printed}");
    assert!(
        printed.contains(&format!(
            "rolling guest_todo out from {V1} to {V2} on n1@127.0.0.1, n2@127.0.0.1, n3@127.0.0.1"
        )) && printed.contains(&format!("committed: every node runs {V2}")),
        "{printed}"
    );
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    let written: Vec<(String, usize)> = writers
        .into_iter()
        .map(|writer| writer.join().expect("writer"))
        .collect();
    assert_eq!(failures.load(Ordering::Relaxed), 0, "failed requests");
    for (list, acknowledged) in &written {
        assert!(*acknowledged > 0, "{list} wrote nothing");
        let expected: Vec<String> = (0..*acknowledged).map(|i| format!("{i:05}")).collect();
        for node in &all {
            let entries = book_entries(node, list);
            let got: Vec<&str> = entries
                .lines()
                .filter_map(|line| line.strip_prefix("2023-01-01 w"))
                .collect();
            assert_eq!(got, expected, "{list} through {}", node.name);
        }
    }
    for node in &all {
        wait_current(&epmd, node, V2);
        let versions = rpc(&epmd, node, "versions");
        assert!(
            versions.contains(&format!(
                "cluster: {V1} to {V2}, issued on n2@127.0.0.1 (one node at a time): committed"
            )),
            "{versions}"
        );
        for member in ["n1", "n2", "n3"] {
            assert!(
                versions.contains(&format!("{member}@127.0.0.1: swapped: ")),
                "{versions}"
            );
        }
    }
    assert_unchanged(&all, &lists, &before);
    // Version 2's feature, through a node other than the list's first.
    let response = nodes[2].request(
        "PUT",
        "/lists/groceries-005/entries/2",
        &[("content-type", "application/json")],
        br#"{"done":true}"#,
    );
    assert_eq!(response.status, 200, "{}", response.text());

    // A node that joins now, started with version 1's file, runs version 2:
    // the bytes came to it with the cluster's data.
    let late = NodeBuilder::todo()
        .clustered("n4", &epmd, COOKIE)
        .metrics()
        .start();
    connect(&epmd, &late, &nodes[0]);
    let mut everyone = all.clone();
    everyone.push(&late);
    wait_for_members(&epmd, &late, &everyone);
    wait_current(&epmd, &late, V2);
    let entries = late.get("/lists/groceries-005/entries").text();
    assert!(
        entries.contains(r#""title":"Eggs-groceries-005","done":true"#),
        "{entries}"
    );
    assert_unchanged(&everyone, &lists, &before);
    late.stop();
    for node in nodes {
        node.stop();
    }
}

#[test]
fn a_rollout_survives_killing_its_leader_and_a_node_that_cannot_swap_rolls_every_node_back() {
    let epmd = Epmd::start();
    let mut nodes = todo_cluster(&epmd, 3, &[]);
    let lists = names("groceries", 24);
    let before = fill(&nodes[0], &lists);

    // A canary on every node, then the leader is killed with -9 before the
    // rollout is promoted or committed.
    let (ok, printed) = swap(&epmd, &nodes[0], "guest_todo_v2", &["--canary", "50"]);
    assert!(ok, "{printed}");
    wait_rollout(&epmd, &nodes[0], "every node swapped; awaiting commit");
    let leader = (0..nodes.len())
        .find(|i| nodes[*i].metric("host_cluster_leader") == 1)
        .expect("a leader");
    let name = nodes[leader]
        .name
        .split('@')
        .next()
        .unwrap_or("")
        .to_string();
    let (dir, _kept) = nodes.remove(leader).kill_keeping_data();
    // It comes back on its own data, started with version 1's file: the
    // record says its canary runs version 2, so it swaps again.
    nodes.insert(leader, restart(&epmd, &name, &dir));
    let all: Vec<&Node> = nodes.iter().collect();
    for node in &all {
        wait_for_members(&epmd, node, &all);
    }
    eventually(ROLLOUT_TIMEOUT, "the restarted node's canary", || {
        rpc(&epmd, &nodes[leader], "versions").contains(&format!("swap:    {V1} to {V2} (50%"))
    });
    let other = &nodes[(leader + 1) % 3];
    let promoted = rpc(&epmd, other, "promote guest_todo");
    assert!(promoted.contains("every process moves"), "{promoted}");
    let committed = rpc(&epmd, other, "commit guest_todo");
    assert!(committed.contains("committed"), "{committed}");
    for node in &all {
        wait_current(&epmd, node, V2);
    }
    assert_unchanged(&all, &lists, &before);

    // A version that some lists cannot move to, held by the last node of
    // the rollout only (those elsewhere are killed: a dry run samples live
    // processes): the first two nodes swap, the third refuses it in its dry
    // run, and the two go back.
    let faulty = names("faulty", 30);
    let faulty_before = fill(&nodes[0], &faulty);
    let held: Vec<String> = all.iter().map(|node| local_ps(&epmd, node)).collect();
    let on_last = faulty
        .iter()
        .filter(|name| held[2].contains(name.as_str()))
        .count();
    assert!(on_last > 0, "no faulty list on n3: {}", held[2]);
    for (node, held) in all.iter().zip(&held).take(2) {
        for name in faulty.iter().filter(|name| held.contains(name.as_str())) {
            rpc(&epmd, node, &format!("kill {name}"));
        }
        eventually(ROLLOUT_TIMEOUT, "the killed lists gone", || {
            !local_ps(&epmd, node).contains("faulty-")
        });
    }
    let (ok, printed) = swap(&epmd, &nodes[0], "guest_todo_v2_faulty", &["--commit"]);
    assert!(!ok, "a rollout that cannot work was committed: {printed}");
    assert!(
        printed.contains("rolled back: n3@127.0.0.1 could not swap: the dry run refused"),
        "{printed}"
    );
    for node in &all {
        wait_current(&epmd, node, V2);
        let versions = rpc(&epmd, node, "versions");
        for swapped in ["n1", "n2"] {
            assert!(
                versions.contains(&format!(
                    "{swapped}@127.0.0.1: swapped: {V2} to 2.0.0-faulty"
                )),
                "{versions}"
            );
        }
        assert!(
            versions.contains("n3@127.0.0.1: failed: the dry run refused"),
            "{versions}"
        );
    }
    for node in &all[..2] {
        let versions = rpc(&epmd, node, "versions");
        assert!(
            versions.contains("the cluster's rollout rolled back: n3@127.0.0.1 could not swap"),
            "{versions}"
        );
    }
    assert_unchanged(&all, &lists, &before);
    assert_unchanged(&all, &faulty, &faulty_before);
    // Over, it leaves room for the next: back to 1.0.0, all at once.
    let (ok, printed) = swap(
        &epmd,
        &nodes[1],
        "guest_todo",
        &["--down", "--all-at-once", "--commit"],
    );
    assert!(ok, "{printed}");
    for node in &all {
        wait_current(&epmd, node, V1);
    }
    assert_unchanged(&all, &lists, &before);
    for node in nodes {
        node.stop();
    }
}

#[test]
fn a_node_killed_mid_rollout_is_passed_over_and_swaps_when_it_is_back() {
    let epmd = Epmd::start();
    let mut nodes = todo_cluster(&epmd, 3, &[]);
    let lists = names("groceries", 24);
    let before = fill(&nodes[0], &lists);
    // A node after the first in the rollout's order, not the leader (a
    // leader's failover is another matter): killed with -9 just before
    // the rollout, it is down by its turn.
    let victim = [2, 1]
        .into_iter()
        .find(|i| nodes[*i].metric("host_cluster_leader") == 0)
        .expect("a follower");
    let name = nodes[victim].name.clone();
    let short = name.split('@').next().unwrap_or("").to_string();
    let (dir, _kept) = nodes.remove(victim).kill_keeping_data();
    let (ok, printed) = swap(&epmd, &nodes[0], "guest_todo_v2", &["--commit"]);
    assert!(ok, "{printed}");
    assert!(
        printed.contains(&format!("committed: every node runs {V2}")),
        "{printed}"
    );
    let versions = rpc(&epmd, &nodes[0], "versions");
    assert!(
        versions.contains(&format!(
            "{name}: down when its turn came: swaps when it is back"
        )),
        "{versions}"
    );
    for node in &nodes {
        wait_current(&epmd, node, V2);
    }
    // Back on its data, started with version 1's file: it takes the
    // committed version, and says so.
    nodes.insert(victim, restart(&epmd, &short, &dir));
    let all: Vec<&Node> = nodes.iter().collect();
    for node in &all {
        wait_for_members(&epmd, node, &all);
    }
    wait_current(&epmd, &nodes[victim], V2);
    wait_rollout(&epmd, &nodes[0], &format!("{name}: swapped: "));
    assert_unchanged(&all, &lists, &before);
    for node in nodes {
        node.stop();
    }
}
