//! The console over `host rpc`, against a running node: inspecting
//! processes, calling the Todo guest's API in WAVE, killing, tracing
//! messages and host calls (bounded), and the failures an operator meets
//! (a wrong cookie, a node that is not running, a bad command).

use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::cluster::{COOKIE, tool};
use crate::support::{Epmd, Node, NodeBuilder, eventually, host_binary, run_host_with};

fn todo_node(epmd: &Epmd) -> Node {
    NodeBuilder::todo()
        .clustered("console_a", epmd, COOKIE)
        .metrics()
        .start()
}

/// `host rpc NODE COMMAND`: (succeeded, stdout, stderr).
fn rpc(epmd: &Epmd, node: &Node, command: &str) -> (bool, String, String) {
    let out = tool(epmd, COOKIE, &["rpc", &node.name, command]);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `host rpc --node NODE COMMAND` running in the background (a trace),
/// its output piped.
fn rpc_in_background(epmd: &Epmd, node: &Node, command: &str) -> std::process::Child {
    Command::new(host_binary())
        .args(["rpc", "--node", &node.name, command])
        .env("ERL_EPMD_PORT", epmd.port.to_string())
        .env("RELEASE_COOKIE", COOKIE)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start host rpc")
}

fn rpc_ok(epmd: &Epmd, node: &Node, command: &str) -> String {
    let (ok, stdout, stderr) = rpc(epmd, node, command);
    assert!(ok, "`{command}` failed: {stdout}{stderr}");
    stdout
}

#[test]
fn processes_are_listed_inspected_called_and_killed() {
    let epmd = Epmd::start();
    let node = todo_node(&epmd);
    for (list, title) in [
        ("groceries", "Milk"),
        ("work", "Deploy"),
        ("work", "Review"),
    ] {
        let path = format!("/add_entry?list={list}&date=2023-01-01&title={title}");
        assert_eq!(node.post(&path, "").status, 200);
    }

    let ps = rpc_ok(&epmd, &node, "ps --sort messages");
    let rows: Vec<&str> = ps.lines().collect();
    assert!(rows[0].starts_with("NAME"), "{ps}");
    assert!(
        rows[1].starts_with("guest_todo/work"),
        "the busiest first: {ps}"
    );
    assert!(rows[2].starts_with("guest_todo/groceries"), "{ps}");
    assert!(ps.contains("2 processes (2 shown)"), "{ps}");

    let info = rpc_ok(&epmd, &node, "info work");
    assert!(info.contains("messages:  2 handled"), "{info}");
    assert!(info.contains("node:      console_a@127.0.0.1"), "{info}");
    let state = rpc_ok(&epmd, &node, "state work");
    assert!(
        state.contains("list \"work\": 2 entries, next id 3"),
        "{state}"
    );
    assert!(state.contains("2023-01-01  Review"), "{state}");

    // The typed API, in WAVE, reaches the same list as HTTP.
    let added = rpc_ok(
        &epmd,
        &node,
        r#"todo.add-entry("work", {date: "2023-01-02", title: "Ship it"})"#,
    );
    assert_eq!(
        added.trim(),
        r#"ok({id: 3, date: "2023-01-02", title: "Ship it"})"#
    );
    assert_eq!(
        node.get("/entries?list=work&date=2023-01-02").text(),
        "2023-01-02 Ship it"
    );
    let updated = rpc_ok(
        &epmd,
        &node,
        r#"todo.update-entry("work", 3, {title: some("Shipped")})"#,
    );
    assert!(updated.contains(r#"title: "Shipped""#), "{updated}");
    // Bad arguments and failing calls: a clear line and a non-zero exit.
    let (ok, _, stderr) = rpc(&epmd, &node, r#"todo.add-entry("work", 7)"#);
    assert!(!ok);
    assert!(
        stderr.contains("todo.add-entry(list: string, entry: {date: string, title: string})"),
        "{stderr}"
    );
    let (ok, _, stderr) = rpc(&epmd, &node, r#"todo.delete-entry("work", 99)"#);
    assert!(!ok);
    assert!(stderr.contains(r#"err("no such entry")"#), "{stderr}");
    let (ok, _, stderr) = rpc(&epmd, &node, "bogus");
    assert!(!ok);
    assert!(stderr.contains("unknown command `bogus`"), "{stderr}");
    assert!(
        rpc_ok(&epmd, &node, "functions")
            .contains("todo.entries(list: string, date: option<string>)")
    );

    // Kill: the process ends as if it crashed; the supervisor's history
    // says so, and the next call starts it again from storage.
    let killed = rpc_ok(&epmd, &node, "kill work");
    assert!(killed.contains("killed"), "{killed}");
    eventually(Duration::from_secs(5), "work is gone", || {
        !rpc_ok(&epmd, &node, "ps").contains("guest_todo/work")
    });
    let tree = rpc_ok(&epmd, &node, "tree");
    assert!(
        tree.contains("guest_todo/work on console_a@127.0.0.1"),
        "{tree}"
    );
    assert!(tree.contains("killed by an operator"), "{tree}");
    assert_eq!(
        node.get("/entries?list=work&date=2023-01-01").text(),
        "2023-01-01 Deploy\n2023-01-01 Review"
    );
    let tree = rpc_ok(&epmd, &node, "tree");
    assert!(
        tree.contains("├─ groceries") || tree.contains("└─ groceries"),
        "{tree}"
    );
    assert!(
        tree.contains("restarts: 1 since the node started"),
        "{tree}"
    );
    assert!(!rpc(&epmd, &node, "kill nobody").0);

    let memory = rpc_ok(&epmd, &node, "memory");
    assert!(memory.contains("guest_todo: 2 processes"), "{memory}");
    let logs = rpc_ok(&epmd, &node, "logs 50");
    assert!(logs.contains("process killed by an operator"), "{logs}");
}

#[test]
fn traces_are_bounded_and_counted_on_the_metrics_page() {
    let epmd = Epmd::start();
    let node = todo_node(&epmd);
    assert_eq!(
        node.post("/add_entry?list=traced&date=2023-01-01&title=A", "")
            .status,
        200
    );
    assert_eq!(node.metric("host_traces_running"), 0);

    // A message trace of two events, run by a console in the background.
    let trace = rpc_in_background(&epmd, &node, "trace traced --count 2");
    eventually(Duration::from_secs(10), "the trace runs", || {
        node.metric("host_traces_running") == 1 && node.metric("host_console_sessions") == 1
    });
    assert_eq!(
        node.get("/entries?list=traced&date=2023-01-01").text(),
        "2023-01-01 A"
    );
    let out = trace.wait_with_output().expect("the trace ends by itself");
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{printed}");
    assert!(
        printed.contains("<1> call: entries 2023-01-01"),
        "{printed}"
    );
    assert!(printed.contains("reply: 1 entry"), "{printed}");
    assert!(
        printed.contains("ended (its 2 messages shown): 2 shown"),
        "{printed}"
    );
    eventually(Duration::from_secs(5), "the trace is gone", || {
        node.metric("host_traces_running") == 0 && node.metric("host_console_sessions") == 0
    });

    // Host calls, filtered, with their durations; a time bound too.
    let calls = rpc_in_background(
        &epmd,
        &node,
        "trace-calls guest_todo storage.batch --for 20s --count 1",
    );
    eventually(Duration::from_secs(10), "the host-call trace runs", || {
        node.metric("host_traces_running") == 1
    });
    assert_eq!(
        node.post("/add_entry?list=traced&date=2023-01-01&title=B", "")
            .status,
        200
    );
    let out = calls.wait_with_output().expect("the trace ends by itself");
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(
        printed.contains("guest_todo/traced host call: storage.batch(2 operations) -> ok in "),
        "{printed}"
    );
    assert!(
        !printed.contains("storage.get"),
        "the filter keeps only batches: {printed}"
    );

    let (ok, _, stderr) = rpc(&epmd, &node, "trace-calls nope");
    assert!(!ok && stderr.contains("no component `nope`"), "{stderr}");
    let timed = rpc_ok(&epmd, &node, "trace traced --for 1s");
    assert!(timed.contains("ended (its 1s are up): 0 shown"), "{timed}");
}

#[test]
fn rpc_takes_the_node_as_the_other_tools_do_or_from_the_option_or_the_environment() {
    let epmd = Epmd::start();
    let node = todo_node(&epmd);
    let shapes: [(&[&str], Option<&str>); 3] = [
        (&["rpc", &node.name, "pid"], None),
        (&["rpc", "--node", &node.name, "pid"], None),
        (&["rpc", "pid"], Some(&node.name)),
    ];
    let port = epmd.port.to_string();
    for (args, release_node) in shapes {
        let mut envs = vec![("ERL_EPMD_PORT", port.as_str()), ("RELEASE_COOKIE", COOKIE)];
        if let Some(name) = release_node {
            envs.push(("RELEASE_NODE", name));
        }
        let out = run_host_with(args, &envs);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            node.pid().to_string(),
            "{args:?}"
        );
    }
    let out = tool(&epmd, COOKIE, &["rpc", "pid"]);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(said.contains("which node?"), "{said}");
}

#[test]
fn a_reader_that_goes_away_ends_the_tool_quietly_and_leaves_the_node_alone() {
    let epmd = Epmd::start();
    let node = todo_node(&epmd);
    assert_eq!(
        node.post("/add_entry?list=bob&date=2023-12-19&title=Dentist", "")
            .status,
        200
    );
    // `host rpc NODE ps 2>&1 | head -c 0`: the pipes close before it writes.
    let mut child = Command::new(host_binary())
        .args(["rpc", &node.name, "ps"])
        .env("ERL_EPMD_PORT", epmd.port.to_string())
        .env("RELEASE_COOKIE", COOKIE)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start host rpc");
    drop(child.stdout.take());
    drop(child.stderr.take());
    let status =
        crate::support::exit_within(&mut child, Duration::from_secs(60)).expect("host rpc ended");
    use std::os::unix::process::ExitStatusExt as _;
    assert_eq!(
        status.signal(),
        Some(libc::SIGPIPE),
        "{status:?} (101 is a panic)"
    );
    // The node is not disturbed.
    assert!(rpc_ok(&epmd, &node, "ps").contains("bob"));
    node.stop();
}

#[test]
fn a_wrong_cookie_or_a_missing_node_is_one_clear_line() {
    let epmd = Epmd::start();
    let node = todo_node(&epmd);
    for args in [
        vec!["rpc", node.name.as_str(), "ps"],
        vec!["stop", node.name.as_str()],
        vec!["pid", node.name.as_str()],
        vec!["remote", node.name.as_str()],
    ] {
        let out = tool(&epmd, "not-the-cookie", &args);
        let said = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?}");
        assert!(said.contains("the cookies differ"), "{args:?}: {said}");
        assert_eq!(said.trim().lines().count(), 1, "{args:?}: {said}");
    }
    let pid = tool(&epmd, COOKIE, &["pid", &node.name]);
    assert_eq!(
        String::from_utf8_lossy(&pid.stdout).trim(),
        node.pid().to_string()
    );
    for args in [
        vec!["rpc", "absent@127.0.0.1", "ps"],
        vec!["stop", "absent@127.0.0.1"],
        vec!["pid", "absent@127.0.0.1"],
    ] {
        let out = tool(&epmd, COOKIE, &args);
        let said = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?}");
        assert!(
            said.contains("no node named `absent` is registered"),
            "{args:?}: {said}"
        );
    }
    // stop: graceful, and it returns once the node is gone.
    let out = tool(&epmd, COOKIE, &["stop", &node.name]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let logs = node.logs();
    assert!(logs.contains("stop asked from the console"), "{logs}");
    assert!(
        logs.contains("stopped"),
        "stop returned before the node had stopped: {logs}"
    );
    assert!(node.stop_after_signal().success());
}

/// `kill` of a process busy with a slow message: the process keeps its
/// name until it has ended, so a call sent meanwhile is refused rather than
/// served by a second process of the same name; after it, a fresh one
/// starts (its in-memory count begins again).
#[test]
fn a_killed_process_keeps_its_name_until_it_has_ended() {
    let epmd = Epmd::start();
    let misbehave = crate::support::wasm("misbehave").display().to_string();
    let node = NodeBuilder::with_components(&[misbehave])
        .clustered("console_k", &epmd, COOKIE)
        .start();
    assert_eq!(node.get("/echo/slow").text(), "slow: call #1");
    let port = node.port;
    let napping =
        std::thread::spawn(move || crate::support::request(port, "GET", "/nap/slow", &[], b""));
    // The process counts a message as it takes it: 2 once it naps.
    eventually(Duration::from_secs(5), "the nap is under way", || {
        rpc_ok(&epmd, &node, "info slow").contains("messages:  2 handled")
    });
    assert!(rpc_ok(&epmd, &node, "kill slow").contains("killed after its current message"));
    let meanwhile = node.get("/echo/slow");
    assert_eq!(meanwhile.status, 500, "{}", meanwhile.text());
    assert!(
        meanwhile
            .text()
            .contains("killed by an operator before taking this message"),
        "{}",
        meanwhile.text()
    );
    let napped = napping.join().expect("the nap's request");
    assert_eq!(
        napped.text(),
        "slow: call #2",
        "the current message is finished"
    );
    assert_eq!(
        node.get("/echo/slow").text(),
        "slow: call #1",
        "a fresh process"
    );
}

/// A trace whose console goes away (killed, not even saying goodbye) ends
/// with it: nothing keeps copying messages for nobody.
#[test]
fn a_trace_ends_when_its_console_goes_away() {
    let epmd = Epmd::start();
    let node = todo_node(&epmd);
    assert_eq!(
        node.post("/add_entry?list=watched&date=2023-01-01&title=A", "")
            .status,
        200
    );
    let mut console = rpc_in_background(&epmd, &node, "trace watched --for 1h");
    eventually(Duration::from_secs(10), "the trace runs", || {
        node.metric("host_traces_running") == 1 && node.metric("host_console_sessions") == 1
    });
    let _ = console.kill();
    let _ = console.wait();
    eventually(
        Duration::from_secs(10),
        "the trace ended with its console",
        || node.metric("host_traces_running") == 0 && node.metric("host_console_sessions") == 0,
    );
    let ps = rpc_ok(&epmd, &node, "ps");
    assert!(!ps.contains("(traced)"), "{ps}");
}
