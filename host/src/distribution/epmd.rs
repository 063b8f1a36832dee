//! The port mapper: Erlang's EPMD protocol, the subset that node names need.
//!
//! A node registers its alive name and distribution port with the port
//! mapper of its own host (`ALIVE2_REQ`) and keeps that connection open: the
//! registration ends when the connection closes, so a node killed with -9
//! disappears at once. Anyone looks a name up (`PORT_PLEASE2_REQ`) or lists
//! them (`NAMES_REQ`) on the host's port mapper, which listens on 4369 (or
//! `ERL_EPMD_PORT`).
//!
//! The same wire format serves both ways: our nodes register with Erlang's
//! own `epmd` when one runs, and our daemon (`host epmd`, [`serve`]) answers
//! Erlang's `epmd -names` and `epmd -kill`.
//!
//! Every request is `[length: u16][request byte][payload]`, one request per
//! connection; see the Erlang distribution protocol documentation.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::socket_owner;
use crate::budget::{AddressAdmitted, FailureSummary, PerAddressCap, and_more};

/// The port mapper's port when `ERL_EPMD_PORT` does not say otherwise.
pub const DEFAULT_PORT: u16 = 4369;

const ALIVE2_REQ: u8 = 120;
const ALIVE2_RESP: u8 = 121;
const ALIVE2_X_RESP: u8 = 118;
const PORT_PLEASE2_REQ: u8 = 122;
const PORT2_RESP: u8 = 119;
const NAMES_REQ: u8 = 110;
const KILL_REQ: u8 = 107;

/// A registration's result: 0 is success; Erlang's epmd says 1 for any
/// refusal, and so does ours for a name in use; 2 says its bound of names
/// is reached (Erlang's clients see a refusal either way).
const REFUSED_NAME_TAKEN: u8 = 1;
const REFUSED_FULL: u8 = 2;

/// "A normal node" (as opposed to 72, hidden) and "TCP over IPv4".
const NODE_TYPE_NORMAL: u8 = 77;
const PROTOCOL_TCP: u8 = 0;
/// The distribution versions a registration announces. Erlang's epmd
/// answers a highest version of 6 or more with the 4-byte creation reply.
const HIGHEST_VERSION: u16 = 6;
const LOWEST_VERSION: u16 = 5;
/// The "extra" field of our registrations: lets a lookup tell our nodes
/// from Erlang ones.
pub const EXTRA: &[u8] = b"otp-wasm";

/// Longest request the daemon reads.
const MAX_REQUEST: usize = 1024;
/// Longest name the daemon registers (as epmd: 255 characters).
const MAX_NAME_BYTES: usize = 255;
/// How long a client may take to send its request: a real one sends it
/// at once.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// Connections awaiting or getting an answer at once, in all and from one
/// address; past them, a connection is closed at once (and counted).
const MAX_CONNECTIONS: usize = 256;
const MAX_CONNECTIONS_PER_ADDRESS: usize = 16;
/// Names registered at once; a registration past it is refused.
const MAX_REGISTRATIONS: usize = 256;
/// Names whose first registrant the daemon remembers.
const MAX_OWNERS_REMEMBERED: usize = 4096;
/// How often the daemon logs refusals and failed accepts from one source.
const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(10);
/// How long a client waits for the port mapper.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(5);

