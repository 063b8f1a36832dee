//! A process that traps, loops or hogs memory is ended alone: its caller
//! gets a clear error, other processes keep answering, the host stays up,
//! and the next call restarts it.

use std::sync::Arc;

use crate::support::{Node, NodeBuilder};

/// The Todo guest at `/`, the misbehaving one at `/misbehave/`.
fn mixed_node(extra: &[&str]) -> Node {
    mixed_node_with(extra, "info")
}

fn mixed_node_with(extra: &[&str], log_filter: &str) -> Node {
    let mut builder = NodeBuilder::todo_and_misbehave().log_filter(log_filter);
    for arg in extra {
        builder = builder.arg(arg);
    }
    builder.start()
}

fn todo_still_answers(node: &Node, list: &str) {
    let added = node.request(
        "POST",
        &format!("/add_entry?list={list}&date=2024-03-01&title=alive"),
        &[],
        b"",
    );
    assert_eq!(added.status, 200, "{}", added.text());
    let entries = node.get(&format!("/entries?list={list}&date=2024-03-01"));
    assert!(
        entries.text().ends_with("2024-03-01 alive"),
        "{}",
        entries.text()
    );
}

#[test]
fn a_trapping_process_is_restarted_fresh_on_the_next_call() {
    let node = mixed_node(&[]);
    assert_eq!(node.get("/misbehave/echo/p").text(), "p: call #1");
    assert_eq!(node.get("/misbehave/echo/p").text(), "p: call #2");

    let trapped = node.get("/misbehave/trap/p");
    assert_eq!(trapped.status, 500);
    assert!(
        trapped.text().starts_with("crashed: trapped"),
        "{}",
        trapped.text()
    );

    // A fresh process: its in-memory count starts again.
    assert_eq!(node.get("/misbehave/echo/p").text(), "p: call #1");
    assert_eq!(node.metric("host_processes_crashed_total"), 1);
    todo_still_answers(&node, "after-trap");
    assert!(
        node.logs().contains("process crashed"),
        "the crash is logged"
    );
}

#[test]
fn an_endless_loop_is_ended_at_its_deadline_while_others_answer() {
    let node = Arc::new(mixed_node(&["--call-deadline", "5s"]));
    let looping = {
        let node = node.clone();
        std::thread::spawn(move || node.get("/misbehave/loop/spinner"))
    };
    crate::support::eventually(
        std::time::Duration::from_secs(10),
        "the looping process to start",
        || node.metric("host_processes_started_total") == 1,
    );
    // While the loop burns its time slices, other processes keep answering.
    for i in 0..5 {
        todo_still_answers(&node, &format!("during-loop-{i}"));
    }
    assert!(
        !looping.is_finished(),
        "the loop ended before the others answered: this proves nothing"
    );
    let looped = looping.join().expect("request thread");
    assert_eq!(looped.status, 500);
    assert!(looped.text().contains("deadline"), "{}", looped.text());
    assert_eq!(
        node.get("/misbehave/echo/spinner").text(),
        "spinner: call #1"
    );
}

#[test]
fn a_memory_hog_is_ended_at_its_cap() {
    let node = mixed_node(&["--process-memory", "32MiB"]);
    let hogged = node.get("/misbehave/hog/glutton");
    assert_eq!(hogged.status, 500);
    assert!(hogged.text().contains("memory"), "{}", hogged.text());
    todo_still_answers(&node, "after-hog");
    assert_eq!(
        node.get("/misbehave/echo/glutton").text(),
        "glutton: call #1"
    );
}

#[test]
fn a_misbehaving_http_handler_fails_only_its_own_request() {
    let node = mixed_node(&["--request-deadline", "2s", "--process-memory", "32MiB"]);
    let trapped = node.get("/misbehave/front/trap");
    assert_eq!(trapped.status, 500, "{}", trapped.text());
    let looped = node.get("/misbehave/front/loop");
    assert_eq!(looped.status, 504, "{}", looped.text());
    let hogged = node.get("/misbehave/front/hog");
    assert_eq!(hogged.status, 500, "{}", hogged.text());
    assert_eq!(
        node.get("/misbehave/front/echo").text(),
        "the front survived `echo`"
    );
    todo_still_answers(&node, "after-front");
}

