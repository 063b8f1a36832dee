//! A process: one component instance with its own memory and mailbox,
//! handling one message at a time, as an OTP `gen_server`.
//!
//! Life of a process: registered under its name with an empty mailbox,
//! instantiated, `init` (loads its state from storage), then messages.
//! Between messages it has no task: it rests in its mailbox, parked with
//! its instance. A message to a parked process starts a task for it; a
//! call from a task of this node runs the guest's `handle-call` right in
//! the caller's task when nothing is queued ([`call_parked`]): no task
//! wake-up, no reply channel. Idle for `hibernate_after`, or asked to make
//! room for another process, it hibernates: its state is handed over
//! (`hand-over`) and kept in its mailbox, its instance and slot are freed,
//! and its next message starts it again from that state (`take-over`).
//! Idle for `idle_timeout` (parked or hibernated) it expires and its memory
//! is freed; it comes back from storage. It may also crash (trap, deadline,
//! memory cap: the caller gets `crashed`), or the node shuts down. Whatever
//! still sits in the mailbox when it ends is answered, never dropped in
//! silence.
//!
//! Whoever runs a process holds its [`Live`] instance: a task, or a caller.
//! There is one `Live` per process, moved between them and the mailbox, so
//! one message at a time holds by construction.

use std::any::Any;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwapOption;
use futures_util::FutureExt;
use tokio::time::Instant;
use wasmtime::Store;
use wasmtime::component::Instance;

use crate::bindings::ProcessComponent;
use crate::capabilities::CallError;
use crate::component::LoadedComponent;
use crate::hibernation::{KeptState, Slot};
use crate::mailbox::{self, Inbox, Mailbox, Message, ReplyTo, Rest, Status, Unrested};
use crate::node::NodeCore;
use crate::registry::{Fence, ProcessKey, StopFlag, StopReason};
use crate::state::InstanceState;
use crate::trace::{EventKind, Tracer};

/// A process id, unique within the node's lifetime. A process keeps it
/// while it hibernates.
pub type Pid = u64;

/// A process's mailbox, where it rests between messages.
pub type ProcessMailbox = Mailbox<Resting>;
type ProcessInbox = Inbox<Resting>;

/// What a process counts about itself, for the console and the observer.
/// Updated with relaxed atomics on the message path; read by `ps`.
pub struct ProcessStats {
    pub started: SystemTime,
    /// Messages handled.
    pub messages: AtomicU64,
    /// Linear memory, in bytes (kept by the store's limiter); while it
    /// hibernates, the bytes of its handed-over state.
    pub memory: Arc<AtomicUsize>,
    /// The trace on this process, if any: one atomic load per message when
    /// there is none.
    pub trace: ArcSwapOption<Tracer>,
}

impl Default for ProcessStats {
    fn default() -> Self {
        Self {
            started: SystemTime::now(),
            messages: AtomicU64::new(0),
            memory: Arc::new(AtomicUsize::new(0)),
            trace: ArcSwapOption::empty(),
        }
    }
}

/// How a process ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exit {
    /// The node let go of its mailbox: shutdown.
    Shutdown,
    /// Idle past its timeout.
    Expired,
    /// Trapped, ran past its deadline or its memory cap.
    Crashed(String),
    /// Could not be instantiated, or its `init` failed.
    InitFailed(String),
    /// Never ran: no instance slot came free in time. Not a crash.
    NoSlot(String),
    /// The node stopped it: its name moved, or the node is cut off.
    Stopped(StopReason),
}

/// Where a process's state comes from when it gets an instance.
enum Start {
    /// Its `init`: a new process, which loads its state from storage.
    Init,
    /// The state it handed over when it hibernated.
    TakeOver(Vec<u8>),
}

/// Who a process is: what it needs to run, kept while it rests. In a
/// cluster, `fence` is its registration (its writes count only while it is
/// current), and `stop` is how the node tells it to stop.
pub struct Identity {
    pub node: Arc<NodeCore>,
    pub component: Arc<LoadedComponent>,
    pub key: ProcessKey,
    pub pid: Pid,
    pub fence: Option<Fence>,
    pub stop: Arc<StopFlag>,
    pub stats: Arc<ProcessStats>,
}

/// A process's instance and what goes with it. Fields drop in order: the
/// store (and its pool slot's contents) before the slot is given back.
struct Live {
    store: Store<InstanceState>,
    bindings: ProcessComponent,
    instance: Instance,
    _slot: Slot,
    last_message: Instant,
}

/// A process between messages, with its instance.
pub struct Parked {
    identity: Identity,
    live: Live,
}

/// A hibernated process: its handed-over state, no instance.
pub struct Hibernated {
    identity: Identity,
    state: KeptState,
    last_message: Instant,
}

/// How a process rests in its mailbox.
pub enum Resting {
    Parked(Box<Parked>),
    Asleep(Box<Hibernated>),
}

impl Resting {
    fn identity(&self) -> &Identity {
        match self {
            Resting::Parked(parked) => &parked.identity,
            Resting::Asleep(hibernated) => &hibernated.identity,
        }
    }

