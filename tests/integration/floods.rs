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

/// Node `n1`, registered with `epmd`, its metrics on.
fn watched_member(epmd: &Epmd) -> crate::support::Node {
    NodeBuilder::todo()
        .clustered("n1", epmd, COOKIE)
        .metrics()
        .start()
}

/// A runtime for the test's own async clients.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// Loopback addresses the attackers below come from (Linux routes all of
/// 127.0.0.0/8 to the loopback interface).
fn strangers() -> Vec<Ipv4Addr> {
    (2..=9).map(|last| Ipv4Addr::new(127, 0, 0, last)).collect()
}

#[test]
fn a_flood_of_half_open_handshakes_does_not_stop_tools_or_a_join() {
    let epmd = Epmd::start();
    let n1 = watched_member(&epmd);
    let dist_port = n1.dist_port.expect("distribution on");
    // 160 connections from 8 addresses that send one byte of a frame and
    // stall: each holds a handshake slot until the node gives up on it.
    let flood = Flood::start(dist_port, &strangers(), 160, &[0]);
    eventually(Duration::from_secs(30), "the flood fills the slots", || {
        n1.metric("host_handshakes_refused_busy_total") > 0
    });
    for _ in 0..5 {
        let rows = tool_ok(&epmd, &["nodes", &n1.name]);
        assert!(rows.contains("n1@127.0.0.1"), "{rows}");
    }
    // A node started with --join during the flood joins.
    let n2 = NodeBuilder::todo()
        .clustered("n2", &epmd, COOKIE)
        .arg("--join")
        .arg(&n1.name)
        .start();
    wait_for_members(&epmd, &n1, &[&n1, &n2]);
    assert!(flood.held() > 0, "the flood is still on");
    assert!(n1.metric("host_handshakes_failed_total") > 10);
    // A line per address and kind per interval, not one per connection.
    let logs = n1.logs();
    let lines = logs
        .lines()
        .filter(|line| line.contains("dropped a connection from 127.0.0."))
        .count();
    assert!(lines <= 8 * 3 * 2, "{lines} lines:\n{logs}");
}

/// A handshake `Hello` as a client that does not play by the rules would
/// send it: any name at all. The encoding is the protocol's (postcard):
/// the variant, the magic, two versions (2), the name, hidden, a nonce,
/// and an empty key exchange message (never read: the name is refused
/// first).
fn raw_hello(name: &str) -> Vec<u8> {
    let mut message = vec![0u8];
    message.extend_from_slice(b"OTPW");
    message.extend_from_slice(&[2, 2]);
    message.push(u8::try_from(name.len()).expect("a short name"));
    message.extend_from_slice(name.as_bytes());
    message.push(1);
    message.extend_from_slice(&[7u8; 32]);
    message.push(0);
    let mut frame = u32::try_from(message.len())
        .expect("a small frame")
        .to_be_bytes()
        .to_vec();
    frame.extend_from_slice(&message);
    frame
}

/// One handshake from `source` with a cookie that is not the node's:
/// returns the node's answer and how long it took to come.
fn guess_once(
    runtime: &tokio::runtime::Runtime,
    source: Ipv4Addr,
    port: u16,
) -> (String, Duration) {
    use host::distribution::handshake::{self, ClientHandshake, Side};
    use host::distribution::{Cookie, NodeName, frame::FrameReader};
    runtime.block_on(async {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket.bind((source, 0).into()).expect("bind");
        let stream = socket
            .connect((Ipv4Addr::LOCALHOST, port).into())
            .await
            .expect("connect");
        let started = std::time::Instant::now();
        let (read, mut write) = tokio::io::split(stream);
        let mut reader = FrameReader::new(read, 1 << 16);
        let me = NodeName::parse("guesser@127.0.0.20").expect("name");
        let cookie = Cookie::from_text("not-the-cookie").expect("cookie");
        let (client, hello) = ClientHandshake::start(&me, &cookie, true, None).expect("start");
        let mut side = Side::Client(client);
        let pacing = handshake::Pacing::plain(Duration::from_secs(30));
        let outcome = handshake::drive(&mut side, hello, &mut reader, &mut write, pacing).await;
        let answer = match outcome {
            Ok(_) => "accepted".to_string(),
            Err(error) => error.to_string(),
        };
        (answer, started.elapsed())
    })
}

