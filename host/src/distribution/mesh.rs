//! The mesh: this node's links to the other members, and the listener that
//! lets peers and tools in.
//!
//! One link per pair of members. When two nodes dial each other at the same
//! moment, both end up with two links; each keeps the one dialled by the
//! node with the smaller name, so they agree without talking about it.
//! Hidden links (tools) are kept apart: they are never members.
//!
//! The layer above says which peers it wants linked ([`Mesh::want`]); the
//! mesh redials them with a growing back-off whenever their link is down,
//! and tells the layer above when links come up and go down.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::cookie::Cookie;
use super::epmd;
use super::frame::{self, FrameReader};
use super::gate::{self, Failure, HandshakeGate, HandshakeSlot};
use super::handshake::{self, ClientHandshake, HandshakeError, Pacing, ServerHandshake, Side};
use super::link::{Link, LinkHandler, Liveness};
use super::name::NodeName;
use super::tls::{BoxedStream, Tls};
use crate::budget::{FailureSummary, and_more, refuse_now};
use crate::metrics::Series;

/// How long a new connection may take to send its first handshake message
/// (and its TLS handshake, with TLS): a stranger that connects and sends
/// nothing, or drips bytes, gives its slot back after this, not after the
/// whole handshake's time. A real peer sends its `Hello` at once.
const FIRST_FRAME_DEADLINE: Duration = Duration::from_secs(2);
/// How often the listener logs failures from one address (and of one
/// kind): once per interval, with the count.
const FAILURE_LOG_INTERVAL: Duration = Duration::from_secs(10);
/// Longest wait between two attempts to dial a wanted peer.
const MAX_REDIAL_BACKOFF: Duration = Duration::from_secs(2);
const FIRST_REDIAL_BACKOFF: Duration = Duration::from_millis(100);

/// What the layer above learns from the mesh, on top of what arrives on
/// each link.
pub trait MeshEvents: LinkHandler {
    /// A member link is up (after the tie-break: called for the link kept).
    fn link_up(&self, link: &Arc<Link>);
}

/// How this node finds and authenticates peers.
#[derive(Clone)]
pub struct Dialer {
    pub me: NodeName,
    pub cookie: Cookie,
    pub tls: Option<Arc<Tls>>,
    /// The port mapper's port on every host (4369, or `ERL_EPMD_PORT`).
    pub epmd_port: u16,
    /// Peers reached at a fixed address instead of through their host's
    /// port mapper (`--peer-address NAME=HOST:PORT`).
    pub fixed_addresses: HashMap<NodeName, SocketAddr>,
    pub handshake_timeout: Duration,
    pub liveness: Liveness,
}

/// Why a peer could not be reached.
#[derive(Debug, Clone, thiserror::Error)]
pub enum DialError {
    #[error("cannot find {peer}: {reason}")]
    NotFound { peer: NodeName, reason: String },
    #[error("cannot connect to {peer} at {addr}: {reason}")]
    Connect {
        peer: NodeName,
        addr: SocketAddr,
        reason: String,
    },
    #[error("{peer}: {error}")]
    Handshake {
        peer: NodeName,
        error: HandshakeError,
    },
}

impl DialError {
    /// Whether the peer turned the connection away for want of a handshake
    /// slot (it may take it a moment later).
    pub fn is_busy(&self) -> bool {
        matches!(
            self,
            DialError::Handshake {
                error: HandshakeError::RefusedByPeer(reason),
                ..
            } if reason.starts_with(gate::BUSY)
        )
    }

    /// Whether the peer refused our cookie.
    pub fn is_wrong_cookie(&self) -> bool {
        matches!(
            self,
            DialError::Handshake {
                error: HandshakeError::WrongCookie,
                ..
            }
        )
    }
}