    fn last_message(&self) -> Instant {
        match self {
            Resting::Parked(parked) => parked.live.last_message,
            Resting::Asleep(hibernated) => hibernated.last_message,
        }
    }
}

impl Rest for Resting {
    fn wake(self, inbox: ProcessInbox) {
        match self {
            Resting::Parked(parked) => {
                let Parked { identity, live } = *parked;
                Task::new(identity, inbox).spawn(Begin::Resume(live));
            }
            Resting::Asleep(hibernated) => {
                let (identity, start) = hibernated.waking();
                Task::new(identity, inbox).spawn(Begin::Start(start));
            }
        }
    }

    fn end(self) {
        let Identity { node, key, pid, .. } = self.identity();
        node.process_exited(key, *pid, &Exit::Shutdown);
        node.registry().unregister(key, *pid);
        self.forget_state();
    }
}

impl Resting {
    /// Lets go of what a process that ended while resting kept: a
    /// hibernated one's state (in memory or in storage).
    fn forget_state(self) {
        if let Resting::Asleep(hibernated) = self {
            let Hibernated {
                identity, state, ..
            } = *hibernated;
            let node = &identity.node;
            node.sleeping_states()
                .forget(node.storage(), identity.pid, state);
        }
    }
}

impl Hibernated {
    /// Who wakes, and from what: the state it handed over, or, should that
    /// be lost (storage failed), `init` from storage, as after an expiry.
    fn waking(self) -> (Identity, Start) {
        let Hibernated {
            identity, state, ..
        } = self;
        let node = identity.node.clone();
        node.metrics().woken();
        let start = match node
            .sleeping_states()
            .take(node.storage(), identity.pid, state)
        {
            Ok(state) => Start::TakeOver(state),
            Err(reason) => {
                tracing::warn!(process = %identity.key, pid = identity.pid, "woken from storage instead of its handed-over state: {reason}");
                Start::Init
            }
        };
        (identity, start)
    }
}

/// Starts the process `identity` names as a task of its node and returns
/// its mailbox. The process instantiates itself; messages sent meanwhile
/// wait.
pub fn spawn(identity: Identity) -> ProcessMailbox {
    let limit = identity.node.config().limits.max_mailbox_bytes;
    let (mailbox, inbox) = mailbox::new(limit);
    Task::new(identity, inbox).spawn(Begin::Start(Start::Init));
    mailbox
}

/// Whether the process of `mailbox` holds an instance (parked or running).
pub fn holds_instance(mailbox: &ProcessMailbox) -> bool {
    mailbox.inspect(|status| match status {
        Status::Running => true,
        Status::Resting(resting) => matches!(resting, Resting::Parked(_)),
        Status::Closed => false,
    })
}

/// Makes the process of `mailbox` give up its slot if it is idle: a parked
/// one hibernates (in a task of its own); a running one is asked to once it
/// has nothing queued. Returns whether it was asked.
pub fn make_room(mailbox: &ProcessMailbox) -> bool {
    let taken = mailbox.take_if(|resting| matches!(resting, Resting::Parked(_)));
    match taken {
        Some((Resting::Parked(parked), inbox)) => {
            let Parked { identity, live } = *parked;
            Task::new(identity, inbox).spawn(Begin::Hibernate(live));
            true
        }
        Some((asleep, inbox)) => {
            // Not chosen by `take_if`; put back as it was.
            let mut inbox = inbox;
            if let Err(Unrested::Busy(rest) | Unrested::Closed(rest)) = inbox.rest(asleep) {
                rest.wake(inbox);
            }
            false
        }
        None => mailbox.send_if_running(Message::Hibernate),
    }
}

/// Looks at a resting process whose idle timer is due: hibernates it if
/// parked past `hibernate_after`, ends it past `idle_timeout`, or schedules
/// the next look. A process that is running is looked at again later; one
/// that ended, or sleeps (its sleep has a timer of its own), is forgotten.
pub fn idle_due(node: &Arc<NodeCore>, mailbox: ProcessMailbox, now: Instant) {
    let limits = &node.config().limits;
    let idle_timeout = limits.idle_timeout;
    let hibernate_after = limits.hibernate_after.unwrap_or(Duration::MAX);
    let rest = hibernate_after.min(idle_timeout);
    let expired =
        |resting: &Resting| now.saturating_duration_since(resting.last_message()) >= idle_timeout;
    let expiring = mailbox.inspect(|status| match status {
        Status::Resting(resting) if expired(resting) => {
            Some((resting.identity().key.clone(), resting.identity().pid))
        }
        _ => None,
    });
    if let Some((key, pid)) = expiring {
        // Its name goes with its mailbox's closing, under the registry's
        // lock: a sender finds either the resting process or no name.
        let ended = node
            .registry()
            .unregister_if(&key, pid, || mailbox.close_if(expired));
        if let Some(resting) = ended {
            node.process_exited(&key, pid, &Exit::Expired);
            resting.forget_state();
            return;
        }
    }
    let hibernating = mailbox.take_if(|resting| {
        matches!(resting, Resting::Parked(_))
            && now.saturating_duration_since(resting.last_message()) >= hibernate_after
    });
    if let Some((Resting::Parked(parked), inbox)) = hibernating {
        // Looked at again later, in case a message keeps it from sleeping.
        node.idle_timers()
            .schedule(later(now, rest), inbox.mailbox());
        let Parked { identity, live } = *parked;
        Task::new(identity, inbox).spawn(Begin::Hibernate(live));
        return;
    }
    let next = mailbox.inspect(|status| match status {
        Status::Closed => None,
        Status::Running => Some(later(now, rest)),
        Status::Resting(Resting::Parked(parked)) => Some(later(parked.live.last_message, rest)),
        // Every sleep scheduled its own expiry when it began.
        Status::Resting(Resting::Asleep(_)) => None,
    });
    if let Some(next) = next {
        node.idle_timers().schedule(next, mailbox);
    }
}

