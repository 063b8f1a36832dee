//! The node: everything one running `host` holds, and the call path that
//! ties the registry, the supervisor and the processes together.
//!
//! `NodeCore::call` and `cast` take a name, never a location. On a lone node
//! they go to the local registry. Once the node is part of a cluster, they go
//! to the [`Router`] (`crate::cluster`), which finds the node holding the
//! name and comes back here through [`NodeCore::call_local`] on that node.
//! That trait is the whole interface between the node and the cluster: the
//! node knows nothing of links, Raft or placement.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::Context as _;
use futures_util::future::BoxFuture;
use tokio_util::task::TaskTracker;

use crate::capabilities::{CallError, HostCallSlot};
use crate::component::LoadedComponent;
use crate::config::NodeConfig;
use crate::hibernation::{IdleTimers, InstanceSlots, SleepingStates};
use crate::mailbox::{Message, SendError};
use crate::metrics::Metrics;
use crate::process::{self, Exit, Pid, ProcessMailbox as Mailbox, ProcessStats};
use crate::registry::{Fence, ProcessKey, Registration, Registry, StopFlag, StopReason};
use crate::runtime::Runtime;
use crate::storage::Storage;
use crate::supervisor::Supervisor;

/// What a node that is part of a cluster adds to the call path.
pub trait Router: Send + Sync {
    /// Sends a call to process `name` of `component` wherever it lives.
    fn call(
        self: Arc<Self>,
        component: &str,
        name: &str,
        message: Vec<u8>,
        timeout: Duration,
    ) -> BoxFuture<'static, Result<Vec<u8>, CallError>>;

    /// Sends a cast to process `name` of `component` wherever it lives.
    fn cast(&self, component: &str, name: &str, message: Vec<u8>) -> Result<(), CallError>;

    /// Resolves once this node has applied every write acknowledged in the
    /// cluster before the call, and checks that `fence` is still current: a
    /// process runs `init` only after it, so it sees every acknowledged
    /// write, and never starts on a name that moved away meanwhile.
    fn start_barrier(
        self: Arc<Self>,
        fence: Option<Fence>,
    ) -> BoxFuture<'static, Result<(), StopReason>>;

    /// The cluster's gauges for the metrics page: (name, type, help, value).
    fn gauges(&self) -> Vec<(&'static str, &'static str, &'static str, u64)>;
}

/// Times a message is offered to a name whose process stops just as it is
/// sent (idle expiry racing the send) before the call is refused.
const DELIVERY_ATTEMPTS: usize = 3;

/// Longest process name: names travel in every message and log line.
const MAX_PROCESS_NAME_BYTES: usize = 1024;

/// A component to load: its name and its `.wasm` file.
#[derive(Debug, Clone)]
pub struct ComponentSource {
    pub name: String,
    pub path: PathBuf,
}

pub struct NodeCore {
    name: Arc<str>,
    config: NodeConfig,
    runtime: Runtime,
    /// In load order; the first one serves HTTP at `/`.
    components: Vec<Arc<LoadedComponent>>,
    by_name: HashMap<String, Arc<LoadedComponent>>,
    storage: Storage,
    registry: Registry,
    supervisor: Supervisor,
    metrics: Metrics,
    tasks: TaskTracker,
    next_pid: AtomicU64,
    /// Set once, when the node founds or joins a cluster.
    router: OnceLock<Arc<dyn Router>>,
    /// Per component: the trace of its host calls, if one is on.
    host_calls: HashMap<String, HostCallSlot>,
    /// Instance slots for processes: the rest hibernate.
    slots: InstanceSlots,
    /// When resting processes hibernate or expire.
    idle_timers: IdleTimers,
    /// Where hibernated processes' states are kept.
    sleeping_states: SleepingStates,
}

impl NodeCore {
    /// Creates the engine, compiles (or loads from cache) every component and
    /// opens storage.
    pub fn start(config: NodeConfig, sources: &[ComponentSource]) -> anyhow::Result<Arc<Self>> {
        let runtime = Runtime::new(&config)?;
        let slots = InstanceSlots::new(runtime.process_slots());
        let sleeping_states = SleepingStates::new(config.limits.hibernated_state_memory);
        let cache_dir = config
            .compile_cache
            .clone()
            .unwrap_or_else(|| config.data_dir.join("compiled"));
        let mut components = Vec::new();
        let mut by_name = HashMap::new();
        for source in sources {
            let loaded = Arc::new(LoadedComponent::load(
                &runtime,
                &source.name,
                &source.path,
                &cache_dir,
            )?);
            if by_name
                .insert(source.name.clone(), loaded.clone())
                .is_some()
            {
                anyhow::bail!(
                    "two components are named `{}`: name one with NAME=PATH",
                    source.name
                );
            }
            components.push(loaded);
        }
        for (from, to) in &config.call_grants {
            for name in [from, to] {
                if !by_name.contains_key(name) {
                    anyhow::bail!(
                        "--allow-call {from}={to}: no component named `{name}` is loaded"
                    );
                }
            }
        }
        let storage = Storage::open(&config.data_dir.join("db"), config.durability)
            .context("cannot open storage")?;
        let host_calls = by_name
            .keys()
            .map(|name| (name.clone(), HostCallSlot::default()))
            .collect();
        let node = Arc::new(Self {
            name: Arc::from(config.node_name.as_str()),
            registry: Registry::new(config.limits.max_processes),
            supervisor: Supervisor::new(config.restarts.clone()),
            config,
            runtime,
            components,
            by_name,
            storage,
            metrics: Metrics::default(),
            tasks: TaskTracker::new(),
            next_pid: AtomicU64::new(1),
            router: OnceLock::new(),
            host_calls,
            slots,
            idle_timers: IdleTimers::default(),
            sleeping_states,
        });
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => node.run_idle_timers_on(&runtime),
            Err(_) => anyhow::bail!("a node starts within a tokio runtime"),
        }
        Ok(node)
    }

