//! Hot swap on one node, with the real Todo component's two versions
//! (guest_todo.wasm is 1.0.0, guest_todo_v2.wasm is 2.0.0 with done marks)
//! and a broken 2.0.0 (guest_todo_v2_faulty.wasm: lists named `faulty...`
//! trap when they move up to it, `stuck...` when they move down from it,
//! `crashy...` on every call once on it).
//! Every swap goes through `host swap` and the console over `host rpc`, as
//! an operator's would.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use crate::support::cluster::{COOKIE, tool};
use crate::support::swap::{assert_unchanged, book_entries, fill, names, rpc, swap};
use crate::support::{Epmd, Node, NodeBuilder, eventually};

/// Long enough for a swap of a few hundred processes on a loaded machine.
const SWAP_TIMEOUT: Duration = Duration::from_secs(90);

const V1: &str = "1.0.0";
const V2: &str = "2.0.0";

fn todo_node(epmd: &Epmd, name: &str) -> Node {
    NodeBuilder::todo().clustered(name, epmd, COOKIE).start()
}

/// A node whose lists hibernate after 300 ms idle.
fn hibernating_node(epmd: &Epmd, name: &str) -> Node {
    NodeBuilder::todo()
        .clustered(name, epmd, COOKIE)
        .arg("--hibernate-after")
        .arg("300ms")
        .arg("--idle-timeout")
        .arg("120s")
        .start()
}

fn swap_ok(epmd: &Epmd, node: &Node, guest: &str, args: &[&str]) -> String {
    let (ok, printed) = swap(epmd, node, guest, args);
    assert!(ok, "the swap to {guest} was refused: {printed}");
    printed
}

/// Live processes per version, from `versions`: ("1.0.0", 3)...
fn running(epmd: &Epmd, node: &Node) -> Vec<(String, usize)> {
    let versions = rpc(epmd, node, "versions");
    let Some(line) = versions
        .lines()
        .find_map(|line| line.trim().strip_prefix("running: "))
    else {
        return Vec::new();
    };
    line.split(", ")
        .filter_map(|part| {
            let (count, version) = part.split_once(" on ")?;
            Some((version.to_string(), count.parse().ok()?))
        })
        .collect()
}

/// Waits until every live list runs `version` and the swap (if any) has
/// moved all it could.
fn wait_all_on(epmd: &Epmd, node: &Node, version: &str, lists: usize) {
    eventually(SWAP_TIMEOUT, &format!("{lists} lists on {version}"), || {
        running(epmd, node) == [(version.to_string(), lists)]
            && !rpc(epmd, node, "versions").contains("sweeping")
    });
}

fn wait_rolled_back_by_itself(epmd: &Epmd, node: &Node) {
    eventually(SWAP_TIMEOUT, "the automatic rollback", || {
        rpc(epmd, node, "versions").contains("rolled back by itself")
    });
}

fn put_json(node: &Node, path: &str, body: &str) -> (u16, String) {
    let response = node.request(
        "PUT",
        path,
        &[("content-type", "application/json")],
        body.as_bytes(),
    );
    (response.status, response.text())
}