/// `at + wait`, or far in the future if that is past what an `Instant`
/// holds (an absurd `--idle-timeout`).
fn later(at: Instant, wait: Duration) -> Instant {
    at.checked_add(wait)
        .unwrap_or_else(|| at + Duration::from_secs(100 * 365 * 24 * 3600))
}

/// Calls the resting process of `mailbox` from the caller's own task, if
/// nothing is queued and it was not told to stop: the guest's `handle-call`
/// runs here (after `take-over`, if it was hibernated), so neither a task
/// wake-up nor a reply channel is needed. `Err` gives the message back: it is not, and the message
/// must go through the mailbox.
///
/// If the caller stops waiting (its `timeout`, or its own future is
/// dropped, as when an HTTP client goes away), the call is not abandoned
/// half-way: it goes on in a task of its own, as it would have in the
/// process's task.
pub async fn call_parked(
    mailbox: &ProcessMailbox,
    (component, name): (&str, &str),
    message: Vec<u8>,
    timeout: Duration,
) -> Result<Result<Vec<u8>, CallError>, Vec<u8>> {
    let taken = mailbox.take_if(|resting| resting.identity().stop.reason().is_none());
    let Some((resting, inbox)) = taken else {
        return Err(message);
    };
    let node = resting.identity().node.clone();
    let pid = resting.identity().pid;
    // A parked process's call is over within the call deadline (its guard
    // ends it there): a caller willing to wait that long needs no timer of
    // its own, which saves one per call.
    let bounded =
        matches!(resting, Resting::Parked(_)) && timeout >= node.config().limits.call_deadline;
    let call: DirectCall = match resting {
        Resting::Parked(parked) => Box::pin(call_and_park(parked, inbox, message)),
        Resting::Asleep(hibernated) => Box::pin(wake_and_call(*hibernated, inbox, message)),
    };
    let mut call = Detachable {
        _running: node.tasks().token(),
        node,
        call: Some(call),
        pid,
        mailbox,
        key: (component, name),
    };
    let answer = match call.call.as_mut() {
        Some(running) => {
            let running = AssertUnwindSafe(running).catch_unwind();
            if bounded {
                Ok(running.await)
            } else {
                tokio::time::timeout(timeout, running).await
            }
        }
        None => Ok(Ok(Err(CallError::Crashed("the call was lost".into())))),
    };
    match answer {
        Ok(Ok(answer)) => {
            call.call = None;
            Ok(answer)
        }
        Ok(Err(panic)) => {
            call.call = None;
            Ok(Err(call.owner().abandon(panic.as_ref())))
        }
        Err(_) => Ok(Err(CallError::TimedOut)),
    }
}

/// A call to a parked process, run in the caller's task: handles the
/// message, then parks the process again, or hands it to a task if
/// messages queued meanwhile.
async fn call_and_park(
    mut parked: Box<Parked>,
    mut inbox: ProcessInbox,
    message: Vec<u8>,
) -> Result<Vec<u8>, CallError> {
    let deadline = parked.identity.node.config().limits.call_deadline;
    let Parked { identity, live } = &mut *parked;
    match live.call(identity, message, deadline).await {
        Ok(answer) => {
            // Parked again in the same box: no allocation per call.
            match inbox.rest(Resting::Parked(parked)) {
                Ok(()) => {}
                Err(Unrested::Busy(resting)) => resting.wake(inbox),
                // The node is stopping and nothing is queued: it ends here.
                Err(Unrested::Closed(resting)) => resting.end(),
            }
            Ok(answer)
        }
        Err(reason) => {
            let Parked { identity, live } = *parked;
            drop(live);
            Task::new(identity, inbox).finish(Exit::Crashed(reason.clone()));
            Err(CallError::Crashed(reason))
        }
    }
}

/// A call to a hibernated process, run in the caller's task: wakes it
/// (instance, `take-over`), handles the message, then parks it, or hands it
/// to a task if messages queued meanwhile.
async fn wake_and_call(
    hibernated: Hibernated,
    inbox: ProcessInbox,
    message: Vec<u8>,
) -> Result<Vec<u8>, CallError> {
    let (identity, start) = hibernated.waking();
    let node = identity.node.clone();
    let mut task = Task::new(identity, inbox);
    let mut live = match task.start(start).await {
        Ok(live) => live,
        Err(Ended::Rests) => {
            // No slot came free: it sleeps again, its state kept.
            return Err(CallError::Refused(
                "no instance slot came free in time to wake the process (--max-instances)".into(),
            ));
        }
        Err(Ended::Exit(exit)) => {
            let error = refusal(&exit);
            task.finish(exit);
            return Err(error);
        }
    };
    let deadline = node.config().limits.call_deadline;
    match live.call(&task.identity, message, deadline).await {
        Ok(answer) => {
            task.park_or_serve(live);
            Ok(answer)
        }
        Err(reason) => {
            drop(live);
            task.finish(Exit::Crashed(reason.clone()));
            Err(CallError::Crashed(reason))
        }
    }
}