impl Dialer {
    /// Where `peer` listens.
    pub async fn locate(&self, peer: &NodeName) -> Result<SocketAddr, DialError> {
        if let Some(addr) = self.fixed_addresses.get(peer) {
            return Ok(*addr);
        }
        let not_found = |reason: String| DialError::NotFound {
            peer: peer.clone(),
            reason,
        };
        let mappers = peer
            .resolve_host_async(self.epmd_port)
            .await
            .map_err(not_found)?;
        let mapper = mappers[0];
        match epmd::port_please(mapper, peer.alive()).await {
            Ok(Some(port)) => Ok(SocketAddr::new(mapper.ip(), port)),
            Ok(None) => Err(not_found(format!(
                "no node named `{}` is registered with the port mapper on {mapper} \
                 (is it running?)",
                peer.alive()
            ))),
            Err(e) => Err(not_found(e.to_string())),
        }
    }

    /// Dials `peer` and authenticates, as a member or (`hidden`) as a tool.
    /// A peer too busy to take the handshake is tried again, with a growing
    /// pause, for up to the handshake timeout.
    pub async fn dial(
        &self,
        peer: &NodeName,
        hidden: bool,
        handler: Arc<dyn LinkHandler>,
    ) -> Result<Arc<Link>, DialError> {
        let give_up = Instant::now() + self.handshake_timeout;
        let mut pause = FIRST_REDIAL_BACKOFF;
        loop {
            match self.dial_once(peer, hidden, handler.clone()).await {
                Err(error) if error.is_busy() && Instant::now() + pause < give_up => {
                    tokio::time::sleep(pause).await;
                    pause *= 2;
                }
                done => return done,
            }
        }
    }

    async fn dial_once(
        &self,
        peer: &NodeName,
        hidden: bool,
        handler: Arc<dyn LinkHandler>,
    ) -> Result<Arc<Link>, DialError> {
        let addr = self.locate(peer).await?;
        let connect_error = |reason: String| DialError::Connect {
            peer: peer.clone(),
            addr,
            reason,
        };
        let tcp = tokio::time::timeout(self.handshake_timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| connect_error("timed out".into()))?
            .map_err(|e| connect_error(e.to_string()))?;
        let _ = tcp.set_nodelay(true);
        let handshake_error = |error| DialError::Handshake {
            peer: peer.clone(),
            error,
        };
        let shaken = tokio::time::timeout(self.handshake_timeout, async {
            let stream: BoxedStream = match &self.tls {
                Some(tls) => tls
                    .connect(peer.host(), tcp)
                    .await
                    .map_err(HandshakeError::Connection)?,
                None => Box::new(tcp),
            };
            let (read, mut write) = tokio::io::split(stream);
            let mut reader = FrameReader::new(read, frame::HANDSHAKE_MAX_FRAME);
            let (client, hello) =
                ClientHandshake::start(&self.me, &self.cookie, hidden, Some(peer))?;
            let mut side = Side::Client(client);
            let pacing = Pacing::plain(self.handshake_timeout);
            let peer = handshake::drive(&mut side, hello, &mut reader, &mut write, pacing).await?;
            Ok::<_, HandshakeError>((peer, reader, write))
        })
        .await
        .map_err(|_| handshake_error(HandshakeError::TimedOut(self.handshake_timeout)))?
        .map_err(handshake_error)?;
        let (authenticated, reader, write) = shaken;
        Ok(Link::start(
            authenticated,
            true,
            reader,
            write,
            handler,
            self.liveness,
        ))
    }
}

/// A peer the mesh keeps dialling while its link is down.
struct Wanted {
    next_attempt: Instant,
    backoff: Duration,
    dialling: bool,
    /// Whether the last failure was logged (one line per outage, not one
    /// per attempt).
    reported: bool,
}

pub struct Mesh {
    dialer: Dialer,
    events: OnceLock<Arc<dyn MeshEvents>>,
    members: Mutex<HashMap<NodeName, Arc<Link>>>,
    hidden: Mutex<Vec<Arc<Link>>>,
    wanted: Mutex<HashMap<NodeName, Wanted>>,
    gate: Arc<HandshakeGate>,
    /// Failed handshakes, logged once per address and kind per interval.
    failures: FailureSummary,
    stop: CancellationToken,
}