/// The port mapper's port from the environment (`ERL_EPMD_PORT`), as
/// Erlang reads it.
pub fn port_from_env() -> Result<u16, String> {
    match std::env::var("ERL_EPMD_PORT") {
        Ok(text) => text
            .trim()
            .parse()
            .map_err(|_| format!("ERL_EPMD_PORT=`{text}` is not a port number")),
        Err(_) => Ok(DEFAULT_PORT),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EpmdError {
    #[error("no port mapper is running on {0}")]
    NotRunning(SocketAddr),
    #[error("the name `{0}` is already registered on this host (is a node of that name running?)")]
    NameTaken(String),
    #[error("the port mapper on {addr}: {reason}")]
    Protocol { addr: SocketAddr, reason: String },
}

fn request(kind: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(3 + payload.len());
    out.extend_from_slice(&((payload.len() + 1) as u16).to_be_bytes());
    out.push(kind);
    out.extend_from_slice(payload);
    out
}

async fn connect(addr: SocketAddr) -> Result<TcpStream, EpmdError> {
    match tokio::time::timeout(CLIENT_TIMEOUT, TcpStream::connect(addr)).await {
        Ok(Ok(stream)) => Ok(stream),
        Ok(Err(_)) => Err(EpmdError::NotRunning(addr)),
        Err(_) => Err(EpmdError::Protocol {
            addr,
            reason: "did not accept the connection in time".into(),
        }),
    }
}

/// Sends one request and reads the whole answer (the port mapper closes
/// after answering).
async fn ask(addr: SocketAddr, kind: u8, payload: &[u8]) -> Result<Vec<u8>, EpmdError> {
    let protocol = |reason: String| EpmdError::Protocol { addr, reason };
    let mut stream = connect(addr).await?;
    let exchange = async {
        stream.write_all(&request(kind, payload)).await?;
        let mut answer = Vec::new();
        (&mut stream).take(1 << 20).read_to_end(&mut answer).await?;
        Ok::<_, std::io::Error>(answer)
    };
    match tokio::time::timeout(CLIENT_TIMEOUT, exchange).await {
        Ok(Ok(answer)) => Ok(answer),
        Ok(Err(e)) => Err(protocol(e.to_string())),
        Err(_) => Err(protocol("did not answer in time".into())),
    }
}

/// The distribution port of `alive` on the port mapper at `addr`; `None`
/// when no node of that name is registered there.
pub async fn port_please(addr: SocketAddr, alive: &str) -> Result<Option<u16>, EpmdError> {
    let answer = ask(addr, PORT_PLEASE2_REQ, alive.as_bytes()).await?;
    read_port2(&answer).map_err(|reason| EpmdError::Protocol {
        addr,
        reason: reason.into(),
    })
}

/// A lookup's answer: the port, or `None` when the name is not registered.
fn read_port2(answer: &[u8]) -> Result<Option<u16>, &'static str> {
    match answer {
        [PORT2_RESP, 0, high, low, ..] => Ok(Some(u16::from_be_bytes([*high, *low]))),
        [PORT2_RESP, _, ..] => Ok(None),
        _ => Err("unexpected answer to a lookup"),
    }
}

/// The names registered on the port mapper at `addr`, with their ports.
pub async fn names(addr: SocketAddr) -> Result<Vec<(String, u16)>, EpmdError> {
    let answer = ask(addr, NAMES_REQ, &[]).await?;
    read_names(&answer).map_err(|reason| EpmdError::Protocol {
        addr,
        reason: reason.into(),
    })
}

/// A names request's answer: the daemon's port, then a line per name.
fn read_names(answer: &[u8]) -> Result<Vec<(String, u16)>, &'static str> {
    let Some(text) = answer.get(4..) else {
        return Err("short answer to a names request");
    };
    Ok(String::from_utf8_lossy(text)
        .lines()
        .filter_map(|line| {
            let rest = line.strip_prefix("name ")?;
            let (name, port) = rest.rsplit_once(" at port ")?;
            Some((name.to_string(), port.trim().parse().ok()?))
        })
        .collect())
}

/// A name held on a port mapper: dropping it (or the process ending) ends
/// the registration.
pub struct Registration {
    stream: TcpStream,
    pub creation: u32,
}

impl Registration {
    /// Resolves when the port mapper closes the registration (it stopped).
    pub async fn lost(&mut self) {
        let mut byte = [0u8; 1];
        let _ = self.stream.read(&mut byte).await;
    }
}

