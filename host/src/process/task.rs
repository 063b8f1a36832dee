//! A process's task: gets it an instance, handles what is queued, parks
//! or hibernates it, and ends it.
//!
//! Life of a process: registered under its name with an empty mailbox,
//! instantiated, `init` (loads its state from storage), then messages.
//! Between messages it has no task: it rests in its mailbox, parked with
//! its instance. A message to a parked process starts a task for it (a
//! call from a task of this node runs right in the caller's task when
//! nothing is queued: `direct_call`). Idle for `hibernate_after`, or asked
//! to make room for another process, it hibernates: its state is handed
//! over (`hand-over`) and kept, its instance and permit are freed, and its
//! next message starts it again from that state (`take-over`). Idle for
//! `idle_timeout` (parked or hibernated) it expires and its memory is
//! freed; it comes back from storage. It may also crash (trap, deadline,
//! memory cap: the caller gets `crashed`), or the node shuts down. Whatever
//! still sits in the mailbox when it ends is answered, never dropped in
//! silence.
//!
//! Whoever runs a process holds its [`Live`] instance: a task, or a caller.
//! There is one `Live` per process, moved between them and the mailbox, so
//! one message at a time holds by construction.

use std::sync::Arc;

use tokio::time::Instant;

use super::code::{Code, Instance, Start, Who};
use super::error::{CallError, Exit};
use super::id::StopReason;
use super::mailbox::{self, HandedOver, Message, ReplyTo, Unrested};
use super::panic_guard::Owner;
use super::resting::{
    Hibernated, Identity, Live, Parked, ProcessInbox, ProcessMailbox, Resting, holds_instance,
    later, make_room,
};
use super::targets::{Direction, SwapProgress};

/// Starts the process `identity` names as a task of its node and returns
/// its mailbox. The process instantiates itself; messages sent meanwhile
/// wait.
pub(super) fn spawn<C: Code>(identity: Identity<C>) -> ProcessMailbox<C> {
    let limit = identity.processes.limits.max_mailbox_bytes;
    let (mailbox, inbox) = mailbox::new(limit);
    Task::new(identity, inbox).spawn(Begin::Start(Start::Init));
    mailbox
}

/// How a task takes a process on.
pub(super) enum Begin<C: Code> {
    /// Instantiate it (new, or waking from hibernation).
    Start(Start),
    /// It was parked; a message came.
    Resume(Live<C>),
    /// It was parked and is to hibernate.
    Hibernate(Live<C>),
    /// It was parked, and a swap's sweep moves it to its target now (the
    /// permit bounds how many the sweep moves at once).
    Converge(Live<C>, tokio::sync::OwnedSemaphorePermit),
}

/// A process that could not park: its task goes on with it.
struct Unparked<C: Code> {
    task: Task<C>,
    live: Live<C>,
    /// The mailbox is closed: the process ends.
    closed: bool,
}

/// A move a process's target asks of it.
struct Move<C> {
    to: Arc<C>,
    direction: Direction,
    progress: Option<Arc<SwapProgress>>,
}

/// How a task's turn with a process ended.
pub(super) enum Ended {
    Exit(Exit),
    /// The process rests in its mailbox (parked or hibernated).
    Rests,
}

/// A task running a process: it handles what is queued, then parks the
/// process and ends.
pub(super) struct Task<C: Code> {
    pub identity: Identity<C>,
    pub inbox: ProcessInbox<C>,
    /// The caller whose message crashed the process. It is answered only
    /// once the crash is recorded and the name released, so whatever it
    /// does next meets a fresh process (or a refusal), never this one.
    crashed_caller: Option<ReplyTo>,
    /// A message taken from the mailbox but not handed to the guest, because
    /// the node told the process to stop: answered with the queue.
    untaken: Option<Message>,
}

impl<C: Code> Task<C> {
    pub fn new(identity: Identity<C>, inbox: ProcessInbox<C>) -> Self {
        Self {
            identity,
            inbox,
            crashed_caller: None,
            untaken: None,
        }
    }

    pub fn spawn(self, begin: Begin<C>) {
        Owner::of(&self.identity, &self.inbox).spawn(self.run(begin));
    }

