//! Bad input gets a clear answer and the node stays up.

use crate::support::{NodeBuilder, parse_response, run_host, send_raw, wasm};

#[test]
fn oversized_bodies_get_413() {
    let node = NodeBuilder::todo().arg("--max-body").arg("1KiB").start();
    let big = vec![b'x'; 4096];
    let declared = node.request("POST", "/lists/a/entries", &[], &big);
    assert_eq!(declared.status, 413);

    // Chunked, with no length declared up front.
    let mut raw = b"POST /lists/a/entries HTTP/1.1\r\nhost: x\r\nconnection: close\r\ntransfer-encoding: chunked\r\n\r\n".to_vec();
    for _ in 0..4 {
        raw.extend_from_slice(b"400\r\n");
        raw.extend_from_slice(&[b'y'; 1024]);
        raw.extend_from_slice(b"\r\n");
    }
    raw.extend_from_slice(b"0\r\n\r\n");
    assert_eq!(parse_response(&send_raw(node.port, &raw)).status, 413);

    // A client that speaks JSON gets the host's own errors in JSON too.
    let json = node.request(
        "POST",
        "/lists/a/entries",
        &[("content-type", "application/json")],
        &big,
    );
    assert_eq!(json.status, 413);
    assert_eq!(json.header("content-type"), Some("application/json"));
    assert!(
        json.json()["error"]
            .as_str()
            .is_some_and(|e| e.contains("larger than 1024 bytes")),
        "{}",
        json.text()
    );
    assert_eq!(
        declared.header("content-type"),
        Some("text/plain; charset=utf-8")
    );

    // A body under the limit is fine.
    let ok = node.post(
        "/lists/a/entries",
        r#"{"date":"2024-05-01","title":"small"}"#,
    );
    assert_eq!(ok.status, 201);
}

#[test]
fn malformed_http_is_rejected_and_the_node_stays_up() {
    let node = NodeBuilder::todo().start();
    let garbage = send_raw(node.port, b"THIS IS NOT HTTP\r\n\r\n");
    assert!(garbage.is_empty() || parse_response(&garbage).status == 400);
    // A client that disconnects mid-request.
    drop(std::net::TcpStream::connect(("127.0.0.1", node.port)).map(|mut s| {
        use std::io::Write;
        let _ = s.write_all(b"POST /add_entry?list=a&date=2024-05-01&title=x HTTP/1.1\r\ncontent-length: 100\r\n\r\npartial");
    }));
    // HTTP/1.0 with no Host header.
    let no_host = parse_response(&send_raw(
        node.port,
        b"GET /entries?list=a&date=2024-05-01 HTTP/1.0\r\n\r\n",
    ));
    assert_eq!(no_host.status, 400);
    assert_eq!(node.get("/entries?list=a&date=2024-05-01").status, 200);
}

/// Runs `host` with `args`, which must fail, saying `expected` on stderr.
fn fails_saying(args: &[&str], expected: &str) {
    let out = run_host(args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "`host {}` succeeded", args.join(" "));
    assert!(
        stderr.contains(expected),
        "expected {expected:?} in:\n{stderr}"
    );
}

/// Starts the Todo guest on 127.0.0.1 with `data` and `options`; it must
/// fail, saying `expected`.
fn todo_fails_saying(data: &std::path::Path, options: &[&str], expected: &str) {
    let todo = wasm("guest_todo").display().to_string();
    let data = data.display().to_string();
    let mut args = vec![
        "run",
        &todo,
        "--http-host",
        "127.0.0.1",
        "--data-dir",
        &data,
    ];
    args.extend_from_slice(options);
    fails_saying(&args, expected);
}

#[test]
fn a_missing_component_file_is_a_clear_error() {
    fails_saying(
        &[
            "run",
            "/nonexistent/guest.wasm",
            "--http-port",
            "0",
            "--http-host",
            "127.0.0.1",
        ],
        "cannot read component /nonexistent/guest.wasm",
    );
}

