//! The handshake that opens every distribution connection: protocol version
//! negotiation, then a password-authenticated key exchange over the cookie
//! (SPAKE2), then each side proves it holds the key.
//!
//! ```text
//! client                                      server
//!   Hello {versions, name, hidden, nonce_c, A} ──▶
//!                                           ◀── Challenge {version, name, nonce_s, B}
//!   K = SPAKE2(cookie, A, B)                      K = SPAKE2(cookie, A, B)
//!   Proof {HMAC(K, "client", …)}            ──▶   checks it: wrong cookie ─▶ Refused
//!                                           ◀── Accepted {HMAC(K, "server", …)}
//!   checks it: an impostor is dropped
//! ```
//!
//! Why a key exchange and not a MAC keyed by the cookie itself: whoever
//! receives a proof made with the cookie can test guesses of the cookie
//! against it offline, as fast as it can compute MACs, and a stranger gets
//! one just by squatting a node's name on a port mapper or by connecting.
//! SPAKE2 (`A`, `B`) gives both sides the same key `K` only when both used
//! the same cookie; what crosses the wire, a proof made with `K` included,
//! lets an attacker test one guess per connection it takes part in (the
//! one it put in its own message), never a dictionary. Online guesses are
//! the gate's business (`gate.rs`: one at a time, answered ever later).
//!
//! Each MAC also covers both nonces, both names, the version, the
//! connection kind and which side made it, so the cookie never crosses the
//! wire, a recorded handshake cannot be replayed, and one side's proof
//! cannot be reflected back as the other's.
//!
//! Both sides are sans-IO state machines ([`ClientHandshake`],
//! [`ServerHandshake`]) fed one frame at a time; [`drive`] runs either
//! over a connection.

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use spake2::{Ed25519Group, Identity, Password, Spake2};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use super::cookie::Cookie;
use super::frame::{self, FrameReader};
use super::name::NodeName;

