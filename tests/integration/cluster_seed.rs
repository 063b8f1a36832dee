//! The seed's walk-through with two nodes (steps 3 to 5, and B leaving),
//! the cookie, and TLS on the links.

use crate::support::cluster::{
    COOKIE, connect, make_certificates, nodes, tls_args, todo_node, tool, wait_for_members,
};
use crate::support::{Epmd, Node, NodeBuilder, eventually};
use std::time::Duration;

const ADD: &str = "/add_entry?list=production_list&date=2023-01-01&title=Deploy%20Successful";
const READ: &str = "/entries?list=production_list&date=2023-01-01";

fn add(node: &Node, list: &str, title: &str) {
    let response = node.request(
        "POST",
        &format!("/add_entry?list={list}&date=2023-01-01&title={title}"),
        &[],
        b"",
    );
    assert_eq!(response.status, 200, "{}", response.text());
}

fn read(node: &Node, list: &str) -> String {
    let response = node.get(&format!("/entries?list={list}&date=2023-01-01"));
    assert_eq!(response.status, 200, "{}", response.text());
    response.text()
}

#[test]
fn two_nodes_share_a_list_and_one_keeps_serving_after_the_other_leaves() {
    let epmd = Epmd::start();
    let a = todo_node(&epmd, "node_a");
    let b = todo_node(&epmd, "node_b");
    // Node.connect(:"node_a@127.0.0.1"), run for B.
    connect(&epmd, &b, &a);
    wait_for_members(&epmd, &a, &[&a, &b]);
    wait_for_members(&epmd, &b, &[&a, &b]);
    let roles = nodes(&epmd, &a);
    assert_eq!(roles.len(), 2, "tools are never members: {roles:?}");
    assert!(roles["node_a@127.0.0.1"].starts_with("voter"), "{roles:?}");
    assert!(
        roles["node_b@127.0.0.1"].starts_with("learner"),
        "{roles:?}"
    );

    // Todo.Cache.server_process("production_list") and add_entry, on B.
    let added = b.request("POST", ADD, &[], b"");
    assert_eq!(added.status, 200, "{}", added.text());
    for node in [&a, &b] {
        assert_eq!(node.get(READ).text(), "2023-01-01 Deploy Successful");
    }

    // B stops (it leaves first); A alone serves the list and takes adds.
    assert_eq!(b.stop().code(), Some(0));
    eventually(Duration::from_secs(10), "A alone", || {
        nodes(&epmd, &a).len() == 1
    });
    assert_eq!(a.get(READ).text(), "2023-01-01 Deploy Successful");
    add(&a, "production_list", "Celebrate");
    assert_eq!(
        read(&a, "production_list"),
        "2023-01-01 Deploy Successful\n2023-01-01 Celebrate"
    );
    let logs = a.logs();
    assert!(
        logs.contains("node_b@127.0.0.1 joined the cluster"),
        "{logs}"
    );
    assert!(logs.contains("node_b@127.0.0.1 left the cluster"), "{logs}");
}

#[test]
fn a_wrong_cookie_is_refused_on_both_sides_and_changes_nothing() {
    let epmd = Epmd::start();
    let a = todo_node(&epmd, "node_a");
    let b = NodeBuilder::todo()
        .clustered("node_b", &epmd, "gremlin")
        .start();
    add(&a, "a_list", "kept");
    add(&b, "b_list", "kept");

    // B (cookie "gremlin") is asked to join A (cookie "monster").
    let out = tool(&epmd, "gremlin", &["connect", &b.name, &a.name]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("cookies differ"), "{stderr}");
    eventually(Duration::from_secs(5), "both sides log it", || {
        a.logs()
            .contains("refused a connection from node_b@127.0.0.1")
            && b.logs()
                .contains("cannot join the cluster of node_a@127.0.0.1")
    });
    assert!(a.logs().contains("the cookies differ"));
    assert!(b.logs().contains("the cookies differ"));
    assert!(
        !a.logs().contains("monster") && !b.logs().contains("gremlin"),
        "the cookie is never logged"
    );

    // A tool with the wrong cookie gets a clear error and a non-zero exit.
    let out = tool(&epmd, "gremlin", &["nodes", &a.name]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("the cookies differ"));

    // Neither membership nor data changed.
    assert_eq!(nodes(&epmd, &a).len(), 1);
    assert_eq!(
        tool(&epmd, "gremlin", &["nodes", &b.name]).status.code(),
        Some(0)
    );
    assert_eq!(read(&a, "a_list"), "2023-01-01 kept");
    assert_eq!(read(&b, "b_list"), "2023-01-01 kept");
    assert_eq!(read(&a, "b_list"), "");
    add(&b, "b_list", "still");
    assert_eq!(read(&b, "b_list"), "2023-01-01 kept\n2023-01-01 still");
}

