//! Floods of idle connections against a node under a low open-file limit:
//! the listeners refuse past their caps, and the node's tools, members and
//! storage keep working, during the flood and after it.

use std::net::Ipv4Addr;
use std::time::Duration;

use tempfile::TempDir;

use crate::support::cluster::{COOKIE, stored_entries, todo_node, tool_ok, wait_for_members};
use crate::support::flood::Flood;
use crate::support::{Epmd, NodeBuilder, eventually, send_raw};

/// `ulimit -n` of the flooded node: its HTTP cap is 560 (see
/// `FileBudget::for_limit`), so the flood below is past it.
const FILE_LIMIT: u64 = 1024;
const FLOOD: usize = 1300;

#[test]
fn an_idle_connection_flood_leaves_tools_members_and_storage_working() {
    let epmd = Epmd::start();
    let data = TempDir::new().expect("temp dir");
    let n1 = NodeBuilder::todo()
        .clustered("n1", &epmd, COOKIE)
        .metrics()
        .file_limit(FILE_LIMIT)
        .data_dir(data.path())
        .start();
    let flood = Flood::start(n1.port, &[Ipv4Addr::LOCALHOST], FLOOD, b"");
    eventually(
        Duration::from_secs(60),
        "the HTTP listener reaches its cap and refuses",
        || n1.metric("host_http_connections_refused_total") > 100,
    );
    assert_eq!(n1.metric("host_http_connections"), 560, "the cap");

    // A connection past the cap is told, in words, that nothing was done.
    eventually(Duration::from_secs(30), "a 503 past the cap", || {
        let answer = String::from_utf8_lossy(&send_raw(
            n1.port,
            b"POST /add_entry?list=x&date=2023-01-01&title=y HTTP/1.1\r\nhost: x\r\n\r\n",
        ))
        .into_owned();
        answer.starts_with("HTTP/1.1 503")
            && answer.contains("not applied: this port is at its cap of 560 open connections")
    });

    // Tools and storage, during the flood.
    for i in 0..20 {
        let add =
            format!(r#"todo.add-entry("flooded", {{date: "2023-01-01", title: "during {i}"}})"#);
        tool_ok(&epmd, &["rpc", &n1.name, &add]);
    }
    // A member joins during the flood.
    let n2 = todo_node(&epmd, "n2");
    tool_ok(&epmd, &["connect", &n2.name, &n1.name]);
    wait_for_members(&epmd, &n1, &[&n1, &n2]);
    assert!(
        flood.held() > 500,
        "the flood is still on: {}",
        flood.held()
    );

    // After the flood, HTTP serves again.
    drop(flood);
    eventually(Duration::from_secs(30), "HTTP after the flood", || {
        n1.post("/add_entry?list=flooded&date=2023-01-02&title=after", "")
            .status
            == 200
    });

    // A graceful stop during a flood switches and flushes the memtables:
    // storage needs new files then, and gets them.
    let flood = Flood::start(n1.port, &[Ipv4Addr::LOCALHOST], FLOOD, b"");
    let refused = n1.metric("host_http_connections_refused_total");
    eventually(Duration::from_secs(60), "the second flood", || {
        n1.metric("host_http_connections_refused_total") > refused + 100
    });
    let status = n1.stop();
    assert!(
        status.success(),
        "n1 stopped cleanly under the flood: {status:?}"
    );
    drop(flood);
    let titles: Vec<String> = stored_entries(data.path(), "flooded")
        .into_iter()
        .map(|entry| entry.title)
        .collect();
    let mut expected: Vec<String> = (0..20).map(|i| format!("during {i}")).collect();
    expected.push("after".to_string());
    assert_eq!(titles, expected);
}
