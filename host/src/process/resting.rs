//! A process between messages: who it is, the instance it may hold, and
//! how it rests in its mailbox (parked with its instance, or hibernated
//! with only its handed-over state). Also what the idle timers and an
//! instance shortage do to a resting process.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::code::{Code, Instance, Start};
use super::error::Exit;
use super::hibernated::KeptState;
use super::id::{Fence, Pid, ProcessKey, StopFlag};
use super::mailbox::{Inbox, Mailbox, Message, Rest, Status, Unrested};
use super::permits::InstancePermit;
use super::processes::Processes;
use super::stats::ProcessStats;
use super::targets::SwapProgress;
use super::task::{Begin, Task};
use super::trace::EventKind;

/// A process's mailbox, where it rests between messages.
pub type ProcessMailbox<C> = Mailbox<Resting<C>>;
pub(super) type ProcessInbox<C> = Inbox<Resting<C>>;

/// Who a process is: what it needs to run, kept while it rests. In a
/// cluster, `fence` is its registration (its writes count only while it is
/// current), and `stop` is how the node tells it to stop.
pub(super) struct Identity<C: Code> {
    pub processes: Arc<Processes<C>>,
    /// The code it runs now (a swap moves it to another).
    pub code: Arc<C>,
    /// Code a swap failed to move it to, and that swap's progress (none
    /// for a move no swap counts): not tried again while the same move is
    /// asked of it.
    pub failed_move: Option<(Arc<C>, Option<Arc<SwapProgress>>)>,
    pub key: ProcessKey,
    pub pid: Pid,
    pub fence: Option<Fence>,
    pub stop: Arc<StopFlag>,
    pub stats: Arc<ProcessStats>,
}

impl<C: Code> Identity<C> {
    /// The same identity, for the process's next rest: reference counts.
    pub fn share(&self) -> Self {
        Self {
            processes: self.processes.clone(),
            code: self.code.clone(),
            failed_move: self.failed_move.clone(),
            key: self.key.clone(),
            pid: self.pid,
            fence: self.fence,
            stop: self.stop.clone(),
            stats: self.stats.clone(),
        }
    }

    fn traced(&self, kind: EventKind, message: &[u8]) {
        self.stats.traced(&self.key, self.pid, kind, message);
    }
}

/// A process's instance and what goes with it. Fields drop in order: the
/// instance (and what it held of the pool) before the permit is given
/// back.
pub(super) struct Live<C: Code> {
    pub instance: C::Instance,
    pub _permit: InstancePermit,
    pub last_message: Instant,
    /// The targets' epoch when it last compared its code with its target.
    pub epoch: u64,
}

impl<C: Code> Live<C> {
    /// How the process ends after its instance failed with `reason`: a
    /// crash, or an interruption when the instance ended for the node's
    /// sake (a storage write of unknown outcome).
    pub fn ended_by(&self, reason: String) -> Exit {
        match self.instance.interrupted() {
            Some(why) => Exit::Interrupted(why),
            None => Exit::Crashed(reason),
        }
    }

    /// The guest's `handle-call`. An error means the instance is dead.
    pub async fn call(
        &mut self,
        identity: &Identity<C>,
        message: Vec<u8>,
        deadline: Duration,
    ) -> Result<Vec<u8>, String> {
        identity.stats.counted();
        identity.traced(EventKind::Call, &message);
        let stats = identity.code.stats();
        let began = stats.counting().then(Instant::now);
        let answer = self.instance.handle_call(&message, deadline).await?;
        self.last_message = Instant::now();
        if let Some(began) = began {
            stats.call(self.last_message.saturating_duration_since(began));
        }
        identity.traced(EventKind::Reply, &answer);
        Ok(answer)
    }

    /// The guest's `handle-cast`. An error means the instance is dead.
    pub async fn cast(
        &mut self,
        identity: &Identity<C>,
        message: Vec<u8>,
        deadline: Duration,
    ) -> Result<(), String> {
        identity.stats.counted();
        let stats = identity.code.stats();
        if stats.counting() {
            stats.cast();
        }
        identity.traced(EventKind::Cast, &message);
        self.instance.handle_cast(&message, deadline).await?;
        self.last_message = Instant::now();
        Ok(())
    }

