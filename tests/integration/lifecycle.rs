//! Processes expire when idle and come back from storage; compiled
//! components are cached on disk.

use std::time::Duration;

use crate::support::{NodeBuilder, eventually};

#[test]
fn idle_processes_expire_and_come_back_from_storage() {
    let node = NodeBuilder::todo()
        .metrics()
        .arg("--idle-timeout")
        .arg("1s")
        .start();
    for list in ["one", "two", "three"] {
        let added = node.request(
            "POST",
            &format!("/add_entry?list={list}&date=2024-04-01&title=kept"),
            &[],
            b"",
        );
        assert_eq!(added.status, 200);
    }
    // Counters, not the live gauge: on a slow machine a process may already
    // have expired by the time the metrics are read.
    assert_eq!(node.metric("host_processes_started_total"), 3);
    eventually(Duration::from_secs(15), "idle processes to expire", || {
        node.metric("host_processes") == 0 && node.metric("host_processes_expired_total") == 3
    });

    // The next call starts the list again, from storage.
    assert_eq!(
        node.get("/entries?list=two&date=2024-04-01").text(),
        "2024-04-01 kept"
    );
    assert_eq!(node.metric("host_processes_started_total"), 4);
}

#[test]
fn compiled_components_are_cached_and_a_bad_cache_is_rebuilt() {
    let data = tempfile::tempdir().expect("temp dir");
    let node = NodeBuilder::todo().data_dir(data.path()).start();
    assert!(node.logs().contains("compiled in"), "{}", node.logs());
    node.stop();
    let compiled = data.path().join("compiled");
    let cached: Vec<_> = std::fs::read_dir(&compiled)
        .expect("a compiled-component cache")
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "cwasm"))
        .collect();
    assert_eq!(cached.len(), 1, "one cached component: {cached:?}");

    // A second start skips compilation.
    let node = NodeBuilder::todo().data_dir(data.path()).start();
    let logs = node.logs();
    assert!(logs.contains("from the compile cache"), "{logs}");
    assert!(!logs.contains("compiled in"), "{logs}");
    assert_eq!(node.get("/entries?list=a&date=2024-04-01").status, 200);
    node.stop();

    // A corrupted entry is noticed and rebuilt.
    std::fs::write(&cached[0], b"garbage").expect("corrupt the cache");
    let node = NodeBuilder::todo().data_dir(data.path()).start();
    assert_eq!(node.get("/entries?list=a&date=2024-04-01").status, 200);
    let logs = node.logs();
    assert!(logs.contains("cache unusable"), "{logs}");
    assert!(logs.contains("compiled in"), "{logs}");
    node.stop();
    let rebuilt = std::fs::read(&cached[0]).expect("cache entry");
    assert_ne!(rebuilt, b"garbage");
}

#[test]
fn at_its_process_limit_a_node_refuses_new_names_and_serves_the_others() {
    let node = NodeBuilder::todo()
        .arg("--max-processes")
        .arg("20")
        .arg("--max-concurrent-requests")
        .arg("4")
        .start();
    for i in 0..20 {
        let response = node.get(&format!("/entries?list=l{i}&date=2024-04-01"));
        assert_eq!(response.status, 200, "list {i}: {}", response.text());
    }
    let refused = node.get("/entries?list=one-too-many&date=2024-04-01");
    assert_eq!(refused.status, 503);
    assert!(
        refused.text().contains("limit of 20 processes"),
        "{}",
        refused.text()
    );
    let existing = node.request(
        "POST",
        "/add_entry?list=l3&date=2024-04-01&title=still",
        &[],
        b"",
    );
    assert_eq!(existing.status, 200);
}

/// A component that exports only the HTTP handler (no process behaviour)
/// runs: the smallest `wasi:http` guest, the HTTP benchmarks' floor.
#[test]
fn a_component_with_only_an_http_handler_serves() {
    let node = NodeBuilder::with_components(&[crate::support::wasm("hello").display().to_string()])
        .start();
    let answer = node.get("/anything");
    assert_eq!((answer.status, answer.text().as_str()), (200, "hello"));
    assert!(
        node.logs().contains("component=hello")
            && node.logs().contains("processes=false http=true"),
        "{}",
        node.logs()
    );
}
