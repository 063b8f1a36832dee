//! The handshake that opens every distribution connection: protocol version
//! negotiation, then a mutual challenge and response keyed by the cookie.
//!
//! ```text
//! client                                    server
//!   Hello {versions, name, hidden, nonce_c} ──▶
//!                                         ◀── Challenge {version, name, nonce_s}
//!   Proof {HMAC(cookie, "client", …)}     ──▶   checks it: wrong cookie ─▶ Refused
//!                                         ◀── Accepted {HMAC(cookie, "server", …)}
//!   checks it: an impostor is dropped
//! ```
//!
//! Each MAC covers both nonces, both names, the version, the connection kind
//! and which side made it, so the cookie never crosses the wire, a recorded
//! handshake cannot be replayed (the other side's nonce is fresh), and one
//! side's proof cannot be reflected back as the other's.
//!
//! Both sides are sans-IO state machines ([`ClientHandshake`],
//! [`ServerHandshake`]) fed one frame at a time; [`run_client`] and
//! [`run_server`] drive them over a connection.

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use super::cookie::Cookie;
use super::frame::{self, FrameReader};
use super::name::NodeName;

/// The versions of the distribution protocol this build speaks.
pub const MIN_VERSION: u16 = 1;
pub const MAX_VERSION: u16 = 1;
/// The first bytes of every `Hello`: "this is our protocol".
const MAGIC: [u8; 4] = *b"OTPW";
const NONCE_BYTES: usize = 32;
type Nonce = [u8; NONCE_BYTES];
type Tag = [u8; 32];

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
enum Message {
    Hello {
        magic: [u8; 4],
        min_version: u16,
        max_version: u16,
        name: String,
        hidden: bool,
        nonce: Nonce,
    },
    Challenge {
        version: u16,
        name: String,
        nonce: Nonce,
    },
    Proof {
        mac: Tag,
    },
    Accepted {
        mac: Tag,
    },
    Refused {
        reason: String,
    },
}

impl Message {
    fn encode(&self) -> Vec<u8> {
        // Encoding plain data into a growable buffer cannot fail.
        frame::encode(&postcard::to_allocvec(self).unwrap_or_default())
    }

    fn decode(bytes: &[u8]) -> Result<Self, HandshakeError> {
        postcard::from_bytes(bytes)
            .map_err(|_| HandshakeError::Garbage("not a handshake message".into()))
    }
}

/// Why a handshake failed. `Refused*` are the peer's or our own decision;
/// the rest are a broken or hostile peer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeError {
    #[error("refused: the cookies differ")]
    WrongCookie,
    #[error("the peer refused the connection: {0}")]
    RefusedByPeer(String),
    #[error("refused: {0}")]
    Refused(String),
    #[error("the peer could not prove it knows the cookie")]
    ImpostorPeer,
    #[error("the peer sent garbage: {0}")]
    Garbage(String),
    #[error("{0}")]
    Connection(String),
    #[error("the handshake did not finish within {0:?}")]
    TimedOut(std::time::Duration),
    #[error("the peer sent no complete handshake message within {0:?} of connecting")]
    Silent(std::time::Duration),
}

/// Who is on the other side of an authenticated connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub name: NodeName,
    /// A tool (remote console, one-shot command), not a cluster member.
    pub hidden: bool,
    pub version: u16,
}

/// What a state machine wants done after a frame.
#[derive(Debug)]
pub enum Step {
    /// Send these bytes and wait for the next frame.
    Send(Vec<u8>),
    /// Send these bytes (possibly none): the peer is authenticated.
    Done(Vec<u8>, Peer),
    /// Send these bytes (a refusal), then close: the handshake failed.
    Fail(Vec<u8>, HandshakeError),
}

fn fresh_nonce() -> Result<Nonce, HandshakeError> {
    let mut nonce = [0u8; NONCE_BYTES];
    getrandom::fill(&mut nonce)
        .map_err(|e| HandshakeError::Connection(format!("no randomness for a nonce: {e}")))?;
    Ok(nonce)
}

struct Transcript<'a> {
    version: u16,
    client: &'a str,
    server: &'a str,
    client_nonce: &'a Nonce,
    server_nonce: &'a Nonce,
    hidden: bool,
}

