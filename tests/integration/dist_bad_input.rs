//! What arrives on the distribution port from strangers: garbage, a
//! handshake cut short, an absurd frame length, a connection that drips one
//! byte a second. Each is dropped; the node keeps serving HTTP, tools and
//! peers.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::support::cluster::{connect, nodes, todo_node, tool_ok};
use crate::support::{Epmd, Node};

fn dist(node: &Node) -> TcpStream {
    let port = node.dist_port.expect("distribution on");
    let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    stream
}

/// Sends `bytes` and waits for the node to close the connection; returns
/// what it sent back.
fn send_and_wait_for_close(node: &Node, bytes: &[u8]) -> Vec<u8> {
    let mut stream = dist(node);
    let _ = stream.write_all(bytes);
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    answer
}

fn still_serving(epmd: &Epmd, node: &Node) {
    assert_eq!(node.get("/entries?list=x&date=2024-01-01").status, 200);
    assert_eq!(nodes(epmd, node).len(), 1);
}

#[test]
fn garbage_truncated_handshakes_and_huge_frames_are_dropped() {
    let epmd = Epmd::start();
    let node = todo_node(&epmd, "target");
    // Random bytes.
    let mut noise = vec![0u8; 4096];
    let mut state = 0x2545_f491_4f6c_dd1du64;
    for byte in noise.iter_mut() {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        *byte = state as u8;
    }
    assert!(send_and_wait_for_close(&node, &noise).is_empty());
    // A frame length of 4 GiB.
    assert!(send_and_wait_for_close(&node, &[0xff, 0xff, 0xff, 0xff, 1, 2, 3]).is_empty());
    // A valid length, then the peer goes away mid-frame.
    let mut stream = dist(&node);
    stream.write_all(&[0, 0, 0, 100, 1, 2, 3]).expect("write");
    drop(stream);
    // A frame that is not a handshake message.
    assert!(send_and_wait_for_close(&node, &[0, 0, 0, 3, 9, 9, 9]).is_empty());
    still_serving(&epmd, &node);
    let logs = node.logs();
    assert!(
        logs.contains("dropped a connection from 127.0.0.1"),
        "{logs}"
    );
}

#[test]
fn a_connection_that_never_finishes_its_handshake_is_closed() {
    let epmd = Epmd::start();
    let node = todo_node(&epmd, "target");
    let peer = todo_node(&epmd, "peer");
    let mut slow = dist(&node);
    let opened = Instant::now();
    // One byte a second: a length prefix that never completes a frame.
    let dripping = std::thread::spawn(move || {
        for byte in [0u8, 0, 0, 200, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10] {
            if slow.write_all(&[byte]).is_err() {
                break;
            }
            std::thread::sleep(Duration::from_secs(1));
        }
        let mut rest = Vec::new();
        let _ = slow.read_to_end(&mut rest);
        opened.elapsed()
    });
    // Meanwhile the node serves HTTP, tools, and a real peer joining.
    still_serving(&epmd, &node);
    connect(&epmd, &peer, &node);
    assert!(tool_ok(&epmd, &["nodes", &node.name]).contains("peer@127.0.0.1"));
    let closed_after = dripping.join().expect("drip");
    assert!(
        closed_after < Duration::from_secs(12),
        "the slow connection stayed open {closed_after:?}"
    );
    assert!(
        node.logs()
            .contains("the peer sent no complete handshake message within 2s of connecting"),
        "{}",
        node.logs()
    );
}
