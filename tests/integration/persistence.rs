//! Acknowledged writes survive a graceful restart and a kill -9.

use crate::support::NodeBuilder;

fn add(node: &crate::support::Node, list: &str, title: &str) {
    let response = node.request(
        "POST",
        &format!("/add_entry?list={list}&date=2024-01-15&title={title}"),
        &[],
        b"",
    );
    assert_eq!(response.status, 200, "{}", response.text());
}

fn titles(node: &crate::support::Node, list: &str) -> Vec<String> {
    let response = node.get(&format!("/entries?list={list}&date=2024-01-15"));
    assert_eq!(response.status, 200);
    response
        .text()
        .lines()
        .map(|line| line.trim_start_matches("2024-01-15 ").to_string())
        .collect()
}

#[test]
fn entries_survive_a_graceful_restart() {
    let data = tempfile::tempdir().expect("temp dir");
    let node = NodeBuilder::todo().data_dir(data.path()).start();
    for i in 0..20 {
        add(&node, "home", &format!("chore{i}"));
    }
    add(&node, "work", "report");
    let status = node.stop();
    assert_eq!(status.code(), Some(0), "graceful stop exits 0");

    let node = NodeBuilder::todo().data_dir(data.path()).start();
    let expected: Vec<String> = (0..20).map(|i| format!("chore{i}")).collect();
    assert_eq!(titles(&node, "home"), expected);
    assert_eq!(titles(&node, "work"), ["report"]);
    // Ids continue where they stopped.
    let created = node.post(
        "/lists/work/entries",
        r#"{"date":"2024-01-15","title":"next"}"#,
    );
    assert_eq!(created.json()["id"], 2);
}

#[test]
fn every_acknowledged_add_survives_kill_9() {
    let data = tempfile::tempdir().expect("temp dir");
    let node = NodeBuilder::todo().data_dir(data.path()).start();
    let lists = ["a", "b", "c", "d"];
    for i in 0..50 {
        add(&node, lists[i % lists.len()], &format!("e{i}"));
    }
    node.kill();

    let node = NodeBuilder::todo().data_dir(data.path()).start();
    for (index, list) in lists.iter().enumerate() {
        let expected: Vec<String> = (0..50)
            .filter(|i| i % lists.len() == index)
            .map(|i| format!("e{i}"))
            .collect();
        assert_eq!(titles(&node, list), expected, "list {list}");
    }
}

#[test]
fn sigint_stops_gracefully_too() {
    let data = tempfile::tempdir().expect("temp dir");
    let node = NodeBuilder::todo()
        .data_dir(data.path())
        .arg("--fsync")
        .start();
    add(&node, "x", "kept");
    let pid = node.pid();
    crate::support::signal(pid, "INT");
    let status = node.stop_after_signal();
    assert_eq!(status.code(), Some(0));
    let node = NodeBuilder::todo().data_dir(data.path()).start();
    assert_eq!(titles(&node, "x"), ["kept"]);
}
