//! Where the node's log lines go: stderr or size-rotated files (a daemon's
//! `tmp/log`), and a ring of the most recent ones for the console's `logs`
//! and the observer.
//!
//! The formatting is `tracing-subscriber`'s; this module is the writer it
//! writes each event to, which tees the finished lines into the ring.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use tracing_subscriber::fmt::MakeWriter;

/// Log lines the ring keeps, and bytes kept of each (a guest's crash
/// reason can be long).
const RECENT_LINES: usize = 1000;
const RECENT_LINE_BYTES: usize = 2048;

/// Size at which a log file is rotated, and rotated files kept
/// (`host.log.1` newest ... `host.log.5` oldest).
pub const ROTATE_BYTES: u64 = 10 * 1024 * 1024;
pub const ROTATED_FILES: usize = 5;

fn recent() -> &'static Mutex<VecDeque<String>> {
    static RECENT: OnceLock<Mutex<VecDeque<String>>> = OnceLock::new();
    RECENT.get_or_init(|| Mutex::new(VecDeque::with_capacity(RECENT_LINES)))
}

/// The most recent `count` log lines of this process, oldest first.
pub fn recent_lines(count: usize) -> Vec<String> {
    let lines = recent().lock().unwrap_or_else(|p| p.into_inner());
    let skip = lines.len().saturating_sub(count);
    lines.iter().skip(skip).cloned().collect()
}

fn remember(text: &str) {
    let mut lines = recent().lock().unwrap_or_else(|p| p.into_inner());
    for line in text.lines().filter(|line| !line.is_empty()) {
        if lines.len() == RECENT_LINES {
            lines.pop_front();
        }
        let mut line = strip_ansi(line);
        if line.len() > RECENT_LINE_BYTES {
            line.truncate(line.floor_char_boundary(RECENT_LINE_BYTES));
            line.push_str("...");
        }
        lines.push_back(line);
    }
}

/// Drops terminal colour sequences (`ESC [ ... m`).
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for end in chars.by_ref() {
                if end.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The writer handed to `tracing-subscriber`: stderr, or a rotated file.
#[derive(Clone)]
pub enum LogSink {
    Stderr,
    File(Arc<Mutex<RotatingFile>>),
}

impl LogSink {
    /// Logs to `path`, rotated at [`ROTATE_BYTES`].
    pub fn file(path: &Path) -> io::Result<Self> {
        Ok(LogSink::File(Arc::new(Mutex::new(RotatingFile::open(
            path,
        )?))))
    }
}

impl<'a> MakeWriter<'a> for LogSink {
    type Writer = EventWriter;

    fn make_writer(&'a self) -> Self::Writer {
        EventWriter {
            sink: self.clone(),
            buffer: Vec::with_capacity(256),
        }
    }
}

/// Collects one event's text, then writes it whole.
pub struct EventWriter {
    sink: LogSink,
    buffer: Vec<u8>,
}

impl Write for EventWriter {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.buffer.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for EventWriter {
    fn drop(&mut self) {
        if self.buffer.is_empty() {
            return;
        }
        remember(&String::from_utf8_lossy(&self.buffer));
        // A log line that cannot be written has nowhere else to go.
        let _ = match &self.sink {
            LogSink::Stderr => io::stderr().write_all(&self.buffer),
            LogSink::File(file) => file
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .write_all(&self.buffer),
        };
    }
}

/// A log file that moves itself aside when it reaches [`ROTATE_BYTES`].
pub struct RotatingFile {
    path: PathBuf,
    file: File,
    written: u64,
}

impl RotatingFile {
    /// Opens (or creates) the log at `path`, readable by its owner only, in
    /// a directory only its owner can list: a log names nodes, processes
    /// and peers' addresses.
    fn open(path: &Path) -> io::Result<Self> {
        use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(path)?;
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        let written = file.metadata()?.len();
        Ok(Self {
            path: path.to_path_buf(),
            file,
            written,
        })
    }

    fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        if self.written + bytes.len() as u64 > ROTATE_BYTES && self.written > 0 {
            self.rotate()?;
        }
        self.file.write_all(bytes)?;
        self.written += bytes.len() as u64;
        Ok(())
    }

    fn rotate(&mut self) -> io::Result<()> {
        for index in (1..ROTATED_FILES).rev() {
            let from = rotated(&self.path, index);
            if from.exists() {
                std::fs::rename(&from, rotated(&self.path, index + 1))?;
            }
        }
        std::fs::rename(&self.path, rotated(&self.path, 1))?;
        self.file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        self.written = 0;
        Ok(())
    }
}

fn rotated(path: &Path, index: usize) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{index}"));
    PathBuf::from(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_rotate_and_keep_a_bounded_number() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("host.log");
        let mut file = RotatingFile::open(&path).expect("open");
        let chunk = vec![b'x'; (ROTATE_BYTES / 2 + 1) as usize];
        for _ in 0..(2 * ROTATED_FILES + 4) {
            file.write_all(&chunk).expect("write");
        }
        assert!(path.exists());
        assert!(rotated(&path, ROTATED_FILES).exists());
        assert!(!rotated(&path, ROTATED_FILES + 1).exists());
        assert!(std::fs::metadata(&path).expect("meta").len() <= ROTATE_BYTES);
    }

    #[test]
    fn the_ring_keeps_recent_lines_without_colour() {
        remember("\u{1b}[32mINFO\u{1b}[0m first\nsecond\n");
        let lines = recent_lines(2);
        assert_eq!(lines, vec!["INFO first".to_string(), "second".to_string()]);
    }
}
