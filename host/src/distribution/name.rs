//! Node names: `name@host`, as in Erlang.
//!
//! The part before `@` is what the port mapper registers on `host`; the host
//! part says where to find that port mapper (and, by default, which address
//! the node's distribution listener binds). A bare `name` means `name@` this
//! machine's host name, as `erl -sname` does.

use std::fmt;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Longest alive name (the part before `@`): EPMD stores names of up to 255
/// bytes.
const MAX_ALIVE_BYTES: usize = 200;
/// Longest host part.
const MAX_HOST_BYTES: usize = 253;

/// A node's full name, `alive@host`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct NodeName {
    alive: String,
    host: String,
}

impl NodeName {
    /// Parses `name@host`, or a bare `name` on this machine.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let (alive, host) = match text.split_once('@') {
            Some((alive, host)) => (alive.to_string(), host.to_string()),
            None => (text.to_string(), local_host_name()?),
        };
        Self::new(alive, host).map_err(|e| format!("{} is not a node name: {e}", shown(text)))
    }

    fn new(alive: String, host: String) -> Result<Self, String> {
        let alive_ok = !alive.is_empty()
            && alive.len() <= MAX_ALIVE_BYTES
            && alive
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !alive_ok {
            return Err(format!(
                "the name before `@` must be 1 to {MAX_ALIVE_BYTES} letters, digits, `_` or `-`"
            ));
        }
        let host_ok = !host.is_empty()
            && host.len() <= MAX_HOST_BYTES
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b':');
        if !host_ok {
            return Err("the host after `@` must be a host name or an IP address".into());
        }
        Ok(Self { alive, host })
    }

    /// The part before `@`: what the port mapper knows the node by.
    pub fn alive(&self) -> &str {
        &self.alive
    }

    /// The part after `@`.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The addresses the host part resolves to (an IP address is itself).
    pub fn resolve_host(&self, port: u16) -> Result<Vec<SocketAddr>, String> {
        match self.host.parse::<IpAddr>() {
            Ok(ip) => Ok(vec![SocketAddr::new(ip, port)]),
            Err(_) => self.resolved((self.host.as_str(), port).to_socket_addrs()),
        }
    }

    /// Like [`NodeName::resolve_host`], without blocking the async worker
    /// while the resolver answers.
    pub async fn resolve_host_async(&self, port: u16) -> Result<Vec<SocketAddr>, String> {
        match self.host.parse::<IpAddr>() {
            Ok(ip) => Ok(vec![SocketAddr::new(ip, port)]),
            Err(_) => self.resolved(tokio::net::lookup_host((self.host.as_str(), port)).await),
        }
    }

    fn resolved(
        &self,
        found: std::io::Result<impl Iterator<Item = SocketAddr>>,
    ) -> Result<Vec<SocketAddr>, String> {
        let addrs: Vec<SocketAddr> = found
            .map_err(|e| format!("cannot resolve the host of {self}: {e}"))?
            .collect();
        if addrs.is_empty() {
            return Err(format!("the host of {self} resolves to no address"));
        }
        Ok(addrs)
    }
}

impl fmt::Display for NodeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.alive, self.host)
    }
}

impl FromStr for NodeName {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::parse(text)
    }
}

/// This machine's host name, as `gethostname(2)` reports it.
pub fn local_host_name() -> Result<String, String> {
    let mut buffer = [0u8; 256];
    // SAFETY: the buffer is valid for its whole length, and gethostname
    // writes at most that many bytes.
    let status = unsafe { libc::gethostname(buffer.as_mut_ptr().cast(), buffer.len()) };
    if status != 0 {
        return Err(format!(
            "cannot read this machine's host name: {}",
            std::io::Error::last_os_error()
        ));
    }
    let end = buffer.iter().position(|&b| b == 0).unwrap_or(buffer.len());
    let name = String::from_utf8_lossy(&buffer[..end]).into_owned();
    if name.is_empty() {
        return Err("this machine has no host name: name the node NAME@HOST".into());
    }
    Ok(name)
}

/// A name that failed to parse, as an error shows it: it may come from a
/// stranger's handshake and end up in the log, so it is quoted with its
/// control characters escaped (no forged log line) and cut to 64 characters.
fn shown(text: &str) -> String {
    let cut: String = text.chars().take(64).collect();
    let more = if cut.len() < text.len() { "..." } else { "" };
    format!("{cut:?}{more}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_name_is_shown_on_one_line_and_cut() {
        let forged = "x\n2026-12-04T00:00:00Z  INFO node_evil joined the cluster";
        let error = NodeName::parse(forged).expect_err("not a name");
        assert!(!error.contains('\n'), "{error}");
        assert!(error.contains(r"x\n2026"), "{error}");
        let long = format!("{}\u{7}", "a".repeat(200));
        let error = NodeName::parse(&format!("{long}@h")).expect_err("not a name");
        assert!(
            error.len() < 200 && error.contains("...") && !error.contains('\u{7}'),
            "{error}"
        );
    }

    #[test]
    fn full_names_keep_their_host() {
        let name = NodeName::parse("node_a@127.0.0.1").expect("valid");
        assert_eq!(name.alive(), "node_a");
        assert_eq!(name.host(), "127.0.0.1");
        assert_eq!(name.to_string(), "node_a@127.0.0.1");
        assert_eq!(
            name.resolve_host(4369).expect("an IP resolves to itself"),
            vec!["127.0.0.1:4369".parse().expect("addr")]
        );
    }

    #[test]
    fn a_bare_name_lives_on_this_machine() {
        let name = NodeName::parse("node_a").expect("valid");
        assert_eq!(name.host(), local_host_name().expect("host name"));
    }

    #[test]
    fn malformed_names_are_refused_with_a_reason() {
        for bad in ["", "@host", "a b@host", "node@", "node@ho st", "nöde@h"] {
            let error = NodeName::parse(bad).expect_err(bad);
            assert!(error.contains("not a node name"), "{bad}: {error}");
        }
    }
}
