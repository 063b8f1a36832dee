//! A node's processes: the context every process runs in (what it needs
//! from its node), and the call path to them.
//!
//! `call` and `cast` take a name, never a location. On a lone node they go
//! to the local registry. Once the node is part of a cluster they go to the
//! [`Router`], which finds the node holding the name and comes back here
//! through `call_local`/`cast_local` on that node.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio_util::task::TaskTracker;

use super::code::Code;
use super::counters::ProcessCounters;
use super::error::{CallError, Exit};
use super::hibernated::{HibernatedStates, StateSpill};
use super::id::{Fence, Pid, ProcessKey, StopFlag, StopReason};
use super::idle::IdleTimers;
use super::mailbox::{HandedOver, Message, SendError, Status};
use super::permits::InstancePermits;
use super::registry::{Registration, Registry};
use super::resting::{self, Identity, Parked, ProcessMailbox, Resting};
use super::router::Router;
use super::stats::{ProcessInfo, ProcessStats};
use super::supervisor::Supervisor;
use super::targets::Targets;
use super::trace::Tracer;
use super::{direct_call, task};
use crate::config::{ProcessLimits, RestartIntensity};

/// Times a message is offered to a name whose process stops just as it is
/// sent (idle expiry racing the send) before the call is refused.
const DELIVERY_ATTEMPTS: usize = 3;

/// Longest process name: names travel in every message and log line.
const MAX_PROCESS_NAME_BYTES: usize = 1024;

/// Everything the processes of a node share.
pub struct Processes<C: Code> {
    pub(super) limits: ProcessLimits,
    /// Which code each component's processes run (changed by hot swaps).
    pub(super) targets: Arc<Targets<C>>,
    pub(super) registry: Registry<Resting<C>>,
    pub(super) supervisor: Supervisor,
    pub(super) permits: InstancePermits<Resting<C>>,
    pub(super) idle_timers: IdleTimers<Resting<C>>,
    pub(super) hibernated: HibernatedStates,
    pub(super) counters: ProcessCounters,
    pub(super) tasks: TaskTracker,
    next_pid: AtomicU64,
    /// Set once, when the node founds or joins a cluster.
    router: OnceLock<Arc<dyn Router>>,
}

/// What the process runtime is told at start.
pub struct ProcessSettings {
    pub limits: ProcessLimits,
    pub restarts: RestartIntensity,
    /// Instances processes may hold at once (what the pool has room for).
    pub instance_permits: u32,
}