#[test]
fn files_that_are_not_components_are_clear_errors() {
    let dir = tempfile::tempdir().expect("temp dir");
    let text = dir.path().join("notes.wasm");
    std::fs::write(&text, "hello").expect("write");
    // A valid core module (the smallest one), which is not a component.
    let module = dir.path().join("core.wasm");
    std::fs::write(&module, b"\0asm\x01\0\0\0").expect("write");
    let data = dir.path().join("data");
    for (file, expected) in [
        (&text, "is not a WebAssembly file"),
        (&module, "is not a valid component"),
    ] {
        fails_saying(
            &[
                "run",
                &file.display().to_string(),
                "--http-port",
                "0",
                "--http-host",
                "127.0.0.1",
                "--data-dir",
                &data.display().to_string(),
            ],
            expected,
        );
    }
}

#[test]
fn a_port_in_use_is_a_clear_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").port().to_string();
    let dir = tempfile::tempdir().expect("temp dir");
    todo_fails_saying(dir.path(), &["--http-port", &port], "already in use");
}

#[test]
fn bad_options_are_explained() {
    fails_saying(
        &["run", "x.wasm", "--idle-timeout", "soon"],
        "is not a duration",
    );
    fails_saying(&["run"], "<COMPONENT>");
}

/// Starts a node told its port only through the environment variables
/// `names`, each set to a different free port, and returns its ready line and
/// the port given to the first. A free port is found by binding and letting
/// go; should another test take it meanwhile, the node fails to start and
/// new ports are tried.
fn port_from_env(names: &[&str]) -> (String, u16) {
    for _ in 0..5 {
        let ports: Vec<u16> = names
            .iter()
            .map(|_| {
                let free = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
                free.local_addr().expect("addr").port()
            })
            .collect();
        let dir = tempfile::tempdir().expect("temp dir");
        let mut command = std::process::Command::new(crate::support::host_binary());
        command
            .args([
                "run",
                &wasm("guest_todo").display().to_string(),
                "--http-host",
                "127.0.0.1",
            ])
            .arg("--data-dir")
            .arg(dir.path())
            .env_remove("TODO_PORT")
            .env_remove("TODO_HTTP_PORT")
            .env("RELEASE_DISTRIBUTION", "none")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null());
        for (name, port) in names.iter().zip(&ports) {
            command.env(name, port.to_string());
        }
        let mut child = command.spawn().expect("start");
        let mut line = String::new();
        let stdout = child.stdout.take().expect("stdout");
        let _ = std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line);
        let _ = child.kill();
        let _ = child.wait();
        if !line.is_empty() {
            return (line, ports[0]);
        }
    }
    panic!("no node started with its port from {names:?}");
}

#[test]
fn the_port_comes_from_todo_port_then_todo_http_port() {
    let (line, port) = port_from_env(&["TODO_PORT"]);
    assert!(line.contains(&format!("127.0.0.1:{port}")), "{line}");
    let (line, port) = port_from_env(&["TODO_HTTP_PORT"]);
    assert!(line.contains(&format!("127.0.0.1:{port}")), "{line}");
    let (line, port) = port_from_env(&["TODO_PORT", "TODO_HTTP_PORT"]);
    assert!(
        line.contains(&format!("127.0.0.1:{port}")),
        "TODO_PORT wins: {line}"
    );
}

#[test]
fn a_call_grant_naming_an_unknown_component_is_a_clear_error() {
    let dir = tempfile::tempdir().expect("temp dir");
    todo_fails_saying(
        dir.path(),
        &["--http-port", "0", "--allow-call", "guest_todo=nowhere"],
        "--allow-call guest_todo=nowhere: no component named `nowhere`",
    );
    fails_saying(
        &["run", "x.wasm", "--allow-call", "no-equals-sign"],
        "is not FROM=TO",
    );
}

#[test]
fn a_data_dir_in_use_by_another_node_is_a_clear_error() {
    let data = tempfile::tempdir().expect("temp dir");
    let _running = NodeBuilder::todo().data_dir(data.path()).start();
    todo_fails_saying(
        data.path(),
        &["--http-port", "0"],
        "in use by another running node",
    );
}