type DirectCall = Pin<Box<dyn Future<Output = Result<Vec<u8>, CallError>> + Send>>;

/// A direct call that outlives its caller: dropped before it finished, it
/// goes on in a task (a guest call stopped half-way would leave the
/// instance unusable and the process stuck). Who the process is stays
/// borrowed from the caller, for the rare call that needs its [`Owner`].
struct Detachable<'a> {
    node: Arc<NodeCore>,
    call: Option<DirectCall>,
    pid: Pid,
    mailbox: &'a ProcessMailbox,
    key: (&'a str, &'a str),
    /// Counts the call among the node's process tasks, so a node stopping
    /// waits for it as for them.
    _running: tokio_util::task::task_tracker::TaskTrackerToken,
}

impl Detachable<'_> {
    fn owner(&self) -> Owner {
        Owner {
            node: self.node.clone(),
            key: ProcessKey::new(self.key.0, self.key.1),
            pid: self.pid,
            mailbox: self.mailbox.clone(),
        }
    }
}

impl Drop for Detachable<'_> {
    fn drop(&mut self) {
        if let Some(call) = self.call.take()
            && tokio::runtime::Handle::try_current().is_ok()
        {
            self.owner().spawn(async move {
                let _ = call.await;
            });
        }
    }
}

/// Who runs a process, kept outside the code that runs it. Should host
/// code panic half-way (a host bug: wasmtime turns what guests do into
/// errors, never panics), the process ends as crashed, its name freed and
/// what waits in its mailbox answered, instead of staying marked as
/// running while its callers wait out their timeouts.
struct Owner {
    node: Arc<NodeCore>,
    key: ProcessKey,
    pid: Pid,
    mailbox: ProcessMailbox,
}

impl Owner {
    fn of(identity: &Identity, inbox: &ProcessInbox) -> Self {
        Self {
            node: identity.node.clone(),
            key: identity.key.clone(),
            pid: identity.pid,
            mailbox: inbox.mailbox(),
        }
    }

    /// Runs `work` as a task of the node.
    fn spawn(self, work: impl Future<Output = ()> + Send + 'static) {
        let node = self.node.clone();
        node.tasks().spawn(self.run(work, drop));
    }

    /// Runs `work`; if it panics, ends the process and gives `crashed` the
    /// error its caller gets.
    async fn run<T>(
        self,
        work: impl Future<Output = T>,
        crashed: impl FnOnce(CallError) -> T,
    ) -> T {
        match AssertUnwindSafe(work).catch_unwind().await {
            Ok(done) => done,
            Err(panic) => crashed(self.abandon(panic.as_ref())),
        }
    }

    fn abandon(self, panic: &(dyn Any + Send)) -> CallError {
        let what = panic
            .downcast_ref::<&str>()
            .map(|text| text.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "no message".into());
        let Owner {
            node,
            key,
            pid,
            mailbox,
        } = self;
        tracing::error!(process = %key, pid, "host code panicked while running the process, which ends as crashed: {what}");
        let reason = format!("the host failed while running it (a host bug: {what})");
        // A process that came to rest or ended before the panic is not
        // this runner's any more.
        if let Some(queued) = mailbox.abandon() {
            node.process_exited(&key, pid, &Exit::Crashed(reason.clone()));
            node.registry().unregister(&key, pid);
            for message in queued {
                refuse(message, &reason);
            }
        }
        CallError::Crashed(reason)
    }
}

/// How a task takes a process on.
enum Begin {
    /// Instantiate it (new, or waking from hibernation).
    Start(Start),
    /// It was parked; a message came.
    Resume(Live),
    /// It was parked and is to hibernate.
    Hibernate(Live),
}

/// A process that could not park: its task goes on with it.
struct Unparked {
    task: Task,
    live: Live,
    /// The mailbox is closed: the process ends.
    closed: bool,
}

/// How a task's turn with a process ended.
enum Ended {
    Exit(Exit),
    /// The process rests in its mailbox (parked or asleep).
    Rests,
}

/// A task running a process: it handles what is queued, then parks the
/// process and ends.
struct Task {
    identity: Identity,
    inbox: ProcessInbox,
    /// The caller whose message crashed the process. It is answered only
    /// once the crash is recorded and the name released, so whatever it
    /// does next meets a fresh process (or a refusal), never this one.
    crashed_caller: Option<ReplyTo>,
    /// A message taken from the mailbox but not handed to the guest, because
    /// the node told the process to stop: answered with the queue.
    untaken: Option<Message>,
}

impl Task {
    fn new(identity: Identity, inbox: ProcessInbox) -> Self {
        Self {
            identity,
            inbox,
            crashed_caller: None,
            untaken: None,
        }
    }

