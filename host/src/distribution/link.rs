//! A link: one authenticated connection to a peer, carrying requests,
//! responses, one-way messages and pings, multiplexed.
//!
//! After the handshake, each frame starts with a tag byte:
//!
//! | tag | frame | meaning |
//! |---|---|---|
//! | 0 | `0` | ping: the peer answers with a pong |
//! | 1 | `1` | pong |
//! | 2 | `2, id (8 bytes), body` | a request; the peer answers with a response of the same id |
//! | 3 | `3, id (8 bytes), body` | a response |
//! | 4 | `4, body` | a one-way message |
//!
//! Bodies are the cluster layer's business (`cluster::wire`); a link moves
//! bytes. One task writes (it drains everything queued into one `write`,
//! so a burst of small messages costs one system call), one task reads and
//! dispatches. Every frame received counts as a sign of life; a peer silent
//! for longer than the silence limit is dropped, and so is one that sends a
//! frame that is not one of the above.
//!
//! What a sender learns matters to the callers above: a request on a link
//! that is already closed was certainly not delivered ([`LinkError::NotSent`]),
//! and may be retried elsewhere; one whose link breaks after it was queued
//! may or may not have been acted on ([`LinkError::Lost`]), and must not be.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::frame::{self, FrameReader};
use super::handshake::Peer;
use super::name::NodeName;

const TAG_PING: u8 = 0;
const TAG_PONG: u8 = 1;
const TAG_REQUEST: u8 = 2;
const TAG_RESPONSE: u8 = 3;
const TAG_ONE_WAY: u8 = 4;
const ID_BYTES: usize = 8;

/// Why a request got no answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    /// The link was closed before the request was queued: it was not sent.
    #[error("no link to {0}")]
    NotSent(NodeName),
    /// The link broke after the request was queued: the peer may or may not
    /// have acted on it.
    #[error("the link to {0} broke before it answered")]
    Lost(NodeName),
    #[error("{0} did not answer within {1:?}")]
    TimedOut(NodeName, Duration),
    /// Longer than a frame may be: not sent.
    #[error("{0} bytes is more than a link carries in one message ({MAX_BODY})")]
    TooLarge(usize),
}

/// The largest body a request, response or one-way message may have: the
/// peer drops a link whose frame is longer than [`frame::MAX_FRAME`].
pub const MAX_BODY: usize = frame::MAX_FRAME - 1 - ID_BYTES;

/// What the layer above does with what arrives on a link.
pub trait LinkHandler: Send + Sync + 'static {
    /// Answers a request. Runs in a task of its own, so a slow answer never
    /// holds up the link.
    fn request(&self, link: Arc<Link>, body: Bytes) -> BoxFuture<'static, Vec<u8>>;
    /// Takes a one-way message. Called on the reading task: keep it short.
    fn message(&self, link: &Arc<Link>, body: Bytes);
    /// The link is closed (called once).
    fn link_down(&self, link: &Arc<Link>);
}

/// Timing of a link's liveness checks.
#[derive(Debug, Clone, Copy)]
pub struct Liveness {
    /// How often a ping goes out.
    pub ping_every: Duration,
    /// A peer that sends nothing for this long is dropped.
    pub silence_limit: Duration,
}

/// One connection to a peer.
pub struct Link {
    peer: Peer,
    /// Whether this node dialled (the tie-break between two simultaneous
    /// links keeps the one the smaller name dialled).
    dialled: bool,
    outgoing: mpsc::UnboundedSender<Vec<u8>>,
    pending: Mutex<HashMap<u64, oneshot::Sender<Bytes>>>,
    next_id: AtomicU64,
    opened: Instant,
    /// Milliseconds after `opened` when a frame last arrived.
    last_heard_ms: AtomicU64,
    closed: CancellationToken,
    /// Why it closed, for the log line and for callers.
    close_reason: Mutex<Option<String>>,
}

