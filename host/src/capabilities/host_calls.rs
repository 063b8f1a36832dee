//! Tracing a component's host calls (the console's `trace-calls`, as
//! `:dbg` traces function calls): storage and process calls, with their
//! arguments, outcome and duration.
//!
//! Every instance of a component shares one hook; with no trace on, a host
//! call costs one atomic load more. With a trace on, the call is timed and
//! offered to the [`Tracer`], which bounds it like any trace.

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use crate::process::ProcessKey;
use crate::process::trace::{EventKind, TraceHook};

/// Where the trace of one component's host calls attaches, shared by its
/// instances.
pub type HostCallHook = Arc<TraceHook>;

/// One instance's view of its component's hook.
pub struct HostCalls {
    hook: HostCallHook,
    component: Arc<str>,
    /// None for a request handler.
    process: Option<Arc<str>>,
}

impl HostCalls {
    pub fn new(hook: HostCallHook, component: Arc<str>, process: Option<Arc<str>>) -> Self {
        Self {
            hook,
            component,
            process,
        }
    }

    /// `component/process`, or `component/(http)` for a request handler.
    fn key(&self) -> ProcessKey {
        ProcessKey {
            component: self.component.clone(),
            name: self.process.clone().unwrap_or_else(|| Arc::from("(http)")),
        }
    }

    /// Runs `call`; when a trace of this component wants `function`,
    /// records `function(args) -> outcome in DURATION`.
    pub async fn traced<T>(
        &self,
        function: &'static str,
        args: impl FnOnce() -> String,
        outcome: impl FnOnce(&T) -> String,
        call: impl Future<Output = T>,
    ) -> T {
        let tracer = {
            let current = self.hook.load();
            match current.as_ref() {
                Some(tracer) if tracer.wants(function) => tracer.clone(),
                _ => return call.await,
            }
        };
        let args = args();
        let started = Instant::now();
        let result = call.await;
        let text = format!(
            "{function}({args}) -> {} in {:?}",
            outcome(&result),
            started.elapsed()
        );
        tracer.offer(&self.key(), 0, EventKind::HostCall, text.as_bytes());
        result
    }
}
