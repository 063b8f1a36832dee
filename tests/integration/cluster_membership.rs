//! Who votes, who comes back, and where the cookie comes from.

use std::os::unix::fs::PermissionsExt as _;
use std::time::Duration;

use crate::support::cluster::{COOKIE, connect, nodes, todo_cluster};
use crate::support::{Epmd, Node, NodeBuilder, eventually};

fn voters_up(epmd: &Epmd, node: &Node) -> usize {
    nodes(epmd, node)
        .values()
        .filter(|row| row.starts_with("voter up"))
        .count()
}

#[test]
fn three_of_four_vote_and_a_learner_replaces_a_dead_voter() {
    let epmd = Epmd::start();
    let mut cluster = todo_cluster(&epmd, 4, &[]);
    eventually(
        Duration::from_secs(20),
        "three voters and a learner",
        || {
            let rows = nodes(&epmd, &cluster[0]);
            rows.values().filter(|row| row.starts_with("voter")).count() == 3
                && rows
                    .values()
                    .filter(|row| row.starts_with("learner"))
                    .count()
                    == 1
        },
    );
    let rows = nodes(&epmd, &cluster[0]);
    let voter = cluster
        .iter()
        .position(|node| {
            rows[&node.name].starts_with("voter") && !rows[&node.name].ends_with("leader")
        })
        .expect("a voter that does not lead");
    cluster.remove(voter).kill();
    eventually(Duration::from_secs(20), "the learner is promoted", || {
        voters_up(&epmd, &cluster[0]) == 3
    });
    // The three that are left serve and store.
    let added = cluster[0].post(
        "/lists/after/entries",
        r#"{"date":"2024-05-05","title":"t"}"#,
    );
    assert_eq!(added.status, 201, "{}", added.text());
}

#[test]
fn a_node_killed_and_restarted_resumes_and_catches_up() {
    let epmd = Epmd::start();
    let mut cluster = todo_cluster(&epmd, 3, &[]);
    let data = tempfile::tempdir().expect("temp dir");
    // A fourth node with a data dir of the test's, to restart it on.
    let fourth = |epmd: &Epmd| {
        NodeBuilder::todo()
            .clustered("n4", epmd, COOKIE)
            .metrics()
            .data_dir(data.path())
            .start()
    };
    let node = fourth(&epmd);
    connect(&epmd, &node, &cluster[0]);
    node.kill();
    for i in 0..200 {
        let added = cluster[i % 3].post(
            &format!("/lists/l{}/entries", i % 7),
            &format!(r#"{{"date":"2024-05-05","title":"t{i}"}}"#),
        );
        assert_eq!(added.status, 201, "{}", added.text());
    }
    let node = fourth(&epmd);
    assert!(
        node.logs().contains("resuming as a member of its cluster"),
        "{}",
        node.logs()
    );
    eventually(Duration::from_secs(20), "it caught up", || {
        node.metric("host_cluster_applied_index") >= cluster[0].metric("host_cluster_applied_index")
            && node.metric("host_cluster_members_up") == 4
            && node.metric("host_cluster_cut_off") == 0
    });
    let total: usize = (0..7)
        .map(|list| {
            let response = node.get(&format!("/lists/l{list}/entries"));
            assert_eq!(response.status, 200, "{}", response.text());
            response.json().as_array().map_or(0, Vec::len)
        })
        .sum();
    assert_eq!(total, 200);
    cluster.push(node);
    assert_eq!(nodes(&epmd, &cluster[0]).len(), 4);
}

#[test]
fn the_default_cookie_file_is_created_private_and_a_readable_one_is_refused() {
    let home = tempfile::tempdir().expect("temp dir");
    let epmd = Epmd::start();
    let node = NodeBuilder::todo()
        .clustered("a", &epmd, COOKIE)
        .without_cookie()
        .env("HOME", &home.path().display().to_string())
        .start();
    let file = home.path().join(".erlang.cookie");
    let mode = std::fs::metadata(&file)
        .expect("created")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o400);
    let cookie = std::fs::read_to_string(&file).expect("read");
    // A tool with that cookie gets in; the cookie shows in no log line.
    let port = epmd.port.to_string();
    let out = crate::support::run_host_with(
        &["nodes", &node.name],
        &[("ERL_EPMD_PORT", &port), ("RELEASE_COOKIE", &cookie)],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!node.logs().contains(&cookie));
    drop(node);

    // Readable by others: refused, saying why and what to run.
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let out = crate::support::run_host_with(
        &[
            "run",
            &crate::support::wasm("guest_todo").display().to_string(),
            "--http-port",
            "0",
            "--node",
            "b@127.0.0.1",
            "--data-dir",
            &home.path().join("data").display().to_string(),
        ],
        &[
            ("ERL_EPMD_PORT", &port),
            ("HOME", &home.path().display().to_string()),
        ],
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("can be read by other users") && stderr.contains("chmod 400"),
        "{stderr}"
    );
}