#[test]
fn wrong_cookies_from_one_address_are_answered_ever_later_and_forged_names_stay_on_their_line() {
    let epmd = Epmd::start();
    let n1 = watched_member(&epmd);
    let port = n1.dist_port.expect("distribution on");
    let runtime = runtime();
    let guesser = Ipv4Addr::new(127, 0, 0, 20);
    let mut answers = Vec::new();
    for _ in 0..8 {
        answers.push(guess_once(&runtime, guesser, port));
    }
    for (answer, _) in &answers {
        assert_eq!(answer, "refused: the cookies differ");
    }
    // Past 3 free failures, each answer waits twice as long as the one
    // before: 0.25 s, 0.5 s, 1 s, 2 s, then 4 s for the 8th. (A lower
    // bound: a busy machine only makes it later.)
    assert!(answers[7].1 >= Duration::from_secs(4), "{answers:?}");
    assert!(n1.metric("host_handshakes_delayed_total") >= 5);
    // The operator's tools, from another address, are not slowed.
    assert!(tool_ok(&epmd, &["nodes", &n1.name]).contains("n1@127.0.0.1"));

    // A claimed name with a newline in it cannot plant a log line.
    let forged = "x\n2026-01-01T00:00:00Z  INFO node_evil joined the cluster";
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    std::io::Write::write_all(&mut stream, &raw_hello(forged)).expect("send");
    let mut answer = Vec::new();
    let _ = std::io::Read::read_to_end(&mut stream, &mut answer);
    eventually(Duration::from_secs(10), "the refusal is logged", || {
        n1.logs().contains("node_evil")
    });
    let logs = n1.logs();
    assert!(
        !logs.lines().any(|line| line.starts_with("2026-01-01")),
        "a forged line:\n{logs}"
    );
    assert!(logs.contains(r"x\n2026-01-01"), "{logs}");
}

/// The resident memory of process `pid`, in MiB.
fn resident_mib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse::<u64>().ok())
        .expect("VmRSS")
        / 1024
}

/// Clients that ask for `path` and never read the answer, each with a
/// small receive buffer so that the node's writes wait at once.
fn slow_readers(
    runtime: &tokio::runtime::Runtime,
    port: u16,
    path: &str,
    count: usize,
) -> Vec<tokio::net::TcpStream> {
    use tokio::io::AsyncWriteExt;
    runtime.block_on(async {
        let mut streams = Vec::new();
        for _ in 0..count {
            let socket = tokio::net::TcpSocket::new_v4().expect("socket");
            socket.set_recv_buffer_size(4096).expect("a small buffer");
            let mut stream = socket
                .connect((Ipv4Addr::LOCALHOST, port).into())
                .await
                .expect("connect");
            let request = format!("GET {path} HTTP/1.1\r\nhost: x\r\n\r\n");
            stream.write_all(request.as_bytes()).await.expect("ask");
            streams.push(stream);
        }
        streams
    })
}

#[test]
fn clients_that_do_not_read_large_answers_are_cut_and_hold_bounded_memory() {
    let node = NodeBuilder::todo()
        .metrics()
        .arg("--http-handler-memory")
        .arg("256MiB")
        .start();
    // A 4 MiB list: 1,024 entries with 4 KiB titles.
    let title = "t".repeat(4096);
    for _ in 0..1024 {
        let path = format!("/add_entry?list=big&date=2023-01-01&title={title}");
        assert_eq!(node.post(&path, "").status, 200);
    }
    let path = "/entries?list=big&date=2023-01-01";
    assert!(node.get(path).body.len() > 4 * 1024 * 1024);
    let before = resident_mib(node.pid());
    let runtime = runtime();
    let clients = 150;
    let streams = slow_readers(&runtime, node.port, path, clients);
    let mut highest = before;
    eventually(Duration::from_secs(60), "the slow readers are cut", || {
        highest = highest.max(resident_mib(node.pid()));
        node.metric("host_http_slow_readers_cut_total") > 0
            && node.metric("host_http_stalled_connections") == 0
    });
    let after = resident_mib(node.pid());
    let refused = node.metric("host_http_handler_memory_refused_total");
    println!(
        "resident: {before} MiB before, at most {highest} MiB with {clients} slow readers, \
         {after} MiB after; {refused} handlers refused memory"
    );
    // Without the bounds, 150 readers of a 4 MiB answer took the node
    // past 1.8 GiB and kept it there. Now: the handlers' 256 MiB, what
    // the stalled connections hold, and back down once they are cut.
    assert!(
        highest < before + 600,
        "{before} MiB before, {highest} MiB with {clients} slow readers"
    );
    assert!(refused > 0, "the handlers' budget was reached");
    assert!(
        after < before + 150,
        "{before} MiB before, {after} MiB after"
    );
    drop(streams);
    assert_eq!(node.get(path).status, 200);
}
