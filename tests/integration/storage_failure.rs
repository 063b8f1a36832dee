//! Storage that fails a write, and comes back by itself: a node whose
//! database cannot create the file it needs refuses writes with the reason
//! (reads go on), and once it can again, restarts itself in place to reopen
//! its storage, keeping every write it acknowledged. A disk that fills up
//! never gets there: writes stop at a floor of free space, and go on once
//! there is room.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::support::{HttpResponse, Node, NodeBuilder, eventually, free_port, small_disks_allowed};

const MIB: u64 = 1024 * 1024;

/// A title of 4 KiB (the routes' bound): RocksDB switches to a new log
/// file every 64 MiB written, which takes about 16,000 of them.
fn title(i: usize) -> String {
    format!("{i:05}-{}", "x".repeat(4090))
}

fn add(node: &Node, list: usize, i: usize) -> HttpResponse {
    let body = format!(r#"{{"date":"2023-12-19","title":"{}"}}"#, title(i));
    node.post(&format!("/lists/l{list}/entries"), &body)
}

/// Makes `dir` immutable (`chattr +i`: no file can be created in it, even
/// by root), or not. False when the file system or the user cannot.
fn immutable(dir: &Path, on: bool) -> bool {
    Command::new("chattr")
        .arg(if on { "+i" } else { "-i" })
        .arg(dir)
        .status()
        .is_ok_and(|status| status.success())
}

/// Makes a folder mutable again when dropped, a failing test included (its
/// temp dir could not be removed otherwise).
struct Immutable(PathBuf);

impl Drop for Immutable {
    fn drop(&mut self) {
        let _ = immutable(&self.0, false);
    }
}

#[test]
fn a_storage_failure_refuses_writes_with_the_reason_and_the_node_restarts_itself_once_it_can() {
    let port = free_port();
    let node = NodeBuilder::todo().http_port(port).start();
    let db = node.data_dir.join("db");
    if !immutable(&db, true) {
        eprintln!("skipped: chattr +i needs root and a file system that has it");
        return;
    }
    let guard = Immutable(db.clone());
    // Writes go on until RocksDB needs a new log file, which it cannot
    // create: that write fails, and storage with it.
    let mut acknowledged = [0usize; 20];
    let mut refused = None;
    'writing: for (list, count) in acknowledged.iter_mut().enumerate() {
        for i in 0..1000 {
            let answer = add(&node, list, i);
            if answer.status != 201 {
                refused = Some(answer);
                break 'writing;
            }
            *count += 1;
        }
    }
    let refused = refused.expect("a write failed once the log could not be switched");
    assert_eq!(refused.status, 500, "outcome unknown: {}", refused.text());
    assert!(
        refused.text().contains("outcome unknown"),
        "{}",
        refused.text()
    );
    assert!(node.logs().contains("storage failed:"), "{}", node.logs());
    // While the cause stays (the node cannot restart meanwhile), later
    // writes are refused up front with the reason, and reads go on.
    let later = add(&node, 99, 0);
    assert_eq!(later.status, 503, "not applied: {}", later.text());
    assert!(later.text().contains("storage failed"), "{}", later.text());
    assert_eq!(node.get("/lists/l0/entries").status, 200, "reads go on");
    drop(guard);
    let written: usize = acknowledged.iter().sum();
    assert!(written > 10_000, "{written} writes before the switch");
    // The node is back within a few seconds of the cause going, in the
    // same process, on the same port.
    let ready = node
        .next_line(Duration::from_secs(120))
        .expect("the node started again and printed its ready line");
    assert!(ready.contains(&format!(":{port}")), "{ready}");
    // The same process, executed again, counting the restart.
    let environment = std::fs::read(format!("/proc/{}/environ", node.pid())).expect("environ");
    assert!(
        environment
            .split(|b| *b == 0)
            .any(|var| var == b"HOST_RESTARTS_TO_REOPEN_STORAGE=1"),
        "restarted in place"
    );
    assert!(
        node.logs().contains("restarting to reopen it"),
        "{}",
        node.logs()
    );
    assert!(node.logs().contains("started again to reopen storage"));

    let list = acknowledged
        .iter()
        .position(|count| *count < 1000)
        .expect("a list");
    eventually(Duration::from_secs(30), "writes are taken again", || {
        add(&node, 99, 0).status == 201
    });
    for (list, count) in acknowledged.iter().enumerate().take(list + 1) {
        let stored = node.get(&format!("/lists/l{list}/entries")).json();
        let stored = stored.as_array().expect("entries").len();
        // The write whose outcome was unknown may or may not be there.
        assert!(
            stored == *count || stored == *count + 1,
            "list {list}: {stored} stored, {count} acknowledged"
        );
    }
    assert!(node.stop().success());
}

#[test]
fn a_disk_under_its_floor_refuses_writes_until_it_has_room_again() {
    if !small_disks_allowed() {
        eprintln!("skipped: giving a node a disk of its own needs root");
        return;
    }
    // 256 MiB; RocksDB reserves about 70 for its log, which leaves the
    // node over its floor (128 MiB).
    let node = NodeBuilder::todo().metrics().small_disk(256 * MIB).start();
    assert_eq!(add(&node, 0, 0).status, 201);

    // Filled, then 100 MiB given back: under the floor.
    let filler = node.own_path(&node.data_dir.join("filler"));
    let mut file = std::fs::File::create(&filler).expect("a file on the node's disk");
    let chunk = vec![0u8; MIB as usize];
    let mut size = 0;
    while file.write_all(&chunk).is_ok() {
        size += MIB;
    }
    file.set_len(size.saturating_sub(100 * MIB))
        .expect("given back");
    drop(file);
    // Writes already on their way may still be taken, until a write reads
    // the free space again (every 250 ms).
    let mut acknowledged = 1;
    let mut refused = None;
    eventually(
        Duration::from_secs(30),
        "a write refused at the floor",
        || {
            let answer = add(&node, 0, acknowledged);
            if answer.status == 201 {
                acknowledged += 1;
                return false;
            }
            refused = Some(answer);
            true
        },
    );
    let refused = refused.expect("an answer");
    assert_eq!(refused.status, 503, "not applied: {}", refused.text());
    assert!(
        refused.text().contains("under its floor of 128 MiB"),
        "{}",
        refused.text()
    );
    assert!(node.metric("host_storage_writes_refused_disk_full_total") > 0);
    assert_eq!(
        node.metric("host_storage_failed"),
        0,
        "storage itself is fine"
    );
    assert_eq!(node.get("/lists/l0/entries").status, 200, "reads go on");

    std::fs::remove_file(&filler).expect("room again");
    eventually(Duration::from_secs(30), "writes taken again", || {
        add(&node, 0, acknowledged).status == 201
    });
    acknowledged += 1;
    let stored = node.get("/lists/l0/entries").json();
    let ids: Vec<u64> = stored
        .as_array()
        .expect("entries")
        .iter()
        .filter_map(|entry| entry["id"].as_u64())
        .collect();
    assert_eq!(
        ids.len(),
        acknowledged,
        "the acknowledged writes, not the refused ones: {ids:?}"
    );
    assert!(!node.logs().contains("storage failed"), "{}", node.logs());
    assert!(node.stop().success());
}