/// Registers `alive` with distribution port `port` on the port mapper at
/// `addr`.
pub async fn register(addr: SocketAddr, alive: &str, port: u16) -> Result<Registration, EpmdError> {
    let protocol = |reason: String| EpmdError::Protocol { addr, reason };
    let mut payload = Vec::new();
    payload.extend_from_slice(&port.to_be_bytes());
    payload.push(NODE_TYPE_NORMAL);
    payload.push(PROTOCOL_TCP);
    payload.extend_from_slice(&HIGHEST_VERSION.to_be_bytes());
    payload.extend_from_slice(&LOWEST_VERSION.to_be_bytes());
    payload.extend_from_slice(&(alive.len() as u16).to_be_bytes());
    payload.extend_from_slice(alive.as_bytes());
    payload.extend_from_slice(&(EXTRA.len() as u16).to_be_bytes());
    payload.extend_from_slice(EXTRA);
    let mut stream = connect(addr).await?;
    let exchange = async {
        stream.write_all(&request(ALIVE2_REQ, &payload)).await?;
        let mut head = [0u8; 2];
        stream.read_exact(&mut head).await?;
        let creation = match head[0] {
            ALIVE2_X_RESP => {
                let mut creation = [0u8; 4];
                stream.read_exact(&mut creation).await?;
                u32::from_be_bytes(creation)
            }
            _ => {
                let mut creation = [0u8; 2];
                stream.read_exact(&mut creation).await?;
                u32::from(u16::from_be_bytes(creation))
            }
        };
        Ok::<_, std::io::Error>((head, creation))
    };
    let (head, creation) = match tokio::time::timeout(CLIENT_TIMEOUT, exchange).await {
        Ok(Ok(answer)) => answer,
        Ok(Err(e)) => return Err(protocol(format!("registration failed: {e}"))),
        Err(_) => return Err(protocol("did not answer the registration in time".into())),
    };
    match head {
        [ALIVE2_X_RESP | ALIVE2_RESP, 0] => Ok(Registration { stream, creation }),
        [ALIVE2_X_RESP | ALIVE2_RESP, REFUSED_NAME_TAKEN] => {
            Err(EpmdError::NameTaken(alive.to_string()))
        }
        [ALIVE2_X_RESP | ALIVE2_RESP, _] => Err(protocol(format!(
            "refused to register `{alive}`: it holds as many names as it may"
        ))),
        _ => Err(protocol("unexpected answer to a registration".into())),
    }
}

/// How long a node waits for a port mapper it started to come up.
const DAEMON_START_TIMEOUT: Duration = Duration::from_secs(5);

/// Registers `alive` on this host's port mapper (port `epmd_port`),
/// starting one (`host epmd`, detached, as `erl` starts `epmd`) when none
/// runs, listening on `listen` (loopback, unless the node's name is
/// reached from other hosts). Then keeps the name registered until
/// `stop`: should the port mapper go away, the node registers again once
/// one runs again (it does not start one itself then: whoever stopped it
/// may mean it).
pub async fn register_and_keep(
    epmd_port: u16,
    listen: IpAddr,
    alive: String,
    port: u16,
    stop: tokio_util::sync::CancellationToken,
) -> Result<(), EpmdError> {
    let addr = SocketAddr::from(([127, 0, 0, 1], epmd_port));
    let mut registration = register_starting_daemon(addr, listen, &alive, port).await?;
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = registration.lost() => {}
            }
            tracing::warn!("the port mapper on {addr} went away: registering `{alive}` again");
            registration = loop {
                match register(addr, &alive, port).await {
                    Ok(registration) => break registration,
                    Err(e) => {
                        tracing::debug!("cannot register `{alive}` with the port mapper: {e}");
                        tokio::select! {
                            _ = stop.cancelled() => return,
                            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                        }
                    }
                }
            };
        }
    });
    Ok(())
}

async fn register_starting_daemon(
    addr: SocketAddr,
    listen: IpAddr,
    alive: &str,
    port: u16,
) -> Result<Registration, EpmdError> {
    match register(addr, alive, port).await {
        Err(EpmdError::NotRunning(_)) => {}
        other => return other,
    }
    start_daemon(listen, addr.port()).map_err(|reason| EpmdError::Protocol { addr, reason })?;
    let deadline = tokio::time::Instant::now() + DAEMON_START_TIMEOUT;
    loop {
        match register(addr, alive, port).await {
            Err(EpmdError::NotRunning(_)) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            other => return other,
        }
    }
}

