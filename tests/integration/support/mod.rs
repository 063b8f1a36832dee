//! A node under test, and a small HTTP/1.1 client that can also send what a
//! well-behaved client would not.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// How long a node may take to print its ready line (the first start
/// compiles the components).
const START_TIMEOUT: Duration = Duration::from_secs(120);

/// The path of a guest built from this repository.
pub fn wasm(name: &str) -> PathBuf {
    let dir = match std::env::var_os("GUEST_WASM_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => {
            // target/<profile>/host -> target/wasm32-wasip2/release/
            let host = Path::new(env!("CARGO_BIN_EXE_host"));
            let target = host
                .parent()
                .and_then(Path::parent)
                .expect("target directory");
            target.join("wasm32-wasip2").join("release")
        }
    };
    let path = dir.join(format!("{name}.wasm"));
    assert!(
        path.exists(),
        "{} is missing: build the guests first with scripts/build.sh",
        path.display()
    );
    path
}

pub fn host_binary() -> &'static str {
    env!("CARGO_BIN_EXE_host")
}

/// Options for a node under test.
pub struct NodeBuilder {
    components: Vec<String>,
    args: Vec<String>,
    data_dir: Option<PathBuf>,
    metrics: bool,
    log_filter: String,
}

impl NodeBuilder {
    /// A node running the Todo guest.
    pub fn todo() -> Self {
        Self::with_components(&[wasm("guest_todo").display().to_string()])
    }

    /// The Todo guest at `/`, the misbehaving example at `/misbehave/`, with
    /// metrics on.
    pub fn todo_and_misbehave() -> Self {
        Self::with_components(&[
            wasm("guest_todo").display().to_string(),
            format!("misbehave={}", wasm("misbehave").display()),
        ])
        .metrics()
    }

    pub fn with_components(components: &[String]) -> Self {
        Self {
            components: components.to_vec(),
            args: Vec::new(),
            data_dir: None,
            metrics: false,
            log_filter: "info".to_string(),
        }
    }

    pub fn arg(mut self, arg: &str) -> Self {
        self.args.push(arg.to_string());
        self
    }

    pub fn data_dir(mut self, dir: &Path) -> Self {
        self.data_dir = Some(dir.to_path_buf());
        self
    }

    /// `RUST_LOG` for the node.
    pub fn log_filter(mut self, filter: &str) -> Self {
        self.log_filter = filter.to_string();
        self
    }

    pub fn metrics(mut self) -> Self {
        self.metrics = true;
        self
    }

    pub fn start(self) -> Node {
        let temp = TempDir::new().expect("temp dir");
        let data_dir = self
            .data_dir
            .clone()
            .unwrap_or_else(|| temp.path().join("data"));
        let stderr_path = temp.path().join("stderr.log");
        let stderr = std::fs::File::create(&stderr_path).expect("stderr log");
        let mut command = Command::new(host_binary());
        command
            .arg("run")
            .args(&self.components)
            .args([
                "--http-host",
                "127.0.0.1",
                "--http-port",
                "0",
                "--node",
                "test",
            ])
            .arg("--data-dir")
            .arg(&data_dir)
            .args(&self.args)
            .env_remove("TODO_PORT")
            .env_remove("TODO_HTTP_PORT")
            .env_remove("TODO_SERVER_EXPIRY")
            .env("RUST_LOG", &self.log_filter)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr);
        if self.metrics {
            command.args(["--metrics-port", "0"]);
        }
        let mut child = command.spawn().expect("start host");
        let stdout = child.stdout.take().expect("stdout");
        let (lines, ready) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if lines.send(line).is_err() {
                    break;
                }
            }
        });
        let line = match ready.recv_timeout(START_TIMEOUT) {
            Ok(line) => line,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "the node printed no ready line; its stderr:\n{}",
                    std::fs::read_to_string(&stderr_path).unwrap_or_default()
                );
            }
        };
        let ports = ports_in(&line);
        Node {
            child,
            port: ports[0],
            metrics_port: ports.get(1).copied(),
            stderr_path,
            _temp: temp,
        }
    }
}

/// The ports named in the ready line, in order.
fn ports_in(line: &str) -> Vec<u16> {
    line.split("127.0.0.1:")
        .skip(1)
        .filter_map(|rest| {
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            digits.parse().ok()
        })
        .collect()
}

/// A running `host run`.
pub struct Node {
    child: Child,
    pub port: u16,
    pub metrics_port: Option<u16>,
    stderr_path: PathBuf,
    _temp: TempDir,
}

