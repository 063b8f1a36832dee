//! Hibernation: idle processes hand their state over and free their
//! instance; their next message restores it. A node holds more processes
//! than it holds instances, and a process whose hand-over fails expires instead
//! of being lost.

use std::time::Duration;

use crate::support::{NodeBuilder, eventually, run_host, wasm};

/// The misbehaving example (it journals the notes cast to it and hands
/// them over), with metrics on.
fn misbehave() -> NodeBuilder {
    NodeBuilder::with_components(&[wasm("misbehave").display().to_string()]).metrics()
}

/// The same, hibernating processes idle for 200 ms and expiring none.
fn misbehave_hibernating_soon() -> NodeBuilder {
    misbehave()
        .arg("--hibernate-after")
        .arg("200ms")
        .arg("--idle-timeout")
        .arg("60s")
}

#[test]
fn a_hibernated_process_keeps_its_state_and_the_order_of_its_messages() {
    let node = misbehave_hibernating_soon().start();
    keeps_state_and_order(&node);
    assert!(
        node.metric("host_hibernated_state_bytes") > 0,
        "kept in memory"
    );
    assert_eq!(node.metric("host_hibernated_states_spilled_total"), 0);
}

#[test]
fn a_state_past_the_memory_budget_is_kept_in_storage_and_restored() {
    let node = misbehave_hibernating_soon()
        .arg("--hibernate-memory")
        .arg("0")
        .start();
    keeps_state_and_order(&node);
    assert_eq!(node.metric("host_hibernated_state_bytes"), 0);
    assert!(node.metric("host_hibernated_states_spilled_total") >= 1);
}

/// A process called, hibernated, called again has its state; the messages
/// sent while it wakes are handled in order.
fn keeps_state_and_order(node: &crate::support::Node) {
    assert_eq!(node.get("/echo/keeper").text(), "keeper: call #1");
    assert_eq!(node.get("/notes/keeper/a-b-c").text(), "a,b,c");
    eventually(
        Duration::from_secs(10),
        "the idle process to hibernate",
        || {
            node.metric("host_processes_hibernated_total") >= 1
                && node.metric("host_instance_slots_held") == 0
        },
    );
    assert_eq!(node.metric("host_processes"), 1, "hibernated, still alive");

    // The first cast wakes it; the others and the call queue behind it
    // while it takes its state back, and are handled in the order sent.
    assert_eq!(node.get("/notes/keeper/d-e-f-g").text(), "a,b,c,d,e,f,g");
    assert_eq!(node.metric("host_processes_woken_total"), 1);
    assert_eq!(node.get("/echo/keeper").text(), "keeper: call #2");
    assert_eq!(node.metric("host_processes_started_total"), 1);
    assert_eq!(node.metric("host_processes_expired_total"), 0);
    eventually(Duration::from_secs(10), "it to hibernate again", || {
        node.metric("host_processes_hibernated_total") >= 2
    });
}

#[test]
fn a_node_with_more_processes_than_instance_slots_serves_all_of_them() {
    let node = misbehave()
        .arg("--max-instances")
        .arg("4")
        .arg("--max-concurrent-requests")
        .arg("4")
        .arg("--hibernate-after")
        .arg("off")
        .start();
    assert_eq!(node.metric("host_instance_slots"), 4);
    // Several clients at once, each on its own names, then all again: every
    // process is alive with its count, though at most 4 hold an instance.
    let rounds = std::thread::scope(|scope| {
        let node = &node;
        let clients: Vec<_> = (0..4)
            .map(|client| {
                scope.spawn(move || {
                    let mut answers = Vec::new();
                    for round in 1..=2 {
                        for i in 0..15 {
                            let name = format!("c{client}-{i}");
                            let answer = node.get(&format!("/echo/{name}"));
                            assert_eq!(answer.status, 200, "{}", answer.text());
                            answers.push((round, name, answer.text()));
                        }
                    }
                    answers
                })
            })
            .collect();
        clients
            .into_iter()
            .flat_map(|client| client.join().expect("client"))
            .collect::<Vec<_>>()
    });
    for (round, name, answer) in rounds {
        assert_eq!(answer, format!("{name}: call #{round}"));
    }
    assert_eq!(node.metric("host_processes"), 60);
    assert_eq!(node.metric("host_processes_started_total"), 60);
    assert!(node.metric("host_instance_slots_held") <= 4);
    assert!(node.metric("host_processes_hibernated_total") >= 56);
}