    async fn run(self, begin: Begin<C>) {
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
            Begin::Converge(live, _sweeping) => match task.converge(live).await {
                Ok(live) => live,
                Err(ended) => return task.ended(ended),
            },
        };
        task.serve(live).await;
    }

    fn ended(self, ended: Ended) {
        if let Ended::Exit(exit) = ended {
            self.finish(exit);
        }
    }

    /// Gets the process an instance (a permit, then its code's `init` or
    /// `take-over`).
    pub async fn start(&mut self, start: Start) -> Result<Live<C>, Ended> {
        let processes = self.identity.processes.clone();
        let deadline = processes.limits.call_deadline;
        match &start {
            // A hibernated process told to stop needs no instance to stop.
            Start::TakeOver(_) | Start::TakeOverFrom { .. } => {
                if let Some(reason) = self.identity.stop.reason() {
                    return Err(Ended::Exit(Exit::Stopped(reason.clone())));
                }
            }
            // In a cluster, nothing new runs before this node has every
            // write acknowledged so far. If that fails nothing ran, so there
            // is no crash to count: waiting calls are answered with the
            // reason, and those to a name that moved find it again.
            Start::Init => {
                if let Some(router) = processes.router()
                    && let Err(reason) = router.clone().start_barrier(self.identity.fence).await
                {
                    return Err(Ended::Exit(Exit::Stopped(reason)));
                }
            }
        }
        let permit = match processes.permits.acquire(deadline, make_room).await {
            Ok(permit) => permit,
            Err(reason) => return Err(self.no_permit(start, reason)),
        };
        let instance = match self.instantiate_waking(&start).await {
            Ok(instance) => instance,
            Err(reason) => return Err(Ended::Exit(Exit::InitFailed(reason))),
        };
        let now = Instant::now();
        processes
            .permits
            .held_by(self.inbox.mailbox(), holds_instance);
        processes.idle_timers.schedule(
            later(now, processes.limits.shortest_rest()),
            self.inbox.mailbox(),
        );
        Ok(Live {
            instance,
            _permit: permit,
            last_message: now,
            // Compared with its target at its first message boundary.
            epoch: u64::MAX,
        })
    }

    /// An instance of `code` for this process, from `start`.
    async fn instantiate(&self, code: &Arc<C>, start: &Start) -> Result<C::Instance, String> {
        let identity = &self.identity;
        let who = Who {
            key: &identity.key,
            fence: identity.fence,
            memory: &identity.stats.memory,
        };
        code.start(who, start, identity.processes.limits.call_deadline)
            .await
    }

    /// Moves the process to its target's code if it is not on it (and did
    /// not fail to move there already): a message boundary. Nothing happens
    /// but one atomic load while no target changed.
    pub async fn converge(&mut self, mut live: Live<C>) -> Result<Live<C>, Ended> {
        let epoch = self.identity.processes.targets.epoch();
        if live.epoch == epoch {
            return Ok(live);
        }
        live.epoch = epoch;
        let Some(Move {
            to,
            direction,
            progress,
        }) = self.due_move()
        else {
            return Ok(live);
        };
        let mut moved = self.move_to(live, to, direction, progress).await?;
        moved.epoch = epoch;
        Ok(moved)
    }

    /// The move the process's target asks of it, if any: none when it runs
    /// its target's code, or failed to move there already.
    fn due_move(&self) -> Option<Move<C>> {
        let (_, target) = self
            .identity
            .processes
            .targets
            .get(&self.identity.key.component)?;
        let target = target.load_full();
        let desired = target.for_name(&self.identity.key.name);
        if Arc::ptr_eq(desired, &self.identity.code) {
            return None;
        }
        let (direction, progress) = target.move_to(desired, &self.identity.code);
        let failed_already = self
            .identity
            .failed_move
            .as_ref()
            .is_some_and(|(failed, during)| {
                Arc::ptr_eq(failed, desired)
                    && match (during, &progress) {
                        (Some(during), Some(now)) => Arc::ptr_eq(during, now),
                        (None, None) => true,
                        _ => false,
                    }
            });
        if failed_already {
            return None;
        }
        Some(Move {
            to: desired.clone(),
            direction,
            progress,
        })
    }

    /// An instance of the process's code from `start`; but a hibernated
    /// process whose target moved up while it slept wakes straight into
    /// the new code (one take-over, not a wake and then a move). If the new
    /// code cannot take its state over, it wakes on its own code, as a
    /// failed move leaves a live process.
    async fn instantiate_waking(&mut self, start: &Start) -> Result<C::Instance, String> {
        let code = self.identity.code.clone();
        if let Start::TakeOver(state) = start
            && let Some(Move {
                to,
                direction: Direction::Up,
                progress,
            }) = self.due_move()
        {
            let began = Instant::now();
            let up = Start::TakeOverFrom {
                state: state.clone(),
                from_version: code.version().clone(),
            };
            match self.instantiate(&to, &up).await {
                Ok(instance) => {
                    if let Some(progress) = &progress {
                        progress.moved(began.elapsed());
                    }
                    self.on_code(&to);
                    return Ok(instance);
                }
                Err(reason) => self.move_failed(&to, &progress, &reason),
            }
        }
        self.instantiate(&code, start).await
    }

    /// Records that the process could not move to `to`: it stays on its
    /// code, and is not tried again during this swap.
    fn move_failed(&mut self, to: &Arc<C>, progress: &Option<Arc<SwapProgress>>, reason: &str) {
        let (key, pid, from) = (&self.identity.key, self.identity.pid, &self.identity.code);
        tracing::warn!(process = %key, pid, "stays on version {}: version {} could not take its state over: {reason}", from.version(), to.version());
        if let Some(progress) = progress {
            progress.failed(format!("{key}: {reason}"));
        }
        self.identity.failed_move = Some((to.clone(), progress.clone()));
    }

    /// Moves the live process to `to`: its state handed over (up: as it is;
    /// down: in `to`'s format) and taken over by a new instance of `to`. A
    /// failed move up leaves it on its code with its state; a move down
    /// that cannot hand its state down restarts it on `to` from storage.
    async fn move_to(
        &mut self,
        live: Live<C>,
        to: Arc<C>,
        direction: Direction,
        progress: Option<Arc<SwapProgress>>,
    ) -> Result<Live<C>, Ended> {
        let deadline = self.identity.processes.limits.call_deadline;
        let began = std::time::Instant::now();
        let Live {
            mut instance,
            _permit: permit,
            last_message,
            epoch,
        } = live;
        let from = self.identity.code.clone();
        let handed = match direction {
            Direction::Up => instance
                .hand_over(deadline)
                .await
                .map(|state| Start::TakeOverFrom {
                    state,
                    from_version: from.version().clone(),
                }),
            Direction::Down => match instance.hand_over_to(to.version(), deadline).await {
                Ok(Ok(state)) => Ok(Start::TakeOver(state)),
                Ok(Err(reason)) | Err(reason) => Err(reason),
            },
        };
        // The old instance goes first: the new one takes its place in the
        // pool, under the same permit.
        drop(instance);
        let (key, pid) = (&self.identity.key, self.identity.pid);
        let instance = match handed {
            Ok(start) => match self.instantiate(&to, &start).await {
                Ok(instance) => {
                    if let Some(progress) = &progress {
                        progress.moved(began.elapsed());
                    }
                    tracing::debug!(process = %key, pid, "moved from {} to {}", from.version(), to.version());
                    self.on_code(&to);
                    instance
                }
                Err(reason) if direction == Direction::Up => {
                    let Start::TakeOverFrom { state, .. } = start else {
                        unreachable!("a move up hands over a state of another version");
                    };
                    self.move_failed(&to, &progress, &reason);
                    match self.instantiate(&from, &Start::TakeOver(state)).await {
                        Ok(instance) => instance,
                        Err(again) => {
                            return Err(Ended::Exit(Exit::Crashed(format!(
                                "its state could not be taken back after a failed swap: {again}"
                            ))));
                        }
                    }
                }
                Err(reason) => self.restart_on(&to, &progress, &reason).await?,
            },
            // Its code could not hand its state over (a trap: the instance
            // is gone): a failed move, and it restarts where it was, from
            // storage.
            Err(reason) if direction == Direction::Up => {
                self.move_failed(&to, &progress, &reason);
                self.identity.processes.counters.hand_over_failed();
                self.restart_on(&from, &None, &reason).await?
            }
            Err(reason) => self.restart_on(&to, &progress, &reason).await?,
        };
        Ok(Live {
            instance,
            _permit: permit,
            last_message,
            epoch,
        })
    }

    /// Starts the process on `to` from storage (`init`): a move whose
    /// state could not be handed over or down.
    async fn restart_on(
        &mut self,
        to: &Arc<C>,
        progress: &Option<Arc<SwapProgress>>,
        reason: &str,
    ) -> Result<C::Instance, Ended> {
        let (key, pid) = (&self.identity.key, self.identity.pid);
        tracing::warn!(process = %key, pid, "restarts on version {} from storage: its state could not be handed to it: {reason}", to.version());
        let instance = self
            .instantiate(to, &Start::Init)
            .await
            .map_err(|reason| Ended::Exit(Exit::InitFailed(reason)))?;
        if let Some(progress) = progress {
            progress
                .restarted
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        self.on_code(to);
        Ok(instance)
    }

    /// The process runs `code` from now on.
    fn on_code(&mut self, code: &Arc<C>) {
        self.identity.stats.set_version(code.version());
        if !Arc::ptr_eq(&self.identity.code, code) {
            self.identity.failed_move = None;
        }
        self.identity.code = code.clone();
    }

    /// Handles what is queued, then parks the process.
    pub async fn serve(self, live: Live<C>) {
        let deadline = self.identity.processes.limits.call_deadline;
        let (mut task, mut live) = (self, live);
        loop {
            live = match task.converge(live).await {
                Ok(live) => live,
                Err(ended) => return task.ended(ended),
            };
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
                let exit = live.ended_by(reason);
                drop(live);
                return task.finish(exit);
            }
        }
    }

    /// Parks the process; if messages queued meanwhile, a task of its own
    /// handles them (the caller that ran it goes on).
    pub fn park_or_serve(self, live: Live<C>) {
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
    fn park(self, live: Live<C>) -> Result<(), Box<Unparked<C>>> {
        if live.epoch != self.identity.processes.targets.epoch() {
            // A target changed while it ran (a call straight from its
            // caller does not look first): it converges before it rests.
            return Err(Box::new(Unparked {
                task: self,
                live,
                closed: false,
            }));
        }
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

    /// No permit came free for the process to run with: the messages
    /// waiting are refused. A new process ends (nothing ran, nothing is
    /// lost); a hibernated one goes back to hibernation with its state.
    fn no_permit(&mut self, start: Start, reason: String) -> Ended {
        let Start::TakeOver(state) = start else {
            return Ended::Exit(Exit::NoPermit(reason));
        };
        // Told to stop meanwhile: it stops, as it would have awake.
        if let Some(stopped) = self.identity.stop.reason() {
            return Ended::Exit(Exit::Stopped(stopped.clone()));
        }
        self.identity.processes.counters.refused();
        tracing::warn!(process = %self.identity.key, "could not wake: {reason}");
        let last_message = Instant::now();
        loop {
            while let Some(message) = self.inbox.try_recv() {
                refuse(message, &reason);
            }
            match self.rest_hibernated(state.clone(), last_message) {
                Ok(()) => return Ended::Rests,
                Err(Unrested::Closed(())) => return Ended::Exit(Exit::Shutdown),
                // A message came meanwhile: refuse it too, then rest.
                Err(Unrested::Busy(())) => continue,
            }
        }
    }

    /// Hibernates the process if its mailbox is empty: hands its state over
    /// and rests in its mailbox. `Err`: a message came first, and the
    /// process goes on with its instance. A guest whose hand-over fails
    /// expires instead, and what it was sent meanwhile goes to its next
    /// start.
    async fn hibernate(&mut self, mut live: Live<C>) -> Result<Ended, Live<C>> {
        let processes = self.identity.processes.clone();
        let deadline = processes.limits.call_deadline;
        match live.hand_over(deadline).await {
            Ok(state) => match self.rest_hibernated(state, live.last_message) {
                Ok(()) => Ok(Ended::Rests),
                Err(Unrested::Busy(())) => {
                    // It keeps its permit: it may be asked again.
                    processes
                        .permits
                        .held_by(self.inbox.mailbox(), holds_instance);
                    Err(live)
                }
                Err(Unrested::Closed(())) => Ok(Ended::Exit(Exit::Shutdown)),
            },
            Err(reason) => {
                // Counted before the instance (and its permit) goes, so
                // whoever gets the permit next sees the failure counted.
                processes.counters.hand_over_failed();
                drop(live);
                let (key, pid) = (&self.identity.key, self.identity.pid);
                tracing::warn!(process = %key, pid, "hand-over failed, so the process expires instead of hibernating: {reason}");
                let inbox = &mut self.inbox;
                let gone = processes
                    .registry
                    .unregister_if(key, pid, || inbox.close_if_empty().then_some(()));
                if gone.is_some() {
                    return Ok(Ended::Exit(Exit::Expired));
                }
                // Messages came during the hand-over: the process starts
                // again from storage, in place, and handles them in order.
                processes.exited(key, pid, &Exit::Expired);
                match self.start(Start::Init).await {
                    Ok(live) => Err(live),
                    Err(ended) => Ok(ended),
                }
            }
        }
    }

    /// Puts the process to rest hibernated in its mailbox with `state`,
    /// unless a message is waiting. It expires `idle_timeout` after
    /// `last_message`.
    fn rest_hibernated(
        &mut self,
        state: Vec<u8>,
        last_message: Instant,
    ) -> Result<(), Unrested<()>> {
        let processes = self.identity.processes.clone();
        let state_bytes = state.len();
        let state = processes.hibernated.keep(self.identity.pid, state);
        let hibernated = Box::new(Hibernated {
            identity: self.identity.share(),
            state,
            last_message,
        });
        self.inbox
            .rest(Resting::Hibernated(hibernated))
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
            .store(state_bytes, std::sync::atomic::Ordering::Relaxed);
        processes.counters.hibernated();
        let until = later(last_message, processes.limits.idle_timeout);
        processes.idle_timers.schedule(until, self.inbox.mailbox());
        Ok(())
    }

    /// Records the process's end, gives up its name, and answers what is
    /// left in its mailbox.
    pub fn finish(mut self, exit: Exit) {
        let Identity {
            processes,
            key,
            pid,
            ..
        } = &self.identity;
        // Record the exit (a crash counts against the restart intensity)
        // before giving up the name, so the next start already sees it.
        processes.exited(key, *pid, &exit);
        processes.registry.unregister(key, *pid);
        self.inbox.close();
        if let Exit::Crashed(_) = &exit {
            let code = &self.identity.code;
            code.stats().crashed();
            if let Some((_, target)) = processes.targets.get(&key.component)
                && let Some(progress) = target.load().progress_of(code)
            {
                progress
                    .crashed
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }
        if let (Some(caller), Some(error)) = (self.crashed_caller.take(), exit.held_message_error())
        {
            let _ = caller.send(Err(error));
        }
        let refusal = exit.refusal();
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
                    if processes.cast(&key.component, &key.name, message).is_err() {
                        dropped_casts += 1;
                    }
                }
                Message::Cast { .. } => dropped_casts += 1,
                Message::Stop | Message::Hibernate => {}
                Message::RenderState(reply) => {
                    let _ = reply.send(Err("the process ended".into()));
                }
                Message::HandOver(reply) => {
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
        live: &mut Live<C>,
        message: Message,
        deadline: std::time::Duration,
    ) -> Result<(), String> {
        let identity = &self.identity;
        match message {
            Message::Call { message, reply } => {
                // Kept in the mailbox while the guest runs, so that a panic
                // of host code still answers it (`panic_guard`).
                self.inbox.hold_caller(reply);
                let result = live.call(identity, message, deadline).await;
                let caller = self.inbox.take_caller();
                match result {
                    Ok(answer) => {
                        if let Some(caller) = caller {
                            let _ = caller.send(Ok(answer));
                        }
                        Ok(())
                    }
                    Err(reason) => {
                        self.crashed_caller = caller;
                        Err(reason)
                    }
                }
            }
            Message::Cast { message } => live.cast(identity, message, deadline).await,
            Message::Stop | Message::Hibernate => Ok(()),
            Message::HandOver(reply) => match live.hand_over(deadline).await {
                Ok(state) => {
                    let version = identity.code.version().clone();
                    let _ = reply.send(Ok(HandedOver { state, version }));
                    Ok(())
                }
                Err(reason) => {
                    let _ = reply.send(Err(format!("its hand-over failed: {reason}")));
                    Err(reason)
                }
            },
            Message::RenderState(reply) => match live.render_state(deadline).await {
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

/// Answers a message that will not be handled, with `reason`.
pub(super) fn refuse(message: Message, reason: &str) {
    match message {
        Message::Call { reply, .. } => {
            let _ = reply.send(Err(CallError::Refused(reason.to_string())));
        }
        Message::RenderState(reply) => {
            let _ = reply.send(Err(reason.to_string()));
        }
        Message::HandOver(reply) => {
            let _ = reply.send(Err(reason.to_string()));
        }
        Message::Cast { .. } | Message::Stop | Message::Hibernate => {}
    }
}
