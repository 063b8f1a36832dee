//! A process: one component instance with its own memory and mailbox,
//! handling one message at a time, as an OTP `gen_server`.
//!
//! Life of a process: registered under its name with an empty mailbox,
//! instantiated, `init` (loads its state from storage), then messages. Idle
//! for `hibernate_after`, or asked to make room for another process, it
//! hibernates: its state is handed over (`hand-over`) and kept in its
//! mailbox, its instance and slot are freed, and its next message starts it
//! again from that state (`take-over`). Idle for `idle_timeout` (running or
//! hibernated) it expires and its memory is freed; it comes back from
//! storage. It may also crash (trap, deadline, memory cap: the caller gets
//! `crashed`), or the node shuts down. Whatever still sits in the mailbox
//! when it ends is answered, never dropped in silence.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwapOption;
use tokio::time::Instant;
use wasmtime::Store;
use wasmtime::component::Instance;

use crate::bindings::behaviour::Guest as Behaviour;
use crate::capabilities::CallError;
use crate::component::LoadedComponent;
use crate::mailbox::{self, Inbox, Mailbox, Message, ReplyTo, Sleeper};
use crate::node::NodeCore;
use crate::registry::{Fence, ProcessKey, StopFlag, StopReason};
use crate::state::InstanceState;
use crate::trace::{EventKind, Tracer};

/// A process id, unique within the node's lifetime. A process keeps it
/// while it hibernates.
pub type Pid = u64;

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

/// How a process's task ended: the process ended, or it sleeps in its
/// mailbox and a later task takes it on.
enum Ended {
    Exit(Exit),
    Asleep,
}

/// Where a process's state comes from when it gets an instance.
enum Start {
    /// Its `init`: a new process, which loads its state from storage.
    Init,
    /// The state it handed over when it hibernated.
    TakeOver(Vec<u8>),
}

/// Who a process is: what it needs to run, kept while it hibernates.
struct Identity {
    node: Arc<NodeCore>,
    component: Arc<LoadedComponent>,
    key: ProcessKey,
    pid: Pid,
    fence: Option<Fence>,
    stop: Arc<StopFlag>,
    stats: Arc<ProcessStats>,
}

/// Starts process `key` of `component` as a task of `node` and returns its
/// mailbox. The process instantiates itself; messages sent meanwhile wait.
/// In a cluster, `fence` is its registration (its writes count only while
/// it is current), and `stop` is how the node tells it to stop.
pub fn spawn(
    node: &Arc<NodeCore>,
    component: Arc<LoadedComponent>,
    key: ProcessKey,
    pid: Pid,
    fence: Option<Fence>,
    stop: Arc<StopFlag>,
    stats: Arc<ProcessStats>,
) -> Mailbox {
    let (mailbox, inbox) = mailbox::new(node.config().limits.max_mailbox_bytes);
    let identity = Identity {
        node: node.clone(),
        component,
        key,
        pid,
        fence,
        stop,
        stats,
    };
    Process::new(identity, inbox, Start::Init).spawn();
    mailbox
}

/// A hibernated process, as its mailbox keeps it.
struct Hibernated {
    identity: Identity,
    state: Vec<u8>,
}

impl Sleeper for Hibernated {
    fn wake(self: Box<Self>, inbox: Inbox) {
        let Hibernated { identity, state } = *self;
        identity.node.metrics().woken();
        Process::new(identity, inbox, Start::TakeOver(state)).spawn();
    }

    fn end(self: Box<Self>, shutdown: bool) {
        let identity = &self.identity;
        let exit = if shutdown {
            Exit::Shutdown
        } else {
            Exit::Expired
        };
        identity
            .node
            .process_exited(&identity.key, identity.pid, &exit);
        identity
            .node
            .registry()
            .unregister(&identity.key, identity.pid);
    }
}

