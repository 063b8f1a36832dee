//! The port mapper: our nodes register with `host epmd` and with Erlang's
//! own `epmd`, and a node killed with -9 disappears from both.

use std::process::Command;
use std::time::Duration;

use crate::support::cluster::{COOKIE, todo_node};
use crate::support::{Epmd, NodeBuilder, eventually, free_port, names_listed, run_host_with};

#[test]
fn nodes_register_with_host_epmd_and_vanish_when_killed() {
    let epmd = Epmd::start();
    let a = todo_node(&epmd, "node_a");
    let b = todo_node(&epmd, "node_b");
    let mut names = epmd.names();
    names.sort();
    assert_eq!(names, ["node_a", "node_b"]);
    a.kill();
    eventually(Duration::from_secs(5), "node_a is gone", || {
        epmd.names() == ["node_b"]
    });
    // A second node of the same name on this host is refused.
    let port = epmd.port.to_string();
    let out = run_host_with(
        &[
            "run",
            &crate::support::wasm("guest_todo").display().to_string(),
            "--http-port",
            "0",
            "--http-host",
            "127.0.0.1",
            "--node",
            "node_b@127.0.0.1",
            "--data-dir",
            &tempfile::tempdir()
                .expect("temp")
                .path()
                .display()
                .to_string(),
        ],
        &[("ERL_EPMD_PORT", &port), ("RELEASE_COOKIE", COOKIE)],
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("already registered"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    drop(b);
}

/// Erlang's `epmd` on a port of the test's own, stopped at the end.
struct ErlangEpmd {
    port: u16,
}

impl ErlangEpmd {
    fn start() -> Self {
        let port = free_port();
        let status = Command::new("epmd")
            .args(["-daemon", "-port", &port.to_string()])
            .status()
            .expect("Erlang's epmd is missing: scripts/setup.sh installs erlang-base");
        assert!(status.success());
        let epmd = Self { port };
        eventually(Duration::from_secs(10), "epmd is up", || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        epmd
    }

    /// `epmd -names`: the names Erlang's own tool lists.
    fn names(&self) -> Vec<String> {
        let out = Command::new("epmd")
            .args(["-port", &self.port.to_string(), "-names"])
            .output()
            .expect("epmd -names");
        names_listed(&out.stdout)
    }
}

impl Drop for ErlangEpmd {
    fn drop(&mut self) {
        let _ = Command::new("epmd")
            .args(["-port", &self.port.to_string(), "-kill"])
            .output();
    }
}

#[test]
fn nodes_register_with_erlangs_epmd_and_vanish_when_killed() {
    let erlang = ErlangEpmd::start();
    let ours = Epmd::external(erlang.port);
    let a = NodeBuilder::todo()
        .clustered("node_a", &ours, COOKIE)
        .start();
    let b = NodeBuilder::todo()
        .clustered("node_b", &ours, COOKIE)
        .start();
    let mut names = erlang.names();
    names.sort();
    assert_eq!(names, ["node_a", "node_b"]);
    // Our tools find nodes through it too.
    let members = crate::support::cluster::tool_ok(&ours, &["nodes", &a.name]);
    assert!(members.contains("node_a@127.0.0.1"), "{members}");
    b.kill();
    eventually(Duration::from_secs(5), "node_b is gone", || {
        erlang.names() == ["node_a"]
    });
    drop(a);
    eventually(Duration::from_secs(5), "no names left", || {
        erlang.names().is_empty()
    });
}

/// The pid of the `host epmd` serving `port`, found in /proc.
fn daemon_pid(port: u16) -> Option<u32> {
    let port = port.to_string();
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .find_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
            let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
            let wanted: [&[u8]; 3] = [b"epmd", b"--port", port.as_bytes()];
            args.windows(3).any(|w| w == wanted).then_some(pid)
        })
}

#[test]
fn the_first_node_on_a_host_starts_the_port_mapper_which_outlives_it() {
    let port = free_port();
    let mapper = Epmd::external(port);
    let a = NodeBuilder::todo()
        .clustered("node_a", &mapper, COOKIE)
        .start();
    assert!(a.logs().contains("started a port mapper"), "{}", a.logs());
    assert_eq!(mapper.names(), ["node_a"]);
    let pid = daemon_pid(port).expect("the daemon runs");
    let environ = std::fs::read(format!("/proc/{pid}/environ")).expect("environ");
    assert!(
        !environ.windows(14).any(|w| w == b"RELEASE_COOKIE"),
        "the port mapper was given the cookie"
    );
    assert_eq!(a.stop().code(), Some(0));
    // As epmd, it stays when the node goes; nothing is registered.
    assert!(mapper.names().is_empty());
    let port_text = port.to_string();
    let out = crate::support::run_host(&["epmd", "--kill", "--port", &port_text]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    eventually(Duration::from_secs(5), "the daemon is gone", || {
        daemon_pid(port).is_none()
    });
}

#[test]
fn a_flood_of_idle_connections_does_not_stop_lookups_or_registrations() {
    let epmd = Epmd::start();
    let strangers: Vec<std::net::Ipv4Addr> = (2..=9)
        .map(|last| std::net::Ipv4Addr::new(127, 0, 0, last))
        .collect();
    // 320 connections that never send a request: each address may hold
    // 16 of them at once, for 2 s each.
    let flood = crate::support::flood::Flood::start(epmd.port, &strangers, 320, b"");
    eventually(Duration::from_secs(30), "the flood is on", || {
        flood.held() >= 100
    });
    for _ in 0..5 {
        assert!(epmd.names().is_empty());
    }
    let node = todo_node(&epmd, "node_a");
    assert_eq!(epmd.names(), ["node_a"]);
    assert!(flood.held() > 0, "the flood is still on");
    drop(flood);
    drop(node);
}

/// An `ALIVE2_REQ` registering `name` at distribution port 1.
fn alive2_request(name: &str) -> Vec<u8> {
    let mut body = vec![120u8];
    body.extend_from_slice(&1u16.to_be_bytes());
    body.extend_from_slice(&[77, 0]);
    body.extend_from_slice(&6u16.to_be_bytes());
    body.extend_from_slice(&5u16.to_be_bytes());
    body.extend_from_slice(&u16::try_from(name.len()).expect("short").to_be_bytes());
    body.extend_from_slice(name.as_bytes());
    body.extend_from_slice(&0u16.to_be_bytes());
    let mut request = u16::try_from(body.len())
        .expect("short")
        .to_be_bytes()
        .to_vec();
    request.extend_from_slice(&body);
    request
}

/// A process of user `nobody` (65534) that registers `name` with the port
/// mapper on `port` and holds it until killed; returns its pid.
fn squat_as_nobody(port: u16, name: &str) -> libc::pid_t {
    let request = alive2_request(name);
    let addr = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes([127, 0, 0, 1]),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: after fork, the child calls only async-signal-safe functions
    // (setgid, setuid, socket, connect, write, pause, _exit) on memory
    // prepared before the fork.
    unsafe {
        let pid = libc::fork();
        if pid == 0 {
            if libc::setgid(65534) != 0 || libc::setuid(65534) != 0 {
                libc::_exit(2);
            }
            let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
            let size = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
            if libc::connect(fd, (&raw const addr).cast(), size) != 0 {
                libc::_exit(3);
            }
            libc::write(fd, request.as_ptr().cast(), request.len());
            loop {
                libc::pause();
            }
        }
        pid
    }
}

#[test]
fn a_name_squatted_by_another_user_goes_back_to_the_node_that_used_it() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: playing another user needs root (CI runs as root)");
        return;
    }
    let epmd = Epmd::start();
    // node_a runs here once: its user owns the name from now on.
    todo_node(&epmd, "node_a").stop();
    let squatter = squat_as_nobody(epmd.port, "node_a");
    eventually(Duration::from_secs(10), "the squatter holds node_a", || {
        epmd.names() == ["node_a"]
    });
    // The real node starts anyway, and peers find it, not the squatter.
    let node = todo_node(&epmd, "node_a");
    assert_eq!(epmd.names(), ["node_a"]);
    let out = crate::support::cluster::tool(&epmd, COOKIE, &["nodes", &node.name]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // SAFETY: the pid is our own child's.
    unsafe {
        libc::kill(squatter, libc::SIGKILL);
        libc::waitpid(squatter, std::ptr::null_mut(), 0);
    }
}
