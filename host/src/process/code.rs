//! The seam between the process runtime and the code processes run.
//!
//! The runtime decides when a process starts, takes a message, hibernates
//! or ends; what runs is a component instance, which the node's wasm side
//! makes (`crate::wasm::Component` implements [`Code`]). Tests implement it
//! with plain Rust, so the whole life of a process is tested without an
//! engine.
//!
//! Every method is bounded by the `deadline` it is given: an error means
//! the guest trapped, failed or ran past it, and its instance is dead.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::Duration;

use super::id::{Fence, ProcessKey};

/// Where a process's state comes from when it gets an instance.
pub enum Start {
    /// Its `init`: a new process, which loads its state from storage.
    Init,
    /// A state this same code handed over (when it hibernated), or handed
    /// down in this code's format (a rollback).
    TakeOver(Vec<u8>),
    /// A state another version of the component handed over, labelled
    /// `from_version` (a hot swap).
    TakeOverFrom {
        state: Vec<u8>,
        from_version: Arc<str>,
    },
}

impl Start {
    /// The state it carries, if any.
    pub fn state(&self) -> Option<&[u8]> {
        match self {
            Start::Init => None,
            Start::TakeOver(state) | Start::TakeOverFrom { state, .. } => Some(state),
        }
    }
}

/// Which process an instance is for.
pub struct Who<'a> {
    pub key: &'a ProcessKey,
    /// Its registration in a cluster: its writes count only while current.
    pub fence: Option<Fence>,
    /// Where the instance keeps the size of its linear memory.
    pub memory: &'a Arc<AtomicUsize>,
}

/// A component's code, as processes run it.
pub trait Code: Send + Sync + 'static {
    type Instance: Instance;

    /// The version's label, as an operator names it.
    fn version(&self) -> &Arc<str>;

    /// What the processes on this version did.
    fn stats(&self) -> &super::VersionStats;

    /// Where this version stands among its component's versions: a higher
    /// one is newer. A move to a lower one hands the state down.
    fn generation(&self) -> i64;

    /// Whether this code runs processes at all (a component may only serve
    /// HTTP).
    fn runs_processes(&self) -> bool;

    /// Makes an instance for process `who` and runs its `init` or
    /// `take-over`. `Err` says why it could not start (the process never
    /// ran: no crash to count against it, but its start failed).
    fn start(
        &self,
        who: Who<'_>,
        start: &Start,
        deadline: Duration,
    ) -> impl Future<Output = Result<Self::Instance, String>> + Send;
}

/// A live instance of a process: its memory and code between messages.
pub trait Instance: Send + 'static {
    /// After an error: set when the instance ended for the node's sake, not
    /// its own (a storage write whose outcome the cluster could not tell),
    /// with why. The process ends as interrupted rather than crashed.
    fn interrupted(&self) -> Option<String> {
        None
    }

    /// The guest's `handle-call`: its reply.
    fn handle_call(
        &mut self,
        message: &[u8],
        deadline: Duration,
    ) -> impl Future<Output = Result<Vec<u8>, String>> + Send;

    /// The guest's `handle-cast`.
    fn handle_cast(
        &mut self,
        message: &[u8],
        deadline: Duration,
    ) -> impl Future<Output = Result<(), String>> + Send;

    /// The guest's `hand-over`: its state, for a `take-over` later.
    fn hand_over(
        &mut self,
        deadline: Duration,
    ) -> impl Future<Output = Result<Vec<u8>, String>> + Send;

    /// The state as the older version `version` reads it, for a rollback:
    /// the inner error says this code cannot hand it down (the process then
    /// restarts from storage); the outer one that the instance is dead.
    fn hand_over_to(
        &mut self,
        version: &str,
        deadline: Duration,
    ) -> impl Future<Output = Result<Result<Vec<u8>, String>, String>> + Send;

    /// The guest's rendering of its state, as `:sys.get_state`: the inner
    /// result is the answer (a guest may have no way to render it); the
    /// outer error means the instance is dead.
    fn render_state(
        &mut self,
        deadline: Duration,
    ) -> impl Future<Output = Result<Result<String, String>, String>> + Send;
}
