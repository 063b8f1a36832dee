//! The seed's chapter, steps 2 to 7, against a built release: node_a as a
//! daemon, node_b in the foreground with a console (driven through a
//! pseudo-terminal) that connects and stores an entry through the
//! cluster-wide name, a remote console into node_a that finds the entry,
//! sees the process in the tree and traces a request, then `stop`; node_a
//! started again still has the entry. A wrong cookie is refused.

use std::time::Duration;

use crate::support::release::{Daemon, Release, Terminal};
use crate::support::{Epmd, free_port, request};

const COOKIE: &str = "monster";
const SHORT: Duration = Duration::from_secs(30);

fn env<'a>(node: &'a str, port: &'a str) -> [(&'a str, &'a str); 3] {
    [
        ("RELEASE_NODE", node),
        ("RELEASE_COOKIE", COOKIE),
        ("TODO_PORT", port),
    ]
}

#[test]
fn the_seed_walk_through_runs_on_the_release() {
    let epmd = Epmd::start();
    let release = Release::build(&epmd);
    let (port_a, port_b) = (free_port(), free_port());
    let (port_a_text, port_b_text) = (port_a.to_string(), port_b.to_string());
    let node_a_env = env("node_a@127.0.0.1", &port_a_text);

    // Step 3: node A as a daemon; it returns once the node is ready.
    let started = release.run(&["daemon"], &node_a_env, SHORT);
    assert!(
        started.status.success(),
        "daemon failed: {}",
        String::from_utf8_lossy(&started.stderr)
    );
    let daemon = Daemon::from_ready_line(&started.stdout);
    assert_eq!(
        request(
            port_a,
            "GET",
            "/entries?list=production_list&date=2023-01-01",
            &[],
            b""
        )
        .status,
        200
    );

    // Steps 4 and 5: node B in the foreground with a console; connect,
    // store through the cluster-wide name, leave.
    let mut node_b =
        Terminal::spawn(release.command(&["start_iex"], &env("node_b@127.0.0.1", &port_b_text)));
    node_b.expect("node_b@127.0.0.1> ", SHORT);
    node_b.send_line("connect node_a@127.0.0.1");
    node_b.expect("joined the cluster of node_a@127.0.0.1", SHORT);
    node_b.send_line(
        r#"todo.add-entry("production_list", {date: "2023-01-01", title: "Deploy Successful"})"#,
    );
    node_b.expect(
        r#"ok({id: 1, date: "2023-01-01", title: "Deploy Successful"})"#,
        SHORT,
    );
    node_b.send_line("exit");
    assert!(node_b.wait(SHORT).success(), "{}", node_b.text());

    // Step 6: a remote console into the daemon.
    let mut remote = Terminal::spawn(release.command(&["remote"], &node_a_env));
    remote.expect("node_a@127.0.0.1> ", SHORT);
    remote.send_line(r#"todo.entries("production_list")"#);
    remote.expect(
        r#"ok([{id: 1, date: "2023-01-01", title: "Deploy Successful"}])"#,
        SHORT,
    );
    remote.send_line("tree");
    remote.expect("└─ guest_todo", SHORT);
    remote.expect("production_list  pid", SHORT);
    remote.send_line("trace production_list --count 2");
    remote.expect("tracing guest_todo/production_list", SHORT);
    let answer = request(
        port_a,
        "GET",
        "/entries?list=production_list&date=2023-01-01",
        &[],
        b"",
    );
    assert_eq!(answer.text(), "2023-01-01 Deploy Successful");
    remote.expect("call: entries 2023-01-01", SHORT);
    remote.expect("reply: 1 entry", SHORT);
    remote.expect("trace of guest_todo/production_list ended", SHORT);
    remote.send_line("exit");
    assert!(remote.wait(SHORT).success(), "{}", remote.text());
    assert!(
        daemon.alive(),
        "leaving the console leaves the node running"
    );

    // A wrong cookie: one clear line, a non-zero exit.
    let refused = release.run(
        &["remote"],
        &[
            ("RELEASE_NODE", "node_a@127.0.0.1"),
            ("RELEASE_COOKIE", "wrong"),
        ],
        SHORT,
    );
    assert!(!refused.status.success());
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(said.contains("the cookies differ"), "{said}");
    assert_eq!(said.trim().lines().count(), 1, "{said}");

    // Step 7: stop; it returns once the node is gone.
    let stopped = release.run(&["stop"], &node_a_env, SHORT);
    assert!(
        stopped.status.success(),
        "{}",
        String::from_utf8_lossy(&stopped.stderr)
    );
    assert!(!daemon.alive(), "stop returns once the node is gone");
    drop(daemon);

    // Started again, node A has the entry.
    let again = release.run(&["daemon"], &node_a_env, SHORT);
    assert!(
        again.status.success(),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    let daemon = Daemon::from_ready_line(&again.stdout);
    let listed = release.run(
        &["rpc", r#"todo.entries("production_list")"#],
        &node_a_env,
        SHORT,
    );
    assert!(listed.status.success());
    assert!(
        String::from_utf8_lossy(&listed.stdout).contains("Deploy Successful"),
        "{}",
        String::from_utf8_lossy(&listed.stdout)
    );
    let stopped = release.run(&["stop"], &node_a_env, SHORT);
    assert!(stopped.status.success());
    assert!(!daemon.alive());
}
