//! The cookie: the shared secret that lets nodes (and tools) into a cluster.
//!
//! It comes from `--cookie` / `RELEASE_COOKIE`, or from a file
//! (`--cookie-file`, by default `~/.erlang.cookie`, created with a random
//! value and mode 0400 when it does not exist, as Erlang does). A file that
//! others may read is refused: anyone who can read the cookie can run code
//! on every node of the cluster.
//!
//! The cookie never leaves this process: it is the password of the
//! handshake's key exchange (`handshake.rs`) and is never logged (its `Debug` hides it), never sent,
//! never put on the command line of a process the node starts.

use std::fmt;
use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

/// Length of a generated cookie: 20 capital letters, as Erlang makes them.
const GENERATED_LENGTH: usize = 20;
/// Longest cookie accepted.
const MAX_COOKIE_BYTES: usize = 1024;

/// The shared secret. Its `Debug` and `Display` never show it.
#[derive(Clone, PartialEq, Eq)]
pub struct Cookie(String);

impl fmt::Debug for Cookie {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Cookie(<hidden>)")
    }
}

impl Cookie {
    /// A cookie given as text (`--cookie`, `RELEASE_COOKIE`).
    pub fn from_text(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if text.is_empty() {
            return Err("the cookie is empty".into());
        }
        if text.len() > MAX_COOKIE_BYTES {
            return Err(format!(
                "the cookie is longer than {MAX_COOKIE_BYTES} bytes"
            ));
        }
        Ok(Self(text.to_string()))
    }

    /// Reads the cookie file at `path`, refusing one that others may read.
    pub fn read_file(path: &Path) -> Result<Self, String> {
        let metadata = std::fs::metadata(path)
            .map_err(|e| format!("cannot read the cookie file {}: {e}", path.display()))?;
        let mode = metadata.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(format!(
                "the cookie file {} can be read by other users (mode {mode:o}): \
                 anyone who reads it can run code on the cluster. \
                 Restrict it with `chmod 400 {}`",
                path.display(),
                path.display()
            ));
        }
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read the cookie file {}: {e}", path.display()))?;
        Self::from_text(&text).map_err(|e| format!("cookie file {}: {e}", path.display()))
    }

    /// Reads the cookie file at `path`, creating it first (random value,
    /// mode 0400) when it does not exist.
    pub fn read_or_create_file(path: &Path) -> Result<Self, String> {
        if !path.exists() {
            create_file(path)?;
            tracing::info!(file = %path.display(), "created a new cookie file (mode 0400)");
        }
        Self::read_file(path)
    }

    /// The password of the handshake's key exchange.
    pub(crate) fn secret(&self) -> &[u8] {
        self.0.as_bytes()
    }

    /// Why this cookie is easy to guess, if it is: shorter than 16
    /// characters, a word people use as one, or few distinct characters.
    /// (The handshake lets a stranger test one guess per connection, and
    /// slows an address that keeps guessing; a guessable cookie still
    /// falls to patience.)
    pub fn weakness(&self) -> Option<String> {
        const COMMON: [&str; 8] = [
            "cookie", "secret", "password", "changeme", "erlang", "monster", "nocookie", "test",
        ];
        let text = self.0.as_str();
        let lowered = text.to_lowercase();
        let distinct = text.chars().collect::<std::collections::HashSet<_>>().len();
        if COMMON.iter().any(|word| lowered.contains(word)) {
            Some("it is, or contains, a word people use as a cookie".into())
        } else if text.chars().count() < MIN_STRONG_LENGTH {
            Some(format!(
                "it is {} characters long; {MIN_STRONG_LENGTH} or more random ones make it \
                 unguessable",
                text.chars().count()
            ))
        } else if distinct < 6 {
            Some(format!("it is made of {distinct} distinct characters"))
        } else {
            None
        }
    }
}

/// A cookie shorter than this is reported as weak at start.
const MIN_STRONG_LENGTH: usize = 16;

/// `~/.erlang.cookie`, where Erlang keeps its cookie.
pub fn default_file() -> Result<PathBuf, String> {
    let home = std::env::var_os("HOME")
        .filter(|home| !home.is_empty())
        .ok_or("HOME is not set: give the cookie with --cookie, RELEASE_COOKIE or --cookie-file")?;
    Ok(PathBuf::from(home).join(".erlang.cookie"))
}

/// Writes a new random cookie to `path` (which must not exist), mode 0400.
pub fn create_file(path: &Path) -> Result<(), String> {
    let mut random = [0u8; GENERATED_LENGTH];
    getrandom::fill(&mut random).map_err(|e| format!("no randomness for a new cookie: {e}"))?;
    let cookie: String = random.iter().map(|b| char::from(b'A' + b % 26)).collect();
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o400)
        .open(path)
        .map_err(|e| format!("cannot create the cookie file {}: {e}", path.display()))?;
    file.write_all(cookie.as_bytes())
        .map_err(|e| format!("cannot write the cookie file {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_file_is_created_private_and_stable() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("cookie");
        let first = Cookie::read_or_create_file(&path).expect("created");
        let mode = std::fs::metadata(&path)
            .expect("exists")
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o400);
        assert_eq!(first.secret().len(), GENERATED_LENGTH);
        assert_eq!(Cookie::read_or_create_file(&path).expect("read"), first);
    }

    #[test]
    fn a_file_others_can_read_is_refused_with_the_fix() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("cookie");
        std::fs::write(&path, "monster").expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let error = Cookie::read_file(&path).expect_err("refused");
        assert!(error.contains("chmod 400"), "{error}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        assert_eq!(
            Cookie::read_file(&path).expect("private now"),
            Cookie::from_text("monster").expect("cookie")
        );
    }

    #[test]
    fn weak_cookies_are_told_apart_from_strong_ones() {
        for weak in [
            "monster",
            "short",
            "MyErlangCookie2024!",
            "aaaaabbbbbaaaaabbbbb",
        ] {
            let cookie = Cookie::from_text(weak).expect("cookie");
            assert!(cookie.weakness().is_some(), "{weak}");
        }
        for strong in ["QWHTZKXPRVMBLJDGSNCA", "k3V9-x7Qm2Lp8Zr4Tn6Y"] {
            let cookie = Cookie::from_text(strong).expect("cookie");
            assert_eq!(cookie.weakness(), None, "{strong}");
        }
    }

    #[test]
    fn the_cookie_never_shows_in_debug_output() {
        let cookie = Cookie::from_text("monster").expect("cookie");
        assert!(!format!("{cookie:?}").contains("monster"));
    }
}