#[test]
fn a_process_whose_hand_over_traps_expires_and_is_not_lost() {
    let node = misbehave_hibernating_soon().start();
    // Its data in storage, its count in memory.
    let stored = node.request("PUT", "/poke/kept", &[], b"in storage");
    assert_eq!(stored.status, 200);
    assert_eq!(
        node.get("/echo/bad-hand-over-1").text(),
        "bad-hand-over-1: call #1"
    );
    eventually(Duration::from_secs(10), "the hand-over to fail", || {
        node.metric("host_hand_overs_failed_total") == 1
    });
    assert_eq!(node.metric("host_processes_expired_total"), 1);
    assert_eq!(node.metric("host_processes_crashed_total"), 0);
    assert_eq!(node.metric("host_processes"), 0);
    // Its next call starts it afresh, as after an idle expiry; storage is
    // as it was.
    assert_eq!(
        node.get("/echo/bad-hand-over-1").text(),
        "bad-hand-over-1: call #1"
    );
    assert_eq!(node.get("/peek/kept").text(), "in storage");
    assert!(node.logs().contains("hand-over failed"));
}

#[test]
fn a_process_whose_hand_over_traps_under_pressure_expires_and_others_run() {
    let node = misbehave()
        .arg("--max-instances")
        .arg("1")
        .arg("--hibernate-after")
        .arg("off")
        .start();
    assert_eq!(
        node.get("/echo/bad-hand-over-2").text(),
        "bad-hand-over-2: call #1"
    );
    // The only slot is needed: the holder is asked to hibernate, traps,
    // and expires; the newcomer runs.
    assert_eq!(node.get("/echo/other").text(), "other: call #1");
    assert_eq!(node.metric("host_hand_overs_failed_total"), 1);
    assert_eq!(
        node.get("/echo/bad-hand-over-2").text(),
        "bad-hand-over-2: call #1"
    );
    assert_eq!(node.get("/echo/other").text(), "other: call #2");
}

#[test]
fn limits_the_machine_cannot_hold_fail_at_start_naming_the_limit() {
    let minimal = wasm("minimal").display().to_string();
    let data = tempfile::tempdir().expect("temp dir");
    let data_dir = data.path().display().to_string();
    let start = |extra: &[&str]| {
        let mut args = vec![
            "run",
            "--node",
            "none",
            "--distribution",
            "none",
            "--http-port",
            "0",
            "--no-observer",
            "--data-dir",
            data_dir.as_str(),
        ];
        args.extend_from_slice(extra);
        args.push(minimal.as_str());
        let output = run_host(&args);
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    let (started, said) = start(&["--max-processes", "4000000000"]);
    assert!(!started);
    assert!(
        said.contains("--max-processes 4000000000 would need"),
        "{said}"
    );
    assert!(said.contains("lower --max-processes"), "{said}");
    assert!(
        !said.contains("failed to create memory pool mapping"),
        "{said}"
    );

    let have: u64 = std::fs::read_to_string("/proc/sys/vm/max_map_count")
        .ok()
        .and_then(|text| text.trim().parse().ok())
        .unwrap_or(0);
    if have < 6_000_000 {
        let (started, said) = start(&["--max-instances", "1000000"]);
        assert!(!started);
        assert!(said.contains("(vm.max_map_count)"), "{said}");
        assert!(said.contains("Lower --max-instances"), "{said}");
    }
}
