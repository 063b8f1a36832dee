//! A process's mailbox: the messages sent to it that it has not taken yet,
//! and whether the process is running, asleep (hibernated) or gone.
//!
//! As in Erlang, a mailbox has no limit on how many messages it holds:
//! callers wait for their replies, which is back-pressure enough for calls.
//! Casts are different: a guest can cast in a loop to a busy process, and
//! every message would sit in the host's memory, outside any guest's memory
//! cap. So a mailbox is bounded in bytes (`--mailbox-limit`): past it, a
//! send is refused and the sender is told, never dropped in silence.
//!
//! Why not a channel: a hibernated process has no task to receive, yet its
//! mailbox must take messages and start it again, and the choice between
//! "queue it" and "wake it" must be made atomically with the process going
//! to sleep, or a message sent while it hands over its state would be lost
//! or handled by a process whose state is already gone. One small lock per
//! mailbox makes that choice; an empty mailbox allocates nothing for its
//! queue, which is what a node of 250,000 mostly idle processes needs.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Poll, Waker};

use tokio::sync::oneshot;

use crate::capabilities::CallError;

/// What a queued message costs beyond its payload (the message, its slot
/// in the queue): a stream of empty casts is bounded too.
const MESSAGE_OVERHEAD_BYTES: usize = 64;

/// Where the answer to a call goes.
pub type ReplyTo = oneshot::Sender<Result<Vec<u8>, CallError>>;

pub enum Message {
    Call {
        message: Vec<u8>,
        reply: ReplyTo,
    },
    Cast {
        message: Vec<u8>,
    },
    /// Wakes a process the node told to stop (`registry::StopFlag`); it
    /// carries nothing and weighs nothing.
    Stop,
    /// Asks the process to render its state (the console's `state NAME`,
    /// as `:sys.get_state`), between two messages. Weighs nothing.
    RenderState(oneshot::Sender<Result<String, String>>),
    /// Asks a running process to hibernate if it has nothing else to do:
    /// the node needs its instance slot. Weighs nothing.
    Hibernate,
}

impl Message {
    /// The bytes the message carries.
    pub fn into_payload(self) -> Vec<u8> {
        match self {
            Message::Call { message, .. } | Message::Cast { message } => message,
            Message::Stop | Message::RenderState(_) | Message::Hibernate => Vec::new(),
        }
    }

    /// How many bytes the message carries.
    pub fn payload_len(&self) -> usize {
        match self {
            Message::Call { message, .. } | Message::Cast { message } => message.len(),
            Message::Stop | Message::RenderState(_) | Message::Hibernate => 0,
        }
    }

    /// What the message counts against its mailbox's limit.
    fn weight(&self) -> usize {
        match self {
            Message::Call { message, .. } | Message::Cast { message } => {
                message.len().saturating_add(MESSAGE_OVERHEAD_BYTES)
            }
            Message::Stop | Message::RenderState(_) | Message::Hibernate => 0,
        }
    }
}

/// Why a message was not put in a mailbox. Either way it comes back.
pub enum SendError {
    /// The process has stopped taking messages (it is ending).
    Closed(Message),
    /// The mailbox holds `limit` bytes' worth of messages already.
    Full { message: Message, limit: usize },
}

/// A process that sleeps without a task or an instance: what it needs to
/// run again. The mailbox holds it, and the first message wakes it.
pub trait Sleeper: Send + 'static {
    /// Starts the process again; `inbox` holds the message that woke it.
    fn wake(self: Box<Self>, inbox: Inbox);

    /// Ends the process without waking it (idle past its timeout, or the
    /// node is shutting down): nothing was queued, nothing is lost.
    fn end(self: Box<Self>, shutdown: bool);
}

/// The sending side, held by the registry and cloned for each sender.
#[derive(Clone)]
pub struct Mailbox {
    shared: Arc<Shared>,
}

/// The receiving side, owned by the running process.
pub struct Inbox {
    shared: Arc<Shared>,
}