impl Link {
    /// Starts the reading, writing and pinging tasks of a freshly
    /// authenticated connection. `buffered` holds any bytes the handshake's
    /// reader took beyond the handshake.
    pub fn start<R, W>(
        peer: Peer,
        dialled: bool,
        mut reader: FrameReader<R>,
        writer: W,
        handler: Arc<dyn LinkHandler>,
        liveness: Liveness,
    ) -> Arc<Self>
    where
        R: AsyncRead + Unpin + Send + 'static,
        W: AsyncWrite + Unpin + Send + 'static,
    {
        reader.set_limit(frame::MAX_FRAME);
        let (outgoing, queue) = mpsc::unbounded_channel();
        let link = Arc::new(Self {
            peer,
            dialled,
            outgoing,
            pending: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            opened: Instant::now(),
            last_heard_ms: AtomicU64::new(0),
            closed: CancellationToken::new(),
            close_reason: Mutex::new(None),
        });
        tokio::spawn(write_loop(link.clone(), writer, queue));
        tokio::spawn(read_loop(link.clone(), reader, handler.clone()));
        tokio::spawn(ping_loop(link.clone(), liveness));
        let watcher = link.clone();
        tokio::spawn(async move {
            watcher.closed.cancelled().await;
            watcher.fail_pending();
            handler.link_down(&watcher);
        });
        link
    }

    pub fn peer(&self) -> &NodeName {
        &self.peer.name
    }

    pub fn is_hidden(&self) -> bool {
        self.peer.hidden
    }

    pub fn dialled(&self) -> bool {
        self.dialled
    }

    pub fn is_open(&self) -> bool {
        !self.closed.is_cancelled()
    }

    /// Resolves once the link is closed.
    pub async fn closed(&self) {
        self.closed.cancelled().await;
    }

    /// How long since the peer last sent anything.
    pub fn silent_for(&self) -> Duration {
        let heard = Duration::from_millis(self.last_heard_ms.load(Ordering::Relaxed));
        self.opened.elapsed().saturating_sub(heard)
    }

    pub fn close_reason(&self) -> Option<String> {
        self.lock_reason().clone()
    }

    /// Closes the link, saying why (the first reason given is kept).
    pub fn close(&self, reason: impl Into<String>) {
        {
            let mut held = self.lock_reason();
            if held.is_none() {
                *held = Some(reason.into());
            }
        }
        self.closed.cancel();
    }

    /// Sends a request and waits up to `timeout` for the answer.
    pub async fn request(&self, body: &[u8], timeout: Duration) -> Result<Bytes, LinkError> {
        if body.len() > MAX_BODY {
            return Err(LinkError::TooLarge(body.len()));
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (answer, receiver) = oneshot::channel();
        self.lock_pending().insert(id, answer);
        if !self.is_open() || !self.queue(TAG_REQUEST, Some(id), body) {
            self.lock_pending().remove(&id);
            return Err(LinkError::NotSent(self.peer.name.clone()));
        }
        match tokio::time::timeout(timeout, receiver).await {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(_)) => Err(LinkError::Lost(self.peer.name.clone())),
            Err(_) => {
                self.lock_pending().remove(&id);
                Err(LinkError::TimedOut(self.peer.name.clone(), timeout))
            }
        }
    }

    /// Sends a one-way message.
    pub fn send(&self, body: &[u8]) -> Result<(), LinkError> {
        if body.len() > MAX_BODY {
            return Err(LinkError::TooLarge(body.len()));
        }
        if self.is_open() && self.queue(TAG_ONE_WAY, None, body) {
            Ok(())
        } else {
            Err(LinkError::NotSent(self.peer.name.clone()))
        }
    }

    fn queue(&self, tag: u8, id: Option<u64>, body: &[u8]) -> bool {
        let mut out = Vec::with_capacity(4 + 1 + ID_BYTES + body.len());
        match id {
            Some(id) => frame::encode_into(&mut out, &[&[tag], &id.to_be_bytes(), body]),
            None => frame::encode_into(&mut out, &[&[tag], body]),
        }
        self.outgoing.send(out).is_ok()
    }

    fn heard(&self) {
        let now = self.opened.elapsed().as_millis() as u64;
        self.last_heard_ms.store(now, Ordering::Relaxed);
    }

    /// Answers every request still waiting with "lost".
    fn fail_pending(&self) {
        let pending: Vec<_> = self.lock_pending().drain().collect();
        drop(pending);
    }