struct Process {
    identity: Identity,
    inbox: Inbox,
    start: Option<Start>,
    /// The caller whose message crashed the process. It is answered only
    /// once the crash is recorded and the name released, so whatever it
    /// does next meets a fresh process (or a refusal), never this one.
    crashed_caller: Option<ReplyTo>,
    /// A message taken from the mailbox but not handed to the guest, because
    /// the node told the process to stop: answered with the queue.
    untaken: Option<Message>,
}

impl Process {
    fn new(identity: Identity, inbox: Inbox, start: Start) -> Self {
        Self {
            identity,
            inbox,
            start: Some(start),
            crashed_caller: None,
            untaken: None,
        }
    }

    fn spawn(self) {
        let node = self.identity.node.clone();
        node.tasks().spawn(self.run());
    }

    async fn run(mut self) {
        let exit = match self.serve().await {
            Ended::Exit(exit) => exit,
            Ended::Asleep => return,
        };
        let Identity { node, key, pid, .. } = &self.identity;
        // Record the exit (a crash counts against the restart intensity)
        // before giving up the name, so the next start already sees it.
        node.process_exited(key, *pid, &exit);
        node.registry().unregister(key, *pid);
        self.inbox.close();
        if let (Some(caller), Exit::Crashed(reason)) = (self.crashed_caller.take(), &exit) {
            let _ = caller.send(Err(CallError::Crashed(reason.clone())));
        }
        let refusal = match &exit {
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
        };
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

    async fn serve(&mut self) -> Ended {
        let node = self.identity.node.clone();
        let limits = &node.config().limits;
        let (deadline, idle_timeout) = (limits.call_deadline, limits.idle_timeout);
        let hibernate_after = limits.hibernate_after.unwrap_or(Duration::MAX);
        let start = self.start.take().unwrap_or(Start::Init);
        match &start {
            // A hibernated process told to stop needs no instance to stop.
            Start::TakeOver(_) => {
                if let Some(reason) = self.identity.stop.reason() {
                    return Ended::Exit(Exit::Stopped(reason.clone()));
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
                    return Ended::Exit(Exit::Stopped(reason));
                }
            }
        }
        let _slot = match node.slots().acquire(deadline).await {
            Ok(slot) => slot,
            Err(reason) => return self.no_slot(start, reason),
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
        let (instance, process) =
            match guarded(deadline, component.instantiate_process(&mut store)).await {
                Ok(instantiated) => instantiated,
                Err(reason) => return Ended::Exit(Exit::InitFailed(reason)),
            };
        let behaviour = process.otp_platform_behaviour();
        let guest = Guest {
            behaviour,
            instance,
        };
        let name = &identity.key.name;
        let started = match &start {
            Start::Init => guarded(deadline, behaviour.call_init(&mut store, name)).await,
            Start::TakeOver(state) => {
                guarded(deadline, behaviour.call_take_over(&mut store, name, state)).await
            }
        };
        match started {
            Ok(Ok(())) => {}
            Ok(Err(message)) => return Ended::Exit(Exit::InitFailed(message)),
            Err(reason) => return Ended::Exit(Exit::InitFailed(reason)),
        }
        drop(start);
        node.slots().now_running(self.inbox.mailbox());
        // The idle timer is armed once and moved only when it fires early:
        // re-arming it for every message would cost a timer-wheel insert and
        // removal per message, which a busy process does not need.
        let rest = hibernate_after.min(idle_timeout);
        let idle = tokio::time::sleep(rest);
        tokio::pin!(idle);
        let mut last_message = Instant::now();
        loop {
            let message = tokio::select! {
                biased;
                message = self.inbox.recv() => match message {
                    Some(message) => message,
                    None => return Ended::Exit(Exit::Shutdown),
                },
                () = &mut idle => {
                    let idle_for = last_message.elapsed();
                    if idle_for >= idle_timeout {
                        return Ended::Exit(self.expire(&mut store, &guest, deadline).await);
                    }
                    if idle_for >= hibernate_after {
                        match self.hibernate(&mut store, &guest, deadline, last_message).await {
                            Some(ended) => return ended,
                            None => last_message = Instant::now(),
                        }
                    }
                    idle.as_mut().reset(last_message + rest);
                    continue;
                }
            };
            if let Some(reason) = self.identity.stop.reason() {
                self.untaken = Some(message);
                return Ended::Exit(Exit::Stopped(reason.clone()));
            }
            if let Message::Hibernate = message {
                match self
                    .hibernate(&mut store, &guest, deadline, last_message)
                    .await
                {
                    Some(ended) => return ended,
                    None => node.slots().now_running(self.inbox.mailbox()),
                }
                continue;
            }
            if let Err(reason) = self.deliver(&mut store, &guest, message, deadline).await {
                return Ended::Exit(Exit::Crashed(reason));
            }
            last_message = Instant::now();
        }
    }

    /// No slot came free for the process to run in: the messages waiting
    /// are refused. A new process ends (nothing ran, nothing is lost); a
    /// hibernated one goes back to sleep with its state.
    fn no_slot(&mut self, start: Start, reason: String) -> Ended {
        let Start::TakeOver(state) = start else {
            return Ended::Exit(Exit::NoSlot(reason));
        };
        self.identity.node.metrics().refused();
        tracing::warn!(process = %self.identity.key, "could not wake: {reason}");
        loop {
            while let Some(message) = self.inbox.try_recv() {
                refuse(message, &reason);
            }
            match self.fall_asleep(state.clone(), Instant::now()) {
                Ok(()) => return Ended::Asleep,
                // A message came meanwhile: refuse it too, then sleep.
                Err(()) => continue,
            }
        }
    }

    /// Hibernates the process if its mailbox is empty: hands its state over
    /// and sleeps in its mailbox. `None`: a message came first, and the
    /// process goes on. A guest whose hand-over fails expires instead, and
    /// what it was sent meanwhile goes to its next start.
    async fn hibernate(
        &mut self,
        store: &mut Store<InstanceState>,
        guest: &Guest<'_>,
        deadline: Duration,
        last_message: Instant,
    ) -> Option<Ended> {
        let behaviour = guest.behaviour;
        match guarded(deadline, behaviour.call_hand_over(&mut *store)).await {
            Ok(state) => {
                self.fall_asleep(state, last_message).ok()?;
                Some(Ended::Asleep)
            }
            Err(reason) => {
                let Identity { node, key, pid, .. } = &self.identity;
                tracing::warn!(process = %key, pid, "hand-over failed, so the process expires instead of hibernating: {reason}");
                node.metrics().hand_over_failed();
                node.registry().unregister(key, *pid);
                self.inbox.close();
                while let Some(message) = self.inbox.try_recv() {
                    self.redeliver(message);
                }
                Some(Ended::Exit(Exit::Expired))
            }
        }
    }

    /// Puts the process to sleep in its mailbox with `state`, unless a
    /// message is waiting. It expires `idle_timeout` after `last_message`.
    fn fall_asleep(&mut self, state: Vec<u8>, last_message: Instant) -> Result<(), ()> {
        let identity = &self.identity;
        let node = identity.node.clone();
        let state_bytes = state.len();
        let sleeper = Box::new(Hibernated {
            identity: Identity {
                node: node.clone(),
                component: identity.component.clone(),
                key: identity.key.clone(),
                pid: identity.pid,
                fence: identity.fence,
                stop: identity.stop.clone(),
                stats: identity.stats.clone(),
            },
            state,
        });
        let number = self.inbox.sleep(sleeper).map_err(|_| ())?;
        identity.stats.memory.store(state_bytes, Ordering::Relaxed);
        node.metrics().hibernated();
        let until = last_message + node.config().limits.idle_timeout;
        node.sleeps().asleep(self.inbox.mailbox(), number, until);
        Ok(())
    }

    /// Sends a message this process took but will not handle to the name's
    /// next process.
    fn redeliver(&self, message: Message) {
        if matches!(message, Message::Stop | Message::Hibernate) {
            return;
        }
        let Identity {
            node, key, fence, ..
        } = &self.identity;
        if let Err((error, message)) = node.send_to(&key.component, &key.name, *fence, message) {
            refuse(message, &error.to_string());
        }
    }

    /// Gives up the name, then handles what arrived before the mailbox
    /// closed: no message accepted into the mailbox is lost.
    async fn expire(
        &mut self,
        store: &mut Store<InstanceState>,
        guest: &Guest<'_>,
        deadline: Duration,
    ) -> Exit {
        let Identity { node, key, pid, .. } = &self.identity;
        node.registry().unregister(key, *pid);
        self.inbox.close();
        while let Some(message) = self.inbox.recv().await {
            if let Message::Hibernate = message {
                continue;
            }
            if let Err(reason) = self.deliver(store, guest, message, deadline).await {
                return Exit::Crashed(reason);
            }
        }
        Exit::Expired
    }
    /// Hands one message to the guest. An error means the instance is dead;
    /// the caller of a crashing call is kept in `crashed_caller`.
    async fn deliver(
        &mut self,
        store: &mut Store<InstanceState>,
        guest: &Guest<'_>,
        message: Message,
        deadline: Duration,
    ) -> Result<(), String> {
        let behaviour = guest.behaviour;
        match message {
            Message::Call { message, reply } => {
                self.counted();
                self.traced(EventKind::Call, &message);
                let call = behaviour.call_handle_call(&mut *store, &message);
                match guarded(deadline, call).await {
                    Ok(answer) => {
                        self.traced(EventKind::Reply, &answer);
                        let _ = reply.send(Ok(answer));
                        Ok(())
                    }
                    Err(reason) => {
                        self.crashed_caller = Some(reply);
                        Err(reason)
                    }
                }
            }
            Message::Cast { message } => {
                self.counted();
                self.traced(EventKind::Cast, &message);
                guarded(deadline, behaviour.call_handle_cast(&mut *store, &message)).await
            }
            Message::Stop | Message::Hibernate => Ok(()),
            Message::RenderState(reply) => match self.render_state(store, guest, deadline).await {
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

    fn counted(&self) {
        self.identity.stats.messages.fetch_add(1, Ordering::Relaxed);
    }

    /// Offers a message to the trace on this process, if there is one.
    fn traced(&self, kind: EventKind, message: &[u8]) {
        let Identity {
            key, pid, stats, ..
        } = &self.identity;
        let trace = stats.trace.load();
        if let Some(tracer) = trace.as_ref()
            && !tracer.offer(key, *pid, kind, message)
        {
            // Only this tracer: a newer one may have been set meanwhile.
            let _ = stats.trace.compare_and_swap(&trace, None);
        }
    }

    /// The guest's rendering of its state, as `:sys.get_state`: the inner
    /// result is the answer; an outer error means the guest trapped or ran
    /// past the deadline in it, and its instance is dead (a process crash).
    async fn render_state(
        &self,
        store: &mut Store<InstanceState>,
        guest: &Guest<'_>,
        deadline: Duration,
    ) -> Result<Result<String, String>, String> {
        let component = &self.identity.component;
        let Some(exports) = component.introspect() else {
            return Ok(Err(format!(
                "component `{}` does not export otp:platform/introspect: its state cannot be shown",
                component.name()
            )));
        };
        let render = match guest
            .instance
            .get_typed_func::<(), (String,)>(&mut *store, &exports.render_state)
        {
            Ok(render) => render,
            Err(e) => return Ok(Err(format!("render-state has an unexpected type: {e}"))),
        };
        guarded(deadline, render.call_async(&mut *store, ()))
            .await
            .map(|(state,)| Ok(state))
    }
}

/// A process's instance: its behaviour, and the instance itself for the
/// optional exports.
struct Guest<'a> {
    behaviour: &'a Behaviour,
    instance: Instance,
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
