//! Releases in tests: one built with `host release` into a temp dir, run
//! with a PATH and HOME that hold no Rust toolchain, and a pseudo-terminal
//! to drive `start_iex` and `remote` as an operator would.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use super::{Epmd, host_binary, wasm};

/// A release built for this test, and the environment it runs in.
pub struct Release {
    _dir: TempDir,
    pub root: PathBuf,
    home: TempDir,
    epmd_port: u16,
}

impl Release {
    /// Builds the Todo release into a temp dir (as `host release`), for
    /// nodes that register with `epmd`.
    pub fn build(epmd: &Epmd) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let root = dir.path().join("todo");
        let out = Command::new(host_binary())
            .args(["release", "--out"])
            .arg(&root)
            .arg(format!("guest_todo={}", wasm("guest_todo").display()))
            .output()
            .expect("run host release");
        assert!(
            out.status.success(),
            "host release failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let said = String::from_utf8_lossy(&out.stdout);
        assert!(
            said.contains(&format!("Release created at {}", root.display())),
            "{said}"
        );
        Self {
            _dir: dir,
            root,
            home: tempfile::tempdir().expect("temp home"),
            epmd_port: epmd.port,
        }
    }

    /// Adds version `version` holding guest `guest` as the Todo component
    /// (`host release --add`).
    pub fn add_version(&self, version: &str, guest: &str) {
        let out = Command::new(host_binary())
            .args(["release", "--add", "--release-version", version, "--out"])
            .arg(&self.root)
            .arg(format!("guest_todo={}", wasm(guest).display()))
            .output()
            .expect("run host release --add");
        assert!(
            out.status.success(),
            "host release --add failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            String::from_utf8_lossy(&out.stdout)
                .contains(&format!("Release version {version} added")),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
    }

    pub fn script(&self) -> PathBuf {
        self.root.join("bin").join("todo")
    }

    /// `bin/todo ARGS` as a command: no cargo or rustc on its PATH, a
    /// HOME of its own, the test's port mapper, and `env`.
    pub fn command(&self, args: &[&str], env: &[(&str, &str)]) -> Command {
        let mut command = Command::new(self.script());
        command
            .args(args)
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("HOME", self.home.path())
            .env("ERL_EPMD_PORT", self.epmd_port.to_string())
            .env(
                "RUST_LOG",
                "info,cranelift=warn,wasmtime=warn,openraft=warn",
            );
        for (name, value) in env {
            command.env(name, value);
        }
        command
    }

    /// Runs `bin/todo ARGS` to its end (at most `limit`).
    pub fn run(&self, args: &[&str], env: &[(&str, &str)], limit: Duration) -> Output {
        let child = self
            .command(args, env)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run bin/todo");
        wait_output(child, limit, &format!("bin/todo {}", args.join(" ")))
    }
}

/// Waits for `child` (killing it past `limit`) and collects its output;
/// its pipes are read while it runs, so a talkative child never blocks.
fn wait_output(child: Child, limit: Duration, what: &str) -> Output {
    let pid = child.id();
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = done.send(child.wait_with_output());
    });
    match finished.recv_timeout(limit) {
        Ok(Ok(output)) => output,
        Ok(Err(e)) => panic!("{what}: {e}"),
        Err(_) => {
            kill(pid);
            panic!("{what} did not finish within {limit:?}");
        }
    }
}

/// SIGKILL to `pid`.
fn kill(pid: u32) {
    if let Ok(pid) = i32::try_from(pid) {
        // SAFETY: sending a signal has no memory effects here.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
        }
    }
}

impl Drop for Release {
    /// Whatever the test did, nothing it started from this release keeps
    /// running: every process whose command line names the release's
    /// directory is killed (daemons included, even if their starter was).
    fn drop(&mut self) {
        let root = self.root.display().to_string();
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return;
        };
        for entry in entries.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
            if pid != std::process::id() && String::from_utf8_lossy(&cmdline).contains(&root) {
                kill(pid);
            }
        }
    }
}