    fn lock_pending(&self) -> std::sync::MutexGuard<'_, HashMap<u64, oneshot::Sender<Bytes>>> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lock_reason(&self) -> std::sync::MutexGuard<'_, Option<String>> {
        self.close_reason.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Writes queued frames, as many as are waiting per system call.
async fn write_loop<W: AsyncWrite + Unpin>(
    link: Arc<Link>,
    mut writer: W,
    mut queue: mpsc::UnboundedReceiver<Vec<u8>>,
) {
    let mut batch = Vec::new();
    loop {
        let first = tokio::select! {
            _ = link.closed.cancelled() => break,
            first = queue.recv() => match first {
                Some(first) => first,
                None => break,
            },
        };
        batch.clear();
        batch.extend_from_slice(&first);
        while batch.len() < 1024 * 1024 {
            match queue.try_recv() {
                Ok(more) => batch.extend_from_slice(&more),
                Err(_) => break,
            }
        }
        // A peer that stops reading (stopped, not dead) must not hold this
        // task once the link is closed for silence.
        let written = tokio::select! {
            _ = link.closed.cancelled() => break,
            written = async {
                writer.write_all(&batch).await?;
                writer.flush().await
            } => written,
        };
        if let Err(e) = written {
            link.close(format!("write failed: {e}"));
            break;
        }
    }
    let _ = writer.shutdown().await;
}

async fn read_loop<R: AsyncRead + Unpin>(
    link: Arc<Link>,
    mut reader: FrameReader<R>,
    handler: Arc<dyn LinkHandler>,
) {
    loop {
        let frame = tokio::select! {
            _ = link.closed.cancelled() => return,
            frame = reader.next() => frame,
        };
        let frame = match frame {
            Ok(Some(frame)) => frame,
            Ok(None) => {
                link.close("the peer closed the connection");
                return;
            }
            Err(e) => {
                link.close(e.to_string());
                return;
            }
        };
        link.heard();
        if let Err(reason) = dispatch(&link, frame, &handler) {
            link.close(format!("the peer sent a malformed frame: {reason}"));
            return;
        }
    }
}

/// A frame received on a link, read.
#[derive(Debug, PartialEq, Eq)]
pub enum Incoming {
    Ping,
    Pong,
    Request { id: u64, body: Bytes },
    Response { id: u64, body: Bytes },
    OneWay(Bytes),
}

impl Incoming {
    /// Reads a frame; a frame that is none of the above is an error.
    pub fn parse(frame: Bytes) -> Result<Self, &'static str> {
        let Some(&tag) = frame.first() else {
            return Err("empty frame");
        };
        Ok(match tag {
            TAG_PING | TAG_PONG if frame.len() > 1 => {
                return Err("a ping or pong that carries bytes");
            }
            TAG_PING => Self::Ping,
            TAG_PONG => Self::Pong,
            TAG_REQUEST | TAG_RESPONSE => {
                let Some(id) = frame.get(1..1 + ID_BYTES) else {
                    return Err("no request id");
                };
                let mut bytes = [0u8; ID_BYTES];
                bytes.copy_from_slice(id);
                let id = u64::from_be_bytes(bytes);
                let body = frame.slice(1 + ID_BYTES..);
                if tag == TAG_REQUEST {
                    Self::Request { id, body }
                } else {
                    Self::Response { id, body }
                }
            }
            TAG_ONE_WAY => Self::OneWay(frame.slice(1..)),
            _ => return Err("unknown frame tag"),
        })
    }
}

fn dispatch(
    link: &Arc<Link>,
    frame: Bytes,
    handler: &Arc<dyn LinkHandler>,
) -> Result<(), &'static str> {
    match Incoming::parse(frame)? {
        Incoming::Ping => {
            link.queue(TAG_PONG, None, &[]);
        }
        Incoming::Pong => {}
        Incoming::Response { id, body } => {
            if let Some(answer) = link.lock_pending().remove(&id) {
                let _ = answer.send(body);
            }
        }
        Incoming::Request { id, body } => {
            let answering = link.clone();
            let reply = handler.request(link.clone(), body);
            tokio::spawn(async move {
                let reply = reply.await;
                answering.queue(TAG_RESPONSE, Some(id), &reply);
            });
        }
        Incoming::OneWay(body) => handler.message(link, body),
    }
    Ok(())
}

