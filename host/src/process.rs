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
use std::time::Duration;

use tokio::time::Instant;
use wasmtime::Store;

use crate::bindings::behaviour::Guest as Behaviour;
use crate::capabilities::CallError;
use crate::component::LoadedComponent;
use crate::mailbox::{self, Inbox, Mailbox, Message, ReplyTo};
use crate::node::NodeCore;
use crate::registry::{Fence, ProcessKey, StopFlag, StopReason};
use crate::state::InstanceState;

/// A process id, unique within the node's lifetime.
pub type Pid = u64;

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
            }
        }
        if dropped_casts > 0 {
            tracing::warn!(process = %self.key, pid = self.pid, "{dropped_casts} casts dropped: the process ended before taking them");
        }
    }

    async fn serve(&mut self) -> Exit {
        let limits = &self.node.config().limits;
        let (deadline, idle_timeout) = (limits.call_deadline, limits.idle_timeout);
        let Some(pre) = self.component.process_pre() else {
            return Exit::InitFailed("the component does not export the process behaviour".into());
        };
        // In a cluster, nothing runs before this node has every write
        // acknowledged so far. If that fails nothing ran, so there is no
        // crash to count: waiting calls are answered with the reason, and
        // those to a name that moved find it again.
        if let Some(router) = self.node.router()
            && let Err(reason) = router.clone().start_barrier(self.fence).await
        {
            return Exit::Stopped(reason);
        }
        let state = InstanceState::new(
            &self.node,
            self.component.name(),
            Some(&self.key.name),
            self.fence,
        );
        let mut store = self.node.runtime().new_store(state);
        let instance = match guarded(deadline, pre.instantiate_async(&mut store)).await {
            Ok(instance) => instance,
            Err(reason) => return Exit::InitFailed(reason),
        };
        let behaviour = instance.otp_platform_behaviour();
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
                        return self.expire(&mut store, behaviour, deadline).await;
                    }
                    idle.as_mut().reset(idle_until);
                    continue;
                }
            };
            if let Some(reason) = self.stop.reason() {
                self.untaken = Some(message);
                return Exit::Stopped(reason.clone());
            }
            if let Err(reason) = self.deliver(&mut store, behaviour, message, deadline).await {
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
        behaviour: &Behaviour,
        deadline: Duration,
    ) -> Exit {
        self.node.registry().unregister(&self.key, self.pid);
        self.inbox.close();
        while let Some(message) = self.inbox.recv().await {
            if let Err(reason) = self.deliver(store, behaviour, message, deadline).await {
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
        behaviour: &Behaviour,
        message: Message,
        deadline: Duration,
    ) -> Result<(), String> {
        match message {
            Message::Call { message, reply } => {
                let call = behaviour.call_handle_call(&mut *store, &message);
                match guarded(deadline, call).await {
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
            Message::Cast { message } => {
                guarded(deadline, behaviour.call_handle_cast(&mut *store, &message)).await
            }
            Message::Stop => Ok(()),
        }
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