#[test]
fn two_nodes_over_tls_and_an_untrusted_peer_is_refused() {
    let epmd = Epmd::start();
    let certs = tempfile::tempdir().expect("temp dir");
    let trusted = certs.path().join("trusted");
    let stranger = certs.path().join("stranger");
    make_certificates(&trusted);
    make_certificates(&stranger);
    let with_tls = |name: &str, dir: &std::path::Path| {
        let mut builder = NodeBuilder::todo().clustered(name, &epmd, COOKIE);
        for arg in tls_args(dir) {
            builder = builder.arg(&arg);
        }
        builder.start()
    };
    let a = with_tls("node_a", &trusted);
    let b = with_tls("node_b", &trusted);
    let tool_tls = |dir: &std::path::Path, args: &[&str]| {
        let mut all: Vec<String> = args.iter().map(|arg| arg.to_string()).collect();
        all.extend(tls_args(dir));
        let all: Vec<&str> = all.iter().map(String::as_str).collect();
        tool(&epmd, COOKIE, &all)
    };
    let joined = tool_tls(&trusted, &["connect", &b.name, &a.name]);
    assert!(
        joined.status.success(),
        "{}",
        String::from_utf8_lossy(&joined.stderr)
    );
    add(&b, "production_list", "Deploy%20Successful");
    assert_eq!(read(&a, "production_list"), "2023-01-01 Deploy Successful");

    // A node whose certificate another CA signed: same cookie, refused.
    let c = with_tls("node_c", &stranger);
    let out = tool_tls(&stranger, &["connect", &c.name, &a.name]);
    assert!(!out.status.success());
    eventually(Duration::from_secs(5), "A logs the refusal", || {
        a.logs().contains("dropped a connection from 127.0.0.1")
    });
    assert!(a.logs().contains("TLS"), "{}", a.logs());
    // A plain-text tool cannot talk to a TLS node either.
    assert!(!tool(&epmd, COOKIE, &["nodes", &a.name]).status.success());
    assert_eq!(
        tool_tls(&trusted, &["nodes", &a.name]).status.code(),
        Some(0)
    );
    let members = tool_tls(&trusted, &["nodes", &a.name]);
    assert!(!String::from_utf8_lossy(&members.stdout).contains("node_c"));
    drop(c);

    // B stops; A alone serves the list and takes adds, as without TLS.
    assert_eq!(b.stop().code(), Some(0));
    eventually(Duration::from_secs(10), "A alone", || {
        String::from_utf8_lossy(&tool_tls(&trusted, &["nodes", &a.name]).stdout)
            .lines()
            .count()
            == 2
    });
    add(&a, "production_list", "Celebrate");
    assert_eq!(
        read(&a, "production_list"),
        "2023-01-01 Deploy Successful\n2023-01-01 Celebrate"
    );
}

#[test]
fn the_voter_of_two_serves_alone_when_the_learner_dies_and_hands_its_vote_when_it_leaves() {
    let epmd = Epmd::start();
    let a = todo_node(&epmd, "node_a");
    let b = todo_node(&epmd, "node_b");
    connect(&epmd, &b, &a);
    add(&b, "production_list", "one");
    // B (the learner) is killed: A, the voter, goes on alone.
    b.kill();
    add(&a, "production_list", "two");
    eventually(Duration::from_secs(10), "B declared down", || {
        a.logs().contains("node_b@127.0.0.1 is down")
    });
    assert_eq!(
        read(&a, "production_list"),
        "2023-01-01 one\n2023-01-01 two"
    );

    // A third node joins; then A, the voter and leader, stops: it hands its
    // vote to C, which serves alone afterwards.
    let c = todo_node(&epmd, "node_c");
    connect(&epmd, &c, &a);
    eventually(
        Duration::from_secs(20),
        "C has joined and caught up",
        || {
            let rows = nodes(&epmd, &c);
            rows.get("node_c@127.0.0.1")
                .is_some_and(|row| row.contains(" up "))
                && rows
                    .get("node_a@127.0.0.1")
                    .is_some_and(|row| row.contains(" up linked"))
        },
    );
    assert_eq!(a.stop().code(), Some(0));
    eventually(Duration::from_secs(20), "C votes and leads", || {
        let rows = nodes(&epmd, &c);
        !rows.contains_key("node_a@127.0.0.1")
            && rows["node_c@127.0.0.1"].starts_with("voter up")
            && rows["node_c@127.0.0.1"].ends_with("leader")
    });
    // B, dead, is still listed: down, until it comes back.
    assert!(nodes(&epmd, &c)["node_b@127.0.0.1"].contains("down"));
    add(&c, "production_list", "three");
    assert_eq!(
        read(&c, "production_list"),
        "2023-01-01 one\n2023-01-01 two\n2023-01-01 three"
    );
}