    fn spawn(self, begin: Begin) {
        Owner::of(&self.identity, &self.inbox).spawn(self.run(begin));
    }

    async fn run(self, begin: Begin) {
        let mut task = self;
        let live = match begin {
            Begin::Start(start) => match task.start(start).await {
                Ok(live) => live,
                Err(ended) => return task.ended(ended),
            },
            Begin::Resume(live) => live,
            Begin::Hibernate(live) => match task.hibernate(live).await {
                Ok(ended) => return task.ended(ended),
                Err(live) => live,
            },
        };
        task.serve(live).await;
    }

    fn ended(self, ended: Ended) {
        if let Ended::Exit(exit) = ended {
            self.finish(exit);
        }
    }

    /// Gets the process an instance (a slot, instantiation, then `init` or
    /// `take-over`).
    async fn start(&mut self, start: Start) -> Result<Live, Ended> {
        let node = self.identity.node.clone();
        let deadline = node.config().limits.call_deadline;
        match &start {
            // A hibernated process told to stop needs no instance to stop.
            Start::TakeOver(_) => {
                if let Some(reason) = self.identity.stop.reason() {
                    return Err(Ended::Exit(Exit::Stopped(reason.clone())));
                }
            }
            // In a cluster, nothing new runs before this node has every
            // write acknowledged so far. If that fails nothing ran, so there
            // is no crash to count: waiting calls are answered with the
            // reason, and those to a name that moved find it again.
            Start::Init => {
                if let Some(router) = node.router()
                    && let Err(reason) = router.clone().start_barrier(self.identity.fence).await
                {
                    return Err(Ended::Exit(Exit::Stopped(reason)));
                }
            }
        }
        let slot = match node.slots().acquire(deadline, make_room).await {
            Ok(slot) => slot,
            Err(reason) => return Err(self.no_slot(start, reason)),
        };
        let identity = &self.identity;
        let state = InstanceState::metered(
            &node,
            identity.component.name(),
            Some(&identity.key.name),
            identity.fence,
            Some(identity.stats.memory.clone()),
        );
        let mut store = node.runtime().new_store(state);
        let component = identity.component.clone();
        let (instance, bindings) =
            match guarded(deadline, component.instantiate_process(&mut store)).await {
                Ok(instantiated) => instantiated,
                Err(reason) => return Err(Ended::Exit(Exit::InitFailed(reason))),
            };
        let behaviour = bindings.otp_platform_behaviour();
        let name = &identity.key.name;
        let started = match &start {
            Start::Init => guarded(deadline, behaviour.call_init(&mut store, name)).await,
            Start::TakeOver(state) => {
                guarded(deadline, behaviour.call_take_over(&mut store, name, state)).await
            }
        };
        match started {
            Ok(Ok(())) => {}
            Ok(Err(message)) => return Err(Ended::Exit(Exit::InitFailed(message))),
            Err(reason) => return Err(Ended::Exit(Exit::InitFailed(reason))),
        }
        let now = Instant::now();
        let limits = &node.config().limits;
        let rest = limits
            .hibernate_after
            .unwrap_or(Duration::MAX)
            .min(limits.idle_timeout);
        node.slots().held_by(self.inbox.mailbox());
        node.idle_timers()
            .schedule(later(now, rest), self.inbox.mailbox());
        Ok(Live {
            store,
            bindings,
            instance,
            _slot: slot,
            last_message: now,
        })
    }

    /// Handles what is queued, then parks the process.
    async fn serve(self, live: Live) {
        let deadline = self.identity.node.config().limits.call_deadline;
        let (mut task, mut live) = (self, live);
        loop {
            let Some(message) = task.inbox.try_recv() else {
                match task.park(live) {
                    Ok(()) => return,
                    Err(unparked) => {
                        let Unparked {
                            task: back,
                            live: instance,
                            closed,
                        } = *unparked;
                        if closed {
                            drop(instance);
                            return back.finish(Exit::Shutdown);
                        }
                        (task, live) = (back, instance);
                        continue;
                    }
                }
            };
            if let Some(reason) = task.identity.stop.reason() {
                task.untaken = Some(message);
                let reason = reason.clone();
                drop(live);
                return task.finish(Exit::Stopped(reason));
            }
            if let Message::Hibernate = message {
                match task.hibernate(live).await {
                    Ok(ended) => return task.ended(ended),
                    Err(back) => live = back,
                }
                continue;
            }
            if let Err(reason) = task.deliver(&mut live, message, deadline).await {
                drop(live);
                return task.finish(Exit::Crashed(reason));
            }
        }
    }

    /// Parks the process; if messages queued meanwhile, a task of its own
    /// handles them (the caller that ran it goes on).
    fn park_or_serve(self, live: Live) {
        if let Err(unparked) = self.park(live) {
            let Unparked { task, live, closed } = *unparked;
            if closed {
                drop(live);
                task.finish(Exit::Shutdown);
            } else {
                Owner::of(&task.identity, &task.inbox).spawn(task.serve(live));
            }
        }
    }