impl<C: Code> Processes<C> {
    /// The processes of a node running the components of `targets`,
    /// hibernated states past their budget going to `spill`. Must be called
    /// within a tokio runtime: the idle timers run on it, until the last
    /// reference goes.
    pub fn start(
        settings: ProcessSettings,
        targets: Arc<Targets<C>>,
        spill: Arc<dyn StateSpill>,
    ) -> anyhow::Result<Arc<Self>> {
        let ProcessSettings {
            limits,
            restarts,
            instance_permits,
        } = settings;
        let processes = Arc::new(Self {
            registry: Registry::new(limits.max_processes),
            supervisor: Supervisor::new(restarts),
            permits: InstancePermits::new(instance_permits),
            idle_timers: IdleTimers::default(),
            hibernated: HibernatedStates::new(limits.hibernated_state_memory, spill),
            counters: ProcessCounters::default(),
            tasks: TaskTracker::new(),
            next_pid: AtomicU64::new(1),
            router: OnceLock::new(),
            targets,
            limits,
        });
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => processes.run_idle_timers_on(&runtime),
            Err(_) => anyhow::bail!("a node starts within a tokio runtime"),
        }
        Ok(processes)
    }

    /// Hibernates and expires idle processes, until the last reference to
    /// the processes is dropped.
    fn run_idle_timers_on(self: &Arc<Self>, runtime: &tokio::runtime::Handle) {
        let processes = Arc::downgrade(self);
        let every = (self.limits.shortest_rest() / 8)
            .clamp(Duration::from_millis(10), Duration::from_secs(1));
        runtime.spawn(async move {
            let mut ticks = tokio::time::interval(every);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                let Some(processes) = processes.upgrade() else {
                    break;
                };
                let now = tokio::time::Instant::now();
                for mailbox in processes.idle_timers.take_due(now) {
                    resting::idle_due(&processes, mailbox, now);
                }
            }
        });
    }

    pub fn limits(&self) -> &ProcessLimits {
        &self.limits
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
    pub(super) fn router(&self) -> Option<&Arc<dyn Router>> {
        self.router.get()
    }

    /// Whether a component of that name is loaded (processes or not).
    pub fn has_component(&self, name: &str) -> bool {
        self.targets.get(name).is_some()
    }

    /// Which code each component's processes run.
    pub fn targets(&self) -> &Arc<Targets<C>> {
        &self.targets
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

    /// Like [`Processes::call`], to a process of this node, registered
    /// under `fence` (in a cluster; none on a lone node).
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
            match direct_call::call_resting(self, &mailbox, (component, name), message, timeout)
                .await
            {
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

    /// Like [`Processes::cast`], to a process of this node, registered
    /// under `fence`.
    pub fn cast_local(
        self: &Arc<Self>,
        component: &str,
        name: &str,
        message: Vec<u8>,
        fence: Option<Fence>,
    ) -> Result<(), CallError> {
        self.send_to(component, name, fence, Message::Cast { message }, None)
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
        mailbox: Option<ProcessMailbox<C>>,
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
                    self.counters.mailbox_full();
                    return Err(CallError::Refused(format!(
                        "the mailbox of `{component}/{name}` is full: it holds at most \
                         {limit} bytes of messages, and this one is {} bytes",
                        message.payload_len()
                    )));
                }
            }
        }
        Err(CallError::Refused(
            "the process kept stopping before it could take the message".into(),
        ))
    }

    /// The mailbox of the process holding the name under `fence`, starting
    /// one if none does.
    fn mailbox(
        self: &Arc<Self>,
        component: &str,
        name: &str,
        fence: Option<Fence>,
    ) -> Result<ProcessMailbox<C>, CallError> {
        let Some((component_name, target)) = self.targets.get(component) else {
            return Err(CallError::NoSuchComponent(component.to_string()));
        };
        if !target.load().current.runs_processes() {
            return Err(CallError::Refused(format!(
                "component `{component}` does not export the process behaviour"
            )));
        }
        if name.is_empty() || name.len() > MAX_PROCESS_NAME_BYTES {
            return Err(CallError::Refused(format!(
                "a process name must be 1 to {MAX_PROCESS_NAME_BYTES} bytes"
            )));
        }
        // The component's name is shared by the keys of its processes: one
        // allocation, not one each.
        let key = ProcessKey {
            component: component_name.clone(),
            name: Arc::from(name),
        };
        self.registry.lookup_or_start(&key, fence, || {
            self.supervisor
                .admit(&key)
                .inspect_err(|_| self.counters.refused())?;
            let pid: Pid = self.next_pid.fetch_add(1, Ordering::Relaxed);
            let stop = Arc::new(StopFlag::default());
            let target = target.load();
            let code = target.for_name(name).clone();
            if let Some(progress) = target.progress_of(&code) {
                progress.started.fetch_add(1, Ordering::Relaxed);
            }
            let stats = Arc::new(ProcessStats::running(code.version()));
            let mailbox = task::spawn(Identity {
                processes: self.clone(),
                code,
                failed_move: None,
                key: key.clone(),
                pid,
                fence,
                stop: stop.clone(),
                stats: stats.clone(),
            });
            self.counters.started();
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
    pub(super) fn exited(&self, key: &ProcessKey, pid: Pid, exit: &Exit) {
        match exit {
            Exit::Shutdown => tracing::debug!(process = %key, pid, "process stopped"),
            Exit::Stopped(StopReason::Killed) => {
                tracing::warn!(process = %key, pid, "process killed by an operator");
                self.counters.crashed();
                self.supervisor.record_crash(key, "killed by an operator");
            }
            Exit::Stopped(reason) => {
                tracing::debug!(process = %key, pid, "process stopped by the node: {reason:?}")
            }
            Exit::NoPermit(reason) => {
                tracing::warn!(process = %key, pid, "process could not start: {reason}");
                self.counters.refused();
            }
            // Logs come before counters: whoever sees a counter move can
            // read the log line that explains it.
            Exit::Expired => {
                tracing::debug!(process = %key, pid, "process expired after being idle");
                self.counters.expired();
            }
            // The cluster's doing, not the guest's: no restart intensity.
            Exit::Interrupted(reason) => {
                tracing::warn!(process = %key, pid, "process interrupted (it restarts from storage at its next message): {reason}");
                self.counters.interrupted();
            }
            Exit::Crashed(reason) | Exit::InitFailed(reason) => {
                tracing::warn!(process = %key, pid, "process crashed: {reason}");
                self.counters.crashed();
                if self.supervisor.record_crash(key, reason) {
                    let intensity = self.supervisor.intensity();
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

    /// Asks the live process holding `key` to render its state (as
    /// `:sys.get_state`); never starts one. `node` names this node in the
    /// answer.
    pub async fn render_state(&self, key: &ProcessKey, node: &str) -> Result<String, String> {
        let mailbox = self
            .registry
            .mailbox_of(key)
            .ok_or_else(|| format!("no process `{key}` is running on {node}"))?;
        let (reply, answer) = tokio::sync::oneshot::channel();
        mailbox
            .wake(Message::RenderState(reply))
            .map_err(|_| format!("`{key}` is stopping"))?;
        let wait = self.limits.call_deadline * 2;
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

    /// Traces the process holding `key` (and those holding it later) until
    /// `tracer` is finished; one trace per name.
    pub fn trace(&self, key: &ProcessKey, tracer: Arc<Tracer>) -> Result<(), String> {
        self.registry.trace(key, tracer)
    }

    /// Ends `tracer`'s trace of `key` (and only that trace).
    pub fn untrace(&self, key: &ProcessKey, tracer: &Arc<Tracer>) {
        self.registry.untrace(key, tracer)
    }

    /// Traces of processes not yet over.
    pub fn traces_running(&self) -> usize {
        self.registry.traces_running()
    }

    /// Every live process, as the console shows it.
    pub fn snapshot(&self) -> Vec<ProcessInfo> {
        self.registry.snapshot()
    }

    /// Live processes, hibernated ones included.
    pub fn len(&self) -> usize {
        self.registry.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The restart history of every name that crashed.
    pub fn supervisor(&self) -> &Supervisor {
        &self.supervisor
    }

    pub fn counters(&self) -> &ProcessCounters {
        &self.counters
    }

    pub fn permits(&self) -> &InstancePermits<Resting<C>> {
        &self.permits
    }

    pub fn hibernated(&self) -> &HibernatedStates {
        &self.hibernated
    }

    /// Stops this node's processes whose registration matches (see
    /// [`Registry::stop_where`]); returns how many.
    pub fn stop_where(
        &self,
        reason: &StopReason,
        matches: impl Fn(&ProcessKey, Option<&Fence>) -> bool,
    ) -> usize {
        self.registry.stop_where(reason, matches)
    }

    /// Moves every live process of `component` that is not on its target
    /// to it, `at_once` at a time: a parked one in a task of its own now; a
    /// running one moves by itself at its next message boundary (passes are
    /// made until none is left running, or after `passes`); a hibernated
    /// one at its wake. Returns how many parked processes it moved.
    pub async fn converge(
        self: &Arc<Self>,
        component: &str,
        at_once: usize,
        passes: usize,
    ) -> usize {
        let at_once = at_once.max(1);
        let permits = Arc::new(Semaphore::new(at_once));
        let mut moved = 0;
        for pass in 0..passes.max(1) {
            let epoch = self.targets.epoch();
            let mut running = 0;
            for (_, mailbox) in self.registry.of_component(component) {
                let Ok(permit) = permits.clone().acquire_owned().await else {
                    break;
                };
                match resting::take_parked(&mailbox, |parked| parked.live.epoch != epoch) {
                    Some((parked, inbox)) => {
                        let Parked { identity, live } = *parked;
                        task::Task::new(identity, inbox).spawn(task::Begin::Converge(live, permit));
                        moved += 1;
                    }
                    None => {
                        if mailbox.inspect(|status| matches!(status, Status::Running)) {
                            running += 1;
                        }
                    }
                }
            }
            // Every move of this pass done before the next looks again.
            let Ok(all) = permits.acquire_many(at_once as u32).await else {
                break;
            };
            drop(all);
            if running == 0 {
                break;
            }
            if pass + 1 < passes {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        moved
    }

    /// Up to `count` states of live processes of `component`, as they
    /// would hand them over, with the version that wrote each: a parked or
    /// running process hands its state over between two messages (which
    /// leaves it as it was); a hibernated one's kept state is read.
    pub async fn sample_states(
        &self,
        component: &str,
        count: usize,
    ) -> Vec<(ProcessKey, Result<HandedOver, String>)> {
        let mut samples = Vec::new();
        // The first names in order: the same processes each time, so that
        // an operator can reproduce what a dry run saw.
        let mut processes = self.registry.of_component(component);
        processes.sort_by(|(a, _), (b, _)| a.name.cmp(&b.name));
        for (key, mailbox) in processes.into_iter().take(count) {
            let kept = mailbox.inspect(|status| match status {
                Status::Resting(Resting::Hibernated(hibernated)) => Some(
                    self.hibernated
                        .peek(hibernated.identity.pid, &hibernated.state)
                        .map(|state| HandedOver {
                            state,
                            version: hibernated.identity.code.version().clone(),
                        }),
                ),
                _ => None,
            });
            let sample = match kept {
                Some(kept) => kept,
                None => self.ask_state(&mailbox).await,
            };
            samples.push((key, sample));
        }
        samples
    }

    /// Asks a live process for a copy of its state, between two messages.
    async fn ask_state(&self, mailbox: &ProcessMailbox<C>) -> Result<HandedOver, String> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        mailbox
            .wake(Message::HandOver(reply))
            .map_err(|_| "it is stopping".to_string())?;
        let wait = self.limits.call_deadline * 2;
        match tokio::time::timeout(wait, answer).await {
            Ok(Ok(handed)) => handed,
            Ok(Err(_)) => Err("it ended before handing its state over".into()),
            Err(_) => Err(format!("it did not hand its state over within {wait:?}")),
        }
    }

    /// How many live processes of `component` run each version.
    pub fn versions_running(&self, component: &str) -> HashMap<Arc<str>, usize> {
        self.registry.versions_of(component)
    }

    /// Stops every process: no new ones start, each finishes what is in its
    /// mailbox. Waits up to `grace` for them.
    pub async fn stop_all(&self, grace: Duration) {
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