/// Where the port mapper a node starts listens: on loopback when every
/// address of the node's host is a loopback one (nobody elsewhere needs to
/// look it up), on every address otherwise.
pub fn listen_address_for(host_addresses: &[SocketAddr]) -> IpAddr {
    if !host_addresses.is_empty() && host_addresses.iter().all(|addr| addr.ip().is_loopback()) {
        IpAddr::from([127, 0, 0, 1])
    } else {
        IpAddr::from([0, 0, 0, 0])
    }
}

/// Starts `host epmd --port PORT --address LISTEN` in the background, in a
/// process group of its own (a Ctrl-C meant for the node does not reach
/// it), with nothing inherited but the environment: it outlives the node,
/// as epmd does.
fn start_daemon(listen: IpAddr, port: u16) -> Result<(), String> {
    use std::os::unix::process::CommandExt as _;
    let exe = std::env::current_exe()
        .map_err(|e| format!("cannot find the host binary to start a port mapper: {e}"))?;
    let mut child = std::process::Command::new(exe)
        .args(["epmd", "--port", &port.to_string()])
        .args(["--address", &listen.to_string()])
        // It needs no secret: it outlives the node, and should not carry one.
        .env_remove("RELEASE_COOKIE")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .process_group(0)
        .spawn()
        .map_err(|e| format!("cannot start a port mapper: {e}"))?;
    tracing::info!(
        pid = child.id(),
        "started a port mapper (host epmd) on port {port}"
    );
    // Reap it if it ends while the node runs (another one won the port).
    std::thread::spawn(move || child.wait());
    Ok(())
}

/// Asks the port mapper at `addr` to stop. `Ok(false)` when it refused
/// (nodes are still registered).
pub async fn kill(addr: SocketAddr) -> Result<bool, EpmdError> {
    let answer = ask(addr, KILL_REQ, &[]).await?;
    Ok(answer.as_slice() == b"OK")
}

/// One registered node, as the daemon keeps it.
#[derive(Clone)]
struct Entry {
    port: u16,
    node_type: u8,
    protocol: u8,
    highest: u16,
    lowest: u16,
    extra: Vec<u8>,
    /// Which connection holds it.
    holder: u64,
    /// The local user whose process holds it, when the kernel says.
    uid: Option<u32>,
    /// Ends the registration (its owner took the name back).
    evict: Arc<tokio::sync::Notify>,
}

#[derive(Default)]
struct Table {
    nodes: Vec<(String, Entry)>,
    /// Who registered each name first since the daemon started: a name
    /// taken by another user meanwhile goes back to that one's next
    /// registration.
    owners: HashMap<String, u32>,
    next_holder: u64,
    creation: u32,
}

/// The port mapper daemon (`host epmd`): answers until killed (SIGTERM, or
/// a `KILL_REQ` from the local host when no node is registered, or always
/// when `relaxed`).
///
/// Strangers reach it, so everything they can hold is bounded: connections
/// awaiting an answer (256, 16 per address, each for 2 s at most) and
/// registrations (256). Past a bound, a connection is closed at once and a
/// registration refused; refusals are logged once per source per 10 s.
pub async fn serve(listener: TcpListener, relaxed: bool) -> std::io::Result<()> {
    let port = listener.local_addr()?.port();
    let table = Arc::new(Mutex::new(Table {
        creation: initial_creation(),
        ..Table::default()
    }));
    let cap = PerAddressCap::new(MAX_CONNECTIONS, MAX_CONNECTIONS_PER_ADDRESS);
    let refusals = FailureSummary::new(REFUSAL_LOG_INTERVAL);
    let (killed, mut kill_requested) = tokio::sync::mpsc::channel::<()>(1);
    loop {
        let (stream, peer) = tokio::select! {
            _ = kill_requested.recv() => return Ok(()),
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    if let Some(unlogged) = refusals.record("accept") {
                        tracing::warn!("port mapper: accept failed: {e}{}", and_more(unlogged));
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let admitted = match cap.admit(peer.ip()) {
            Ok(admitted) => admitted,
            Err(why) => {
                if let Some(unlogged) = refusals.record(&peer.ip().to_string()) {
                    tracing::warn!(
                        "port mapper: closed a connection from {peer} at once: {why} \
                         ({} refused so far){}",
                        cap.refused(),
                        and_more(unlogged)
                    );
                }
                continue;
            }
        };
        let local = stream.local_addr().map(|a| a.ip()).ok();
        let table = table.clone();
        let killed = killed.clone();
        tokio::spawn(async move {
            let is_local = is_local_peer(peer.ip(), local);
            if let Some(kill) = answer(stream, admitted, &table, port, is_local, relaxed).await
                && kill
            {
                let _ = killed.send(()).await;
            }
        });
    }
}

fn initial_creation() -> u32 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as u32)
        .unwrap_or(1);
    now.max(4)
}