/// Pings the peer, and drops it once it has been silent too long.
async fn ping_loop(link: Arc<Link>, liveness: Liveness) {
    let mut ticks = tokio::time::interval(liveness.ping_every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = link.closed.cancelled() => return,
            _ = ticks.tick() => {}
        }
        let silent = link.silent_for();
        if silent > liveness.silence_limit {
            link.close(format!("silent for {:.1}s", silent.as_secs_f64()));
            return;
        }
        link.queue(TAG_PING, None, &[]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Echo;

    impl LinkHandler for Echo {
        fn request(&self, _link: Arc<Link>, body: Bytes) -> BoxFuture<'static, Vec<u8>> {
            Box::pin(async move {
                let mut reply = b"echo:".to_vec();
                reply.extend_from_slice(&body);
                reply
            })
        }
        fn message(&self, _link: &Arc<Link>, _body: Bytes) {}
        fn link_down(&self, _link: &Arc<Link>) {}
    }

    fn peer(name: &str) -> Peer {
        Peer {
            name: NodeName::parse(name).expect("name"),
            hidden: false,
            version: 1,
        }
    }

    #[test]
    fn frames_are_read_as_exactly_one_kind_or_refused() {
        let parse = |bytes: &[u8]| Incoming::parse(Bytes::copy_from_slice(bytes));
        assert_eq!(parse(&[TAG_PING]), Ok(Incoming::Ping));
        assert_eq!(parse(&[TAG_PONG]), Ok(Incoming::Pong));
        let mut request = vec![TAG_REQUEST];
        request.extend_from_slice(&7u64.to_be_bytes());
        request.extend_from_slice(b"body");
        assert_eq!(
            parse(&request),
            Ok(Incoming::Request {
                id: 7,
                body: Bytes::from_static(b"body")
            })
        );
        // The fuzz target `link_message` found a ping that carried bytes
        // taken as a ping (fuzz/corpus/link_message/crash-ping-carrying-bytes).
        for bad in [
            &[][..],
            &[TAG_PING, 4],
            &[TAG_PONG, 0],
            &[TAG_RESPONSE, 1, 2],
            &[9],
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }

    fn pair(liveness: Liveness) -> (Arc<Link>, Arc<Link>) {
        let (a, b) = tokio::io::duplex(64 * 1024);
        let (a_read, a_write) = tokio::io::split(a);
        let (b_read, b_write) = tokio::io::split(b);
        let left = Link::start(
            peer("b@h"),
            true,
            FrameReader::new(a_read, frame::MAX_FRAME),
            a_write,
            Arc::new(Echo),
            liveness,
        );
        let right = Link::start(
            peer("a@h"),
            false,
            FrameReader::new(b_read, frame::MAX_FRAME),
            b_write,
            Arc::new(Echo),
            liveness,
        );
        (left, right)
    }

    const RELAXED: Liveness = Liveness {
        ping_every: Duration::from_millis(50),
        silence_limit: Duration::from_secs(5),
    };

    #[tokio::test]
    async fn requests_are_answered_and_matched_by_id() {
        let (left, _right) = pair(RELAXED);
        let answers = futures_util::future::join_all((0..100).map(|i| {
            let left = left.clone();
            async move {
                left.request(format!("{i}").as_bytes(), Duration::from_secs(5))
                    .await
            }
        }))
        .await;
        for (i, answer) in answers.into_iter().enumerate() {
            assert_eq!(answer.expect("answered"), Bytes::from(format!("echo:{i}")));
        }
    }

    #[tokio::test]
    async fn a_closed_link_says_the_request_was_not_sent() {
        let (left, right) = pair(RELAXED);
        right.close("test");
        left.closed().await;
        assert!(matches!(
            left.request(b"x", Duration::from_secs(1)).await,
            Err(LinkError::NotSent(_))
        ));
    }

    #[tokio::test]
    async fn a_message_longer_than_a_frame_is_refused_and_the_link_stays() {
        let (left, _right) = pair(RELAXED);
        let huge = vec![0u8; MAX_BODY + 1];
        assert!(matches!(
            left.request(&huge, Duration::from_secs(1)).await,
            Err(LinkError::TooLarge(_))
        ));
        assert!(matches!(left.send(&huge), Err(LinkError::TooLarge(_))));
        assert!(left.is_open());
        let answer = left.request(b"still", Duration::from_secs(5)).await;
        assert_eq!(answer.expect("answered"), Bytes::from_static(b"echo:still"));
    }

    #[tokio::test]
    async fn a_silent_peer_is_dropped() {
        let (a, _b) = tokio::io::duplex(1024);
        let (a_read, a_write) = tokio::io::split(a);
        // Nobody runs the other side: nothing ever arrives.
        let link = Link::start(
            peer("b@h"),
            true,
            FrameReader::new(a_read, frame::MAX_FRAME),
            a_write,
            Arc::new(Echo),
            Liveness {
                ping_every: Duration::from_millis(20),
                silence_limit: Duration::from_millis(100),
            },
        );
        tokio::time::timeout(Duration::from_secs(5), link.closed())
            .await
            .expect("dropped");
        assert!(link.close_reason().expect("reason").contains("silent"));
    }
}