impl Transcript<'_> {
    fn mac(&self, cookie: &Cookie, side: &[u8]) -> Hmac<Sha256> {
        // HMAC takes keys of any length.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(cookie.secret())
            .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
        mac.update(b"otp-wasm handshake/");
        mac.update(side);
        mac.update(&self.version.to_be_bytes());
        for name in [self.client, self.server] {
            mac.update(&(name.len() as u32).to_be_bytes());
            mac.update(name.as_bytes());
        }
        mac.update(self.client_nonce);
        mac.update(self.server_nonce);
        mac.update(&[u8::from(self.hidden)]);
        mac
    }

    fn tag(&self, cookie: &Cookie, side: &[u8]) -> Tag {
        self.mac(cookie, side).finalize().into_bytes().into()
    }

    /// Constant-time comparison of a received tag.
    fn verify(&self, cookie: &Cookie, side: &[u8], tag: &Tag) -> bool {
        self.mac(cookie, side).verify_slice(tag).is_ok()
    }
}

const CLIENT_SIDE: &[u8] = b"client";
const SERVER_SIDE: &[u8] = b"server";

/// The side that dialled.
pub struct ClientHandshake {
    me: String,
    cookie: Cookie,
    hidden: bool,
    expected: Option<NodeName>,
    nonce: Nonce,
    state: ClientState,
}

enum ClientState {
    AwaitChallenge,
    AwaitAccepted { peer: Peer, server_nonce: Nonce },
    Finished,
}

impl ClientHandshake {
    /// Starts a handshake as `me` towards `expected` (when known; a name is
    /// checked against what the peer says it is). Returns the `Hello` frame.
    pub fn start(
        me: &NodeName,
        cookie: &Cookie,
        hidden: bool,
        expected: Option<&NodeName>,
    ) -> Result<(Self, Vec<u8>), HandshakeError> {
        let nonce = fresh_nonce()?;
        let hello = Message::Hello {
            magic: MAGIC,
            min_version: MIN_VERSION,
            max_version: MAX_VERSION,
            name: me.to_string(),
            hidden,
            nonce,
        };
        Ok((
            Self {
                me: me.to_string(),
                cookie: cookie.clone(),
                hidden,
                expected: expected.cloned(),
                nonce,
                state: ClientState::AwaitChallenge,
            },
            hello.encode(),
        ))
    }

    pub fn on_frame(&mut self, frame: &[u8]) -> Step {
        match self.advance(frame) {
            Ok(step) => step,
            Err(error) => {
                self.state = ClientState::Finished;
                Step::Fail(Vec::new(), error)
            }
        }
    }

    fn advance(&mut self, frame: &[u8]) -> Result<Step, HandshakeError> {
        let message = Message::decode(frame)?;
        if let Message::Refused { reason } = message {
            return Err(if reason == HandshakeError::WrongCookie.to_string() {
                HandshakeError::WrongCookie
            } else {
                HandshakeError::RefusedByPeer(reason)
            });
        }
        match (&self.state, message) {
            (
                ClientState::AwaitChallenge,
                Message::Challenge {
                    version,
                    name,
                    nonce,
                },
            ) => {
                if !(MIN_VERSION..=MAX_VERSION).contains(&version) {
                    return Err(HandshakeError::Garbage(format!(
                        "the peer chose protocol version {version}, which we did not offer"
                    )));
                }
                let name = NodeName::parse(&name).map_err(HandshakeError::Garbage)?;
                if let Some(expected) = &self.expected
                    && *expected != name
                {
                    return Err(HandshakeError::Refused(format!(
                        "expected {expected} at that address, but the node there is {name}"
                    )));
                }
                let transcript = Transcript {
                    version,
                    client: &self.me,
                    server: &name.to_string(),
                    client_nonce: &self.nonce,
                    server_nonce: &nonce,
                    hidden: self.hidden,
                };
                let proof = Message::Proof {
                    mac: transcript.tag(&self.cookie, CLIENT_SIDE),
                };
                self.state = ClientState::AwaitAccepted {
                    peer: Peer {
                        name,
                        hidden: false,
                        version,
                    },
                    server_nonce: nonce,
                };
                Ok(Step::Send(proof.encode()))
            }
            (ClientState::AwaitAccepted { peer, server_nonce }, Message::Accepted { mac }) => {
                let transcript = Transcript {
                    version: peer.version,
                    client: &self.me,
                    server: &peer.name.to_string(),
                    client_nonce: &self.nonce,
                    server_nonce,
                    hidden: self.hidden,
                };
                if !transcript.verify(&self.cookie, SERVER_SIDE, &mac) {
                    return Err(HandshakeError::ImpostorPeer);
                }
                let peer = peer.clone();
                self.state = ClientState::Finished;
                Ok(Step::Done(Vec::new(), peer))
            }
            _ => Err(HandshakeError::Garbage(
                "unexpected handshake message".into(),
            )),
        }
    }
}

