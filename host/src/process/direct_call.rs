//! The direct call: a call to a resting process runs in the caller's own
//! task. The previous design (a task per process, a oneshot per reply)
//! cost two task wake-ups per call, as much as a whole HTTP request.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;

use super::code::Code;
use super::error::CallError;
use super::id::{Pid, ProcessKey};
use super::mailbox::{Rest, Unrested};
use super::panic_guard::Owner;
use super::processes::Processes;
use super::resting::{Hibernated, Parked, ProcessInbox, ProcessMailbox, Resting};
use super::task::{Begin, Ended, Task};

/// Calls the resting process of `mailbox` from the caller's own task, if
/// nothing is queued and it was not told to stop: the guest's `handle-call`
/// runs here (after `take-over`, if it was hibernated), so neither a task
/// wake-up nor a reply channel is needed. `Err` gives the message back: it
/// is not, and the message must go through the mailbox.
///
/// If the caller stops waiting (its `timeout`, or its own future is
/// dropped, as when an HTTP client goes away), the call is not abandoned
/// half-way: it goes on in a task of its own, as it would have in the
/// process's task.
pub(super) async fn call_resting<C: Code>(
    processes: &Arc<Processes<C>>,
    mailbox: &ProcessMailbox<C>,
    (component, name): (&str, &str),
    message: Vec<u8>,
    timeout: Duration,
) -> Result<Result<Vec<u8>, CallError>, Vec<u8>> {
    // A parked process whose target may have changed since it last looked
    // goes through its mailbox: its task moves it first.
    let epoch = processes.targets.epoch();
    let taken = mailbox.take_if(|resting| {
        resting.identity().stop.reason().is_none()
            && match resting {
                Resting::Parked(parked) => parked.live.epoch == epoch,
                Resting::Hibernated(_) => true,
            }
    });
    let Some((resting, inbox)) = taken else {
        return Err(message);
    };
    let pid = resting.identity().pid;
    // A parked process's call is over within the call deadline (its guest
    // call is bounded by it): a caller willing to wait that long needs no
    // timer of its own, which saves one per call.
    let bounded =
        matches!(resting, Resting::Parked(_)) && timeout >= processes.limits.call_deadline;
    let call: DirectCall = match resting {
        Resting::Parked(parked) => Box::pin(call_and_park(parked, inbox, message)),
        Resting::Hibernated(hibernated) => Box::pin(wake_and_call(*hibernated, inbox, message)),
    };
    let mut call = Detachable {
        _running: processes.tasks.token(),
        processes: processes.clone(),
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
async fn call_and_park<C: Code>(
    mut parked: Box<Parked<C>>,
    mut inbox: ProcessInbox<C>,
    message: Vec<u8>,
) -> Result<Vec<u8>, CallError> {
    let deadline = parked.identity.processes.limits.call_deadline;
    let Parked { identity, live } = &mut *parked;
    match live.call(identity, message, deadline).await {
        Ok(answer) if live.epoch != identity.processes.targets.epoch() => {
            // A swap came during the call: its task moves it, then parks it.
            let Parked { identity, live } = *parked;
            Task::new(identity, inbox).spawn(Begin::Resume(live));
            Ok(answer)
        }
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
            let exit = live.ended_by(reason);
            drop(live);
            let error = exit.held_message_error();
            Task::new(identity, inbox).finish(exit);
            Err(error.unwrap_or_else(|| CallError::Crashed("the process ended".into())))
        }
    }
}

/// A call to a hibernated process, run in the caller's task: wakes it
/// (instance, `take-over`), handles the message, then parks it, or hands it
/// to a task if messages queued meanwhile.
async fn wake_and_call<C: Code>(
    hibernated: Hibernated<C>,
    inbox: ProcessInbox<C>,
    message: Vec<u8>,
) -> Result<Vec<u8>, CallError> {
    let (identity, start) = hibernated.waking();
    let deadline = identity.processes.limits.call_deadline;
    let mut task = Task::new(identity, inbox);
    let started = match task.start(start).await {
        Ok(live) => task.converge(live).await,
        Err(ended) => Err(ended),
    };
    let mut live = match started {
        Ok(live) => live,
        Err(Ended::Rests) => {
            // No permit came free: it hibernates again, its state kept.
            return Err(CallError::Refused(
                "no instance came free in time to wake the process (--max-instances)".into(),
            ));
        }
        Err(Ended::Exit(exit)) => {
            let error = exit.refusal();
            task.finish(exit);
            return Err(error);
        }
    };
    match live.call(&task.identity, message, deadline).await {
        Ok(answer) => {
            task.park_or_serve(live);
            Ok(answer)
        }
        Err(reason) => {
            let exit = live.ended_by(reason);
            drop(live);
            let error = exit.held_message_error();
            task.finish(exit);
            Err(error.unwrap_or_else(|| CallError::Crashed("the process ended".into())))
        }
    }
}

type DirectCall = Pin<Box<dyn Future<Output = Result<Vec<u8>, CallError>> + Send>>;

/// A direct call that outlives its caller: dropped before it finished, it
/// goes on in a task (a guest call stopped half-way would leave the
/// instance unusable and the process stuck). Who the process is stays
/// borrowed from the caller, for the rare call that needs its [`Owner`].
struct Detachable<'a, C: Code> {
    processes: Arc<Processes<C>>,
    call: Option<DirectCall>,
    pid: Pid,
    mailbox: &'a ProcessMailbox<C>,
    key: (&'a str, &'a str),
    /// Counts the call among the node's process tasks, so a node stopping
    /// waits for it as for them.
    _running: tokio_util::task::task_tracker::TaskTrackerToken,
}

impl<C: Code> Detachable<'_, C> {
    fn owner(&self) -> Owner<C> {
        Owner {
            processes: self.processes.clone(),
            key: ProcessKey::new(self.key.0, self.key.1),
            pid: self.pid,
            mailbox: self.mailbox.clone(),
        }
    }
}

impl<C: Code> Drop for Detachable<'_, C> {
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
