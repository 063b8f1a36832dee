//! What the hot swap tests share: the console over `host rpc`, `host swap`
//! with the repository's Todo builds, and lists filled through the book's
//! routes to compare before and after.

use super::cluster::{COOKIE, tool};
use super::{Epmd, Node, wasm};

/// `host rpc NODE COMMAND`, which must succeed; its stdout.
pub fn rpc(epmd: &Epmd, node: &Node, command: &str) -> String {
    let out = tool(epmd, COOKIE, &["rpc", &node.name, command]);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "`{command}` on {} failed: {stdout}{}",
        node.name,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// `host swap NODE guest_todo GUEST ARGS...`: (succeeded, what it printed).
pub fn swap(epmd: &Epmd, node: &Node, guest: &str, args: &[&str]) -> (bool, String) {
    let path = wasm(guest).display().to_string();
    let mut all = vec!["swap", &node.name, "guest_todo", &path];
    all.extend_from_slice(args);
    let out = tool(epmd, COOKIE, &all);
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), printed)
}

/// An entry dated 2023-01-01 added to `list` through the book's route; the
/// status.
pub fn add(node: &Node, list: &str, title: &str) -> u16 {
    node.post(
        &format!("/add_entry?list={list}&date=2023-01-01&title={title}"),
        "",
    )
    .status
}

/// The book's answer for `list` on 2023-01-01.
pub fn book_entries(node: &Node, list: &str) -> String {
    let response = node.get(&format!("/entries?list={list}&date=2023-01-01"));
    assert_eq!(response.status, 200, "{}", response.text());
    response.text()
}

/// Lists `names`, each with three entries (Milk, Eggs, Bread: ids 1 to 3);
/// returns what the book shows for each.
pub fn fill(node: &Node, names: &[String]) -> Vec<String> {
    for name in names {
        for title in ["Milk", "Eggs", "Bread"] {
            assert_eq!(add(node, name, &format!("{title}-{name}")), 200);
        }
    }
    names.iter().map(|name| book_entries(node, name)).collect()
}

/// `count` list names, `PREFIX-000` on.
pub fn names(prefix: &str, count: usize) -> Vec<String> {
    (0..count).map(|i| format!("{prefix}-{i:03}")).collect()
}

/// Every list reads as it did, through every node.
pub fn assert_unchanged(nodes: &[&Node], names: &[String], before: &[String]) {
    for node in nodes {
        for (name, before) in names.iter().zip(before) {
            assert_eq!(
                &book_entries(node, name),
                before,
                "{name} through {}",
                node.name
            );
        }
    }
}