/// The side that accepted.
pub struct ServerHandshake {
    me: String,
    cookie: Cookie,
    nonce: Nonce,
    state: ServerState,
    /// The name the peer gave in its `Hello`.
    claimed: Option<NodeName>,
}

enum ServerState {
    AwaitHello,
    AwaitProof { peer: Peer, client_nonce: Nonce },
    Finished,
}

impl ServerHandshake {
    pub fn new(me: &NodeName, cookie: &Cookie) -> Result<Self, HandshakeError> {
        Ok(Self {
            me: me.to_string(),
            cookie: cookie.clone(),
            nonce: fresh_nonce()?,
            state: ServerState::AwaitHello,
            claimed: None,
        })
    }

    pub fn on_frame(&mut self, frame: &[u8]) -> Step {
        match self.advance(frame) {
            Ok(step) => step,
            Err(error) => {
                self.state = ServerState::Finished;
                // The peer is told why when the reason is ours to give (a
                // wrong cookie, a version we do not speak); garbage gets
                // nothing.
                let refusal = match &error {
                    HandshakeError::WrongCookie => Message::Refused {
                        reason: error.to_string(),
                    }
                    .encode(),
                    HandshakeError::Refused(reason) => Message::Refused {
                        reason: reason.clone(),
                    }
                    .encode(),
                    _ => Vec::new(),
                };
                Step::Fail(refusal, error)
            }
        }
    }

    fn advance(&mut self, frame: &[u8]) -> Result<Step, HandshakeError> {
        let message = Message::decode(frame)?;
        match (&self.state, message) {
            (
                ServerState::AwaitHello,
                Message::Hello {
                    magic,
                    min_version,
                    max_version,
                    name,
                    hidden,
                    nonce,
                },
            ) => {
                if magic != MAGIC {
                    return Err(HandshakeError::Garbage("wrong protocol magic".into()));
                }
                let version = max_version.min(MAX_VERSION);
                if version < min_version.max(MIN_VERSION) {
                    return Err(HandshakeError::Refused(format!(
                        "no common protocol version: the peer speaks {min_version} to \
                         {max_version}, this node {MIN_VERSION} to {MAX_VERSION}"
                    )));
                }
                let name = NodeName::parse(&name)
                    .map_err(|e| HandshakeError::Refused(format!("bad node name: {e}")))?;
                self.claimed = Some(name.clone());
                let challenge = Message::Challenge {
                    version,
                    name: self.me.clone(),
                    nonce: self.nonce,
                };
                self.state = ServerState::AwaitProof {
                    peer: Peer {
                        name,
                        hidden,
                        version,
                    },
                    client_nonce: nonce,
                };
                Ok(Step::Send(challenge.encode()))
            }
            (ServerState::AwaitProof { peer, client_nonce }, Message::Proof { mac }) => {
                let client = peer.name.to_string();
                let transcript = Transcript {
                    version: peer.version,
                    client: &client,
                    server: &self.me,
                    client_nonce,
                    server_nonce: &self.nonce,
                    hidden: peer.hidden,
                };
                if !transcript.verify(&self.cookie, CLIENT_SIDE, &mac) {
                    return Err(HandshakeError::WrongCookie);
                }
                let accepted = Message::Accepted {
                    mac: transcript.tag(&self.cookie, SERVER_SIDE),
                };
                let peer = peer.clone();
                self.state = ServerState::Finished;
                Ok(Step::Done(accepted.encode(), peer))
            }
            _ => Err(HandshakeError::Garbage(
                "unexpected handshake message".into(),
            )),
        }
    }

    /// The name the peer gave in its `Hello`, once it has sent one: for
    /// naming it in the log line when the handshake fails later.
    pub fn claimed_peer(&self) -> Option<&NodeName> {
        self.claimed.as_ref()
    }
}

/// Either side of the handshake, for the driver.
pub enum Side {
    Client(ClientHandshake),
    Server(ServerHandshake),
}

impl Side {
    fn on_frame(&mut self, frame: &[u8]) -> Step {
        match self {
            Side::Client(client) => client.on_frame(frame),
            Side::Server(server) => server.on_frame(frame),
        }
    }
}

/// A refusal to send at once, before any handshake (the listener is busy).
pub fn refusal(reason: &str) -> Vec<u8> {
    Message::Refused {
        reason: reason.to_string(),
    }
    .encode()
}

/// How a driven handshake is bounded, beyond the caller's overall deadline.
pub struct Pacing<P> {
    /// The peer's first message must arrive within this (a server gives a
    /// silent stranger's slot back soon).
    pub first_frame_within: std::time::Duration,
    /// A refusal goes out only after `pause(error)` has passed (a server
    /// slows down cookie guessers so).
    pub pause: P,
}