impl Mesh {
    pub fn new(dialer: Dialer) -> Arc<Self> {
        Arc::new(Self {
            dialer,
            events: OnceLock::new(),
            members: Mutex::new(HashMap::new()),
            hidden: Mutex::new(Vec::new()),
            wanted: Mutex::new(HashMap::new()),
            gate: Arc::default(),
            failures: FailureSummary::new(FAILURE_LOG_INTERVAL),
            stop: CancellationToken::new(),
        })
    }

    /// Sets who hears about links; call once, before [`Mesh::serve`].
    pub fn set_events(&self, events: Arc<dyn MeshEvents>) {
        let _ = self.events.set(events);
    }

    pub fn me(&self) -> &NodeName {
        &self.dialer.me
    }

    /// The open link to member `peer`, if any.
    pub fn link(&self, peer: &NodeName) -> Option<Arc<Link>> {
        self.lock_members()
            .get(peer)
            .filter(|link| link.is_open())
            .cloned()
    }

    /// Every open member link.
    pub fn links(&self) -> Vec<Arc<Link>> {
        self.lock_members()
            .values()
            .filter(|link| link.is_open())
            .cloned()
            .collect()
    }

    /// The link to member `peer`, dialling it if there is none.
    pub async fn connect(self: &Arc<Self>, peer: &NodeName) -> Result<Arc<Link>, DialError> {
        if let Some(link) = self.link(peer) {
            return Ok(link);
        }
        let link = self.dialer.dial(peer, false, self.clone()).await?;
        Ok(self.register(link))
    }

    /// The peers to keep linked: the mesh redials them while their link is
    /// down, and stops for those no longer listed.
    pub fn want(self: &Arc<Self>, peers: impl IntoIterator<Item = NodeName>) {
        let peers: HashSet<NodeName> = peers
            .into_iter()
            .filter(|peer| *peer != self.dialer.me)
            .collect();
        let mut wanted = self.lock_wanted();
        wanted.retain(|peer, _| peers.contains(peer));
        for peer in peers {
            wanted.entry(peer).or_insert_with(|| Wanted {
                next_attempt: Instant::now(),
                backoff: FIRST_REDIAL_BACKOFF,
                dialling: false,
                reported: false,
            });
        }
    }