    /// Parks the process in its mailbox, ending this task's turn. If
    /// messages are queued, or the mailbox is closed, the task gets the
    /// process back.
    fn park(self, live: Live) -> Result<(), Box<Unparked>> {
        let Task {
            identity,
            mut inbox,
            crashed_caller,
            untaken,
        } = self;
        let parked = Box::new(Parked { identity, live });
        let (resting, closed) = match inbox.rest(Resting::Parked(parked)) {
            Ok(()) => return Ok(()),
            Err(Unrested::Busy(resting)) => (resting, false),
            Err(Unrested::Closed(resting)) => (resting, true),
        };
        let Resting::Parked(parked) = resting else {
            unreachable!("what comes back from `rest` is what was given");
        };
        let Parked { identity, live } = *parked;
        Err(Box::new(Unparked {
            task: Task {
                identity,
                inbox,
                crashed_caller,
                untaken,
            },
            live,
            closed,
        }))
    }

    /// No slot came free for the process to run in: the messages waiting
    /// are refused. A new process ends (nothing ran, nothing is lost); a
    /// hibernated one goes back to sleep with its state.
    fn no_slot(&mut self, start: Start, reason: String) -> Ended {
        let Start::TakeOver(state) = start else {
            return Ended::Exit(Exit::NoSlot(reason));
        };
        // Told to stop meanwhile: it stops, as it would have awake.
        if let Some(stopped) = self.identity.stop.reason() {
            return Ended::Exit(Exit::Stopped(stopped.clone()));
        }
        self.identity.node.metrics().refused();
        tracing::warn!(process = %self.identity.key, "could not wake: {reason}");
        let last_message = Instant::now();
        loop {
            while let Some(message) = self.inbox.try_recv() {
                refuse(message, &reason);
            }
            match self.fall_asleep(state.clone(), last_message) {
                Ok(()) => return Ended::Rests,
                Err(Unrested::Closed(())) => return Ended::Exit(Exit::Shutdown),
                // A message came meanwhile: refuse it too, then sleep.
                Err(Unrested::Busy(())) => continue,
            }
        }
    }

    /// Hibernates the process if its mailbox is empty: hands its state over
    /// and sleeps in its mailbox. `Err`: a message came first, and the
    /// process goes on with its instance. A guest whose hand-over fails
    /// expires instead, and what it was sent meanwhile goes to its next
    /// start.
    async fn hibernate(&mut self, mut live: Live) -> Result<Ended, Live> {
        let node = self.identity.node.clone();
        let deadline = node.config().limits.call_deadline;
        let behaviour = live.bindings.otp_platform_behaviour();
        match guarded(deadline, behaviour.call_hand_over(&mut live.store)).await {
            Ok(state) => match self.fall_asleep(state, live.last_message) {
                Ok(()) => Ok(Ended::Rests),
                Err(Unrested::Busy(())) => {
                    // It keeps its slot: it may be asked again.
                    node.slots().held_by(self.inbox.mailbox());
                    Err(live)
                }
                Err(Unrested::Closed(())) => Ok(Ended::Exit(Exit::Shutdown)),
            },
            Err(reason) => {
                drop(live);
                let Identity { key, pid, .. } = &self.identity;
                tracing::warn!(process = %key, pid, "hand-over failed, so the process expires instead of hibernating: {reason}");
                node.metrics().hand_over_failed();
                let inbox = &mut self.inbox;
                let gone = node
                    .registry()
                    .unregister_if(key, *pid, || inbox.close_if_empty().then_some(()));
                if gone.is_some() {
                    return Ok(Ended::Exit(Exit::Expired));
                }
                // Messages came during the hand-over: the process starts
                // again from storage, in place, and handles them in order.
                node.process_exited(key, *pid, &Exit::Expired);
                match self.start(Start::Init).await {
                    Ok(live) => Err(live),
                    Err(ended) => Ok(ended),
                }
            }
        }
    }

    /// Puts the process to sleep in its mailbox with `state`, unless a
    /// message is waiting. It expires `idle_timeout` after `last_message`.
    fn fall_asleep(&mut self, state: Vec<u8>, last_message: Instant) -> Result<(), Unrested<()>> {
        let node = self.identity.node.clone();
        let state_bytes = state.len();
        let pid = self.identity.pid;
        let state = node.sleeping_states().keep(node.storage(), pid, state);
        let hibernated = Box::new(Hibernated {
            identity: self.identity.share(),
            state,
            last_message,
        });
        self.inbox
            .rest(Resting::Asleep(hibernated))
            .map_err(|unrested| match unrested {
                Unrested::Busy(resting) => {
                    resting.forget_state();
                    Unrested::Busy(())
                }
                Unrested::Closed(resting) => {
                    resting.forget_state();
                    Unrested::Closed(())
                }
            })?;
        self.identity
            .stats
            .memory
            .store(state_bytes, Ordering::Relaxed);
        node.metrics().hibernated();
        let until = later(last_message, node.config().limits.idle_timeout);
        node.idle_timers().schedule(until, self.inbox.mailbox());
        Ok(())
    }