impl Node {
    pub fn get(&self, path: &str) -> HttpResponse {
        self.request("GET", path, &[], b"")
    }

    pub fn post(&self, path: &str, body: &str) -> HttpResponse {
        self.request(
            "POST",
            path,
            &[("content-type", "application/json")],
            body.as_bytes(),
        )
    }

    pub fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> HttpResponse {
        request(self.port, method, path, headers, body)
    }

    /// The value of metric `name`.
    pub fn metric(&self, name: &str) -> u64 {
        let port = self.metrics_port.expect("node started with .metrics()");
        let page = request(port, "GET", "/metrics", &[], b"").text();
        page.lines()
            .find(|line| line.starts_with(&format!("{name}{{")))
            .and_then(|line| line.rsplit(' ').next())
            .and_then(|value| value.parse().ok())
            .unwrap_or_else(|| panic!("no metric {name} in:\n{page}"))
    }

    /// What the node wrote to stderr so far.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM, then waits for the exit.
    pub fn stop(mut self) -> ExitStatus {
        signal(self.child.id(), "TERM");
        self.wait_exit()
    }

    /// Waits for the exit of a node already sent a signal.
    pub fn stop_after_signal(mut self) -> ExitStatus {
        self.wait_exit()
    }

    /// SIGKILL: no chance to flush anything.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn wait_exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "the node did not exit; logs:\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn signal(pid: u32, name: &str) {
    let status = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status()
        .expect("run kill");
    assert!(status.success());
}

/// Runs `host` with `args` to completion, for start-up failures.
pub fn run_host(args: &[&str]) -> std::process::Output {
    Command::new(host_binary())
        .args(args)
        .env_remove("TODO_PORT")
        .env_remove("TODO_HTTP_PORT")
        .stdin(Stdio::null())
        .output()
        .expect("run host")
}

#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
}

/// Sends one request on a new connection and reads the whole response.
pub fn request(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> HttpResponse {
    parse_response(&send_raw(
        port,
        &request_bytes(port, method, path, headers, body),
    ))
}

/// Like [`request`], for a server that may go away: `None` when the
/// connection is refused or closed before a whole response head arrived.
/// A response that arrived whole counts even if the connection broke after.
pub fn try_request(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Option<HttpResponse> {
    let raw = try_send_raw(port, &request_bytes(port, method, path, headers, body))?;
    try_parse_response(&raw)
}

fn request_bytes(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Vec<u8> {
    let mut head =
        format!("{method} {path} HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\nconnection: close\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if !body.is_empty() || method == "POST" || method == "PUT" {
        head.push_str(&format!("content-length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    let mut raw = head.into_bytes();
    raw.extend_from_slice(body);
    raw
}

/// Writes `bytes` as they are and reads until the server closes.
pub fn send_raw(port: u16, bytes: &[u8]) -> Vec<u8> {
    try_send_raw(port, bytes).unwrap_or_else(|| panic!("cannot connect to port {port}"))
}

/// Like [`send_raw`]; `None` when the connection is refused. Whatever
/// arrived before the server closed (or went away) is returned.
fn try_send_raw(port: u16, bytes: &[u8]) -> Option<Vec<u8>> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .ok()?;
    // The server may answer (413) and close before it reads everything.
    let _ = stream.write_all(bytes);
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    Some(response)
}

pub fn parse_response(raw: &[u8]) -> HttpResponse {
    try_parse_response(raw)
        .unwrap_or_else(|| panic!("no response in {:?}", String::from_utf8_lossy(raw)))
}

fn try_parse_response(raw: &[u8]) -> Option<HttpResponse> {
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let rest = &raw[split + 4..];
    let chunked = headers
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v.contains("chunked"));
    let body = if chunked {
        dechunk(rest)
    } else {
        rest.to_vec()
    };
    Some(HttpResponse {
        status,
        headers,
        body,
    })
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    while let Some(end) = data.windows(2).position(|w| w == b"\r\n") {
        let size_text = String::from_utf8_lossy(&data[..end]).trim().to_string();
        let size = usize::from_str_radix(&size_text, 16).unwrap_or(0);
        let start = end + 2;
        if size == 0 || data.len() < start + size + 2 {
            break;
        }
        body.extend_from_slice(&data[start..start + size]);
        data = &data[start + size + 2..];
    }
    body
}

/// Waits until `condition` holds, polling; fails with `what` after `limit`.
pub fn eventually(limit: Duration, what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}
