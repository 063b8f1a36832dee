//! Slow readers: clients that ask for a large answer and do not read it.
//!
//! While a response waits on a client that does not read, the node holds
//! it: the socket's buffers, hyper's, the body channel, and the handler's
//! guest instance with the whole answer in its memory (a 4 MB list costs
//! about 7 MB). A stranger who opens many such requests drives the node's
//! memory up. So every HTTP connection's writes are watched:
//! - a write that has waited 1 s makes the connection *stalled*;
//! - a stalled connection that the client has not read from for 10 s is
//!   cut (its handler's next write fails, and its instance goes);
//! - at most 32 connections of the node may be stalled at once: past
//!   that, a newly stalled one is cut at once.
//!
//! So the memory slow readers can hold is bounded by 32 answers, whatever
//! their number; a client that reads, however slowly, keeps its
//! connection.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

use crate::metrics::Series;

/// How long a write may wait before its connection counts as stalled.
const STALL_GRACE: Duration = Duration::from_secs(1);
/// How long a stalled connection may go without its client reading.
const SLOW_READER_DEADLINE: Duration = Duration::from_secs(10);
/// Connections of the node stalled at once, past which a newly stalled
/// one is cut at once.
pub const MAX_STALLED: usize = 32;

/// The node's slow readers, across its HTTP listeners.
#[derive(Debug, Default)]
pub struct SlowReaders {
    stalled: AtomicUsize,
    cut: AtomicU64,
}

impl SlowReaders {
    /// Watches the writes of `io`.
    pub fn watch<T>(self: &Arc<Self>, io: T) -> Watched<T> {
        Watched {
            io,
            readers: self.clone(),
            phase: Phase::Flowing,
            timer: None,
        }
    }

    pub fn series(&self) -> Vec<Series> {
        vec![
            Series::gauge(
                "host_http_stalled_connections",
                "HTTP connections whose client has not read the answer for a second or more.",
                self.stalled.load(Ordering::Relaxed) as u64,
            ),
            Series::counter(
                "host_http_slow_readers_cut_total",
                "HTTP connections cut because their client did not read the answer: 10 s \
                 without reading, or at once past 32 stalled connections.",
                self.cut.load(Ordering::Relaxed),
            ),
        ]
    }
}

/// Where a watched connection's writes stand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// The last write went through.
    Flowing,
    /// A write is waiting, for less than the grace.
    Waiting,
    /// A write has waited past the grace: counted as stalled.
    Stalled,
}

/// A connection whose writes are watched (see the module's doc).
pub struct Watched<T> {
    io: T,
    readers: Arc<SlowReaders>,
    phase: Phase,
    timer: Option<Pin<Box<Sleep>>>,
}

impl<T> Watched<T> {
    /// What a write that returned `polled` means for the connection.
    fn after_write<R>(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<io::Result<R>>,
    ) -> Poll<io::Result<R>> {
        if polled.is_ready() {
            self.flowing();
            return polled;
        }
        loop {
            match self.phase {
                Phase::Flowing => {
                    self.phase = Phase::Waiting;
                    self.timer = Some(Box::pin(tokio::time::sleep(STALL_GRACE)));
                }
                Phase::Waiting => {
                    if !self.timer_fired(cx) {
                        return Poll::Pending;
                    }
                    self.phase = Phase::Stalled;
                    let stalled = self.readers.stalled.fetch_add(1, Ordering::AcqRel) + 1;
                    if stalled > MAX_STALLED {
                        return self.cut("too many clients are not reading their answers");
                    }
                    let rest = SLOW_READER_DEADLINE.saturating_sub(STALL_GRACE);
                    self.timer = Some(Box::pin(tokio::time::sleep(rest)));
                }
                Phase::Stalled => {
                    if !self.timer_fired(cx) {
                        return Poll::Pending;
                    }
                    return self.cut("the client did not read its answer for 10 s");
                }
            }
        }
    }

    fn timer_fired(&mut self, cx: &mut Context<'_>) -> bool {
        self.timer
            .as_mut()
            .is_none_or(|timer| timer.as_mut().poll(cx).is_ready())
    }

    fn cut<R>(&mut self, why: &str) -> Poll<io::Result<R>> {
        self.readers.cut.fetch_add(1, Ordering::Relaxed);
        tracing::debug!("cut an HTTP connection: {why}");
        Poll::Ready(Err(io::Error::new(
            io::ErrorKind::TimedOut,
            why.to_string(),
        )))
    }

    fn flowing(&mut self) {
        if self.phase == Phase::Stalled {
            self.readers.stalled.fetch_sub(1, Ordering::AcqRel);
        }
        self.phase = Phase::Flowing;
        self.timer = None;
    }
}

impl<T> Drop for Watched<T> {
    fn drop(&mut self) {
        if self.phase == Phase::Stalled {
            self.readers.stalled.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Watched<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Watched<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.io).poll_write(cx, buf);
        self.after_write(cx, polled)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        self.after_write(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.io).poll_flush(cx);
        self.after_write(cx, polled)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}
