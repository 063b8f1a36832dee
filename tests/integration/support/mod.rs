//! A node under test, and a small HTTP/1.1 client that can also send what a
//! well-behaved client would not.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use tempfile::TempDir;

pub mod browser;
pub mod cluster;
pub mod flood;
pub mod release;
pub mod swap;

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
        "{} is missing: build the guests first with scripts/build-guests.sh",
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
    envs: Vec<(String, String)>,
    data_dir: Option<PathBuf>,
    metrics: bool,
    log_filter: String,
    /// `name@127.0.0.1` when distribution is on.
    node_name: Option<String>,
    /// The node's open-file limit, soft and hard, when the test sets one.
    file_limit: Option<u64>,
    /// A fixed HTTP port (the node keeps it across a restart in place).
    http_port: Option<u16>,
    /// The size of its data folder's disk of its own: see
    /// [`NodeBuilder::small_disk`].
    small_disk: Option<u64>,
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
            envs: Vec::new(),
            data_dir: None,
            metrics: false,
            log_filter: "info,openraft=warn".to_string(),
            node_name: None,
            file_limit: None,
            http_port: None,
            small_disk: None,
        }
    }

    /// Distribution on, as node `name@127.0.0.1`, registered with `epmd`,
    /// with `cookie` (given as RELEASE_COOKIE, never on the command line).
    pub fn clustered(mut self, name: &str, epmd: &Epmd, cookie: &str) -> Self {
        self.node_name = Some(format!("{name}@127.0.0.1"));
        self.envs
            .push(("ERL_EPMD_PORT".into(), epmd.port.to_string()));
        self.envs.push(("RELEASE_COOKIE".into(), cookie.into()));
        self
    }

    pub fn arg(mut self, arg: &str) -> Self {
        self.args.push(arg.to_string());
        self
    }

    pub fn data_dir(mut self, dir: &Path) -> Self {
        self.data_dir = Some(dir.to_path_buf());
        self
    }

    pub fn env(mut self, name: &str, value: &str) -> Self {
        self.envs.push((name.to_string(), value.to_string()));
        self
    }

    /// No cookie given: the node reads (or makes) its cookie file.
    pub fn without_cookie(mut self) -> Self {
        self.envs.retain(|(name, _)| name != "RELEASE_COOKIE");
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

    /// Runs the node under an open-file limit of `limit`, soft and hard
    /// (as `ulimit -n LIMIT` would).
    pub fn file_limit(mut self, limit: u64) -> Self {
        self.file_limit = Some(limit);
        self
    }

    pub fn http_port(mut self, port: u16) -> Self {
        self.http_port = Some(port);
        self
    }

    /// The node's data folder on a disk of its own: a tmpfs of `size`
    /// bytes, in a mount namespace of the node's own (the test reaches it
    /// through [`Node::own_path`]). Needs root; see [`small_disks_allowed`].
    pub fn small_disk(mut self, size: u64) -> Self {
        self.small_disk = Some(size);
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
        let http_port = self.http_port.unwrap_or(0).to_string();
        command
            .arg("run")
            .args(&self.components)
            .args(["--http-host", "127.0.0.1", "--http-port", &http_port])
            .arg("--data-dir")
            .arg(&data_dir)
            .env_remove("TODO_PORT")
            .env_remove("TODO_HTTP_PORT")
            .env_remove("TODO_SERVER_EXPIRY")
            .env_remove("RELEASE_COOKIE")
            .env("RUST_LOG", &self.log_filter)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr);
        match &self.node_name {
            Some(name) => command.args(["--node", name]),
            None => command.args(["--node", "test", "--distribution", "none"]),
        };
        command
            .args(&self.args)
            .envs(self.envs.iter().map(|(k, v)| (k, v)));
        if self.metrics {
            command.args(["--metrics-port", "0"]);
        }
        if let Some(limit) = self.file_limit {
            use std::os::unix::process::CommandExt;
            let limit = libc::rlimit {
                rlim_cur: limit,
                rlim_max: limit,
            };
            // SAFETY: between fork and exec, setrlimit is async-signal-safe
            // and touches nothing but the child's own limit.
            unsafe {
                command.pre_exec(move || {
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) == 0 {
                        Ok(())
                    } else {
                        Err(std::io::Error::last_os_error())
                    }
                });
            }
        }
        if let Some(size) = self.small_disk {
            std::fs::create_dir_all(&data_dir).expect("data dir");
            on_small_disk(&mut command, &data_dir, size);
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
        Node {
            child,
            port: port_after(&line, "HTTP listening on http://127.0.0.1:")
                .unwrap_or_else(|| panic!("no HTTP port in {line:?}")),
            metrics_port: port_after(&line, "metrics on http://127.0.0.1:"),
            dist_port: port_after(&line, "distribution on 127.0.0.1:"),
            observer_url: line
                .split("observer on ")
                .nth(1)
                .map(|rest| rest.split_whitespace().next().unwrap_or(rest).to_string()),
            name: self.node_name.unwrap_or_else(|| "test".into()),
            stderr_path,
            data_dir,
            temp: Some(temp),
            stdout: std::sync::Mutex::new(ready),
        }
    }
}