    /// Hibernates and expires idle processes, until the node is dropped.
    fn run_idle_timers_on(self: &Arc<Self>, runtime: &tokio::runtime::Handle) {
        let node = Arc::downgrade(self);
        let limits = &self.config.limits;
        let shortest = limits
            .hibernate_after
            .unwrap_or(Duration::MAX)
            .min(limits.idle_timeout);
        let every = (shortest / 8).clamp(Duration::from_millis(10), Duration::from_secs(1));
        runtime.spawn(async move {
            let mut ticks = tokio::time::interval(every);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                let Some(node) = node.upgrade() else { break };
                let now = tokio::time::Instant::now();
                for mailbox in node.idle_timers.take_due(now) {
                    process::idle_due(&node, mailbox, now);
                }
            }
        });
    }

    /// Routes calls through `router` from now on. Processes started before
    /// hold no fence, so they are stopped: their next message starts them
    /// again, registered with the cluster.
    pub fn join_cluster(&self, router: Arc<dyn Router>) {
        if self.router.set(router).is_ok() {
            self.registry.stop_where(&StopReason::Moved, |_, _| true);
        }
    }

    /// The cluster's router, once this node is part of one.
    pub fn router(&self) -> Option<&Arc<dyn Router>> {
        self.router.get()
    }

    pub fn name(&self) -> Arc<str> {
        self.name.clone()
    }

    pub fn config(&self) -> &NodeConfig {
        &self.config
    }

    pub fn runtime(&self) -> &Runtime {
        &self.runtime
    }

    pub fn storage(&self) -> &Storage {
        &self.storage
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    pub fn slots(&self) -> &InstanceSlots {
        &self.slots
    }

    pub fn idle_timers(&self) -> &IdleTimers {
        &self.idle_timers
    }

    pub fn sleeping_states(&self) -> &SleepingStates {
        &self.sleeping_states
    }

    pub fn tasks(&self) -> &TaskTracker {
        &self.tasks
    }

    pub fn components(&self) -> &[Arc<LoadedComponent>] {
        &self.components
    }

    pub fn component(&self, name: &str) -> Option<&Arc<LoadedComponent>> {
        self.by_name.get(name)
    }

    /// Where a trace of `component`'s host calls goes (`trace-calls`).
    pub fn host_call_slot(&self, component: &str) -> Option<&HostCallSlot> {
        self.host_calls.get(component)
    }

    /// Traces running on this node: of processes, and of host calls.
    pub fn traces_running(&self) -> usize {
        let host_calls = self
            .host_calls
            .values()
            .filter(|slot| slot.load().as_ref().is_some_and(|t| !t.is_finished()))
            .count();
        self.registry.traces_running() + host_calls
    }

    pub fn supervisor(&self) -> &Supervisor {
        &self.supervisor
    }

    /// Asks the live process holding `key` to render its state (as
    /// `:sys.get_state`); never starts one.
    pub async fn render_state(&self, key: &ProcessKey) -> Result<String, String> {
        let mailbox = self
            .registry
            .mailbox_of(key)
            .ok_or_else(|| format!("no process `{key}` is running on {}", self.name))?;
        let (reply, answer) = tokio::sync::oneshot::channel();
        mailbox
            .wake(Message::RenderState(reply))
            .map_err(|_| format!("`{key}` is stopping"))?;
        let wait = self.config.limits.call_deadline * 2;
        match tokio::time::timeout(wait, answer).await {
            Ok(Ok(rendered)) => rendered,
            Ok(Err(_)) => Err(format!("`{key}` ended before answering")),
            Err(_) => Err(format!("`{key}` did not answer within {wait:?}")),
        }
    }

    /// Kills the live process holding `key` after its current message (as
    /// `Process.exit(pid, :kill)`); its next message starts it again.
    /// Returns whether one was running.
    pub fn kill(&self, key: &ProcessKey) -> bool {
        self.registry.kill(key)
    }

    /// Sends `message` to process `name` of `component`, starting it if
    /// needed (wherever the cluster places it), and waits up to `timeout`
    /// for the reply.
    pub async fn call(
        self: &Arc<Self>,
        component: &str,
        name: &str,
        message: Vec<u8>,
        timeout: Duration,
    ) -> Result<Vec<u8>, CallError> {
        match self.router.get() {
            Some(router) => router.clone().call(component, name, message, timeout).await,
            None => {
                self.call_local(component, name, message, timeout, None)
                    .await
            }
        }
    }

    /// Like [`NodeCore::call`], to a process of this node, registered under
    /// `fence` (in a cluster; none on a lone node).
    pub async fn call_local(
        self: &Arc<Self>,
        component: &str,
        name: &str,
        message: Vec<u8>,
        timeout: Duration,
        fence: Option<Fence>,
    ) -> Result<Vec<u8>, CallError> {
        let deadline = tokio::time::Instant::now() + timeout;
        // An idle process is called right here, in the caller's task.
        let mailbox = self.mailbox(component, name, fence)?;
        let message =
            match process::call_parked(&mailbox, (component, name), message, timeout).await {
                Ok(answer) => return answer,
                Err(message) => message,
            };
        // It is busy (or starting): its mailbox queues the call.
        let (reply, answer) = tokio::sync::oneshot::channel();
        let call = Message::Call { message, reply };
        self.send_to(component, name, fence, call, Some(mailbox))?;
        match tokio::time::timeout_at(deadline, answer).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(CallError::Crashed(
                "the process ended without replying".into(),
            )),
            Err(_) => Err(CallError::TimedOut),
        }
    }

    /// May component `from` call processes of component `to`? Its own,
    /// always; another's, only where the operator granted it
    /// (`--allow-call FROM=TO`): a process answers whoever calls it, so an
    /// ungranted call could read another component's data.
    pub fn may_call(&self, from: &str, to: &str) -> Result<(), CallError> {
        if !self.by_name.contains_key(to) {
            return Err(CallError::NoSuchComponent(to.to_string()));
        }
        let granted = from == to
            || self
                .config
                .call_grants
                .iter()
                .any(|(granted_from, granted_to)| granted_from == from && granted_to == to);
        if granted {
            Ok(())
        } else {
            Err(CallError::Refused(format!(
                "component `{from}` may not call processes of `{to}`; \
                 the operator can allow it with --allow-call {from}={to}"
            )))
        }
    }

    /// Puts `message` in the mailbox of process `name` of `component`,
    /// starting it if needed (wherever the cluster places it).
    pub fn cast(
        self: &Arc<Self>,
        component: &str,
        name: &str,
        message: Vec<u8>,
    ) -> Result<(), CallError> {
        match self.router.get() {
            Some(router) => router.cast(component, name, message),
            None => self.cast_local(component, name, message, None),
        }
    }

    /// Like [`NodeCore::cast`], to a process of this node, registered under
    /// `fence`.
    pub fn cast_local(
        self: &Arc<Self>,
        component: &str,
        name: &str,
        message: Vec<u8>,
        fence: Option<Fence>,
    ) -> Result<(), CallError> {
        self.send_to(component, name, fence, Message::Cast { message }, None)
    }

    /// Stops this node's processes whose registration matches (see
    /// [`Registry::stop_where`]).
    pub fn stop_processes_where(
        &self,
        reason: &StopReason,
        matches: impl Fn(&ProcessKey, Option<&Fence>) -> bool,
    ) -> usize {
        self.registry.stop_where(reason, matches)
    }

    /// Puts `message` in the mailbox of the process holding the name under
    /// `fence` (`mailbox`, when the caller looked it up already), starting
    /// it if none does (or waking it if it rests). A process that stops
    /// between the lookup and the send (idle expiry) hands the message
    /// back, and it goes to the name's next process. A full mailbox refuses
    /// it.
    fn send_to(
        self: &Arc<Self>,
        component: &str,
        name: &str,
        fence: Option<Fence>,
        message: Message,
        mailbox: Option<Mailbox>,
    ) -> Result<(), CallError> {
        let (mut message, mut looked_up) = (message, mailbox);
        for _ in 0..DELIVERY_ATTEMPTS {
            let mailbox = match looked_up.take() {
                Some(mailbox) => mailbox,
                None => self.mailbox(component, name, fence)?,
            };
            match mailbox.send(message) {
                Ok(()) => return Ok(()),
                Err(SendError::Closed(returned)) => message = returned,
                Err(SendError::Full { message, limit }) => {
                    self.metrics.mailbox_full();
                    return Err(CallError::Refused(format!(
                        "the mailbox of `{component}/{name}` is full: it holds at most \
                         {limit} bytes of messages, and this one is {} bytes",
                        message.payload_len()
                    )));
                }
            }
        }
        Err(stopped_during_delivery())
    }

    /// The mailbox of the process holding the name under `fence`, starting
    /// one if none does.
    fn mailbox(
        self: &Arc<Self>,
        component: &str,
        name: &str,
        fence: Option<Fence>,
    ) -> Result<Mailbox, CallError> {
        let loaded = self
            .by_name
            .get(component)
            .ok_or_else(|| CallError::NoSuchComponent(component.to_string()))?;
        if loaded.process_pre().is_none() {
            return Err(CallError::Refused(format!(
                "component `{component}` does not export the process behaviour"
            )));
        }
        if name.is_empty() || name.len() > MAX_PROCESS_NAME_BYTES {
            return Err(CallError::Refused(format!(
                "a process name must be 1 to {MAX_PROCESS_NAME_BYTES} bytes"
            )));
        }
        let key = loaded.process_key(name);
        self.registry.lookup_or_start(&key, fence, || {
            self.supervisor
                .admit(&key)
                .inspect_err(|_| self.metrics.refused())?;
            let pid: Pid = self.next_pid.fetch_add(1, Ordering::Relaxed);
            let stop = Arc::new(StopFlag::default());
            let stats = Arc::new(ProcessStats::default());
            let mailbox = process::spawn(process::Identity {
                node: self.clone(),
                component: loaded.clone(),
                key: key.clone(),
                pid,
                fence,
                stop: stop.clone(),
                stats: stats.clone(),
            });
            self.metrics.started();
            tracing::debug!(process = %key, pid, "process started");
            Ok(Registration {
                pid,
                mailbox,
                fence,
                stop,
                stats,
            })
        })
    }

    /// Called by a process as it ends.
    pub(crate) fn process_exited(&self, key: &ProcessKey, pid: Pid, exit: &Exit) {
        match exit {
            Exit::Shutdown => tracing::debug!(process = %key, pid, "process stopped"),
            Exit::Stopped(StopReason::Killed) => {
                tracing::warn!(process = %key, pid, "process killed by an operator");
                self.metrics.crashed();
                self.supervisor.record_crash(key, "killed by an operator");
            }
            Exit::Stopped(reason) => {
                tracing::debug!(process = %key, pid, "process stopped by the node: {reason:?}")
            }
            Exit::NoSlot(reason) => {
                tracing::warn!(process = %key, pid, "process could not start: {reason}");
                self.metrics.refused();
            }
            // Logs come before counters: whoever sees a counter move can
            // read the log line that explains it.
            Exit::Expired => {
                tracing::debug!(process = %key, pid, "process expired after being idle");
                self.metrics.expired();
            }
            Exit::Crashed(reason) | Exit::InitFailed(reason) => {
                tracing::warn!(process = %key, pid, "process crashed: {reason}");
                self.metrics.crashed();
                if self.supervisor.record_crash(key, reason) {
                    let intensity = &self.config.restarts;
                    tracing::error!(
                        process = %key,
                        "restart intensity reached ({} crashes within {:?}): name refused for {:?}",
                        intensity.max_restarts + 1,
                        intensity.period,
                        intensity.cooldown
                    );
                }
            }
        }
    }

    /// Stops every process: no new ones start, each finishes what is in its
    /// mailbox. Waits up to `grace` for them.
    pub async fn stop_processes(&self, grace: Duration) {
        self.registry.close();
        self.tasks.close();
        if tokio::time::timeout(grace, self.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                "{} processes still running after {grace:?}; stopping anyway",
                self.tasks.len()
            );
        }
    }
}

fn stopped_during_delivery() -> CallError {
    CallError::Refused("the process kept stopping before it could take the message".into())
}
