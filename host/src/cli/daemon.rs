//! `host run --daemon`: starts the node in the background and returns once
//! it is ready, as `bin/todo daemon` must.
//!
//! The node is this same binary, started again without `--daemon`, in a
//! process group of its own (a Ctrl-C in the terminal does not reach it),
//! with its log lines going to `DIR/host.log` (rotated) and its stderr to
//! `DIR/stdout.log`. Its stdout is a pipe back to the starter, which waits
//! for the ready line: the node then points its stdout at `stdout.log`
//! too ([`ready`]), closing the pipe. If the pipe closes with no ready
//! line, the node failed to start: the starter prints the tail of its logs
//! and fails.

use std::ffi::OsString;
use std::fs::OpenOptions;
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};

/// Tells the node started by a daemon where its stdout goes once ready.
const STDOUT_AFTER_READY: &str = "HOST_DAEMON_STDOUT";

/// Log lines shown when the node could not start.
const TAIL_LINES: usize = 20;

/// Starts the node (`args` are this process's, `--daemon` included) and
/// waits for its ready line.
pub fn start(args: Vec<OsString>, log_dir: &Path) -> ExitCode {
    match spawn_and_wait(args, log_dir) {
        Ok(ready) => {
            println!("{ready}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            for file in ["host.log", "stdout.log"] {
                let tail = tail(&log_dir.join(file), TAIL_LINES);
                if !tail.is_empty() {
                    eprintln!("--- last lines of {} ---", log_dir.join(file).display());
                    eprintln!("{tail}");
                }
            }
            ExitCode::FAILURE
        }
    }
}

fn spawn_and_wait(args: Vec<OsString>, log_dir: &Path) -> Result<String, String> {
    std::fs::create_dir_all(log_dir)
        .map_err(|e| format!("cannot create the log directory {}: {e}", log_dir.display()))?;
    let stdout_log = log_dir.join("stdout.log");
    let stderr = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&stdout_log)
        .map_err(|e| format!("cannot open {}: {e}", stdout_log.display()))?;
    let program = std::env::current_exe().map_err(|e| format!("cannot find this program: {e}"))?;
    let mut node_args: Vec<OsString> = args
        .into_iter()
        .skip(1)
        .filter(|arg| arg != "--daemon")
        .collect();
    node_args.push("--log-file".into());
    node_args.push(log_dir.join("host.log").into_os_string());
    let mut child = Command::new(program)
        .args(node_args)
        .env(STDOUT_AFTER_READY, &stdout_log)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(stderr)
        .process_group(0)
        .spawn()
        .map_err(|e| format!("cannot start the node: {e}"))?;
    let Some(stdout) = child.stdout.take() else {
        return Err("the node's output was not captured".into());
    };
    let mut ready = None;
    for line in BufReader::new(stdout).lines() {
        let Ok(line) = line else { break };
        if line.contains("HTTP listening on") {
            ready = Some(line);
            break;
        }
    }
    match ready {
        Some(line) => Ok(format!("{line} (daemon, pid {})", child.id())),
        None => {
            let status = child
                .wait()
                .map(|status| status.to_string())
                .unwrap_or_else(|e| e.to_string());
            Err(format!("the node did not start ({status})"))
        }
    }
}

/// Called by the node once ready: a daemon's stdout moves from the pipe
/// (its starter is waiting on it) to its log. Does nothing in the
/// foreground.
pub fn ready() {
    let Some(path) = std::env::var_os(STDOUT_AFTER_READY) else {
        return;
    };
    let path = PathBuf::from(path);
    match OpenOptions::new().create(true).append(true).open(&path) {
        Ok(file) => {
            use std::os::fd::AsRawFd;
            // SAFETY: both descriptors are open (the file's for the
            // duration of the call); dup2 replaces descriptor 1 atomically,
            // so concurrent writers see either the pipe or the file.
            unsafe {
                libc::dup2(file.as_raw_fd(), libc::STDOUT_FILENO);
            }
        }
        Err(e) => tracing::warn!("cannot send stdout to {}: {e}", path.display()),
    }
}

/// The last `count` lines of `path`, if it can be read.
fn tail(path: &Path, count: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(count)..].join("\n")
}