/// Registration and kill are for the local host only, as in epmd.
fn is_local_peer(peer: IpAddr, local: Option<IpAddr>) -> bool {
    peer.is_loopback()
        || Some(peer) == local
        || matches!(peer, IpAddr::V6(v6) if v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback()))
}

/// What a request asks of the daemon.
enum Asked {
    Register {
        name: String,
        entry: Entry,
    },
    Lookup(String),
    Names,
    Kill,
    /// Malformed, unknown, or not allowed from where it came: the
    /// connection is closed without an answer.
    Nothing,
}

impl Asked {
    /// Reads a request's packet (its kind, then its body). Registering and
    /// stopping the daemon are for the local host only, as in epmd.
    fn parse(packet: &[u8], is_local: bool) -> Self {
        let Some((&kind, body)) = packet.split_first() else {
            return Self::Nothing;
        };
        match kind {
            ALIVE2_REQ if is_local => parse_alive2(body).map_or(Self::Nothing, |(name, entry)| {
                Self::Register { name, entry }
            }),
            PORT_PLEASE2_REQ => Self::Lookup(
                String::from_utf8_lossy(body.strip_suffix(&[0]).unwrap_or(body)).into_owned(),
            ),
            NAMES_REQ => Self::Names,
            KILL_REQ if is_local => Self::Kill,
            _ => Self::Nothing,
        }
    }
}

/// Serves one connection, `admitted` under the connection cap. Returns
/// `Some(true)` when it asked the daemon to stop.
async fn answer(
    mut stream: TcpStream,
    admitted: AddressAdmitted,
    table: &Mutex<Table>,
    own_port: u16,
    is_local: bool,
    relaxed: bool,
) -> Option<bool> {
    let packet = tokio::time::timeout(REQUEST_TIMEOUT, read_request(&mut stream))
        .await
        .ok()??;
    match Asked::parse(&packet, is_local) {
        Asked::Register { name, entry } => {
            // A registration lasts as long as its node: it counts against
            // the registrations' bound, not the connections'.
            drop(admitted);
            alive2(stream, table, name, entry).await;
            None
        }
        Asked::Lookup(name) => {
            let reply = lock(table).lookup_reply(&name);
            let _ = stream.write_all(&reply).await;
            None
        }
        Asked::Names => {
            let reply = lock(table).names_reply(own_port);
            let _ = stream.write_all(&reply).await;
            None
        }
        Asked::Kill => {
            let allowed = relaxed || lock(table).nodes.is_empty();
            let _ = stream.write_all(if allowed { b"OK" } else { b"NO" }).await;
            Some(allowed)
        }
        Asked::Nothing => None,
    }
}

async fn read_request<R: AsyncRead + Unpin>(stream: &mut R) -> Option<Vec<u8>> {
    let mut length = [0u8; 2];
    stream.read_exact(&mut length).await.ok()?;
    let length = usize::from(u16::from_be_bytes(length));
    if length == 0 || length > MAX_REQUEST {
        return None;
    }
    let mut packet = vec![0u8; length];
    stream.read_exact(&mut packet).await.ok()?;
    Some(packet)
}