    /// Records the process's end, gives up its name, and answers what is
    /// left in its mailbox.
    fn finish(mut self, exit: Exit) {
        let Identity { node, key, pid, .. } = &self.identity;
        // Record the exit (a crash counts against the restart intensity)
        // before giving up the name, so the next start already sees it.
        node.process_exited(key, *pid, &exit);
        node.registry().unregister(key, *pid);
        self.inbox.close();
        if let (Some(caller), Exit::Crashed(reason)) = (self.crashed_caller.take(), &exit) {
            let _ = caller.send(Err(CallError::Crashed(reason.clone())));
        }
        let refusal = refusal(&exit);
        let mut dropped_casts = 0usize;
        let untaken = self.untaken.take();
        for message in untaken
            .into_iter()
            .chain(std::iter::from_fn(|| self.inbox.try_recv()))
        {
            match message {
                Message::Call { reply, .. } => {
                    let _ = reply.send(Err(refusal.clone()));
                }
                // A cast to a name that moved follows it; anywhere else it
                // has nowhere to go.
                Message::Cast { message } if exit == Exit::Stopped(StopReason::Moved) => {
                    if node.cast(&key.component, &key.name, message).is_err() {
                        dropped_casts += 1;
                    }
                }
                Message::Cast { .. } => dropped_casts += 1,
                Message::Stop | Message::Hibernate => {}
                Message::RenderState(reply) => {
                    let _ = reply.send(Err("the process ended".into()));
                }
            }
        }
        if dropped_casts > 0 {
            tracing::warn!(process = %key, pid, "{dropped_casts} casts dropped: the process ended before taking them");
        }
    }

    /// Hands one message to the guest. An error means the instance is dead;
    /// the caller of a crashing call is kept in `crashed_caller`.
    async fn deliver(
        &mut self,
        live: &mut Live,
        message: Message,
        deadline: Duration,
    ) -> Result<(), String> {
        let identity = &self.identity;
        match message {
            Message::Call { message, reply } => {
                match live.call(identity, message, deadline).await {
                    Ok(answer) => {
                        let _ = reply.send(Ok(answer));
                        Ok(())
                    }
                    Err(reason) => {
                        self.crashed_caller = Some(reply);
                        Err(reason)
                    }
                }
            }
            Message::Cast { message } => live.cast(identity, message, deadline).await,
            Message::Stop | Message::Hibernate => Ok(()),
            Message::RenderState(reply) => match live.render_state(identity, deadline).await {
                Ok(rendered) => {
                    let _ = reply.send(rendered);
                    Ok(())
                }
                Err(reason) => {
                    let _ = reply.send(Err(format!("it crashed rendering its state: {reason}")));
                    Err(reason)
                }
            },
        }
    }
}

impl Identity {
    /// The same identity, for the process's next rest: reference counts.
    fn share(&self) -> Self {
        Self {
            node: self.node.clone(),
            component: self.component.clone(),
            key: self.key.clone(),
            pid: self.pid,
            fence: self.fence,
            stop: self.stop.clone(),
            stats: self.stats.clone(),
        }
    }

    fn counted(&self) {
        self.stats.messages.fetch_add(1, Ordering::Relaxed);
    }

    /// Offers a message to the trace on this process, if there is one.
    fn traced(&self, kind: EventKind, message: &[u8]) {
        let trace = self.stats.trace.load();
        if let Some(tracer) = trace.as_ref()
            && !tracer.offer(&self.key, self.pid, kind, message)
        {
            // Only this tracer: a newer one may have been set meanwhile.
            let _ = self.stats.trace.compare_and_swap(&trace, None);
        }
    }
}

impl Live {
    /// The guest's `handle-call`. An error means the instance is dead.
    async fn call(
        &mut self,
        identity: &Identity,
        message: Vec<u8>,
        deadline: Duration,
    ) -> Result<Vec<u8>, String> {
        // A host bug, simulated for the unit test of `Owner`.
        #[cfg(test)]
        if message == tests::PANIC_IN_THE_HOST {
            panic!("injected by a test");
        }
        identity.counted();
        identity.traced(EventKind::Call, &message);
        let behaviour = self.bindings.otp_platform_behaviour();
        let answer = guarded(
            deadline,
            behaviour.call_handle_call(&mut self.store, &message),
        )
        .await?;
        self.last_message = Instant::now();
        identity.traced(EventKind::Reply, &answer);
        Ok(answer)
    }

    /// The guest's `handle-cast`. An error means the instance is dead.
    async fn cast(
        &mut self,
        identity: &Identity,
        message: Vec<u8>,
        deadline: Duration,
    ) -> Result<(), String> {
        identity.counted();
        identity.traced(EventKind::Cast, &message);
        let behaviour = self.bindings.otp_platform_behaviour();
        guarded(
            deadline,
            behaviour.call_handle_cast(&mut self.store, &message),
        )
        .await?;
        self.last_message = Instant::now();
        Ok(())
    }

