//! What a node in a cluster adds to the call path: the seam the cluster
//! (`crate::cluster`) plugs into once the node founds or joins one. The
//! process runtime knows nothing of links, Raft or placement.

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;

use super::error::CallError;
use super::id::{Fence, StopReason};

/// Where calls and casts go once the node is part of a cluster.
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
}
