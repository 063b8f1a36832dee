//! Graceful shutdown: on SIGTERM a node stops accepting connections at once,
//! yet lets the requests already in flight finish before it exits 0.

use std::net::TcpStream;
use std::time::Duration;

use crate::support::{self, NodeBuilder, eventually};

#[test]
fn in_flight_requests_finish_after_sigterm_while_new_connections_are_refused() {
    let node = NodeBuilder::todo_and_misbehave().start();
    let port = node.port;
    // `nap` keeps its process (and so this request) busy for 3 s.
    let in_flight = std::thread::spawn(move || {
        support::try_request(port, "GET", "/misbehave/nap/slow", &[], b"")
    });
    eventually(Duration::from_secs(10), "the nap to be in progress", || {
        node.metric("host_processes") == 1
    });

    support::signal(node.pid(), "TERM");
    eventually(
        Duration::from_secs(1),
        "new connections to be refused",
        || TcpStream::connect(("127.0.0.1", port)).is_err(),
    );
    assert!(
        !in_flight.is_finished(),
        "the nap ended before the listener closed: the test proves nothing"
    );

    let answer = in_flight
        .join()
        .expect("client thread")
        .expect("the in-flight request got a whole response");
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(answer.text(), "slow: call #1");
    let status = node.stop_after_signal();
    assert_eq!(status.code(), Some(0), "graceful stop exits 0");
}
