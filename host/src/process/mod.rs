//! The process runtime: a node's processes, from the first message to a
//! name to the end of its last one.
//!
//! A **process** is one instance of a component's code with a mailbox,
//! handling one message at a time, as an OTP `gen_server`: created on the
//! first call to its name, hibernated when idle, expired when idle longer,
//! restarted from storage after a crash (on its next message), stopped at
//! shutdown. This module owns all of that:
//!
//! - leaves: `id` (pids, names, fences, stop reasons), `error` (how calls
//!   fail and processes end), `trace` (bounded message traces), `stats`;
//! - `mailbox`, `registry`, `supervisor`: where messages wait, who holds a
//!   name, which names are cooling down after crashes;
//! - `permits`, `idle`, `hibernated`: instance permits (`--max-instances`),
//!   idle timers, and where hibernated states are kept;
//! - `targets`: which code each component's processes run, and a hot
//!   swap's progress (processes move at message boundaries: `task`);
//! - `resting`, `task`, `direct_call`, `panic_guard`: a process's life;
//! - `processes`: [`Processes`], the context every process runs in and the
//!   call path (`call`, `cast`, and their local forms for the cluster);
//! - seams: [`Code`] (what a process runs, implemented by `crate::wasm`),
//!   [`Router`] (where calls go in a cluster, implemented by
//!   `crate::cluster`), [`StateSpill`] (implemented by `crate::storage`).
//!
//! It may use `crate::config` only: it knows nothing of wasmtime, RocksDB,
//! links or Raft, and is tested with plain-Rust code behind [`Code`].

mod code;
mod counters;
mod direct_call;
mod error;
mod hibernated;
mod id;
mod idle;
pub mod mailbox;
mod panic_guard;
mod permits;
mod processes;
mod registry;
mod resting;
mod router;
mod stats;
mod supervisor;
mod targets;
mod task;
pub mod trace;

pub use code::{Code, Instance, Start, Who};
pub use counters::{CounterValues, ProcessCounters};
pub use error::{CallError, Exit};
pub use hibernated::{HibernatedStates, StateSpill};
pub use id::{Fence, Pid, ProcessKey, StopFlag, StopReason};
pub use mailbox::HandedOver;
pub use permits::{InstancePermit, InstancePermits};
pub use processes::{ProcessSettings, Processes};
pub use resting::{ProcessMailbox, Resting};
pub use router::Router;
pub use stats::{ProcessInfo, ProcessStats, VersionFigures, VersionStats};
pub use supervisor::{Restarts, Supervisor};
pub use targets::{Direction, Next, SwapProgress, Target, Targets, in_share};

#[cfg(test)]
mod tests;