#[test]
fn the_leader_leaves_gracefully_and_the_others_carry_on() {
    let epmd = Epmd::start();
    let mut cluster = todo_cluster(&epmd, 3, &[]);
    for i in 0..30 {
        let added = cluster[i % 3].post(
            &format!("/lists/l{}/entries", i % 5),
            &format!(r#"{{"date":"2024-05-05","title":"t{i}"}}"#),
        );
        assert_eq!(added.status, 201, "{}", added.text());
    }
    let leader = cluster
        .iter()
        .position(|node| node.metric("host_cluster_leader") == 1)
        .expect("a leader");
    // The Raft state on the metrics page: 2 on the leader, 0 (follower) or
    // 3 (learner) elsewhere; lag is a count of entries, small once idle.
    for (index, node) in cluster.iter().enumerate() {
        let state = node.metric("host_cluster_raft_state");
        if index == leader {
            assert_eq!(state, 2);
        } else {
            assert!(state == 0 || state == 3, "raft state {state}");
        }
        eventually(Duration::from_secs(10), "replication catches up", || {
            node.metric("host_cluster_replication_lag") < 50
        });
    }
    let leaving = cluster.remove(leader);
    let name = leaving.name.clone();
    assert_eq!(
        leaving.stop().code(),
        Some(0),
        "SIGTERM: it leaves, then exits 0"
    );
    for node in &cluster {
        eventually(
            Duration::from_secs(20),
            "two members, one of them leading",
            || {
                let rows = nodes(&epmd, node);
                rows.len() == 2
                    && !rows.contains_key(&name)
                    && rows.values().any(|row| row.ends_with("leader"))
            },
        );
        assert!(node.logs().contains(&format!("{name} left the cluster")));
    }
    // Every entry is still there, and the two take new ones.
    let total: usize = (0..5)
        .map(|list| {
            let response = cluster[0].get(&format!("/lists/l{list}/entries"));
            assert_eq!(response.status, 200, "{}", response.text());
            response.json().as_array().map_or(0, Vec::len)
        })
        .sum();
    assert_eq!(total, 30);
    let added = cluster[1].post(
        "/lists/l0/entries",
        r#"{"date":"2024-05-05","title":"after"}"#,
    );
    assert_eq!(added.status, 201, "{}", added.text());
}

#[test]
fn a_node_started_with_join_serves_from_its_ready_line() {
    let epmd = Epmd::start();
    // Both started at once, as a supervisor would: B waits for A, joins,
    // and only then says it is ready; its first request must be served.
    let b = std::thread::scope(|scope| {
        let b = scope.spawn(|| {
            NodeBuilder::todo()
                .clustered("node_b", &epmd, COOKIE)
                .metrics()
                .arg("--join")
                .arg("node_a@127.0.0.1")
                .start()
        });
        let a = NodeBuilder::todo()
            .clustered("node_a", &epmd, COOKIE)
            .start();
        (a, b.join().expect("node_b starts"))
    });
    let (a, b) = b;
    assert_eq!(b.metric("host_cluster_cut_off"), 0, "ready, yet cut off");
    let added = b.request(
        "POST",
        "/add_entry?list=production_list&date=2023-01-01&title=first",
        &[],
        b"",
    );
    assert_eq!(added.status, 200, "{}", added.text());
    assert!(b.logs().contains("joined the cluster of node_a@127.0.0.1"));
    assert_eq!(
        a.get("/entries?list=production_list&date=2023-01-01")
            .text(),
        "2023-01-01 first"
    );
}