    /// The guest's rendering of its state, as `:sys.get_state`: the inner
    /// result is the answer; an outer error means the guest trapped or ran
    /// past the deadline in it, and its instance is dead (a process crash).
    async fn render_state(
        &mut self,
        identity: &Identity,
        deadline: Duration,
    ) -> Result<Result<String, String>, String> {
        let component = &identity.component;
        let Some(exports) = component.introspect() else {
            return Ok(Err(format!(
                "component `{}` does not export otp:platform/introspect: its state cannot be shown",
                component.name()
            )));
        };
        let render = match self
            .instance
            .get_typed_func::<(), (String,)>(&mut self.store, &exports.render_state)
        {
            Ok(render) => render,
            Err(e) => return Ok(Err(format!("render-state has an unexpected type: {e}"))),
        };
        guarded(deadline, render.call_async(&mut self.store, ()))
            .await
            .map(|(state,)| Ok(state))
    }
}

/// What a call that a process will not take is answered, given how the
/// process ended.
fn refusal(exit: &Exit) -> CallError {
    match exit {
        Exit::Crashed(reason) => CallError::Crashed(format!(
            "the process ended before taking this message: {reason}"
        )),
        Exit::InitFailed(reason) => CallError::Refused(format!("init failed: {reason}")),
        Exit::NoSlot(reason) => CallError::Refused(reason.clone()),
        Exit::Shutdown | Exit::Expired => CallError::Refused("the process stopped".into()),
        Exit::Stopped(StopReason::Moved) => CallError::Moved,
        Exit::Stopped(StopReason::CutOff(reason)) => CallError::Refused(reason.clone()),
        Exit::Stopped(StopReason::Killed) => {
            CallError::Crashed("killed by an operator before taking this message".into())
        }
    }
}

/// Answers a message that will not be handled, with `reason`.
fn refuse(message: Message, reason: &str) {
    match message {
        Message::Call { reply, .. } => {
            let _ = reply.send(Err(CallError::Refused(reason.to_string())));
        }
        Message::RenderState(reply) => {
            let _ = reply.send(Err(reason.to_string()));
        }
        Message::Cast { .. } | Message::Stop | Message::Hibernate => {}
    }
}

/// Runs a guest call under `deadline`. Guests yield at every epoch tick, so
/// the timer fires even for a guest in an endless loop; dropping the call
/// abandons the instance, which is never used again.
pub(crate) async fn guarded<T>(
    deadline: Duration,
    call: impl Future<Output = wasmtime::Result<T>>,
) -> Result<T, String> {
    match tokio::time::timeout(deadline, call).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(error)) => Err(describe_trap(&error)),
        Err(_) => Err(format!("ran past its deadline of {deadline:?}")),
    }
}

/// One line saying why a guest call failed, without the wasm backtrace.
pub(crate) fn describe_trap(error: &wasmtime::Error) -> String {
    if let Some(trap) = error.downcast_ref::<wasmtime::Trap>() {
        return format!("trapped: {trap}");
    }
    let message = format!("{error:#}");
    if message.contains("forcing trap when growing memory") {
        return "exceeded its memory cap".to_string();
    }
    message
        .lines()
        .next()
        .unwrap_or("unknown error")
        .to_string()
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::sync::Arc;
    use std::time::Duration;

    use crate::capabilities::CallError;
    use crate::config::NodeConfig;
    use crate::node::{ComponentSource, NodeCore};

    /// A call message that makes the host panic before the guest sees it.
    pub(super) const PANIC_IN_THE_HOST: &[u8] = b"panic in the host";

    /// The minimal guest, built by `scripts/build.sh`.
    fn minimal_wasm() -> PathBuf {
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
        let path = target.join("wasm32-wasip2/release/minimal.wasm");
        assert!(
            path.exists(),
            "{} missing: run scripts/build.sh",
            path.display()
        );
        path
    }

    async fn call(node: &Arc<NodeCore>, message: &[u8]) -> Result<String, CallError> {
        let reply = node
            .call("minimal", "p", message.to_vec(), Duration::from_secs(3))
            .await?;
        Ok(String::from_utf8_lossy(&reply).into_owned())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_host_panic_crashes_the_process_and_its_next_call_starts_it_afresh() {
        let dir = tempfile::tempdir().expect("temp dir");
        let source = ComponentSource {
            name: "minimal".into(),
            path: minimal_wasm(),
        };
        let config = NodeConfig::new("panics", dir.path().to_path_buf());
        let node = NodeCore::start(config, &[source]).expect("node starts");

        // In the process's own task (its first message starts it). Its
        // caller is answered as the panic unwinds, a moment before the name
        // is freed: a call in that moment is refused with the reason.
        let first = call(&node, PANIC_IN_THE_HOST).await;
        assert!(matches!(first, Err(CallError::Crashed(_))), "{first:?}");
        let mut next = call(&node, b"").await;
        for _ in 0..10 {
            match &next {
                Err(CallError::Refused(reason)) if reason.contains("host bug") => {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    next = call(&node, b"").await;
                }
                _ => break,
            }
        }
        assert_eq!(next.expect("a fresh process"), "1");
        assert_eq!(call(&node, b"").await.expect("the same process"), "2");

        // In the caller's task (the process was parked).
        let direct = call(&node, PANIC_IN_THE_HOST).await;
        assert!(
            matches!(&direct, Err(CallError::Crashed(reason)) if reason.contains("host bug")),
            "{direct:?}"
        );
        assert_eq!(call(&node, b"").await.expect("a fresh process"), "1");
        node.stop_processes(Duration::from_secs(5)).await;
    }
}