struct Shared {
    inner: Mutex<Inner>,
    limit_bytes: usize,
}

struct Inner {
    queue: VecDeque<Message>,
    /// The bytes queued (the limit's measure).
    bytes: usize,
    status: Status,
    /// The running process's task, when it waits for a message.
    waker: Option<Waker>,
    /// How many times the process has gone to sleep: tells a sleep the
    /// node scheduled to end from a later one.
    sleeps: u32,
}

enum Status {
    Running,
    Asleep(Box<dyn Sleeper>),
    /// No more messages are taken; those queued can still be received.
    Closed,
}

/// A new, empty mailbox of a running process, holding at most
/// `limit_bytes` of messages.
pub fn new(limit_bytes: usize) -> (Mailbox, Inbox) {
    let shared = Arc::new(Shared {
        inner: Mutex::new(Inner {
            queue: VecDeque::new(),
            bytes: 0,
            status: Status::Running,
            waker: None,
            sleeps: 0,
        }),
        limit_bytes,
    });
    (
        Mailbox {
            shared: shared.clone(),
        },
        Inbox { shared },
    )
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Every update under the lock is a few field writes that cannot
        // panic half-way: a poisoned lock is safe to keep using.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// What happened to a message put in a mailbox.
enum Queued {
    /// Queued for the running process (whose task was woken if it waited).
    Running(Option<Waker>),
    /// Queued for a sleeping process, which must now be started.
    Woke(Box<dyn Sleeper>),
}

impl Mailbox {
    /// Queues `message`, waking the process if it sleeps.
    pub fn send(&self, message: Message) -> Result<(), SendError> {
        self.put(message, true)
    }

    /// Queues a message that weighs nothing (a wake-up, a request for its
    /// state), past the limit; wakes the process if it sleeps. Hands the
    /// message back if the process is ending.
    pub(crate) fn wake(&self, message: Message) -> Result<(), Message> {
        self.put(message, false).map_err(|error| match error {
            SendError::Closed(message) | SendError::Full { message, .. } => message,
        })
    }

    fn put(&self, message: Message, bounded: bool) -> Result<(), SendError> {
        let weight = message.weight();
        let queued = {
            let mut inner = self.shared.lock();
            if matches!(inner.status, Status::Closed) {
                return Err(SendError::Closed(message));
            }
            if bounded && inner.bytes.saturating_add(weight) > self.shared.limit_bytes {
                return Err(SendError::Full {
                    message,
                    limit: self.shared.limit_bytes,
                });
            }
            inner.bytes += weight;
            inner.queue.push_back(message);
            match std::mem::replace(&mut inner.status, Status::Running) {
                Status::Asleep(sleeper) => Queued::Woke(sleeper),
                _ => Queued::Running(inner.waker.take()),
            }
        };
        // Outside the lock: a woken task may run on another thread at once.
        match queued {
            Queued::Running(waker) => waker.into_iter().for_each(Waker::wake),
            Queued::Woke(sleeper) => sleeper.wake(Inbox {
                shared: self.shared.clone(),
            }),
        }
        Ok(())
    }

    /// Asks the process to hibernate if it is running; a process that
    /// sleeps already, or is ending, is left alone. Returns whether asked.
    pub(crate) fn ask_to_hibernate(&self) -> bool {
        let waker = {
            let mut inner = self.shared.lock();
            if !matches!(inner.status, Status::Running) {
                return false;
            }
            inner.queue.push_back(Message::Hibernate);
            inner.waker.take()
        };
        waker.into_iter().for_each(Waker::wake);
        true
    }

    /// Messages and bytes waiting in the mailbox.
    pub fn queued(&self) -> (usize, usize) {
        let inner = self.shared.lock();
        (inner.queue.len(), inner.bytes)
    }

    /// Whether the process sleeps (hibernated, holding no instance).
    pub fn is_asleep(&self) -> bool {
        matches!(self.shared.lock().status, Status::Asleep(_))
    }

    /// Whether the process runs (neither asleep nor ending).
    pub fn is_running(&self) -> bool {
        matches!(self.shared.lock().status, Status::Running)
    }

    /// Takes no more messages. A running process gets what is queued, then
    /// `None`; a sleeping one ends where it sleeps (shutdown).
    pub fn close(&self) {
        let (waker, sleeper) = {
            let mut inner = self.shared.lock();
            let sleeper = match std::mem::replace(&mut inner.status, Status::Closed) {
                Status::Asleep(sleeper) => Some(sleeper),
                _ => None,
            };
            (inner.waker.take(), sleeper)
        };
        waker.into_iter().for_each(Waker::wake);
        if let Some(sleeper) = sleeper {
            sleeper.end(true);
        }
    }

    /// Ends the process if it still sleeps the sleep numbered `sleep` (the
    /// one [`Inbox::sleep`] returned): it was idle past its timeout.
    /// Returns whether it ended.
    pub(crate) fn end_sleep(&self, sleep: u32) -> bool {
        let sleeper = {
            let mut inner = self.shared.lock();
            if inner.sleeps != sleep || !matches!(inner.status, Status::Asleep(_)) {
                return false;
            }
            match std::mem::replace(&mut inner.status, Status::Closed) {
                Status::Asleep(sleeper) => sleeper,
                _ => return false,
            }
        };
        sleeper.end(false);
        true
    }

    /// Whether both are the same process's mailbox.
    pub fn same(&self, other: &Mailbox) -> bool {
        Arc::ptr_eq(&self.shared, &other.shared)
    }
}

impl Inbox {
    /// The next message; `None` once the mailbox is closed and empty.
    pub async fn recv(&mut self) -> Option<Message> {
        poll_fn(|context| {
            let mut inner = self.shared.lock();
            if let Some(message) = inner.queue.pop_front() {
                inner.bytes -= message.weight();
                return Poll::Ready(Some(message));
            }
            if matches!(inner.status, Status::Closed) {
                return Poll::Ready(None);
            }
            inner.waker = Some(context.waker().clone());
            Poll::Pending
        })
        .await
    }

    /// The next message if one is waiting.
    pub fn try_recv(&mut self) -> Option<Message> {
        let mut inner = self.shared.lock();
        let message = inner.queue.pop_front()?;
        inner.bytes -= message.weight();
        Some(message)
    }

    /// Refuses further messages; those already queued can still be taken.
    pub fn close(&mut self) {
        self.shared.lock().status = Status::Closed;
    }

    /// Puts the process to sleep, if nothing is queued: from now on the
    /// first message starts `sleeper`. Returns the sleep's number, or hands
    /// `sleeper` back when a message came first (the process goes on).
    pub fn sleep(&mut self, sleeper: Box<dyn Sleeper>) -> Result<u32, Box<dyn Sleeper>> {
        let mut inner = self.shared.lock();
        if !inner.queue.is_empty() || !matches!(inner.status, Status::Running) {
            return Err(sleeper);
        }
        inner.status = Status::Asleep(sleeper);
        inner.waker = None;
        inner.sleeps = inner.sleeps.wrapping_add(1);
        Ok(inner.sleeps)
    }

    /// The sending side of this mailbox.
    pub fn mailbox(&self) -> Mailbox {
        Mailbox {
            shared: self.shared.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn cast(bytes: usize) -> Message {
        Message::Cast {
            message: vec![0; bytes],
        }
    }

    #[tokio::test]
    async fn a_full_mailbox_refuses_until_messages_are_taken() {
        let (mailbox, mut inbox) = new(3 * (100 + MESSAGE_OVERHEAD_BYTES));
        for _ in 0..3 {
            assert!(mailbox.send(cast(100)).is_ok());
        }
        assert!(matches!(
            mailbox.send(cast(100)),
            Err(SendError::Full { .. })
        ));
        assert!(inbox.recv().await.is_some());
        assert!(
            mailbox.send(cast(100)).is_ok(),
            "room again once one is taken"
        );
    }

    #[test]
    fn a_message_larger_than_the_limit_is_refused_and_returned() {
        let (mailbox, _inbox) = new(1000);
        match mailbox.send(cast(5000)) {
            Err(SendError::Full { message, limit }) => {
                assert_eq!(limit, 1000);
                assert_eq!(message.into_payload().len(), 5000);
            }
            _ => panic!("expected a full mailbox"),
        }
    }

    #[test]
    fn a_closed_inbox_hands_the_message_back_and_frees_its_bytes() {
        let (mailbox, mut inbox) = new(1000);
        inbox.close();
        assert!(matches!(mailbox.send(cast(10)), Err(SendError::Closed(_))));
        assert!(matches!(mailbox.send(cast(800)), Err(SendError::Closed(_))));
        assert_eq!(mailbox.queued(), (0, 0));
    }

    /// Counts wakes and ends, and keeps the inbox it was woken with.
    #[derive(Default)]
    struct Counter {
        woken: AtomicUsize,
        ended: AtomicUsize,
        inbox: Mutex<Option<Inbox>>,
    }

    struct CountingSleeper(Arc<Counter>);

    impl Sleeper for CountingSleeper {
        fn wake(self: Box<Self>, inbox: Inbox) {
            self.0.woken.fetch_add(1, Ordering::SeqCst);
            *self.0.inbox.lock().unwrap() = Some(inbox);
        }
        fn end(self: Box<Self>, _shutdown: bool) {
            self.0.ended.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn a_process_sleeps_only_with_an_empty_mailbox() {
        let counter = Arc::new(Counter::default());
        let (mailbox, mut inbox) = new(1000);
        mailbox.send(cast(1)).ok();
        assert!(
            inbox
                .sleep(Box::new(CountingSleeper(counter.clone())))
                .is_err()
        );
        assert!(!mailbox.is_asleep());
        inbox.try_recv();
        assert!(
            inbox
                .sleep(Box::new(CountingSleeper(counter.clone())))
                .is_ok()
        );
        assert!(mailbox.is_asleep());
    }

    #[test]
    fn the_first_message_wakes_a_sleeping_process_once_and_is_kept() {
        let counter = Arc::new(Counter::default());
        let (mailbox, mut inbox) = new(1000);
        let _ = inbox.sleep(Box::new(CountingSleeper(counter.clone())));
        assert!(mailbox.send(cast(3)).is_ok());
        assert!(mailbox.send(cast(4)).is_ok());
        assert_eq!(counter.woken.load(Ordering::SeqCst), 1);
        let mut woken = counter.inbox.lock().unwrap().take().expect("woken inbox");
        let sizes: Vec<usize> = std::iter::from_fn(|| woken.try_recv())
            .map(|m| m.into_payload().len())
            .collect();
        assert_eq!(sizes, vec![3, 4], "in the order sent");
    }

    #[test]
    fn a_sleep_ends_only_if_it_is_still_the_same_sleep() {
        let counter = Arc::new(Counter::default());
        let (mailbox, mut inbox) = new(1000);
        let first = inbox
            .sleep(Box::new(CountingSleeper(counter.clone())))
            .ok()
            .expect("asleep");
        assert!(mailbox.send(cast(1)).is_ok());
        let mut woken = counter.inbox.lock().unwrap().take().expect("woken");
        woken.try_recv();
        let second = woken
            .sleep(Box::new(CountingSleeper(counter.clone())))
            .ok()
            .expect("asleep again");
        assert!(!mailbox.end_sleep(first), "an older sleep does not end it");
        assert!(!mailbox.ask_to_hibernate(), "asleep: nothing to ask");
        assert!(mailbox.end_sleep(second));
        assert_eq!(counter.ended.load(Ordering::SeqCst), 1);
        assert!(matches!(mailbox.send(cast(1)), Err(SendError::Closed(_))));
    }
}
