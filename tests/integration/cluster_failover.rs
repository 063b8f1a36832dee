//! Three nodes, clients writing through all of them, and one node killed
//! with -9: the one holding the busy list, or the Raft leader. No
//! acknowledged add is lost or doubled, on any node, and the list answers
//! again within the node-down time plus a margin.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::support::cluster::{StoredEntry, stored_entries, todo_cluster};
use crate::support::{Epmd, Node, eventually, try_request};

const LIST: &str = "busy";
/// `--node-down-after`, the default.
const NODE_DOWN_AFTER: Duration = Duration::from_secs(3);
/// What the list may take beyond that to answer again: Raft's election,
/// the placement change, the start barrier, and a loaded CI machine.
const MARGIN: Duration = Duration::from_secs(5);

/// What the clients were told: the titles acknowledged with an id.
type Acknowledged = Arc<Mutex<Vec<(u64, String)>>>;

/// Adds entries to [`LIST`] through the node on `port` until `stop`,
/// recording those acknowledged (201 with an id).
fn client(port: u16, tag: String, stop: Arc<AtomicBool>, acked: Acknowledged) {
    let mut n = 0;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let title = format!("{tag}-{n}");
        let body = format!(r#"{{"date":"2024-02-02","title":"{title}"}}"#);
        let response = try_request(
            port,
            "POST",
            &format!("/lists/{LIST}/entries"),
            &[("content-type", "application/json")],
            body.as_bytes(),
        );
        match response {
            Some(response) if response.status == 201 => {
                let id = response.json()["id"].as_u64().expect("an id");
                acked.lock().expect("lock").push((id, title));
            }
            // Refused, timed out, or fate unknown: not acknowledged.
            _ => std::thread::sleep(Duration::from_millis(5)),
        }
    }
}

fn metric_of(node: &Node, name: &str) -> u64 {
    node.metric(name)
}

/// Kills the node `pick` chooses while clients write through every node,
/// then checks the history.
fn kill_one_while_writing(pick: impl Fn(&[Node]) -> usize) {
    let epmd = Epmd::start();
    let mut nodes = todo_cluster(&epmd, 3, &[]);
    // Start the busy list, then find who holds it and who leads.
    assert_eq!(
        nodes[0]
            .post(
                &format!("/lists/{LIST}/entries"),
                r#"{"date":"2024-02-02","title":"first"}"#
            )
            .status,
        201
    );
    let victim = pick(&nodes);
    let stop = Arc::new(AtomicBool::new(false));
    let acked: Acknowledged = Arc::default();
    let clients: Vec<_> = nodes
        .iter()
        .enumerate()
        .map(|(i, node)| {
            let (port, stop, acked) = (node.port, stop.clone(), acked.clone());
            std::thread::spawn(move || client(port, format!("c{i}"), stop, acked))
        })
        .collect();
    std::thread::sleep(Duration::from_secs(2));
    let killed = nodes.remove(victim);
    let killed_name = killed.name.clone();
    killed.kill();
    let killed_at = Instant::now();
    // The first add acknowledged after the kill, through a survivor.
    let survivor = nodes[0].port;
    let mut back_after = None;
    while killed_at.elapsed() < Duration::from_secs(60) {
        let response = try_request(
            survivor,
            "POST",
            &format!("/lists/{LIST}/entries"),
            &[("content-type", "application/json")],
            br#"{"date":"2024-02-02","title":"probe"}"#,
        );
        if response.is_some_and(|response| response.status == 201) {
            back_after = Some(killed_at.elapsed());
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_secs(2));
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.join().expect("client");
    }
    let back_after = back_after.expect("the list answered again");
    eprintln!("the killed node's list answered again {back_after:?} after the kill");
    assert!(
        back_after <= NODE_DOWN_AFTER + MARGIN,
        "the list came back after {back_after:?}"
    );
    for node in &nodes {
        eventually(Duration::from_secs(10), "the kill is noticed", || {
            node.logs().contains(&format!("{killed_name} is down"))
        });
        assert_eq!(metric_of(node, "host_cluster_nodes_down_total"), 1);
        // Writes of unknown outcome interrupt the busy list's process; none
        // counts as a crash, so the list is never refused for a cooldown.
        assert!(
            !node.logs().contains("restart intensity reached"),
            "a list was put in a cooldown by the failover: {}",
            node.logs()
        );
    }

    // Every node holds every acknowledged add, once, under its id.
    let acked = acked.lock().expect("lock").clone();
    assert!(
        acked.len() > 20,
        "the clients got {} adds through",
        acked.len()
    );
    eventually(
        Duration::from_secs(10),
        "both survivors applied the same log",
        || {
            metric_of(&nodes[0], "host_cluster_applied_index")
                == metric_of(&nodes[1], "host_cluster_applied_index")
        },
    );
    let kept: Vec<_> = nodes.into_iter().map(Node::kill_keeping_data).collect();
    for (dir, _guard) in &kept {
        let stored = stored_entries(dir, LIST);
        check_history(&stored, &acked);
    }
}

fn check_history(stored: &[StoredEntry], acked: &[(u64, String)]) {
    let ids: BTreeSet<u64> = stored.iter().map(|entry| entry.id).collect();
    assert_eq!(ids.len(), stored.len(), "ids are unique");
    let titles: BTreeSet<&str> = stored.iter().map(|entry| entry.title.as_str()).collect();
    let non_probe = stored.iter().filter(|entry| entry.title != "probe").count();
    assert_eq!(
        titles.iter().filter(|title| **title != "probe").count(),
        non_probe,
        "no entry is stored twice"
    );
    for (id, title) in acked {
        assert!(
            stored
                .iter()
                .any(|entry| entry.id == *id && entry.title == *title),
            "acknowledged add {title} (id {id}) is missing"
        );
    }
}

#[test]
fn killing_the_node_that_holds_a_busy_list_loses_nothing() {
    kill_one_while_writing(|nodes| {
        let holders: Vec<usize> = (0..nodes.len())
            .filter(|i| metric_of(&nodes[*i], "host_processes") > 0)
            .collect();
        assert_eq!(holders.len(), 1, "one node holds the list");
        holders[0]
    });
}

#[test]
fn killing_the_raft_leader_loses_nothing() {
    kill_one_while_writing(|nodes| {
        let leaders: Vec<usize> = (0..nodes.len())
            .filter(|i| metric_of(&nodes[*i], "host_cluster_leader") == 1)
            .collect();
        assert_eq!(leaders.len(), 1, "one leader");
        leaders[0]
    });
}