impl Pacing<fn(&HandshakeError) -> std::time::Duration> {
    /// No pause, and the first frame within `limit`.
    pub fn plain(limit: std::time::Duration) -> Self {
        Self {
            first_frame_within: limit,
            pause: |_| std::time::Duration::ZERO,
        }
    }
}

/// Runs a handshake to its end over `reader`/`writer`, sending `first`
/// (the client's `Hello`; nothing for a server) first, paced by `pacing`.
/// The caller bounds it in time.
pub async fn drive<R, W, P>(
    side: &mut Side,
    first: Vec<u8>,
    reader: &mut FrameReader<R>,
    writer: &mut W,
    pacing: Pacing<P>,
) -> Result<Peer, HandshakeError>
where
    P: FnOnce(&HandshakeError) -> std::time::Duration,
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let Pacing {
        first_frame_within,
        pause,
    } = pacing;
    let mut first_frame = true;
    let io = |e: std::io::Error| HandshakeError::Connection(format!("connection failed: {e}"));
    if !first.is_empty() {
        writer.write_all(&first).await.map_err(io)?;
        writer.flush().await.map_err(io)?;
    }
    loop {
        let next = if std::mem::take(&mut first_frame) {
            tokio::time::timeout(first_frame_within, reader.next())
                .await
                .map_err(|_| HandshakeError::Silent(first_frame_within))?
        } else {
            reader.next().await
        };
        let frame = match next {
            Ok(Some(frame)) => frame,
            Ok(None) => {
                return Err(HandshakeError::Connection(
                    "the peer closed the connection during the handshake".into(),
                ));
            }
            Err(frame::FrameError::Io(e)) => {
                return Err(HandshakeError::Connection(format!(
                    "connection failed: {e}"
                )));
            }
            Err(e) => return Err(HandshakeError::Garbage(e.to_string())),
        };
        match side.on_frame(&frame) {
            Step::Send(bytes) => {
                writer.write_all(&bytes).await.map_err(io)?;
                writer.flush().await.map_err(io)?;
            }
            Step::Done(bytes, peer) => {
                if !bytes.is_empty() {
                    writer.write_all(&bytes).await.map_err(io)?;
                    writer.flush().await.map_err(io)?;
                }
                return Ok(peer);
            }
            Step::Fail(bytes, error) => {
                if !bytes.is_empty() {
                    tokio::time::sleep(pause(&error)).await;
                    // Best effort: the peer may already be gone.
                    let _ = writer.write_all(&bytes).await;
                    let _ = writer.flush().await;
                }
                return Err(error);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn name(text: &str) -> NodeName {
        NodeName::parse(text).expect("valid name")
    }

    fn cookie(text: &str) -> Cookie {
        Cookie::from_text(text).expect("cookie")
    }

    /// Strips the length prefix the state machines put on their frames.
    fn payload(framed: &[u8]) -> &[u8] {
        &framed[4..]
    }

    /// Runs both sides against each other in memory.
    fn shake(client_cookie: &str, server_cookie: &str) -> (Step, Step) {
        let (a, b) = (name("a@127.0.0.1"), name("b@127.0.0.1"));
        let (mut client, hello) =
            ClientHandshake::start(&a, &cookie(client_cookie), false, Some(&b)).expect("start");
        let mut server = ServerHandshake::new(&b, &cookie(server_cookie)).expect("server");
        let Step::Send(challenge) = server.on_frame(payload(&hello)) else {
            panic!("expected a challenge");
        };
        let Step::Send(proof) = client.on_frame(payload(&challenge)) else {
            panic!("expected a proof");
        };
        let server_step = server.on_frame(payload(&proof));
        let client_step = match &server_step {
            Step::Done(accepted, _) | Step::Fail(accepted, _) if !accepted.is_empty() => {
                client.on_frame(payload(accepted))
            }
            _ => panic!("the server said nothing"),
        };
        (client_step, server_step)
    }

    #[test]
    fn the_same_cookie_authenticates_both_sides() {
        let (client, server) = shake("monster", "monster");
        let Step::Done(_, server_peer) = server else {
            panic!("server refused")
        };
        let Step::Done(_, client_peer) = client else {
            panic!("client refused")
        };
        assert_eq!(server_peer.name, name("a@127.0.0.1"));
        assert_eq!(client_peer.name, name("b@127.0.0.1"));
        assert!(!server_peer.hidden);
    }

    #[test]
    fn a_wrong_cookie_is_refused_on_both_sides() {
        let (client, server) = shake("monster", "gremlin");
        assert!(matches!(server, Step::Fail(_, HandshakeError::WrongCookie)));
        assert!(matches!(client, Step::Fail(_, HandshakeError::WrongCookie)));
    }

    #[test]
    fn the_cookie_never_appears_on_the_wire() {
        let secret = "a-very-recognisable-cookie";
        let (a, b) = (name("a@127.0.0.1"), name("b@127.0.0.1"));
        let (mut client, hello) =
            ClientHandshake::start(&a, &cookie(secret), false, None).expect("start");
        let mut server = ServerHandshake::new(&b, &cookie(secret)).expect("server");
        let Step::Send(challenge) = server.on_frame(payload(&hello)) else {
            panic!()
        };
        let Step::Send(proof) = client.on_frame(payload(&challenge)) else {
            panic!()
        };
        let Step::Done(accepted, _) = server.on_frame(payload(&proof)) else {
            panic!()
        };
        for bytes in [&hello, &challenge, &proof, &accepted] {
            assert!(!bytes.windows(secret.len()).any(|w| w == secret.as_bytes()));
        }
    }

    #[test]
    fn a_recorded_proof_does_not_open_another_connection() {
        let (a, b) = (name("a@127.0.0.1"), name("b@127.0.0.1"));
        let secret = cookie("monster");
        // A genuine exchange, recorded.
        let (mut client, hello) = ClientHandshake::start(&a, &secret, false, None).expect("start");
        let mut server = ServerHandshake::new(&b, &secret).expect("server");
        let Step::Send(challenge) = server.on_frame(payload(&hello)) else {
            panic!()
        };
        let Step::Send(proof) = client.on_frame(payload(&challenge)) else {
            panic!()
        };
        // Replayed to a new connection: the server's nonce is new.
        let mut replayed = ServerHandshake::new(&b, &secret).expect("server");
        assert!(matches!(replayed.on_frame(payload(&hello)), Step::Send(_)));
        assert!(matches!(
            replayed.on_frame(payload(&proof)),
            Step::Fail(_, HandshakeError::WrongCookie)
        ));
    }

    #[test]
    fn the_client_notices_it_reached_another_node() {
        let (a, b, c) = (name("a@h"), name("b@h"), name("c@h"));
        let secret = cookie("monster");
        let (mut client, hello) =
            ClientHandshake::start(&a, &secret, false, Some(&c)).expect("start");
        let mut server = ServerHandshake::new(&b, &secret).expect("server");
        let Step::Send(challenge) = server.on_frame(payload(&hello)) else {
            panic!()
        };
        let Step::Fail(_, error) = client.on_frame(payload(&challenge)) else {
            panic!("expected a refusal")
        };
        assert!(error.to_string().contains("expected c@h"), "{error}");
    }

    #[test]
    fn no_common_version_is_refused_with_a_reason() {
        let hello = Message::Hello {
            magic: MAGIC,
            min_version: MAX_VERSION + 1,
            max_version: MAX_VERSION + 5,
            name: "a@h".into(),
            hidden: false,
            nonce: [0; 32],
        };
        let mut server = ServerHandshake::new(&name("b@h"), &cookie("c")).expect("server");
        let Step::Fail(refusal, error) = server.on_frame(payload(&hello.encode())) else {
            panic!("expected a refusal")
        };
        assert!(error.to_string().contains("no common protocol version"));
        assert!(!refusal.is_empty(), "the peer is told why");
    }

    proptest! {
        /// Any frames at all: the server never panics, and never accepts.
        #[test]
        fn arbitrary_frames_never_authenticate_a_server(
            frames in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 1..5)
        ) {
            let mut server = ServerHandshake::new(&name("b@h"), &cookie("monster")).expect("server");
            for frame in &frames {
                match server.on_frame(frame) {
                    Step::Send(_) => continue,
                    Step::Done(..) => prop_assert!(false, "authenticated garbage"),
                    Step::Fail(..) => break,
                }
            }
        }

        /// Any frames at all after a genuine hello: the client never panics,
        /// and never accepts a server that does not know the cookie.
        #[test]
        fn arbitrary_frames_never_authenticate_a_client(
            frames in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 1..5)
        ) {
            let (mut client, _hello) =
                ClientHandshake::start(&name("a@h"), &cookie("monster"), false, None).expect("start");
            for frame in &frames {
                match client.on_frame(frame) {
                    Step::Send(_) => continue,
                    Step::Done(..) => prop_assert!(false, "authenticated garbage"),
                    Step::Fail(..) => break,
                }
            }
        }
    }
}