    /// The guest's `hand-over`. An error means the instance is dead.
    pub async fn hand_over(&mut self, deadline: Duration) -> Result<Vec<u8>, String> {
        self.instance.hand_over(deadline).await
    }

    /// The guest's rendering of its state: the inner result is the answer;
    /// an outer error means the instance is dead (a process crash).
    pub async fn render_state(
        &mut self,
        deadline: Duration,
    ) -> Result<Result<String, String>, String> {
        self.instance.render_state(deadline).await
    }
}

/// A process between messages, with its instance.
pub struct Parked<C: Code> {
    pub(super) identity: Identity<C>,
    pub(super) live: Live<C>,
}

/// A hibernated process: its handed-over state, no instance.
pub struct Hibernated<C: Code> {
    pub(super) identity: Identity<C>,
    pub(super) state: KeptState,
    pub(super) last_message: Instant,
}

/// How a process rests in its mailbox.
pub enum Resting<C: Code> {
    Parked(Box<Parked<C>>),
    Hibernated(Box<Hibernated<C>>),
}

impl<C: Code> Resting<C> {
    pub(super) fn identity(&self) -> &Identity<C> {
        match self {
            Resting::Parked(parked) => &parked.identity,
            Resting::Hibernated(hibernated) => &hibernated.identity,
        }
    }

    fn last_message(&self) -> Instant {
        match self {
            Resting::Parked(parked) => parked.live.last_message,
            Resting::Hibernated(hibernated) => hibernated.last_message,
        }
    }

    /// Lets go of what a process that ended while resting kept: a
    /// hibernated one's state (in memory or spilled).
    pub(super) fn forget_state(self) {
        if let Resting::Hibernated(hibernated) = self {
            let Hibernated {
                identity, state, ..
            } = *hibernated;
            identity.processes.hibernated.forget(identity.pid, state);
        }
    }
}

impl<C: Code> Rest for Resting<C> {
    fn wake(self, inbox: ProcessInbox<C>) {
        match self {
            Resting::Parked(parked) => {
                let Parked { identity, live } = *parked;
                Task::new(identity, inbox).spawn(Begin::Resume(live));
            }
            Resting::Hibernated(hibernated) => {
                let (identity, start) = hibernated.waking();
                Task::new(identity, inbox).spawn(Begin::Start(start));
            }
        }
    }

    fn end(self) {
        let Identity {
            processes,
            key,
            pid,
            ..
        } = self.identity();
        processes.exited(key, *pid, &Exit::Shutdown);
        processes.registry.unregister(key, *pid);
        self.forget_state();
    }
}

impl<C: Code> Hibernated<C> {
    /// Who wakes, and from what: the state it handed over, or, should that
    /// be lost (storage failed), `init` from storage, as after an expiry.
    pub(super) fn waking(self) -> (Identity<C>, Start) {
        let Hibernated {
            identity, state, ..
        } = self;
        let processes = &identity.processes;
        processes.counters.woken();
        let start = match processes.hibernated.take(identity.pid, state) {
            Ok(state) => Start::TakeOver(state),
            Err(reason) => {
                tracing::warn!(process = %identity.key, pid = identity.pid, "woken from storage instead of its handed-over state: {reason}");
                Start::Init
            }
        };
        (identity, start)
    }
}

/// Takes the process of `mailbox` to run it here if it is parked, nothing
/// is queued, and `choose` says so.
pub(super) fn take_parked<C: Code>(
    mailbox: &ProcessMailbox<C>,
    choose: impl FnOnce(&Parked<C>) -> bool,
) -> Option<(Box<Parked<C>>, ProcessInbox<C>)> {
    let (resting, mut inbox) = mailbox.take_if(|resting| match resting {
        Resting::Parked(parked) => choose(parked),
        Resting::Hibernated(_) => false,
    })?;
    match resting {
        Resting::Parked(parked) => Some((parked, inbox)),
        // `take_if` chose a parked one; were it not, it goes back as it was.
        hibernated => {
            if let Err(Unrested::Busy(rest) | Unrested::Closed(rest)) = inbox.rest(hibernated) {
                rest.wake(inbox);
            }
            None
        }
    }
}