#[test]
fn too_many_restarts_refuse_the_name_for_a_cooldown() {
    let node = mixed_node(&[
        "--restart-intensity",
        "2",
        "--restart-period",
        "60s",
        "--restart-cooldown",
        "5s",
    ]);
    for _ in 0..3 {
        assert_eq!(node.get("/misbehave/trap/fragile").status, 500);
    }
    let refused = node.get("/misbehave/echo/fragile");
    assert_eq!(refused.status, 503, "{}", refused.text());
    assert!(refused.text().contains("refused"), "{}", refused.text());
    assert!(
        node.logs().contains("restart intensity reached"),
        "logged:\n{}",
        node.logs()
    );
    assert_eq!(node.metric("host_process_starts_refused_total"), 1);
    // Other names are not affected.
    assert_eq!(node.get("/misbehave/echo/sturdy").text(), "sturdy: call #1");
    crate::support::eventually(
        std::time::Duration::from_secs(20),
        "the cooldown to end",
        || node.get("/misbehave/echo/fragile").status == 200,
    );
}

#[test]
fn a_failing_init_is_refused_with_its_reason() {
    let node = mixed_node(&[]);
    let refused = node.get("/misbehave/echo/bad-init-1");
    assert_eq!(refused.status, 503);
    assert!(
        refused.text().contains("bad-init-1 refuses to start"),
        "{}",
        refused.text()
    );
}

#[test]
fn a_component_cannot_read_another_components_data() {
    let node = mixed_node(&[]);
    todo_still_answers(&node, "private");
    // The Todo component now holds keys; the other component sees none.
    assert_eq!(node.get("/misbehave/scan").text(), "0 keys");
    assert_eq!(
        node.request("PUT", "/misbehave/poke/own-key", &[], b"mine")
            .status,
        200
    );
    assert_eq!(node.get("/misbehave/peek/own-key").text(), "mine");
    assert_eq!(node.get("/misbehave/scan").text(), "1 keys");
}

#[test]
fn handler_instances_are_reused_a_bounded_number_of_times_and_never_after_a_trap() {
    // The count of requests the serving handler instance has seen. The
    // client can read a response a moment before the host puts the instance
    // back, so when one should be back (`expect_reuse`), wait until it is.
    let count = |node: &Node, expect_reuse: bool| -> u64 {
        if expect_reuse {
            crate::support::eventually(
                std::time::Duration::from_secs(10),
                "the handler instance to be back",
                || node.metric("host_http_idle_handlers") == 1,
            );
        }
        let response = node.get("/misbehave/front/count");
        response.text().parse().expect("a count")
    };
    let fresh = mixed_node(&["--http-instance-reuse", "1"]);
    let seen: Vec<u64> = (0..6).map(|_| count(&fresh, false)).collect();
    assert_eq!(seen, vec![1; 6], "a fresh instance for every request");
    assert_eq!(fresh.metric("host_http_idle_handlers"), 0);

    let reused = mixed_node(&["--http-instance-reuse", "4"]);
    // An instance is back after its 1st, 2nd and 3rd request, retired after
    // its 4th.
    let seen: Vec<u64> = (0..8).map(|i| count(&reused, i % 4 != 0)).collect();
    assert_eq!(
        seen,
        [1, 2, 3, 4, 1, 2, 3, 4],
        "one instance, retired after 4"
    );

    // A trap retires an instance early: had the trapping instance (at its
    // second request) been reused, the next count would be 3.
    let trapping = mixed_node(&["--http-instance-reuse", "4"]);
    assert_eq!(count(&trapping, false), 1);
    crate::support::eventually(
        std::time::Duration::from_secs(10),
        "the handler instance to be back",
        || trapping.metric("host_http_idle_handlers") == 1,
    );
    assert_eq!(trapping.get("/misbehave/front/trap").status, 500);
    assert_eq!(count(&trapping, false), 1);
}

#[test]
fn a_cast_returns_at_once_and_a_looping_cast_handler_is_ended() {
    let node = mixed_node(&["--call-deadline", "1s"]);
    let cast = node.get("/misbehave/sleep/sleeper");
    assert_eq!((cast.status, cast.text().as_str()), (202, "cast sent"));
    crate::support::eventually(
        std::time::Duration::from_secs(10),
        "the looping cast to be ended",
        || node.metric("host_processes_crashed_total") == 1,
    );
    assert!(node.logs().contains("misbehave/sleeper"), "{}", node.logs());
    assert_eq!(
        node.get("/misbehave/echo/sleeper").text(),
        "sleeper: call #1"
    );
}

