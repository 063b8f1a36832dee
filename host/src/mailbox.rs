//! A process's mailbox: the messages sent to it that it has not taken yet.
//!
//! As in Erlang, a mailbox has no limit on how many messages it holds:
//! callers wait for their replies, which is back-pressure enough for calls.
//! Casts are different: a guest can cast in a loop to a busy process, and
//! every message would sit in the host's memory, outside any guest's memory
//! cap. So a mailbox is bounded in bytes (`--mailbox-limit`): past it, a
//! send is refused and the sender is told, never dropped in silence.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::{mpsc, oneshot};

use crate::capabilities::CallError;

/// What a queued message costs beyond its payload (the message, the
/// channel's slot): a stream of empty casts is bounded too.
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
}

impl Message {
    /// The bytes the message carries.
    pub fn into_payload(self) -> Vec<u8> {
        match self {
            Message::Call { message, .. } | Message::Cast { message } => message,
            Message::Stop | Message::RenderState(_) => Vec::new(),
        }
    }

    /// What the message counts against its mailbox's limit.
    fn weight(&self) -> usize {
        match self {
            Message::Call { message, .. } | Message::Cast { message } => {
                message.len().saturating_add(MESSAGE_OVERHEAD_BYTES)
            }
            Message::Stop | Message::RenderState(_) => 0,
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

/// The sending side, held by the registry and cloned for each sender.
#[derive(Clone)]
pub struct Mailbox {
    sender: mpsc::UnboundedSender<Message>,
    queued: Arc<Queued>,
    limit_bytes: usize,
}

/// The receiving side, owned by the process.
pub struct Inbox {
    receiver: mpsc::UnboundedReceiver<Message>,
    queued: Arc<Queued>,
}

/// What sits in a mailbox: the bytes (the limit's measure) and the number
/// of messages (what `ps` shows, as Erlang's `message_queue_len`).
#[derive(Default)]
struct Queued {
    bytes: AtomicUsize,
    messages: AtomicUsize,
}

/// A new, empty mailbox holding at most `limit_bytes` of messages.
pub fn new(limit_bytes: usize) -> (Mailbox, Inbox) {
    let (sender, receiver) = mpsc::unbounded_channel();
    let queued = Arc::new(Queued::default());
    let mailbox = Mailbox {
        sender,
        queued: queued.clone(),
        limit_bytes,
    };
    (mailbox, Inbox { receiver, queued })
}

impl Mailbox {
    pub fn send(&self, message: Message) -> Result<(), SendError> {
        let weight = message.weight();
        // Reserve the bytes first, so concurrent senders cannot all slip in
        // under the limit together.
        let before = self.queued.bytes.fetch_add(weight, Ordering::AcqRel);
        if before.saturating_add(weight) > self.limit_bytes {
            self.queued.bytes.fetch_sub(weight, Ordering::AcqRel);
            return Err(SendError::Full {
                message,
                limit: self.limit_bytes,
            });
        }
        self.queued.messages.fetch_add(1, Ordering::Relaxed);
        self.sender.send(message).map_err(|returned| {
            self.queued.bytes.fetch_sub(weight, Ordering::AcqRel);
            self.queued.messages.fetch_sub(1, Ordering::Relaxed);
            SendError::Closed(returned.0)
        })
    }

    /// Messages and bytes waiting in the mailbox.
    pub fn queued(&self) -> (usize, usize) {
        (
            self.queued.messages.load(Ordering::Relaxed),
            self.queued.bytes.load(Ordering::Relaxed),
        )
    }

    /// Queues a message that weighs nothing (a wake-up, a request for its
    /// state), past the limit. Hands it back if the process is ending.
    pub(crate) fn wake(&self, message: Message) -> Result<(), Message> {
        self.queued.messages.fetch_add(1, Ordering::Relaxed);
        self.sender.send(message).map_err(|returned| {
            self.queued.messages.fetch_sub(1, Ordering::Relaxed);
            returned.0
        })
    }
}

impl Inbox {
    /// The next message; `None` once every sender is gone, or the inbox is
    /// closed and empty.
    pub async fn recv(&mut self) -> Option<Message> {
        let message = self.receiver.recv().await?;
        self.taken(&message);
        Some(message)
    }

    /// The next message if one is waiting.
    pub fn try_recv(&mut self) -> Option<Message> {
        let message = self.receiver.try_recv().ok()?;
        self.taken(&message);
        Some(message)
    }

    /// Refuses further messages; those already queued can still be taken.
    pub fn close(&mut self) {
        self.receiver.close();
    }

    fn taken(&self, message: &Message) {
        self.queued
            .bytes
            .fetch_sub(message.weight(), Ordering::AcqRel);
        self.queued.messages.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