/// The versions of the distribution protocol this build speaks: 2 is the
/// key exchange (1, a MAC keyed by the cookie, is no longer spoken: a peer
/// could choose it to harvest proofs).
pub const MIN_VERSION: u16 = 2;
pub const MAX_VERSION: u16 = 2;
/// The SPAKE2 identities of the two roles; the names are bound by the MACs.
const CLIENT_ROLE: &[u8] = b"otp-wasm handshake client";
const SERVER_ROLE: &[u8] = b"otp-wasm handshake server";
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
        /// The client's SPAKE2 message.
        exchange: Vec<u8>,
    },
    Challenge {
        version: u16,
        name: String,
        nonce: Nonce,
        /// The server's SPAKE2 message.
        exchange: Vec<u8>,
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

/// The SPAKE2 state of one side, started with the cookie.
fn exchange(cookie: &Cookie, client: bool) -> (Spake2<Ed25519Group>, Vec<u8>) {
    let (password, a, b) = (
        Password::new(cookie.secret()),
        Identity::new(CLIENT_ROLE),
        Identity::new(SERVER_ROLE),
    );
    if client {
        Spake2::<Ed25519Group>::start_a(&password, &a, &b)
    } else {
        Spake2::<Ed25519Group>::start_b(&password, &a, &b)
    }
}

/// The key both sides share once the peer's SPAKE2 message is in (the same
/// only if both used the same cookie).
fn shared_key(state: Spake2<Ed25519Group>, theirs: &[u8]) -> Result<Vec<u8>, HandshakeError> {
    state
        .finish(theirs)
        .map_err(|_| HandshakeError::Garbage("not a key exchange message".into()))
}

impl Transcript<'_> {
    fn mac(&self, key: &[u8], side: &[u8]) -> Hmac<Sha256> {
        // HMAC takes keys of any length.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key)
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

    fn tag(&self, key: &[u8], side: &[u8]) -> Tag {
        self.mac(key, side).finalize().into_bytes().into()
    }

    /// Constant-time comparison of a received tag.
    fn verify(&self, key: &[u8], side: &[u8], tag: &Tag) -> bool {
        self.mac(key, side).verify_slice(tag).is_ok()
    }
}

const CLIENT_SIDE: &[u8] = b"client";
const SERVER_SIDE: &[u8] = b"server";

/// The side that dialled.
pub struct ClientHandshake {
    me: String,
    hidden: bool,
    expected: Option<NodeName>,
    nonce: Nonce,
    state: ClientState,
}

enum ClientState {
    AwaitChallenge {
        exchange: Spake2<Ed25519Group>,
    },
    AwaitAccepted {
        peer: Peer,
        server_nonce: Nonce,
        key: Vec<u8>,
    },
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
        let (state, message) = exchange(cookie, true);
        let hello = Message::Hello {
            magic: MAGIC,
            min_version: MIN_VERSION,
            max_version: MAX_VERSION,
            name: me.to_string(),
            hidden,
            nonce,
            exchange: message,
        };
        Ok((
            Self {
                me: me.to_string(),
                hidden,
                expected: expected.cloned(),
                nonce,
                state: ClientState::AwaitChallenge { exchange: state },
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
        match (
            std::mem::replace(&mut self.state, ClientState::Finished),
            message,
        ) {
            (
                ClientState::AwaitChallenge { exchange },
                Message::Challenge {
                    version,
                    name,
                    nonce,
                    exchange: theirs,
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
                let key = shared_key(exchange, &theirs)?;
                let transcript = Transcript {
                    version,
                    client: &self.me,
                    server: &name.to_string(),
                    client_nonce: &self.nonce,
                    server_nonce: &nonce,
                    hidden: self.hidden,
                };
                let proof = Message::Proof {
                    mac: transcript.tag(&key, CLIENT_SIDE),
                };
                self.state = ClientState::AwaitAccepted {
                    peer: Peer {
                        name,
                        hidden: false,
                        version,
                    },
                    server_nonce: nonce,
                    key,
                };
                Ok(Step::Send(proof.encode()))
            }
            (
                ClientState::AwaitAccepted {
                    peer,
                    server_nonce,
                    key,
                },
                Message::Accepted { mac },
            ) => {
                let transcript = Transcript {
                    version: peer.version,
                    client: &self.me,
                    server: &peer.name.to_string(),
                    client_nonce: &self.nonce,
                    server_nonce: &server_nonce,
                    hidden: self.hidden,
                };
                if !transcript.verify(&key, SERVER_SIDE, &mac) {
                    return Err(HandshakeError::ImpostorPeer);
                }
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
    AwaitProof {
        peer: Peer,
        client_nonce: Nonce,
        key: Vec<u8>,
    },
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
        match (
            std::mem::replace(&mut self.state, ServerState::Finished),
            message,
        ) {
            (
                ServerState::AwaitHello,
                Message::Hello {
                    magic,
                    min_version,
                    max_version,
                    name,
                    hidden,
                    nonce,
                    exchange: theirs,
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
                let (exchange, ours) = exchange(&self.cookie, false);
                let key = shared_key(exchange, &theirs)?;
                let challenge = Message::Challenge {
                    version,
                    name: self.me.clone(),
                    nonce: self.nonce,
                    exchange: ours,
                };
                self.state = ServerState::AwaitProof {
                    peer: Peer {
                        name,
                        hidden,
                        version,
                    },
                    client_nonce: nonce,
                    key,
                };
                Ok(Step::Send(challenge.encode()))
            }
            (
                ServerState::AwaitProof {
                    peer,
                    client_nonce,
                    key,
                },
                Message::Proof { mac },
            ) => {
                let client = peer.name.to_string();
                let transcript = Transcript {
                    version: peer.version,
                    client: &client,
                    server: &self.me,
                    client_nonce: &client_nonce,
                    server_nonce: &self.nonce,
                    hidden: peer.hidden,
                };
                if !transcript.verify(&key, CLIENT_SIDE, &mac) {
                    return Err(HandshakeError::WrongCookie);
                }
                let accepted = Message::Accepted {
                    mac: transcript.tag(&key, SERVER_SIDE),
                };
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

/// The fuzz target `handshake` (`fuzz/`). The first byte chooses who the
/// fuzzer is:
/// - a stranger, without the cookie, sending frames to a server (0) or
///   answering a client (1): neither may ever be authenticated;
/// - a machine in the middle of an honest handshake (2), flipping bits of
///   the frames in flight (each 4 bytes: which frame, where, what XOR):
///   the handshake may fail, but when it succeeds, each side must know the
///   other as it is (its name, whether it is a tool, the version).
#[cfg(any(test, feature = "fuzzing"))]
pub fn fuzz_frames(data: &[u8]) {
    let Some((&who, rest)) = data.split_first() else {
        return;
    };
    let name = |text: &str| NodeName::parse(text).expect("a valid name");
    let (client_name, server_name) = (name("client@host"), name("server@host"));
    let cookie = Cookie::from_text("fuzzing-cookie-0123456789").expect("a valid cookie");
    let stranger_fails = |mut side: Side| {
        let mut decoder = frame::FrameDecoder::new(frame::HANDSHAKE_MAX_FRAME);
        decoder.extend(rest);
        while let Ok(Some(frame)) = decoder.next_frame() {
            match side.on_frame(&frame) {
                Step::Send(_) => {}
                Step::Fail(..) => return,
                Step::Done(..) => panic!("a stranger without the cookie was authenticated"),
            }
        }
    };
    match who % 3 {
        0 => stranger_fails(Side::Server(
            ServerHandshake::new(&server_name, &cookie).expect("server"),
        )),
        1 => {
            let (client, _hello) =
                ClientHandshake::start(&client_name, &cookie, false, None).expect("client");
            stranger_fails(Side::Client(client));
        }
        _ => {
            let hidden = rest.first().is_some_and(|b| b & 1 == 1);
            let (mut client, hello) =
                ClientHandshake::start(&client_name, &cookie, hidden, Some(&server_name))
                    .expect("client");
            let mut server = ServerHandshake::new(&server_name, &cookie).expect("server");
            // Frames in flight, in order: Hello, Challenge, Proof, Accepted.
            let tamper = |index: u8, mut bytes: Vec<u8>| {
                for flip in rest.chunks_exact(4).filter(|flip| flip[0] % 4 == index) {
                    if bytes.len() > 4 {
                        let at = 4 + usize::from(u16::from_be_bytes([flip[1], flip[2]]))
                            % (bytes.len() - 4);
                        bytes[at] ^= flip[3];
                    }
                }
                frame_body(bytes)
            };
            let Step::Send(challenge) = server.on_frame(&tamper(0, hello)) else {
                return;
            };
            let Step::Send(proof) = client.on_frame(&tamper(1, challenge)) else {
                return;
            };
            let Step::Done(accepted, client_seen) = server.on_frame(&tamper(2, proof)) else {
                return;
            };
            let Step::Done(_, server_seen) = client.on_frame(&tamper(3, accepted)) else {
                return;
            };
            assert_eq!(client_seen.name, client_name, "the server was misled");
            assert_eq!(client_seen.hidden, hidden, "the server was misled");
            assert_eq!(server_seen.name, server_name, "the client was misled");
            assert_eq!(client_seen.version, server_seen.version, "versions differ");
        }
    }
}

/// A frame's body (its length prefix taken off).
#[cfg(any(test, feature = "fuzzing"))]
fn frame_body(mut frame: Vec<u8>) -> Vec<u8> {
    frame.drain(..frame.len().min(4));
    frame
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
    fn a_squatter_can_test_one_guess_at_most_and_never_a_dictionary() {
        let (a, b) = (name("a@127.0.0.1"), name("b@127.0.0.1"));
        let real = cookie("monster");
        // A squatter answers the dial with its own guess of the cookie,
        // and the client, which cannot tell yet, sends its proof.
        let (mut client, hello) =
            ClientHandshake::start(&a, &real, false, Some(&b)).expect("start");
        let Message::Hello {
            exchange: client_message,
            nonce: client_nonce,
            ..
        } = Message::decode(payload(&hello)).expect("hello")
        else {
            panic!("a hello")
        };
        let (squatter, squatter_message) = exchange(&cookie("gremlin"), false);
        let server_nonce = [9u8; NONCE_BYTES];
        let challenge = Message::Challenge {
            version: MAX_VERSION,
            name: b.to_string(),
            nonce: server_nonce,
            exchange: squatter_message,
        };
        let Step::Send(proof) = client.on_frame(payload(&challenge.encode())) else {
            panic!("the client proves")
        };
        let Message::Proof { mac } = Message::decode(payload(&proof)).expect("proof") else {
            panic!("a proof")
        };
        let (a_text, b_text) = (a.to_string(), b.to_string());
        let transcript = Transcript {
            version: MAX_VERSION,
            client: &a_text,
            server: &b_text,
            client_nonce: &client_nonce,
            server_nonce: &server_nonce,
            hidden: false,
        };
        // Its own guess, the one it put in its message: wrong, and it learns
        // only that.
        let key = shared_key(squatter, &client_message).expect("a key");
        assert!(!transcript.verify(&key, CLIENT_SIDE, &mac));
        // Any other guess, the right one included: it has no key to test it
        // with (a fresh exchange has another secret), nor the cookie itself.
        for guess in ["monster", "gremlin", "cookie"] {
            let (fresh, _) = exchange(&cookie(guess), false);
            let key = shared_key(fresh, &client_message).expect("a key");
            assert!(!transcript.verify(&key, CLIENT_SIDE, &mac), "{guess}");
            assert!(!transcript.verify(cookie(guess).secret(), CLIENT_SIDE, &mac));
        }
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
            exchange: Vec::new(),
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