fn port2_reply(name: &str, entry: &Entry) -> Vec<u8> {
    let mut reply = vec![PORT2_RESP, 0];
    reply.extend_from_slice(&entry.port.to_be_bytes());
    reply.push(entry.node_type);
    reply.push(entry.protocol);
    reply.extend_from_slice(&entry.highest.to_be_bytes());
    reply.extend_from_slice(&entry.lowest.to_be_bytes());
    reply.extend_from_slice(&(name.len() as u16).to_be_bytes());
    reply.extend_from_slice(name.as_bytes());
    reply.extend_from_slice(&(entry.extra.len() as u16).to_be_bytes());
    reply.extend_from_slice(&entry.extra);
    reply
}

/// Whether the daemon registers `name`: at most 255 bytes, and nothing that
/// could break a line of the names listing (a newline in a name would
/// forge another node's line) or hide in one (control characters,
/// whitespace). Erlang's own names are letters, digits, `_` and `-`.
fn is_registrable(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_BYTES
        && !name.chars().any(|c| c.is_control() || c.is_whitespace())
}

/// An `ALIVE2_REQ` body, parsed.
fn parse_alive2(body: &[u8]) -> Option<(String, Entry)> {
    let u16_at = |at: usize| Some(u16::from_be_bytes([*body.get(at)?, *body.get(at + 1)?]));
    let port = u16_at(0)?;
    let node_type = *body.get(2)?;
    let protocol = *body.get(3)?;
    let highest = u16_at(4)?;
    let lowest = u16_at(6)?;
    let name_len = usize::from(u16_at(8)?);
    let name = body.get(10..10 + name_len)?;
    let extra_len = usize::from(u16_at(10 + name_len)?);
    let extra = body.get(12 + name_len..12 + name_len + extra_len)?;
    let name = std::str::from_utf8(name).ok()?;
    if !is_registrable(name) {
        return None;
    }
    Some((
        name.to_string(),
        Entry {
            port,
            node_type,
            protocol,
            highest,
            lowest,
            extra: extra.to_vec(),
            holder: 0,
            uid: None,
            evict: Arc::default(),
        },
    ))
}

impl Table {
    /// Registers `name` (taking it back from a squatter when `entry`'s user
    /// registered it first), and returns the registration's holder and
    /// creation; or the refusal's result code.
    fn register(&mut self, name: &str, mut entry: Entry) -> Result<(u64, u32), u8> {
        take_back_from_squatter(self, name, entry.uid);
        if self.nodes.iter().any(|(registered, _)| registered == name) {
            return Err(REFUSED_NAME_TAKEN);
        }
        if self.nodes.len() >= MAX_REGISTRATIONS {
            tracing::warn!(
                "port mapper: refused to register `{}`: {MAX_REGISTRATIONS} names are registered, \
                 the bound",
                name.escape_debug()
            );
            return Err(REFUSED_FULL);
        }
        self.next_holder += 1;
        self.creation = self.creation.wrapping_add(1).max(4);
        entry.holder = self.next_holder;
        if let Some(uid) = entry.uid
            && self.owners.len() < MAX_OWNERS_REMEMBERED
        {
            self.owners.entry(name.to_string()).or_insert(uid);
        }
        self.nodes.push((name.to_string(), entry));
        Ok((self.next_holder, self.creation))
    }

    /// Ends the registration held by `holder`, if it still stands.
    fn release(&mut self, holder: u64) {
        self.nodes.retain(|(_, entry)| entry.holder != holder);
    }

    fn lookup_reply(&self, name: &str) -> Vec<u8> {
        self.nodes
            .iter()
            .find(|(registered, _)| registered == name)
            .map(|(name, entry)| port2_reply(name, entry))
            .unwrap_or_else(|| vec![PORT2_RESP, 1])
    }

    fn names_reply(&self, own_port: u16) -> Vec<u8> {
        let mut reply = u32::from(own_port).to_be_bytes().to_vec();
        for (name, entry) in self.nodes.iter().rev() {
            reply.extend_from_slice(format!("name {name} at port {}\n", entry.port).as_bytes());
        }
        reply
    }
}

