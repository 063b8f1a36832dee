//! Console sessions: every client is one (a remote console is one per
//! hidden link, `start_iex` and `eval` have their own, the observer one per
//! drill-down). A session's traces print into its output, which the client
//! reads with `Output`; they stop by themselves when the session ends (the
//! link drops), whatever the client did.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::Console;
use crate::distribution::link::Link;

/// Lines a session's output holds for its client; past it, the oldest go.
const OUTPUT_LINES: usize = 10_000;

/// A session's identity: the link's address for a remote one.
pub type SessionId = usize;

/// One client's console.
pub struct Session {
    output: Mutex<VecDeque<String>>,
    printed: Notify,
    traces: Mutex<usize>,
    /// Cancelled when the client goes away: its traces stop.
    pub(super) ended: CancellationToken,
    /// Cancelled by `untrace` (then replaced): the running traces stop.
    untraced: Mutex<CancellationToken>,
    /// Another member's console asking: commands are not forwarded again.
    pub(super) from_member: bool,
    /// The link of a remote console: a session found under a link's
    /// address belongs to that link only while it lives.
    link: Option<Weak<Link>>,
}

impl Session {
    pub(super) fn new() -> Self {
        Self::with(false, None)
    }

    pub(super) fn with(from_member: bool, link: Option<Weak<Link>>) -> Self {
        Self {
            from_member,
            link,
            output: Mutex::new(VecDeque::new()),
            printed: Notify::new(),
            traces: Mutex::new(0),
            untraced: Mutex::new(CancellationToken::new()),
            ended: CancellationToken::new(),
        }
    }

    /// What a new trace of this session stops on: the session ending, or
    /// `untrace`.
    pub(super) fn trace_stopper(&self) -> CancellationToken {
        let untraced = self.untraced.lock().unwrap_or_else(|p| p.into_inner());
        let stopper = CancellationToken::new();
        let (ended, untraced, token) = (self.ended.clone(), untraced.clone(), stopper.clone());
        tokio::spawn(async move {
            tokio::select! {
                () = ended.cancelled() => {}
                () = untraced.cancelled() => {}
                () = token.cancelled() => {}
            }
            token.cancel();
        });
        stopper
    }

    /// Stops the running traces; later ones are not affected.
    pub(super) fn untrace(&self) {
        let mut untraced = self.untraced.lock().unwrap_or_else(|p| p.into_inner());
        untraced.cancel();
        *untraced = CancellationToken::new();
    }

    pub(super) fn print(&self, line: String) {
        let mut output = self.output.lock().unwrap_or_else(|p| p.into_inner());
        if output.len() == OUTPUT_LINES {
            output.pop_front();
        }
        output.push_back(line);
        drop(output);
        self.printed.notify_one();
    }

    pub(super) fn trace_started(&self) {
        *self.traces.lock().unwrap_or_else(|p| p.into_inner()) += 1;
    }

    pub(super) fn trace_ended(&self) {
        let mut traces = self.traces.lock().unwrap_or_else(|p| p.into_inner());
        *traces = traces.saturating_sub(1);
        drop(traces);
        self.printed.notify_one();
    }

    pub(super) fn tracing(&self) -> bool {
        self.running_traces() > 0
    }

    pub(super) fn running_traces(&self) -> usize {
        *self.traces.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// What was printed since the last call, waiting up to `wait` for
    /// something when nothing was.
    pub(super) async fn take_output(&self, wait: Duration) -> String {
        let take = || {
            let mut output = self.output.lock().unwrap_or_else(|p| p.into_inner());
            output.drain(..).map(|line| line + "\n").collect::<String>()
        };
        let text = take();
        if !text.is_empty() || !self.tracing() {
            return text;
        }
        let _ = tokio::time::timeout(wait, self.printed.notified()).await;
        take()
    }
}

impl Console {
    /// The session `id`, made on first use.
    pub fn session(&self, id: SessionId) -> Arc<Session> {
        let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        sessions
            .entry(id)
            .or_insert_with(|| {
                self.sessions_attached.fetch_add(1, Ordering::Relaxed);
                Arc::new(Session::new())
            })
            .clone()
    }

    /// The session of remote console `link` (kept under `id`, the link's
    /// address), made on first use, with a watcher that ends it when the
    /// link closes. A session left under the address of a link that is
    /// gone is not reused: it is ended and replaced.
    pub(super) fn link_session(self: &Arc<Self>, id: SessionId, link: &Arc<Link>) -> Arc<Session> {
        let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(session) = sessions.get(&id) {
            let same_link = session
                .link
                .as_ref()
                .and_then(Weak::upgrade)
                .is_some_and(|current| Arc::ptr_eq(&current, link));
            if same_link {
                return session.clone();
            }
            if let Some(stale) = sessions.remove(&id) {
                self.sessions_attached.fetch_sub(1, Ordering::Relaxed);
                stale.ended.cancel();
            }
        }
        let session = Arc::new(Session::with(false, Some(Arc::downgrade(link))));
        sessions.insert(id, session.clone());
        self.sessions_attached.fetch_add(1, Ordering::Relaxed);
        let (watcher, link, watched) = (self.clone(), link.clone(), session.clone());
        tokio::spawn(async move {
            link.closed().await;
            watcher.end_session_if(id, &watched);
        });
        session
    }

    /// Ends session `id` if it is still `session`.
    fn end_session_if(&self, id: SessionId, session: &Arc<Session>) {
        let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        if sessions
            .get(&id)
            .is_some_and(|current| Arc::ptr_eq(current, session))
            && let Some(ended) = sessions.remove(&id)
        {
            self.sessions_attached.fetch_sub(1, Ordering::Relaxed);
            ended.ended.cancel();
        }
    }

    /// Ends session `id`: its traces stop.
    pub fn end_session(&self, id: SessionId) {
        let session = self
            .sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id);
        if let Some(session) = session {
            self.sessions_attached.fetch_sub(1, Ordering::Relaxed);
            session.ended.cancel();
        }
    }
}