/// Whether the process of `mailbox` holds an instance (parked or running).
pub(super) fn holds_instance<C: Code>(mailbox: &ProcessMailbox<C>) -> bool {
    mailbox.inspect(|status| match status {
        Status::Running => true,
        Status::Resting(resting) => matches!(resting, Resting::Parked(_)),
        Status::Closed => false,
    })
}

/// Makes the process of `mailbox` give up its instance if it is idle: a
/// parked one hibernates (in a task of its own); a running one is asked to
/// once it has nothing queued. Returns whether it was asked.
pub(super) fn make_room<C: Code>(mailbox: &ProcessMailbox<C>) -> bool {
    match take_parked(mailbox, |_| true) {
        Some((parked, inbox)) => {
            let Parked { identity, live } = *parked;
            Task::new(identity, inbox).spawn(Begin::Hibernate(live));
            true
        }
        None => mailbox.send_if_running(Message::Hibernate),
    }
}

/// Looks at a resting process whose idle timer is due: hibernates it if
/// parked past `hibernate_after`, ends it past `idle_timeout`, or schedules
/// the next look. A process that is running is looked at again later; one
/// that ended, or hibernates (its hibernation has a timer of its own), is
/// forgotten.
pub(super) fn idle_due<C: Code>(
    processes: &Arc<Processes<C>>,
    mailbox: ProcessMailbox<C>,
    now: Instant,
) {
    let limits = &processes.limits;
    let idle_timeout = limits.idle_timeout;
    let hibernate_after = limits.hibernate_after.unwrap_or(Duration::MAX);
    let rest = limits.shortest_rest();
    let expired = |resting: &Resting<C>| {
        now.saturating_duration_since(resting.last_message()) >= idle_timeout
    };
    let expiring = mailbox.inspect(|status| match status {
        Status::Resting(resting) if expired(resting) => {
            Some((resting.identity().key.clone(), resting.identity().pid))
        }
        _ => None,
    });
    if let Some((key, pid)) = expiring {
        // Its name goes with its mailbox's closing, under the registry's
        // lock: a sender finds either the resting process or no name.
        let ended = processes
            .registry
            .unregister_if(&key, pid, || mailbox.close_if(expired));
        if let Some(resting) = ended {
            processes.exited(&key, pid, &Exit::Expired);
            resting.forget_state();
            return;
        }
    }
    let hibernating = mailbox.take_if(|resting| {
        matches!(resting, Resting::Parked(_))
            && now.saturating_duration_since(resting.last_message()) >= hibernate_after
    });
    if let Some((Resting::Parked(parked), inbox)) = hibernating {
        // Looked at again later, in case a message keeps it from
        // hibernating.
        processes
            .idle_timers
            .schedule(later(now, rest), inbox.mailbox());
        let Parked { identity, live } = *parked;
        Task::new(identity, inbox).spawn(Begin::Hibernate(live));
        return;
    }
    let next = mailbox.inspect(|status| match status {
        Status::Closed => None,
        Status::Running => Some(later(now, rest)),
        Status::Resting(Resting::Parked(parked)) => Some(later(parked.live.last_message, rest)),
        // Every hibernation scheduled its own expiry when it began.
        Status::Resting(Resting::Hibernated(_)) => None,
    });
    if let Some(next) = next {
        processes.idle_timers.schedule(next, mailbox);
    }
}

/// `at + wait`, or far in the future if that is past what an `Instant`
/// holds (an absurd `--idle-timeout`).
pub(super) fn later(at: Instant, wait: Duration) -> Instant {
    at.checked_add(wait)
        .unwrap_or_else(|| at + Duration::from_secs(100 * 365 * 24 * 3600))
}
