//! A process's mailbox: the messages sent to it that it has not taken yet,
//! and whether the process is running, hibernated or gone.
//!
//! As in Erlang, a mailbox has no limit on how many messages it holds:
//! callers wait for their replies, which is back-pressure enough for calls.
//! Casts are different: a guest can cast in a loop to a busy process, and
//! every message would sit in the host's memory, outside any guest's memory
//! cap. So a mailbox is bounded in bytes (`--mailbox-limit`): past it, a
//! send is refused and the sender is told, never dropped in silence.
//!
//! Why not a channel: between messages a process has no task. It rests in
//! its mailbox, either parked (its instance ready) or hibernated (only
//! its handed-over state). A message to a resting process starts a
//! task for it (or, for a call, the caller runs it: `direct_call`), and the
//! choice between "queue it" and "start it" must be made atomically with
//! the process coming to rest, or a message sent just then would be lost,
//! handled twice at once, or handled by a process whose state is gone. One
//! small lock per mailbox makes that choice; an empty mailbox allocates
//! nothing for its queue, which is what a node of 250,000 mostly idle
//! processes needs.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::oneshot;

use super::error::CallError;

/// What a queued message costs beyond its payload (the message, its place
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
    /// Wakes a process the node told to stop (`StopFlag`); it
    /// carries nothing and weighs nothing.
    Stop,
    /// Asks the process to render its state (the console's `state NAME`,
    /// as `:sys.get_state`), between two messages. Weighs nothing.
    RenderState(oneshot::Sender<Result<String, String>>),
    /// Asks a running process to hibernate if it has nothing else to do:
    /// the node needs its instance. Weighs nothing.
    Hibernate,
    /// Asks the process for a copy of its state (`hand-over`, which leaves
    /// it as it was), between two messages: a swap's dry run. Weighs
    /// nothing.
    HandOver(oneshot::Sender<Result<HandedOver, String>>),
}

impl Message {
    /// The bytes the message carries.
    pub fn into_payload(self) -> Vec<u8> {
        match self {
            Message::Call { message, .. } | Message::Cast { message } => message,
            Message::Stop | Message::RenderState(_) | Message::Hibernate | Message::HandOver(_) => {
                Vec::new()
            }
        }
    }

    /// How many bytes the message carries.
    pub fn payload_len(&self) -> usize {
        match self {
            Message::Call { message, .. } | Message::Cast { message } => message.len(),
            Message::Stop | Message::RenderState(_) | Message::Hibernate | Message::HandOver(_) => {
                0
            }
        }
    }

    /// What the message counts against its mailbox's limit.
    fn weight(&self) -> usize {
        match self {
            Message::Call { message, .. } | Message::Cast { message } => {
                message.len().saturating_add(MESSAGE_OVERHEAD_BYTES)
            }
            Message::Stop | Message::RenderState(_) | Message::Hibernate | Message::HandOver(_) => {
                0
            }
        }
    }
}

/// A state a process handed over, and the version of the code that did.
pub struct HandedOver {
    pub state: Vec<u8>,
    pub version: Arc<str>,
}

/// Why a message was not put in a mailbox. Either way it comes back.
pub enum SendError {
    /// The process has stopped taking messages (it is ending).
    Closed(Message),
    /// The mailbox holds `limit` bytes' worth of messages already.
    Full { message: Message, limit: usize },
}

/// What an abandoned process leaves to answer.
pub struct Abandoned {
    /// The caller of the call it was handling, if any.
    pub in_flight: Option<ReplyTo>,
    pub queued: Vec<Message>,
}

/// A process at rest in its mailbox: what it needs to run again.
pub trait Rest: Send + Sized + 'static {
    /// Starts a task for the process; `inbox` holds the message that woke
    /// it.
    fn wake(self, inbox: Inbox<Self>);

    /// Ends the process where it rests, without waking it, because the node
    /// is stopping: nothing is queued, nothing is lost.
    fn end(self);
}

/// The sending side, held by the registry and cloned for each sender.
pub struct Mailbox<R> {
    shared: Arc<Shared<R>>,
}

impl<R> Clone for Mailbox<R> {
    fn clone(&self) -> Self {
        Self {
            shared: self.shared.clone(),
        }
    }
}

/// The receiving side, held by whoever runs the process now.
pub struct Inbox<R> {
    shared: Arc<Shared<R>>,
}

struct Shared<R> {
    inner: Mutex<Inner<R>>,
    limit_bytes: usize,
}

struct Inner<R> {
    queue: VecDeque<Message>,
    /// The bytes queued (the limit's measure).
    bytes: usize,
    status: Status<R>,
    /// The caller of the call being handled now, kept here rather than in
    /// the runner's stack: should host code panic half-way, whoever cleans
    /// up answers it with the reason (`abandon`).
    in_flight: Option<ReplyTo>,
}