/// A process on a pseudo-terminal, as an operator's terminal: what it
/// prints is collected by a thread; `expect` waits for text.
pub struct Terminal {
    child: Child,
    writer: File,
    output: Arc<Mutex<Vec<u8>>>,
    /// Where the next `expect` starts looking.
    seen: usize,
}

impl Terminal {
    pub fn spawn(mut command: Command) -> Self {
        let (master, slave) = open_pty();
        let slave_file = File::from(slave);
        command
            .env("TERM", "xterm")
            .stdin(slave_file.try_clone().expect("clone pty"))
            .stdout(slave_file.try_clone().expect("clone pty"))
            .stderr(slave_file);
        let child = command.spawn().expect("spawn on the terminal");
        let reader = File::from(master);
        let writer = reader.try_clone().expect("clone pty master");
        let output = Arc::new(Mutex::new(Vec::new()));
        let collected = output.clone();
        std::thread::spawn(move || {
            let mut reader = reader;
            let mut buffer = [0u8; 4096];
            while let Ok(count) = reader.read(&mut buffer) {
                if count == 0 {
                    break;
                }
                collected
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .extend_from_slice(&buffer[..count]);
            }
        });
        Self {
            child,
            writer,
            output,
            seen: 0,
        }
    }

    /// Everything printed so far.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.output.lock().unwrap_or_else(|p| p.into_inner())).into_owned()
    }

    /// Waits until `text` is printed after what earlier expects saw.
    pub fn expect(&mut self, text: &str, limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            let all = self.text();
            if let Some(found) = all.get(self.seen..).and_then(|rest| rest.find(text)) {
                self.seen += found + text.len();
                return;
            }
            if Instant::now() > deadline {
                panic!("`{text}` was not printed within {limit:?}; the terminal shows:\n{all}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Types `line` and Enter.
    pub fn send_line(&mut self, line: &str) {
        self.send_raw(&format!("{line}\r"));
    }

    /// Types `keys` as they are (Tab, arrows, Ctrl-U...).
    pub fn send_raw(&mut self, keys: &str) {
        self.writer
            .write_all(keys.as_bytes())
            .expect("type on the terminal");
    }

    /// Waits for the process to end on its own.
    pub fn wait(&mut self, limit: Duration) -> ExitStatus {
        super::exit_within(&mut self.child, limit).unwrap_or_else(|| {
            panic!(
                "the terminal's process did not end within {limit:?}; it shows:\n{}",
                self.text()
            )
        })
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A pseudo-terminal pair (master, slave), 200 columns wide.
fn open_pty() -> (OwnedFd, OwnedFd) {
    let mut master = -1;
    let mut slave = -1;
    let size = libc::winsize {
        ws_row: 50,
        ws_col: 200,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: openpty writes two descriptors into the given integers; the
    // name and termios pointers may be null; the winsize is read only.
    let result = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            &size,
        )
    };
    assert_eq!(result, 0, "openpty failed");
    // SAFETY: both descriptors were just opened and are owned by nobody else.
    unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) }
}

/// A daemon the test started: killed when the test ends, even if it fails.
pub struct Daemon {
    pub pid: u32,
}

impl Daemon {
    /// The daemon named in `bin/todo daemon`'s ready line (`pid N)`).
    pub fn from_ready_line(stdout: &[u8]) -> Self {
        let text = String::from_utf8_lossy(stdout);
        let pid = text
            .split("pid ")
            .nth(1)
            .and_then(|rest| rest.trim_end().trim_end_matches(')').parse().ok())
            .unwrap_or_else(|| panic!("no pid in the daemon's ready line: {text}"));
        Self { pid }
    }

    /// Whether it runs (an exited process not reaped yet, a zombie, does
    /// not: a daemon's parent is init, which reaps it when it gets to it).
    pub fn alive(&self) -> bool {
        std::fs::read_to_string(format!("/proc/{}/stat", self.pid)).is_ok_and(|stat| {
            stat.rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().next())
                .is_some_and(|state| state != "Z" && state != "X")
        })
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.alive() {
            kill(self.pid);
        }
    }
}
