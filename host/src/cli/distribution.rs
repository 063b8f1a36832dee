//! Options shared by everything that talks to a cluster (a node, and the
//! tools that reach one): the cookie, TLS, and where peers are.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;

use host::distribution::link::Liveness;
use host::distribution::mesh::Dialer;
use host::distribution::tls::{Tls, TlsFiles};
use host::distribution::{Cookie, NodeName, cookie, epmd};

/// Longest a connection may take to finish its handshake before it is
/// closed.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Args, Clone)]
pub struct LinkArgs {
    /// The cluster's shared secret. Prefer RELEASE_COOKIE or --cookie-file:
    /// a command line can be read by every user of the machine.
    #[arg(long, env = "RELEASE_COOKIE", hide_env_values = true)]
    cookie: Option<String>,

    /// File holding the cookie; it must not be readable by other users.
    /// [default: ~/.erlang.cookie, created with a random cookie when missing]
    #[arg(long, value_name = "FILE")]
    cookie_file: Option<PathBuf>,

    /// Certificate (PEM) this node shows its peers: turns TLS on for every
    /// link. Its names must include the host part of the node's name.
    #[arg(long, value_name = "FILE", requires_all = ["tls_key", "tls_ca"])]
    tls_cert: Option<PathBuf>,

    /// Private key (PEM) of --tls-cert.
    #[arg(long, value_name = "FILE", requires_all = ["tls_cert", "tls_ca"])]
    tls_key: Option<PathBuf>,

    /// CA certificates (PEM) that sign the peers' certificates: a peer whose
    /// certificate they do not sign is refused.
    #[arg(long, value_name = "FILE", requires_all = ["tls_cert", "tls_key"])]
    tls_ca: Option<PathBuf>,

    /// Reach node NAME at HOST:PORT instead of asking its host's port
    /// mapper (for peers behind NAT or a proxy). Repeatable.
    #[arg(long, value_name = "NAME@HOST=ADDR:PORT", value_parser = parse_peer_address)]
    peer_address: Vec<(NodeName, SocketAddr)>,
}

impl LinkArgs {
    /// The cookie: --cookie or RELEASE_COOKIE, else the cookie file
    /// (created when it is the default one and missing).
    pub fn cookie(&self) -> anyhow::Result<Cookie> {
        let cookie = match (&self.cookie, &self.cookie_file) {
            (Some(text), _) => Cookie::from_text(text),
            (None, Some(file)) => Cookie::read_file(file),
            (None, None) => {
                cookie::default_file().and_then(|file| Cookie::read_or_create_file(&file))
            }
        };
        cookie.map_err(|e| anyhow::anyhow!(e))
    }

    pub fn tls(&self) -> anyhow::Result<Option<Arc<Tls>>> {
        let (Some(cert), Some(key), Some(ca)) = (&self.tls_cert, &self.tls_key, &self.tls_ca)
        else {
            return Ok(None);
        };
        let files = TlsFiles { cert, key, ca };
        Ok(Some(Arc::new(
            Tls::load(&files).map_err(|e| anyhow::anyhow!(e))?,
        )))
    }

    /// The dialer of a tool (not a node): named `ROLE_PID` on this host,
    /// pinging every second, giving up on a node silent for `silence_limit`.
    pub fn tool_dialer(&self, role: &str, silence_limit: Duration) -> anyhow::Result<Dialer> {
        let pid = std::process::id();
        let me = NodeName::parse(&format!("{role}_{pid}"))
            .or_else(|_| NodeName::parse(&format!("{role}_{pid}@localhost")))
            .map_err(|e| anyhow::anyhow!(e))?;
        let liveness = Liveness {
            ping_every: Duration::from_secs(1),
            silence_limit,
        };
        self.dialer(me, liveness)
    }

    /// How `me` finds and authenticates peers.
    pub fn dialer(&self, me: NodeName, liveness: Liveness) -> anyhow::Result<Dialer> {
        Ok(Dialer {
            me,
            cookie: self.cookie()?,
            tls: self.tls()?,
            epmd_port: epmd::port_from_env().map_err(|e| anyhow::anyhow!(e))?,
            fixed_addresses: self.peer_address.iter().cloned().collect::<HashMap<_, _>>(),
            handshake_timeout: HANDSHAKE_TIMEOUT,
            liveness,
        })
    }
}

fn parse_peer_address(text: &str) -> Result<(NodeName, SocketAddr), String> {
    let (name, addr) = text
        .rsplit_once('=')
        .ok_or_else(|| format!("`{text}` is not NAME@HOST=ADDR:PORT"))?;
    let addr = addr
        .parse()
        .map_err(|_| format!("`{addr}` is not ADDR:PORT"))?;
    Ok((NodeName::parse(name)?, addr))
}