/// The answer to a registration: its result, and the creation in the form
/// the registrant's highest version reads.
fn registration_reply(highest: u16, registered: Result<(u64, u32), u8>) -> Vec<u8> {
    let (result, creation) = match registered {
        Ok((_, creation)) => (0u8, creation),
        Err(refusal) => (refusal, 99),
    };
    if highest >= 6 {
        let mut reply = vec![ALIVE2_X_RESP, result];
        reply.extend_from_slice(&creation.to_be_bytes());
        reply
    } else {
        let mut reply = vec![ALIVE2_RESP, result];
        reply.extend_from_slice(&((creation % 3 + 1) as u16).to_be_bytes());
        reply
    }
}

/// Registers a node for as long as its connection stays open.
async fn alive2(mut stream: TcpStream, table: &Mutex<Table>, name: String, mut entry: Entry) {
    entry.uid = match (stream.peer_addr(), stream.local_addr()) {
        (Ok(peer), Ok(local)) => socket_owner::uid_of_peer(peer, local),
        _ => None,
    };
    let highest = entry.highest;
    let evict = entry.evict.clone();
    let registered = lock(table).register(&name, entry);
    let _ = stream
        .write_all(&registration_reply(highest, registered))
        .await;
    let Ok((holder, _)) = registered else {
        return;
    };
    // Held until the node closes it (anything it sends ends it too), or
    // the name's owner takes it back.
    let mut byte = [0u8; 1];
    tokio::select! {
        _ = stream.read(&mut byte) => {}
        () = evict.notified() => {}
    }
    lock(table).release(holder);
}

/// When `name` is held by a process of another user than the one that
/// registered it first, and `uid` is that first one: ends the holder's
/// registration, so the name's owner gets it back. Any local user may
/// register a name (as with Erlang's epmd); this keeps one from squatting
/// the name of a node that ran here and stopping it from starting again.
fn take_back_from_squatter(table: &mut Table, name: &str, uid: Option<u32>) {
    let Some(uid) = uid else { return };
    if table.owners.get(name) != Some(&uid) {
        return;
    }
    let Some(at) = table
        .nodes
        .iter()
        .position(|(registered, entry)| registered == name && entry.uid != Some(uid))
    else {
        return;
    };
    let (_, squatter) = table.nodes.remove(at);
    squatter.evict.notify_one();
    tracing::warn!(
        "port mapper: `{}` was held by a process of uid {}; its owner, uid {uid}, takes it back",
        name.escape_debug(),
        squatter
            .uid
            .map_or_else(|| "unknown".to_string(), |u| u.to_string())
    );
}

fn lock(table: &Mutex<Table>) -> std::sync::MutexGuard<'_, Table> {
    table.lock().unwrap_or_else(|p| p.into_inner())
}