#[test]
fn a_swap_keeps_every_list_and_the_new_version_works_on_it_and_back() {
    let epmd = Epmd::start();
    let node = todo_node(&epmd, "swap_up");
    let lists = names("groceries", 40);
    let before = fill(&node, &lists);
    let versions = rpc(&epmd, &node, "versions");
    assert!(versions.contains(&format!("current: {V1} (")), "{versions}");
    assert_eq!(running(&epmd, &node), [(V1.to_string(), 40)]);

    let printed = swap_ok(&epmd, &node, "guest_todo_v2", &[]);
    assert!(
        printed.contains(&format!("from {V1} to {V2}")) && printed.contains("took over 16 states"),
        "{printed}"
    );
    wait_all_on(&epmd, &node, V2, 40);
    assert_unchanged(&[&node], &lists, &before);
    // Each side of the swap has its own figures: version 2 served the
    // reads just made.
    let versions = rpc(&epmd, &node, "versions");
    let v2_line = versions
        .lines()
        .find(|line| line.trim().starts_with(&format!("{V2}: ")))
        .unwrap_or_else(|| panic!("no figures for {V2}: {versions}"));
    assert!(
        v2_line.contains("40 calls") && v2_line.contains("0 crashes"),
        "{versions}"
    );
    // Version 2's feature, on a list that moved with its state.
    let (status, body) = put_json(&node, "/lists/groceries-007/entries/2", r#"{"done":true}"#);
    assert_eq!(status, 200, "{body}");
    let entries = node.get("/lists/groceries-007/entries").text();
    assert!(
        entries.contains(r#""title":"Eggs-groceries-007","done":true"#),
        "{entries}"
    );
    let ps = rpc(&epmd, &node, "ps");
    assert!(ps.contains(V2) && !ps.contains(V1), "{ps}");
    assert!(rpc(&epmd, &node, "info groceries-007").contains(V2));

    // Back down: version 2 hands each state down to 1.0.0's format.
    assert!(rpc(&epmd, &node, "rollback guest_todo").contains(&format!("back to {V1}")));
    wait_all_on(&epmd, &node, V1, 40);
    assert_unchanged(&[&node], &lists, &before);
    let entries = node.get("/lists/groceries-007/entries").text();
    assert!(
        !entries.contains("done"),
        "version 1 knows no marks: {entries}"
    );
    let versions = rpc(&epmd, &node, "versions");
    assert!(
        versions.contains("rolled back by an operator"),
        "{versions}"
    );

    // Up again: the mark was kept in storage, and comes back.
    swap_ok(&epmd, &node, "guest_todo_v2", &[]);
    wait_all_on(&epmd, &node, V2, 40);
    let entries = node.get("/lists/groceries-007/entries").text();
    assert!(entries.contains(r#""done":true"#), "{entries}");
    let committed = rpc(&epmd, &node, "commit guest_todo");
    assert!(committed.contains(&format!("runs {V2}")), "{committed}");
    let versions = rpc(&epmd, &node, "versions");
    assert!(versions.contains(&format!("current: {V2} (")), "{versions}");
    assert!(versions.contains(&format!("kept:    {V1} (")), "{versions}");
    node.stop();
}

#[test]
fn writers_see_no_failure_and_lose_nothing_while_every_list_swaps() {
    let epmd = Epmd::start();
    let node = hibernating_node(&epmd, "swap_load");
    // 60 quiet lists, which hibernate, and 8 busy ones that writers keep
    // writing to, in order, through the swap.
    let quiet = names("quiet", 60);
    let quiet_before = fill(&node, &quiet);
    let busy = names("busy", 8);
    fill(&node, &busy);
    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(AtomicUsize::new(0));
    let writers: Vec<_> = busy
        .iter()
        .map(|list| {
            let (list, stop, failures) = (list.clone(), stop.clone(), failures.clone());
            let port = node.port;
            std::thread::spawn(move || {
                let mut acknowledged = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    let path = format!(
                        "/add_entry?list={list}&date=2023-01-01&title=w{:05}",
                        acknowledged
                    );
                    let response = crate::support::request(port, "POST", &path, &[], b"");
                    if response.status == 200 {
                        acknowledged += 1;
                    } else {
                        failures.fetch_add(1, Ordering::Relaxed);
                        eprintln!("{list}: {} {}", response.status, response.text());
                    }
                }
                acknowledged
            })
        })
        .collect();
    // Let the quiet lists hibernate, and the writers get going.
    std::thread::sleep(Duration::from_millis(1500));
    swap_ok(&epmd, &node, "guest_todo_v2", &[]);
    eventually(SWAP_TIMEOUT, "the busy lists on 2.0.0", || {
        let versions = rpc(&epmd, &node, "versions");
        versions.contains("swept")
    });
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    let acknowledged: Vec<usize> = writers
        .into_iter()
        .map(|writer| writer.join().expect("writer"))
        .collect();
    assert_eq!(failures.load(Ordering::Relaxed), 0, "failed requests");
    for (list, acknowledged) in busy.iter().zip(&acknowledged) {
        assert!(*acknowledged > 0, "{list} wrote nothing");
        let entries = book_entries(&node, list);
        let written: Vec<&str> = entries
            .lines()
            .filter_map(|line| line.strip_prefix("2023-01-01 w"))
            .collect();
        let expected: Vec<String> = (0..*acknowledged).map(|i| format!("{i:05}")).collect();
        assert_eq!(
            written, expected,
            "{list}: every acknowledged add, in order"
        );
    }
    // The hibernated lists were not woken: they still count on 1.0.0...
    let split = running(&epmd, &node);
    assert!(
        split.contains(&(V1.to_string(), 60)) && split.contains(&(V2.to_string(), 8)),
        "{split:?}"
    );
    // ...and wake into version 2 with their state.
    assert_unchanged(&[&node], &quiet, &quiet_before);
    wait_all_on(&epmd, &node, V2, 68);
    let entries = node.get("/lists/quiet-042/entries").text();
    assert!(entries.contains(r#""done":false"#), "{entries}");
    assert!(rpc(&epmd, &node, "info quiet-042").contains(V2));
    node.stop();
}

#[test]
fn a_swap_that_cannot_work_is_refused_and_changes_nothing() {
    let epmd = Epmd::start();
    let node = todo_node(&epmd, "swap_refused");
    let lists = names("faulty", 5);
    let before = fill(&node, &lists);

    // Not a component at all.
    let dir = tempfile::TempDir::new().expect("temp dir");
    let garbage = dir.path().join("garbage.wasm");
    std::fs::write(&garbage, b"this is not wasm").expect("write");
    let out = tool(
        &epmd,
        COOKIE,
        &[
            "swap",
            &node.name,
            "guest_todo",
            &garbage.display().to_string(),
        ],
    );
    assert!(!out.status.success());
    let printed =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(printed.contains("garbage.wasm"), "{printed}");

    // A component without the process behaviour.
    let (ok, printed) = swap(&epmd, &node, "hello", &[]);
    assert!(!ok);
    assert!(
        printed.contains("does not export the process behaviour"),
        "{printed}"
    );

    // One whose take-over traps on the states the dry run hands it.
    let (ok, printed) = swap(&epmd, &node, "guest_todo_v2_faulty", &[]);
    assert!(!ok);
    assert!(
        printed.contains("the dry run refused the swap")
            && printed.contains("guest_todo/faulty-000")
            && printed.contains("nothing changed"),
        "{printed}"
    );

    let versions = rpc(&epmd, &node, "versions");
    assert!(!versions.contains("swap:"), "{versions}");
    assert_eq!(running(&epmd, &node), [(V1.to_string(), 5)]);
    assert_unchanged(&[&node], &lists, &before);
    node.stop();
}

#[test]
fn failed_moves_past_the_threshold_roll_the_swap_back_by_itself() {
    let epmd = Epmd::start();
    let node = todo_node(&epmd, "swap_auto");
    // The dry run samples the first 16 names: all of them good.
    let good = names("a-good", 30);
    let faulty = names("faulty", 10);
    let good_before = fill(&node, &good);
    let faulty_before = fill(&node, &faulty);

    swap_ok(&epmd, &node, "guest_todo_v2_faulty", &[]);
    wait_rolled_back_by_itself(&epmd, &node);
    wait_all_on(&epmd, &node, V1, 40);
    let versions = rpc(&epmd, &node, "versions");
    assert!(versions.contains("could not move"), "{versions}");
    assert!(
        versions.contains("guest_todo/faulty-"),
        "names a failure: {versions}"
    );
    assert_unchanged(&[&node], &good, &good_before);
    assert_unchanged(&[&node], &faulty, &faulty_before);
    assert!(node.logs().contains("rolls back by itself"));
    node.stop();
}

#[test]
fn crashes_on_the_new_version_roll_the_swap_back_by_itself() {
    let epmd = Epmd::start();
    let node = todo_node(&epmd, "swap_crashes");
    let good = names("good", 20);
    let crashy = names("crashy", 4);
    let good_before = fill(&node, &good);
    let crashy_before = fill(&node, &crashy);

    // Every move succeeds; then the crashy lists crash at each call.
    swap_ok(&epmd, &node, "guest_todo_v2_faulty", &[]);
    eventually(SWAP_TIMEOUT, "the sweep", || {
        let versions = rpc(&epmd, &node, "versions");
        versions.contains("swept") || versions.contains("rolled back by itself")
    });
    // Three crashes pass the threshold (at least 3): the fourth call may
    // already find 1.0.0.
    for (i, list) in crashy.iter().enumerate() {
        let response = node.get(&format!("/entries?list={list}&date=2023-01-01"));
        if i < 3 {
            assert_eq!(response.status, 500, "{}", response.text());
        }
    }
    wait_rolled_back_by_itself(&epmd, &node);
    let versions = rpc(&epmd, &node, "versions");
    assert!(versions.contains("crashed on it"), "{versions}");
    // Back on 1.0.0, the crashed lists restart from storage: nothing lost.
    assert_unchanged(&[&node], &good, &good_before);
    assert_unchanged(&[&node], &crashy, &crashy_before);
    wait_all_on(&epmd, &node, V1, 24);
    node.stop();
}

#[test]
fn a_canary_moves_a_share_then_promote_and_a_rollback_restarts_what_cannot_go_down() {
    let epmd = Epmd::start();
    let node = todo_node(&epmd, "swap_canary");
    let good = names("list", 40);
    let stuck = names("stuck", 4);
    let good_before = fill(&node, &good);
    let stuck_before = fill(&node, &stuck);

    let printed = swap_ok(&epmd, &node, "guest_todo_v2_faulty", &["--canary", "25"]);
    assert!(printed.contains("25% of names"), "{printed}");
    eventually(SWAP_TIMEOUT, "the canary swept", || {
        rpc(&epmd, &node, "versions").contains("swept")
    });
    let split = running(&epmd, &node);
    let on_v2 = split
        .iter()
        .find(|(version, _)| version == "2.0.0-faulty")
        .map_or(0, |(_, count)| *count);
    assert!(
        (2..=30).contains(&on_v2),
        "about a quarter of 44 moved: {split:?}"
    );
    let refused = rpc_output(&epmd, &node, "commit guest_todo");
    assert!(
        refused.contains("is a canary: promote it first"),
        "{refused}"
    );

    assert!(rpc(&epmd, &node, "promote guest_todo").contains("every process"));
    wait_all_on(&epmd, &node, "2.0.0-faulty", 44);
    assert_unchanged(&[&node], &stuck, &stuck_before);

    // `stuck...` lists cannot hand their state down: they restart on 1.0.0
    // from storage, where everything they acknowledged is.
    rpc(&epmd, &node, "rollback guest_todo");
    wait_all_on(&epmd, &node, V1, 44);
    assert_unchanged(&[&node], &good, &good_before);
    assert_unchanged(&[&node], &stuck, &stuck_before);
    assert!(
        node.logs()
            .contains("restarts on version 1.0.0 from storage"),
        "the init fallback was used"
    );
    node.stop();
}

/// `host rpc NODE COMMAND`'s output, whether or not it succeeded.
fn rpc_output(epmd: &Epmd, node: &Node, command: &str) -> String {
    let out = tool(epmd, COOKIE, &["rpc", &node.name, command]);
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}
