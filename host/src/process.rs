//! A process: one component instance with its own memory and mailbox,
//! handling one message at a time, as an OTP `gen_server`.
//!
//! Life of a process: registered under its name with an empty mailbox,
//! instantiated, `init` (loads its state from storage), then messages until
//! it is idle for `idle_timeout` (it expires and its memory is freed), it
//! crashes (trap, deadline, memory cap: the caller gets `crashed`), or the
//! node shuts down. Whatever still sits in the mailbox when it ends is
//! answered, never dropped in silence.

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
use crate::mailbox::{self, Inbox, Mailbox, Message, ReplyTo};
use crate::node::NodeCore;
use crate::registry::{Fence, ProcessKey, StopFlag, StopReason};
use crate::state::InstanceState;
use crate::trace::{EventKind, Tracer};

/// A process id, unique within the node's lifetime.
pub type Pid = u64;

/// What a process counts about itself, for the console and the observer.
/// Updated with relaxed atomics on the message path; read by `ps`.
pub struct ProcessStats {
    pub started: SystemTime,
    /// Messages handled.
    pub messages: AtomicU64,
    /// Linear memory, in bytes (kept by the store's limiter).
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
    /// The node stopped it: its name moved, or the node is cut off.
    Stopped(StopReason),
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
    let process = Process {
        node: node.clone(),
        component,
        key,
        pid,
        inbox,
        fence,
        stop,
        stats,
        crashed_caller: None,
        untaken: None,
    };
    node.tasks().spawn(process.run());
    mailbox
}

struct Process {
    node: Arc<NodeCore>,
    component: Arc<LoadedComponent>,
    key: ProcessKey,
    pid: Pid,
    inbox: Inbox,
    fence: Option<Fence>,
    stop: Arc<StopFlag>,
    stats: Arc<ProcessStats>,
    /// The caller whose message crashed the process. It is answered only
    /// once the crash is recorded and the name released, so whatever it
    /// does next meets a fresh process (or a refusal), never this one.
    crashed_caller: Option<ReplyTo>,
    /// A message taken from the mailbox but not handed to the guest, because
    /// the node told the process to stop: answered with the queue.
    untaken: Option<Message>,
}

impl Process {
    async fn run(mut self) {
        let exit = self.serve().await;
        // Record the exit (a crash counts against the restart intensity)
        // before giving up the name, so the next start already sees it.
        self.node.process_exited(&self.key, self.pid, &exit);
        self.node.registry().unregister(&self.key, self.pid);
        self.inbox.close();
        if let (Some(caller), Exit::Crashed(reason)) = (self.crashed_caller.take(), &exit) {
            let _ = caller.send(Err(CallError::Crashed(reason.clone())));
        }
        let refusal = match &exit {
            Exit::Crashed(reason) => CallError::Crashed(format!(
                "the process ended before taking this message: {reason}"
            )),
            Exit::InitFailed(reason) => CallError::Refused(format!("init failed: {reason}")),
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
                    let (component, name) = (&self.key.component, &self.key.name);
                    if self.node.cast(component, name, message).is_err() {
                        dropped_casts += 1;
                    }
                }
                Message::Cast { .. } => dropped_casts += 1,
                Message::Stop => {}
                Message::RenderState(reply) => {
                    let _ = reply.send(Err("the process ended".into()));
                }
            }
        }
        if dropped_casts > 0 {
            tracing::warn!(process = %self.key, pid = self.pid, "{dropped_casts} casts dropped: the process ended before taking them");
        }
    }

    async fn serve(&mut self) -> Exit {
        let limits = &self.node.config().limits;
        let (deadline, idle_timeout) = (limits.call_deadline, limits.idle_timeout);
        // In a cluster, nothing runs before this node has every write
        // acknowledged so far. If that fails nothing ran, so there is no
        // crash to count: waiting calls are answered with the reason, and
        // those to a name that moved find it again.
        if let Some(router) = self.node.router()
            && let Err(reason) = router.clone().start_barrier(self.fence).await
        {
            return Exit::Stopped(reason);
        }
        let state = InstanceState::metered(
            &self.node,
            self.component.name(),
            Some(&self.key.name),
            self.fence,
            Some(self.stats.memory.clone()),
        );
        let mut store = self.node.runtime().new_store(state);
        let component = self.component.clone();
        let (instance, process) =
            match guarded(deadline, component.instantiate_process(&mut store)).await {
                Ok(instantiated) => instantiated,
                Err(reason) => return Exit::InitFailed(reason),
            };
        let behaviour = process.otp_platform_behaviour();
        let guest = Guest {
            behaviour,
            instance,
        };
        match guarded(deadline, behaviour.call_init(&mut store, &self.key.name)).await {
            Ok(Ok(())) => {}
            Ok(Err(message)) => return Exit::InitFailed(message),
            Err(reason) => return Exit::InitFailed(reason),
        }
        // The idle timer is armed once and moved only when it fires early:
        // re-arming it for every message would cost a timer-wheel insert and
        // removal per message, which a busy process does not need.
        let idle = tokio::time::sleep(idle_timeout);
        tokio::pin!(idle);
        let mut last_message = Instant::now();
        loop {
            let message = tokio::select! {
                biased;
                message = self.inbox.recv() => match message {
                    Some(message) => message,
                    None => return Exit::Shutdown,
                },
                () = &mut idle => {
                    let idle_until = last_message + idle_timeout;
                    if Instant::now() >= idle_until {
                        return self.expire(&mut store, &guest, deadline).await;
                    }
                    idle.as_mut().reset(idle_until);
                    continue;
                }
            };
            if let Some(reason) = self.stop.reason() {
                self.untaken = Some(message);
                return Exit::Stopped(reason.clone());
            }
            if let Err(reason) = self.deliver(&mut store, &guest, message, deadline).await {
                return Exit::Crashed(reason);
            }
            last_message = Instant::now();
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
        self.node.registry().unregister(&self.key, self.pid);
        self.inbox.close();
        while let Some(message) = self.inbox.recv().await {
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
            Message::Stop => Ok(()),
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

    /// The guest's rendering of its state, as `:sys.get_state`: the inner
    /// result is the answer; an outer error means the guest trapped or ran
    /// past the deadline in it, and its instance is dead (a process crash).
    async fn render_state(
        &self,
        store: &mut Store<InstanceState>,
        guest: &Guest<'_>,
        deadline: Duration,
    ) -> Result<Result<String, String>, String> {
        let Some(exports) = self.component.introspect() else {
            return Ok(Err(format!(
                "component `{}` does not export otp:platform/introspect: its state cannot be shown",
                self.component.name()
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