/// Makes `command` run in a mount namespace of its own with `dir` a tmpfs
/// of `size` bytes.
fn on_small_disk(command: &mut Command, dir: &Path, size: u64) {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::process::CommandExt;
    let target = CString::new(dir.as_os_str().as_bytes()).expect("a path");
    let options = CString::new(format!("size={size},mode=0700")).expect("options");
    let check = |result: libc::c_int| {
        if result < 0 {
            Err(std::io::Error::last_os_error())
        } else {
            Ok(())
        }
    };
    // SAFETY: between fork and exec, only system calls on the prepared
    // strings, which live in the closure: unshare and mount are
    // async-signal-safe and touch the child alone.
    unsafe {
        command.pre_exec(move || {
            check(libc::unshare(libc::CLONE_NEWNS))?;
            // Mounts made from here on stay in this namespace.
            check(libc::mount(
                c"none".as_ptr(),
                c"/".as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            ))?;
            check(libc::mount(
                c"tmpfs".as_ptr(),
                target.as_ptr(),
                c"tmpfs".as_ptr(),
                0,
                options.as_ptr().cast(),
            ))
        });
    }
}

/// Whether this test process may give a node a disk of its own (it needs
/// root, to make a mount namespace).
pub fn small_disks_allowed() -> bool {
    let dir = TempDir::new().expect("temp dir");
    let mut command = Command::new("true");
    on_small_disk(&mut command, dir.path(), 1 << 20);
    command.status().is_ok_and(|status| status.success())
}

/// The port right after `marker` in the ready line.
fn port_after(line: &str, marker: &str) -> Option<u16> {
    let rest = &line[line.find(marker)? + marker.len()..];
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// A running `host run`.
pub struct Node {
    child: Child,
    pub port: u16,
    pub metrics_port: Option<u16>,
    /// The distribution listener's port, when distribution is on.
    pub dist_port: Option<u16>,
    /// The observer's address, with its token.
    pub observer_url: Option<String>,
    /// Its node name (`name@127.0.0.1` when clustered).
    pub name: String,
    stderr_path: PathBuf,
    pub data_dir: PathBuf,
    /// The node's temp dir (logs, and its data unless given one).
    temp: Option<TempDir>,
    /// The lines it prints after its ready line (a node restarted in place
    /// prints a new one).
    stdout: std::sync::Mutex<mpsc::Receiver<String>>,
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

    /// The next line the node prints, waiting up to `limit` for it.
    pub fn next_line(&self, limit: Duration) -> Option<String> {
        let lines = self.stdout.lock().unwrap_or_else(|p| p.into_inner());
        lines.recv_timeout(limit).ok()
    }

    /// `path` as the node sees it (in its own mount namespace, when it has
    /// one).
    pub fn own_path(&self, path: &Path) -> PathBuf {
        let relative = path.strip_prefix("/").unwrap_or(path);
        PathBuf::from(format!("/proc/{}/root", self.pid())).join(relative)
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

    /// SIGKILL, keeping the node's data dir for the test to read: it lasts
    /// as long as the returned guard.
    pub fn kill_keeping_data(mut self) -> (PathBuf, Option<TempDir>) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        (self.data_dir.clone(), self.temp.take())
    }

    fn wait_exit(&mut self) -> ExitStatus {
        exit_within(&mut self.child, Duration::from_secs(60))
            .unwrap_or_else(|| panic!("the node did not exit; logs:\n{}", self.logs()))
    }
}

/// Waits up to `limit` for `child` to exit; None if it is still running.
pub fn exit_within(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
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

/// Runs `host` with `args` to completion, for start-up failures; with
/// distribution off unless `args` say otherwise.
pub fn run_host(args: &[&str]) -> std::process::Output {
    run_host_with(args, &[("RELEASE_DISTRIBUTION", "none")])
}

/// Runs `host` with `args` and the environment `envs`, to completion
/// (bounded: a command that hangs fails the test).
pub fn run_host_with(args: &[&str], envs: &[(&str, &str)]) -> std::process::Output {
    let mut child = Command::new(host_binary())
        .args(args)
        .env_remove("TODO_PORT")
        .env_remove("TODO_HTTP_PORT")
        .env_remove("RELEASE_COOKIE")
        .envs(envs.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run host");
    let deadline = Instant::now() + Duration::from_secs(360);
    loop {
        if let Ok(Some(_)) = child.try_wait() {
            return child.wait_with_output().expect("output");
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("`host {}` did not finish", args.join(" "));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A port mapper (`host epmd`) of the test's own, on a free port: the
/// nodes of one test register with it and nothing else does.
pub struct Epmd {
    /// None for a port mapper the test did not start (Erlang's own).
    child: Option<Child>,
    pub port: u16,
}

impl Epmd {
    pub fn start() -> Self {
        for _ in 0..10 {
            let port = free_port();
            let mut child = Command::new(host_binary())
                .args([
                    "epmd",
                    "--address",
                    "127.0.0.1",
                    "--port",
                    &port.to_string(),
                ])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start host epmd");
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break; // the port was taken meanwhile: try another
                }
                if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return Self {
                        child: Some(child),
                        port,
                    };
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("no port mapper started");
    }

    /// A port mapper someone else runs on `port`.
    pub fn external(port: u16) -> Self {
        Self { child: None, port }
    }

    /// `host epmd --names` against it: the registered names.
    pub fn names(&self) -> Vec<String> {
        let port = self.port.to_string();
        let out = run_host(&["epmd", "--names", "--port", &port]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        names_listed(&out.stdout)
    }
}

/// The names in the output of `epmd -names` (or `host epmd --names`):
/// lines `name NAME at port PORT`.
pub fn names_listed(output: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(output)
        .lines()
        .filter_map(|line| line.strip_prefix("name "))
        .filter_map(|rest| rest.split(' ').next())
        .map(str::to_string)
        .collect()
}

impl Drop for Epmd {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port()
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