/// Where the process is.
pub enum Status<R> {
    /// A task, or a caller, runs it: messages queue.
    Running,
    /// Between messages, in its mailbox: the next message starts it.
    Resting(R),
    /// No more messages are taken; those queued can still be taken.
    Closed,
}

/// Why a process could not come to rest: it goes on.
pub enum Unrested<R> {
    /// Messages are queued: handle them first.
    Busy(R),
    /// The mailbox was closed (the node is stopping): end.
    Closed(R),
}

/// A new, empty mailbox of a running process, holding at most
/// `limit_bytes` of messages.
pub fn new<R>(limit_bytes: usize) -> (Mailbox<R>, Inbox<R>) {
    let shared = Arc::new(Shared {
        inner: Mutex::new(Inner {
            queue: VecDeque::new(),
            bytes: 0,
            status: Status::Running,
            in_flight: None,
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

impl<R> Shared<R> {
    fn lock(&self) -> MutexGuard<'_, Inner<R>> {
        // Every update under the lock is a few field writes that cannot
        // panic half-way: a poisoned lock is safe to keep using.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl<R: Rest> Mailbox<R> {
    /// Queues `message`, starting the process if it rests.
    pub fn send(&self, message: Message) -> Result<(), SendError> {
        self.put(message, true)
    }

    /// Queues a message that weighs nothing (a wake-up, a request for its
    /// state), past the limit; starts the process if it rests. Hands the
    /// message back if the process is ending.
    pub(crate) fn wake(&self, message: Message) -> Result<(), Message> {
        self.put(message, false).map_err(|error| match error {
            SendError::Closed(message) | SendError::Full { message, .. } => message,
        })
    }

    fn put(&self, message: Message, bounded: bool) -> Result<(), SendError> {
        let weight = message.weight();
        let resting = {
            let mut inner = self.shared.lock();
            match inner.status {
                Status::Closed => return Err(SendError::Closed(message)),
                _ if bounded && inner.bytes.saturating_add(weight) > self.shared.limit_bytes => {
                    return Err(SendError::Full {
                        message,
                        limit: self.shared.limit_bytes,
                    });
                }
                _ => {}
            }
            inner.bytes += weight;
            inner.queue.push_back(message);
            match std::mem::replace(&mut inner.status, Status::Running) {
                Status::Resting(rest) => Some(rest),
                _ => None,
            }
        };
        // Outside the lock: the process's task may run on another thread
        // at once.
        if let Some(rest) = resting {
            rest.wake(self.inbox());
        }
        Ok(())
    }

    /// Takes no more messages. Whoever runs the process gets what is
    /// queued, then cannot rest and ends; a resting process ends where it
    /// rests (shutdown).
    pub fn close(&self) {
        let resting = {
            let mut inner = self.shared.lock();
            match std::mem::replace(&mut inner.status, Status::Closed) {
                Status::Resting(rest) => Some(rest),
                _ => None,
            }
        };
        if let Some(rest) = resting {
            rest.end();
        }
    }
}

impl<R> Mailbox<R> {
    /// Closes the mailbox and hands its resting process back, if it rests
    /// and `due` says its time has come (idle past its timeout): the caller
    /// ends it.
    pub(crate) fn close_if(&self, due: impl FnOnce(&R) -> bool) -> Option<R> {
        let mut inner = self.shared.lock();
        match &inner.status {
            Status::Resting(rest) if due(rest) => {}
            _ => return None,
        }
        match std::mem::replace(&mut inner.status, Status::Closed) {
            Status::Resting(rest) => Some(rest),
            _ => None,
        }
    }

    /// Takes the resting process to run it here, if `choose` says so and
    /// nothing is queued: until it rests again, messages queue.
    pub(crate) fn take_if(&self, choose: impl FnOnce(&R) -> bool) -> Option<(R, Inbox<R>)> {
        let mut inner = self.shared.lock();
        match &inner.status {
            Status::Resting(rest) if inner.queue.is_empty() && choose(rest) => {}
            _ => return None,
        }
        match std::mem::replace(&mut inner.status, Status::Running) {
            Status::Resting(rest) => Some((rest, self.inbox())),
            _ => None,
        }
    }

    /// Queues `message` only if the process is running (not resting, not
    /// ending). Returns whether it was queued.
    pub(crate) fn send_if_running(&self, message: Message) -> bool {
        let mut inner = self.shared.lock();
        if !matches!(inner.status, Status::Running) {
            return false;
        }
        inner.bytes += message.weight();
        inner.queue.push_back(message);
        true
    }

    /// Closes the mailbox of a process whose runner died half-way (host
    /// code panicked while running it) and takes what is to be answered:
    /// the caller of the call it was handling, and what was queued. Only a
    /// running process is abandoned: one that came to rest or was closed
    /// before the panic is someone else's to end.
    pub(crate) fn abandon(&self) -> Option<Abandoned> {
        let mut inner = self.shared.lock();
        if !matches!(inner.status, Status::Running) {
            return None;
        }
        inner.status = Status::Closed;
        inner.bytes = 0;
        Some(Abandoned {
            in_flight: inner.in_flight.take(),
            queued: inner.queue.drain(..).collect(),
        })
    }

    /// What `look` makes of where the process is now.
    pub fn inspect<T>(&self, look: impl FnOnce(&Status<R>) -> T) -> T {
        look(&self.shared.lock().status)
    }

    /// Messages and bytes waiting in the mailbox.
    pub fn queued(&self) -> (usize, usize) {
        let inner = self.shared.lock();
        (inner.queue.len(), inner.bytes)
    }

    /// Whether `other` is this very mailbox (of this process, not another
    /// process of the same name).
    pub fn same_as(&self, other: &Mailbox<R>) -> bool {
        Arc::ptr_eq(&self.shared, &other.shared)
    }

    fn inbox(&self) -> Inbox<R> {
        Inbox {
            shared: self.shared.clone(),
        }
    }
}

impl<R> Inbox<R> {
    /// The next message if one is waiting.
    pub fn try_recv(&mut self) -> Option<Message> {
        let mut inner = self.shared.lock();
        let message = inner.queue.pop_front()?;
        inner.bytes -= message.weight();
        Some(message)
    }

    /// Keeps the caller of the call being handled now, until
    /// [`Inbox::take_caller`].
    pub fn hold_caller(&mut self, reply: ReplyTo) {
        self.shared.lock().in_flight = Some(reply);
    }

    /// The caller kept by [`Inbox::hold_caller`], if nobody answered it
    /// meanwhile.
    pub fn take_caller(&mut self) -> Option<ReplyTo> {
        self.shared.lock().in_flight.take()
    }

    /// Refuses further messages; those already queued can still be taken.
    pub fn close(&mut self) {
        self.shared.lock().status = Status::Closed;
    }

    /// Refuses further messages if none is queued; returns whether it did.
    pub fn close_if_empty(&mut self) -> bool {
        let mut inner = self.shared.lock();
        if !inner.queue.is_empty() {
            return false;
        }
        inner.status = Status::Closed;
        true
    }

    /// Puts the process to rest in its mailbox, if nothing is queued: from
    /// now on the first message wakes it. Otherwise hands `rest` back: busy
    /// while anything is queued (even in a closed mailbox, whose queue is
    /// still to be handled), closed once the queue is empty.
    pub fn rest(&mut self, rest: R) -> Result<(), Unrested<R>> {
        let mut inner = self.shared.lock();
        match inner.status {
            _ if !inner.queue.is_empty() => Err(Unrested::Busy(rest)),
            Status::Closed => Err(Unrested::Closed(rest)),
            _ => {
                inner.status = Status::Resting(rest);
                Ok(())
            }
        }
    }

    /// The sending side of this mailbox.
    pub fn mailbox(&self) -> Mailbox<R> {
        Mailbox {
            shared: self.shared.clone(),
        }
    }
}

/// A process that rests and nothing more: for tests of what holds mailboxes.
#[cfg(test)]
pub(crate) struct Idle;

#[cfg(test)]
impl Rest for Idle {
    fn wake(self, _inbox: Inbox<Self>) {}
    fn end(self) {}
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

    /// Counts wakes and ends, and keeps the inbox it was woken with.
    #[derive(Default)]
    struct Counter {
        woken: AtomicUsize,
        ended: AtomicUsize,
        inbox: Mutex<Option<Inbox<Resting>>>,
    }

    struct Resting(Arc<Counter>, u32);

    impl Rest for Resting {
        fn wake(self, inbox: Inbox<Self>) {
            self.0.woken.fetch_add(1, Ordering::SeqCst);
            *self.0.inbox.lock().unwrap() = Some(inbox);
        }
        fn end(self) {
            self.0.ended.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn only_a_running_process_is_abandoned() {
        let counter = Arc::new(Counter::default());
        let (mailbox, mut inbox) = new::<Resting>(1 << 20);
        assert!(inbox.rest(Resting(counter.clone(), 1)).is_ok());
        assert!(mailbox.abandon().is_none(), "a resting process is not");
        // The cast wakes it: it runs, and two messages are queued.
        assert!(mailbox.send(cast(1)).is_ok());
        assert!(mailbox.send(cast(2)).is_ok());
        let abandoned = mailbox.abandon().expect("a running process is");
        assert_eq!(abandoned.queued.len(), 2);
        assert!(matches!(mailbox.send(cast(3)), Err(SendError::Closed(_))));
        assert_eq!(mailbox.queued(), (0, 0));
        assert!(mailbox.abandon().is_none(), "a closed one is not");
    }

    #[test]
    fn a_full_mailbox_refuses_until_messages_are_taken() {
        let (mailbox, mut inbox) = new::<Resting>(3 * (100 + MESSAGE_OVERHEAD_BYTES));
        for _ in 0..3 {
            assert!(mailbox.send(cast(100)).is_ok());
        }
        assert!(matches!(
            mailbox.send(cast(100)),
            Err(SendError::Full { .. })
        ));
        assert!(inbox.try_recv().is_some());
        assert!(
            mailbox.send(cast(100)).is_ok(),
            "room again once one is taken"
        );
    }

    #[test]
    fn a_message_larger_than_the_limit_is_refused_and_returned() {
        let (mailbox, _inbox) = new::<Resting>(1000);
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
        let (mailbox, mut inbox) = new::<Resting>(1000);
        inbox.close();
        assert!(matches!(mailbox.send(cast(10)), Err(SendError::Closed(_))));
        assert!(matches!(mailbox.send(cast(800)), Err(SendError::Closed(_))));
        assert_eq!(mailbox.queued(), (0, 0));
    }

    #[test]
    fn a_process_rests_only_with_an_empty_mailbox() {
        let counter = Arc::new(Counter::default());
        let (mailbox, mut inbox) = new(1000);
        mailbox.send(cast(1)).ok();
        assert!(matches!(
            inbox.rest(Resting(counter.clone(), 0)),
            Err(Unrested::Busy(_))
        ));
        inbox.try_recv();
        assert!(inbox.rest(Resting(counter.clone(), 0)).is_ok());
        assert!(mailbox.inspect(|status| matches!(status, Status::Resting(_))));
    }

    #[test]
    fn the_first_message_wakes_a_resting_process_once_and_is_kept() {
        let counter = Arc::new(Counter::default());
        let (mailbox, mut inbox) = new(1000);
        assert!(inbox.rest(Resting(counter.clone(), 0)).is_ok());
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
    fn a_taken_process_queues_messages_and_cannot_rest_past_them() {
        let counter = Arc::new(Counter::default());
        let (mailbox, mut inbox) = new(1000);
        assert!(inbox.rest(Resting(counter.clone(), 1)).is_ok());
        assert!(mailbox.take_if(|rest| rest.1 == 2).is_none(), "not chosen");
        let (rest, mut taken) = mailbox.take_if(|rest| rest.1 == 1).expect("taken");
        assert!(mailbox.take_if(|_| true).is_none(), "taken once");
        assert!(mailbox.send(cast(5)).is_ok());
        assert_eq!(counter.woken.load(Ordering::SeqCst), 0, "queued, not woken");
        let Err(Unrested::Busy(rest)) = taken.rest(rest) else {
            panic!("a queued message keeps it running")
        };
        assert!(taken.try_recv().is_some());
        assert!(taken.rest(rest).is_ok());
    }

    #[test]
    fn a_rest_is_closed_only_when_due_and_a_closed_mailbox_ends_it() {
        let counter = Arc::new(Counter::default());
        let (mailbox, mut inbox) = new(1000);
        assert!(inbox.rest(Resting(counter.clone(), 7)).is_ok());
        assert!(mailbox.close_if(|rest| rest.1 == 8).is_none());
        assert!(mailbox.close_if(|rest| rest.1 == 7).is_some());
        assert!(matches!(mailbox.send(cast(1)), Err(SendError::Closed(_))));

        let (mailbox, mut inbox) = new(1000);
        assert!(inbox.rest(Resting(counter.clone(), 0)).is_ok());
        mailbox.close();
        assert_eq!(counter.ended.load(Ordering::SeqCst), 1);
        assert!(!mailbox.send_if_running(Message::Hibernate));
    }

    #[test]
    fn a_closed_mailbox_with_messages_queued_is_busy_until_they_are_taken() {
        let counter = Arc::new(Counter::default());
        let (mailbox, mut inbox) = new(1000);
        assert!(mailbox.send(cast(1)).is_ok());
        mailbox.close();
        assert!(matches!(
            inbox.rest(Resting(counter.clone(), 0)),
            Err(Unrested::Busy(_))
        ));
        inbox.try_recv();
        assert!(matches!(
            inbox.rest(Resting(counter.clone(), 0)),
            Err(Unrested::Closed(_))
        ));
    }
}
