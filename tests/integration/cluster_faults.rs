//! The cluster under silent faults: three nodes that reach each other only
//! through proxies the test black-holes (bytes vanish both ways, no reset),
//! as a network that drops packets does.
//! - The leader cut off while clients write through every node: a new
//!   leader is elected, the old one is declared down, and its lists answer
//!   on the majority within the node-down time plus a margin, counted from
//!   the cut (not from the election); nothing acknowledged is lost or
//!   doubled, and every failure answer says "not applied" or "outcome
//!   unknown" truthfully.
//! - A follower cut off: its lists answer on the majority within the same
//!   time; then back: it never campaigned while cut off, so its return
//!   deposes nobody: the term and the leader stay as they were.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::support::cluster::{COOKIE, ProxiedCluster, tool};
use crate::support::{Epmd, Node, eventually, try_request};

/// `--node-down-after`, the default.
const NODE_DOWN_AFTER: Duration = Duration::from_secs(3);
/// What the lists may take beyond that to answer again (the placement
/// change, the start barrier, and a loaded CI machine): the same margin
/// the test of a killed leader allows.
const MARGIN: Duration = Duration::from_secs(5);

fn list(i: usize) -> String {
    format!("list-{i:03}")
}

fn add(node: &Node, list: &str, title: &str) -> Option<u16> {
    let body = format!(r#"{{"date":"2024-05-05","title":"{title}"}}"#);
    try_request(
        node.port,
        "POST",
        &format!("/lists/{list}/entries"),
        &[("content-type", "application/json")],
        body.as_bytes(),
    )
    .map(|response| response.status)
}

fn answers(node: &Node, list: &str) -> bool {
    try_request(
        node.port,
        "GET",
        &format!("/lists/{list}/entries"),
        &[],
        b"",
    )
    .is_some_and(|response| response.status == 200)
}

/// The lists `node` holds, from its own `ps`.
fn held_by(epmd: &Epmd, node: &Node, lists: &[String]) -> Vec<String> {
    let command = format!("ps --node {} --limit 1000", node.name);
    let out = tool(epmd, COOKIE, &["rpc", &node.name, &command]);
    let ps = String::from_utf8_lossy(&out.stdout).into_owned();
    lists
        .iter()
        .filter(|list| ps.contains(list.as_str()))
        .cloned()
        .collect()
}

fn term(node: &Node) -> u64 {
    node.metric("host_cluster_term")
}

/// What writers were told: acknowledged adds (list, title), and failure
/// answers (list, title, what they said).
#[derive(Default)]
struct Histories {
    acked: Vec<(String, String)>,
    failed: Vec<(String, String, String)>,
}

/// A writer through each node, adding to `lists` in turn until `stop`.
fn writers(
    nodes: &[Node],
    lists: &[String],
    stop: &Arc<AtomicBool>,
    histories: &Arc<Mutex<Histories>>,
) -> Vec<std::thread::JoinHandle<()>> {
    nodes
        .iter()
        .enumerate()
        .map(|(i, node)| {
            let (port, lists, stop, histories) =
                (node.port, lists.to_vec(), stop.clone(), histories.clone());
            std::thread::spawn(move || {
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let list = lists[n % lists.len()].clone();
                    let title = format!("w{i}-{n}");
                    let body = format!(r#"{{"date":"2024-05-05","title":"{title}"}}"#);
                    let response = try_request(
                        port,
                        "POST",
                        &format!("/lists/{list}/entries"),
                        &[("content-type", "application/json")],
                        body.as_bytes(),
                    );
                    let mut histories = histories.lock().expect("lock");
                    match response {
                        Some(response) if response.status == 201 => {
                            histories.acked.push((list, title))
                        }
                        Some(response) => {
                            let said = format!("{} {}", response.status, response.text());
                            histories.failed.push((list, title, said));
                        }
                        // No answer at all: the client cannot tell.
                        None => {}
                    }
                    drop(histories);
                    std::thread::sleep(Duration::from_millis(5));
                }
            })
        })
        .collect()
}

/// A proxied cluster of three holding 30 lists, spread over its nodes.
fn cluster_with_lists(epmd: &Epmd) -> (ProxiedCluster, Vec<String>) {
    let cluster = ProxiedCluster::start(epmd);
    let lists: Vec<String> = (0..30).map(list).collect();
    for list in &lists {
        assert_eq!(add(&cluster.nodes[0], list, "first"), Some(201));
    }
    (cluster, lists)
}

#[test]
fn a_silently_cut_off_leader_is_replaced_and_its_lists_answer_within_the_node_down_time() {
    let epmd = Epmd::start();
    let (cluster, lists) = cluster_with_lists(&epmd);
    let nodes = &cluster.nodes;
    let leader = cluster.leader();
    let held = held_by(&epmd, &nodes[leader], &lists);
    assert!(!held.is_empty(), "the leader holds none of the lists");
    let majority: Vec<usize> = (0..3).filter(|i| *i != leader).collect();
    let term_before = term(&nodes[leader]);
    let stop = Arc::new(AtomicBool::new(false));
    let histories = Arc::new(Mutex::new(Histories::default()));
    let writing = writers(nodes, &lists, &stop, &histories);
    std::thread::sleep(Duration::from_secs(1));

    let cut_at = Instant::now();
    cluster.cut(leader);
    eventually(
        NODE_DOWN_AFTER + MARGIN + Duration::from_secs(20),
        "the old leader's lists answer on the majority",
        || held.iter().all(|list| answers(&nodes[majority[0]], list)),
    );
    let took = cut_at.elapsed();
    eprintln!("the cut-off leader's lists answered again {took:?} after the cut");
    assert!(
        took < NODE_DOWN_AFTER + MARGIN,
        "its lists answered {took:?} after the cut"
    );
    // A new leader on the majority, one election later; the old leader
    // knows it is cut off.
    let new_leader = (0..3)
        .find(|i| *i != leader && nodes[*i].metric("host_cluster_leader") == 1)
        .expect("a leader on the majority");
    let term_after = term(&nodes[new_leader]);
    eprintln!("elections: {}", term_after - term_before);
    assert_eq!(nodes[leader].metric("host_cluster_cut_off"), 1);
    for list in &held {
        assert_eq!(add(&nodes[majority[1]], list, "after"), Some(201), "{list}");
    }

    // Back: it follows the new leader, deposing nobody.
    cluster.heal();
    eventually(Duration::from_secs(20), "the old leader back", || {
        nodes[leader].metric("host_cluster_cut_off") == 0
            && nodes[new_leader].metric("host_cluster_members_up") == 3
    });
    assert_eq!(cluster.leader(), new_leader);
    for node in nodes {
        assert_eq!(term(node), term_after, "{} is in another term", node.name);
    }

    // Nothing acknowledged is lost or doubled, and every failure answer
    // said the truth: "not applied" of writes no node holds, "outcome
    // unknown" of every one a node holds.
    stop.store(true, Ordering::Relaxed);
    for writer in writing {
        writer.join().expect("writer");
    }
    let histories = histories.lock().expect("lock");
    assert!(
        histories.acked.len() > 20,
        "{} adds acknowledged",
        histories.acked.len()
    );
    eprintln!(
        "writers: {} acknowledged, {} failure answers ({} outcome unknown)",
        histories.acked.len(),
        histories.failed.len(),
        histories
            .failed
            .iter()
            .filter(|(_, _, said)| said.contains("outcome unknown"))
            .count()
    );
    cluster.check_history(&histories.acked, &histories.failed);
}

#[test]
fn a_follower_back_from_a_cut_deposes_nobody() {
    let epmd = Epmd::start();
    let (cluster, lists) = cluster_with_lists(&epmd);
    let nodes = &cluster.nodes;
    let leader = cluster.leader();
    let follower = (leader + 1) % 3;
    let held = held_by(&epmd, &nodes[follower], &lists);
    assert!(!held.is_empty(), "the follower holds none of the lists");
    let term_before = term(&nodes[leader]);

    let cut_at = Instant::now();
    cluster.cut(follower);
    eventually(
        NODE_DOWN_AFTER + MARGIN + Duration::from_secs(20),
        "the follower's lists answer on the majority",
        || held.iter().all(|list| answers(&nodes[leader], list)),
    );
    let took = cut_at.elapsed();
    eprintln!("the cut-off follower's lists answered again {took:?} after the cut");
    assert!(
        took < NODE_DOWN_AFTER + MARGIN,
        "its lists answered {took:?} after the cut"
    );
    eventually(
        Duration::from_secs(20),
        "the follower declared down",
        || {
            nodes[follower].metric("host_cluster_cut_off") == 1
                && nodes[leader].metric("host_cluster_members_up") == 2
        },
    );
    // Long enough for a node that campaigned on its own to have raised its
    // term several times.
    std::thread::sleep(NODE_DOWN_AFTER);
    assert_eq!(
        term(&nodes[follower]),
        term_before,
        "it campaigned while cut off"
    );

    // A writer through the leader, from before the heal to after it: the
    // longest wait between two acknowledged adds is printed (BENCHMARKS.md).
    let stop = Arc::new(AtomicBool::new(false));
    let longest_ms = Arc::new(AtomicU64::new(0));
    let writer = {
        let (stop, longest_ms, port) = (stop.clone(), longest_ms.clone(), nodes[leader].port);
        std::thread::spawn(move || {
            let mut last = Instant::now();
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let body = format!(r#"{{"date":"2024-05-05","title":"w{n}"}}"#);
                let response = try_request(
                    port,
                    "POST",
                    "/lists/steady/entries",
                    &[("content-type", "application/json")],
                    body.as_bytes(),
                );
                if response.is_some_and(|response| response.status == 201) {
                    let gap = last.elapsed().as_millis() as u64;
                    longest_ms.fetch_max(gap, Ordering::Relaxed);
                    last = Instant::now();
                }
            }
        })
    };
    std::thread::sleep(Duration::from_millis(500));
    cluster.heal();
    eventually(Duration::from_secs(20), "the follower back", || {
        nodes[follower].metric("host_cluster_cut_off") == 0
            && nodes[leader].metric("host_cluster_members_up") == 3
    });
    std::thread::sleep(Duration::from_secs(2));
    stop.store(true, Ordering::Relaxed);
    writer.join().expect("writer");
    eprintln!(
        "longest wait between two acknowledged adds through the leader around the heal: {} ms",
        longest_ms.load(Ordering::Relaxed)
    );
    assert_eq!(cluster.leader(), leader, "the leader was deposed");
    for node in nodes {
        assert_eq!(term(node), term_before, "{} is in another term", node.name);
    }
}