    /// Accepts connections until [`Mesh::shut_down`], and keeps the wanted
    /// peers linked.
    pub async fn serve(self: Arc<Self>, listener: TcpListener) {
        tokio::spawn(self.clone().redial_loop());
        loop {
            let (stream, addr) = tokio::select! {
                _ = self.stop.cancelled() => return,
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        tracing::warn!(node = %self.dialer.me, "distribution accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let slot = match self.gate.admit(addr.ip()) {
                Ok(slot) => slot,
                Err(why) => {
                    refuse_now(&stream, &handshake::refusal(&why));
                    self.log_failure(addr.ip(), "busy", || {
                        format!("refused a distribution connection from {addr}: {why}")
                    });
                    continue;
                }
            };
            let mesh = self.clone();
            tokio::spawn(async move {
                mesh.accept(stream, addr, slot).await;
            });
        }
    }

    /// Its metrics: the handshake gate's.
    pub fn series(&self) -> Vec<Series> {
        self.gate.series()
    }

    /// Logs a failure from `address`, once per kind per interval.
    fn log_failure(&self, address: IpAddr, kind: &str, line: impl FnOnce() -> String) {
        if let Some(unlogged) = self.failures.record(&format!("{address} {kind}")) {
            tracing::warn!(node = %self.dialer.me, "{}{}", line(), and_more(unlogged));
        }
    }

    /// Closes every link and stops accepting and dialling.
    pub fn shut_down(&self, reason: &str) {
        self.stop.cancel();
        for link in self.links() {
            link.close(reason);
        }
        let hidden = self.hidden.lock().unwrap_or_else(|p| p.into_inner());
        for link in hidden.iter() {
            link.close(reason);
        }
    }

    async fn accept(self: &Arc<Self>, tcp: TcpStream, addr: SocketAddr, slot: HandshakeSlot) {
        let _ = tcp.set_nodelay(true);
        let me = self.dialer.me.clone();
        let timeout = self.dialer.handshake_timeout;
        let mut claimed: Option<NodeName> = None;
        let pacing = Pacing {
            first_frame_within: FIRST_FRAME_DEADLINE,
            pause: |error: &HandshakeError| slot.refusal_delay(failure_of(error)),
        };
        // The whole handshake's time, and the longest pause before a refusal.
        let outcome = tokio::time::timeout(timeout + gate::MAX_FAILURE_DELAY, async {
            // A stranger that sends nothing gives its slot back soon.
            let stream: BoxedStream = match &self.dialer.tls {
                Some(tls) => tokio::time::timeout(FIRST_FRAME_DEADLINE, tls.accept(tcp))
                    .await
                    .map_err(|_| HandshakeError::Silent(FIRST_FRAME_DEADLINE))?
                    .map_err(HandshakeError::Connection)?,
                None => Box::new(tcp),
            };
            let (read, mut write) = tokio::io::split(stream);
            let mut reader = FrameReader::new(read, frame::HANDSHAKE_MAX_FRAME);
            let mut side = Side::Server(ServerHandshake::new(&me, &self.dialer.cookie)?);
            let result = tokio::time::timeout(
                timeout,
                handshake::drive(&mut side, Vec::new(), &mut reader, &mut write, pacing),
            )
            .await
            .unwrap_or(Err(HandshakeError::TimedOut(timeout)));
            if let Side::Server(server) = &side {
                claimed = server.claimed_peer().cloned();
            }
            Ok::<_, HandshakeError>((result?, reader, write))
        })
        .await
        .unwrap_or(Err(HandshakeError::TimedOut(timeout)));
        let who = match &claimed {
            Some(name) => format!("{name} ({addr})"),
            None => addr.to_string(),
        };
        let error = match outcome {
            Ok((peer, reader, write)) => {
                slot.succeeded();
                drop(slot);
                let link = Link::start(
                    peer,
                    false,
                    reader,
                    write,
                    self.clone(),
                    self.dialer.liveness,
                );
                self.register(link);
                return;
            }
            Err(error) => error,
        };
        slot.failed();
        drop(slot);
        let kind = match failure_of(&error) {
            Failure::WrongCookie => "cookie",
            Failure::Garbage => "garbage",
            Failure::Stalled => "stalled",
        };
        self.log_failure(addr.ip(), kind, || match &error {
            HandshakeError::WrongCookie => {
                format!("refused a connection from {who}: the cookies differ")
            }
            HandshakeError::TimedOut(_) => format!(
                "dropped a connection from {who}: the handshake did not finish within {timeout:?}"
            ),
            error => format!("dropped a connection from {who}: {error}"),
        });
    }

    /// Files a new link: hidden ones apart, members through the tie-break.
    /// Returns the link kept for that peer.
    fn register(self: &Arc<Self>, link: Arc<Link>) -> Arc<Link> {
        if link.is_hidden() {
            let mut hidden = self.hidden.lock().unwrap_or_else(|p| p.into_inner());
            hidden.retain(|link| link.is_open());
            hidden.push(link.clone());
            return link;
        }
        let peer = link.peer().clone();
        let (kept, dropped) = {
            let mut members = self.lock_members();
            match members.get(&peer) {
                Some(existing) if existing.is_open() => {
                    // Keep the link dialled by the smaller name.
                    let smaller_dials = self.dialer.me < peer;
                    let keep_new = link.dialled() == smaller_dials;
                    if keep_new {
                        let old = members.insert(peer.clone(), link.clone());
                        (link, old)
                    } else {
                        (existing.clone(), Some(link))
                    }
                }
                _ => {
                    members.insert(peer.clone(), link.clone());
                    (link, None)
                }
            }
        };
        if let Some(dropped) = dropped {
            dropped.close("a second link to the same peer (the other one is kept)");
        }
        if kept.is_open()
            && let Some(events) = self.events.get()
        {
            events.link_up(&kept);
        }
        kept
    }

    async fn redial_loop(self: Arc<Self>) {
        let mut ticks = tokio::time::interval(FIRST_REDIAL_BACKOFF);
        loop {
            tokio::select! {
                _ = self.stop.cancelled() => return,
                _ = ticks.tick() => {}
            }
            let now = Instant::now();
            let due: Vec<NodeName> = {
                let mut wanted = self.lock_wanted();
                let members = self.lock_members();
                wanted
                    .iter_mut()
                    .filter(|(peer, state)| {
                        !state.dialling
                            && state.next_attempt <= now
                            && !members.get(*peer).is_some_and(|link| link.is_open())
                    })
                    .map(|(peer, state)| {
                        state.dialling = true;
                        peer.clone()
                    })
                    .collect()
            };
            for peer in due {
                let mesh = self.clone();
                tokio::spawn(async move {
                    let result = mesh.connect(&peer).await;
                    mesh.dialled(&peer, result.err());
                });
            }
        }
    }

    /// Records the outcome of a redial.
    fn dialled(&self, peer: &NodeName, error: Option<DialError>) {
        let mut wanted = self.lock_wanted();
        let Some(state) = wanted.get_mut(peer) else {
            return;
        };
        state.dialling = false;
        match error {
            None => {
                if state.reported {
                    tracing::info!(node = %self.dialer.me, peer = %peer, "reached {peer} again");
                }
                state.backoff = FIRST_REDIAL_BACKOFF;
                state.reported = false;
            }
            Some(error) => {
                if !state.reported {
                    tracing::warn!(node = %self.dialer.me, peer = %peer, "cannot reach {peer}, will keep trying: {error}");
                    state.reported = true;
                }
                state.next_attempt = Instant::now() + state.backoff;
                state.backoff = (state.backoff * 2).min(MAX_REDIAL_BACKOFF);
            }
        }
    }

    fn lock_members(&self) -> std::sync::MutexGuard<'_, HashMap<NodeName, Arc<Link>>> {
        self.members.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lock_wanted(&self) -> std::sync::MutexGuard<'_, HashMap<NodeName, Wanted>> {
        self.wanted.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The mesh stands between each link and the layer above, so it can forget
/// links as they close.
impl LinkHandler for Mesh {
    fn request(&self, link: Arc<Link>, body: Bytes) -> BoxFuture<'static, Vec<u8>> {
        match self.events.get() {
            Some(events) => events.request(link, body),
            None => Box::pin(async { Vec::new() }),
        }
    }

    fn message(&self, link: &Arc<Link>, body: Bytes) {
        if let Some(events) = self.events.get() {
            events.message(link, body);
        }
    }

    fn link_down(&self, link: &Arc<Link>) {
        let was_member = {
            let mut members = self.lock_members();
            let current = members
                .get(link.peer())
                .is_some_and(|kept| Arc::ptr_eq(kept, link));
            if current {
                members.remove(link.peer());
            }
            current
        };
        if was_member {
            let reason = link.close_reason().unwrap_or_default();
            tracing::info!(node = %self.dialer.me, peer = %link.peer(), "link to {} down: {reason}", link.peer());
            if let Some(events) = self.events.get() {
                events.link_down(link);
            }
        }
    }
}

/// What kind of failure ended a handshake, for the gate's record.
fn failure_of(error: &HandshakeError) -> Failure {
    match error {
        HandshakeError::WrongCookie => Failure::WrongCookie,
        HandshakeError::TimedOut(_) | HandshakeError::Silent(_) | HandshakeError::Connection(_) => {
            Failure::Stalled
        }
        HandshakeError::RefusedByPeer(_)
        | HandshakeError::Refused(_)
        | HandshakeError::ImpostorPeer
        | HandshakeError::Garbage(_) => Failure::Garbage,
    }
}