/// The fuzz target `port_mapper` (`fuzz/`): `data` is a stream of requests
/// as clients send them (a 2-byte length, then the packet), answered by a
/// daemon's table. Every answer must read back with our own client as what
/// the table holds: a registered name is found at its port, and listed
/// once, on a line of its own.
#[cfg(any(test, feature = "fuzzing"))]
pub fn fuzz_requests(data: &[u8]) {
    let mut table = Table {
        creation: 4,
        ..Table::default()
    };
    let mut holders = Vec::new();
    let mut rest = data;
    while let [high, low, tail @ ..] = rest {
        let length = usize::from(u16::from_be_bytes([*high, *low])).min(tail.len());
        let (packet, next) = tail.split_at(length);
        rest = next;
        match Asked::parse(packet, true) {
            Asked::Register { name, mut entry } => {
                // Two local users, so that names are also taken back.
                entry.uid = Some(u32::from(*high & 1));
                let (port, highest) = (entry.port, entry.highest);
                let registered = table.register(&name, entry);
                let reply = registration_reply(highest, registered);
                assert_eq!(reply.get(1) == Some(&0), registered.is_ok());
                let Ok((holder, _)) = registered else {
                    continue;
                };
                holders.push(holder);
                assert_eq!(read_port2(&table.lookup_reply(&name)), Ok(Some(port)));
                let listed = read_names(&table.names_reply(DEFAULT_PORT)).expect("names");
                assert_eq!(listed.len(), table.nodes.len(), "a line per name");
                assert!(listed.contains(&(name, port)));
            }
            Asked::Lookup(name) => {
                let found = read_port2(&table.lookup_reply(&name)).expect("a lookup's answer");
                assert_eq!(found.is_some(), table.nodes.iter().any(|(n, _)| *n == name));
            }
            Asked::Names => {
                let listed = read_names(&table.names_reply(DEFAULT_PORT)).expect("names");
                assert_eq!(listed.len(), table.nodes.len(), "a line per name");
            }
            // Stands for a registered node going away.
            Asked::Kill => {
                if let Some(holder) = holders.pop() {
                    table.release(holder);
                }
            }
            Asked::Nothing => {}
        }
        assert!(table.nodes.len() <= MAX_REGISTRATIONS);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn daemon(relaxed: bool) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(serve(listener, relaxed));
        addr
    }

    #[tokio::test]
    async fn names_are_registered_looked_up_and_released_on_close() {
        let addr = daemon(false).await;
        let registration = register(addr, "node_a", 5555).await.expect("registered");
        assert_eq!(
            port_please(addr, "node_a").await.expect("lookup"),
            Some(5555)
        );
        assert_eq!(port_please(addr, "node_b").await.expect("lookup"), None);
        assert!(matches!(
            register(addr, "node_a", 6666).await,
            Err(EpmdError::NameTaken(_))
        ));
        assert_eq!(
            names(addr).await.expect("names"),
            vec![("node_a".to_string(), 5555)]
        );
        assert!(
            !kill(addr).await.expect("answered"),
            "refused while a node is registered"
        );
        drop(registration);
        for _ in 0..100 {
            if names(addr).await.expect("names").is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(names(addr).await.expect("names").is_empty());
        assert!(kill(addr).await.expect("answered"));
    }

    #[tokio::test]
    async fn registrations_are_bounded_and_a_refused_one_is_not_held() {
        let addr = daemon(false).await;
        let mut held = Vec::new();
        for i in 0..MAX_REGISTRATIONS {
            held.push(register(addr, &format!("n{i}"), 1000).await.expect("room"));
        }
        let refused = register(addr, "one_more", 1000).await.err().expect("full");
        assert!(
            refused.to_string().contains("as many names as it may"),
            "{refused}"
        );
        assert_eq!(names(addr).await.expect("names").len(), MAX_REGISTRATIONS);
        held.pop();
        for _ in 0..100 {
            if register(addr, "one_more", 1000).await.is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("a freed place was not given to the next registration");
    }

    #[tokio::test]
    async fn malformed_requests_are_closed_without_an_answer() {
        let addr = daemon(false).await;
        for bytes in [
            &[0u8, 0][..],
            &[0xff, 0xff, 1, 2],
            &[0, 3, ALIVE2_REQ, 1, 2],
            &[0, 1, 99],
        ] {
            let mut stream = TcpStream::connect(addr).await.expect("connect");
            stream.write_all(bytes).await.expect("write");
            stream.shutdown().await.expect("shutdown");
            let mut answer = Vec::new();
            let _ = stream.read_to_end(&mut answer).await;
            assert!(answer.is_empty(), "{bytes:?} got {answer:?}");
        }
        assert!(names(addr).await.expect("still serving").is_empty());
    }

    #[test]
    fn an_alive2_body_parses_as_erlang_sends_it() {
        // A registration of `foo` on port 5555, versions 6..5, no extra, as
        // captured from Erlang's own client.
        let body = [
            0x15, 0xb3, 0x4d, 0x00, 0x00, 0x06, 0x00, 0x05, 0x00, 0x03, b'f', b'o', b'o', 0x00,
            0x00,
        ];
        let (name, entry) = parse_alive2(&body).expect("valid");
        assert_eq!(name, "foo");
        assert_eq!(entry.port, 5555);
        assert_eq!(entry.highest, 6);
        assert!(parse_alive2(&body[..12]).is_none(), "truncated");
        // A name that would forge a line of the names listing, or hide in
        // one, is not registered.
        for name in [&b"fo\n"[..], b"f o", b"fo\0", b"f\to"] {
            let mut forged = body;
            forged[10..13].copy_from_slice(name);
            assert!(parse_alive2(&forged).is_none(), "{name:?}");
        }
    }
}