#[test]
fn a_component_calls_another_only_where_the_operator_allowed_it() {
    let node = mixed_node(&[]);
    todo_still_answers(&node, "guarded");
    let refused = node.get("/misbehave/other/guest_todo/guarded");
    assert_eq!(refused.status, 503, "{}", refused.text());
    assert!(
        refused.text().contains("--allow-call misbehave=guest_todo"),
        "{}",
        refused.text()
    );
    drop(node);

    let granted = mixed_node(&["--allow-call", "misbehave=guest_todo"]);
    let reached = granted.get("/misbehave/other/guest_todo/guarded");
    // The list process got the message (not in its protocol) and said so.
    assert_eq!(reached.status, 200, "{}", reached.text());
    assert!(reached.text().contains("malformed"), "{}", reached.text());
}

#[test]
fn a_flooded_mailbox_refuses_messages_instead_of_growing() {
    let node = mixed_node(&["--mailbox-limit", "8MiB", "--call-deadline", "3s"]);
    let flood = node.get("/misbehave/flood/busy");
    let text = flood.text();
    assert_eq!(flood.status, 200, "{text}");
    let accepted: u32 = text
        .strip_prefix("accepted ")
        .and_then(|rest| rest.split(' ').next())
        .and_then(|count| count.parse().ok())
        .unwrap_or_else(|| panic!("no count in {text:?}"));
    // 8 MiB holds seven 1 MiB messages and their overhead, not eight.
    assert_eq!(accepted, 7, "{text}");
    assert!(
        text.contains("the mailbox of `misbehave/busy` is full"),
        "{text}"
    );
    assert!(node.metric("host_messages_refused_mailbox_full_total") >= 1);
    todo_still_answers(&node, "after-flood");
}

#[test]
fn call_component_reaches_the_callers_own_processes_and_names_unknown_components() {
    let node = mixed_node(&[]);
    assert_eq!(
        node.get("/misbehave/other/misbehave/peer").text(),
        "peer: call #1"
    );
    let unknown = node.get("/misbehave/other/nonexistent/peer");
    assert_eq!(
        (unknown.status, unknown.text().as_str()),
        (500, "no component nonexistent")
    );
}

#[test]
fn guest_logs_land_in_the_host_log_tagged_with_node_and_process() {
    let node = mixed_node_with(&[], "info,guest=debug");
    todo_still_answers(&node, "logged-list");
    crate::support::eventually(
        std::time::Duration::from_secs(5),
        "the guest's log line",
        || {
            node.logs().lines().any(|line| {
                line.contains("list `logged-list` loaded")
                    && line.contains("node=test")
                    && line.contains("component=guest_todo")
                    && line.contains("process=logged-list")
            })
        },
    );
}

/// All of WASI is linked (a Rust guest's standard library imports it), but
/// a component's context grants nothing: the host's files, its environment
/// and the network stay out of reach, each refused by the host.
#[test]
fn a_component_gets_no_files_no_environment_and_no_sockets() {
    let node = NodeBuilder::todo_and_misbehave()
        .env("A_SECRET_OF_THE_HOST", "42")
        .start();

    let files = node.get("/misbehave/wasi/fs");
    assert_eq!(files.status, 403, "{}", files.text());
    assert!(
        std::path::Path::new("/etc/passwd").exists(),
        "the file the guest tried is there"
    );

    let environment = node.get("/misbehave/wasi/env");
    assert_eq!(environment.status, 403, "{}", environment.text());
    assert!(
        environment.text().contains("0 variables"),
        "{}",
        environment.text()
    );

    // A listener the guest may try: nothing may reach it.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a listener");
    listener.set_nonblocking(true).expect("nonblocking");
    let port = listener.local_addr().expect("its address").port();
    let socket = node.get(&format!("/misbehave/wasi/socket/{port}"));
    assert_eq!(socket.status, 403, "{}", socket.text());
    assert!(
        socket.text().contains("Permission denied"),
        "refused by the host's address check, not unsupported: {}",
        socket.text()
    );
    assert_eq!(
        listener.accept().map_err(|e| e.kind()).err(),
        Some(std::io::ErrorKind::WouldBlock),
        "no connection arrived"
    );
}
