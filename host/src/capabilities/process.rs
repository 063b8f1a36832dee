//! `otp:platform/process`: calls and casts by name, and the caller's identity.

use std::sync::Arc;
use std::time::Duration;

use wasmtime::component::{HasData, Linker};

use super::HostCalls;
use crate::bindings::{process, types};
use crate::node::NodeCore;
use crate::state::InstanceState;

/// Why a call or cast failed, as the host sees it. Mirrors the WIT
/// `call-error`, so the host's own callers (HTTP, console) use it too.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
pub enum CallError {
    #[error("no component named `{0}` is loaded")]
    NoSuchComponent(String),
    #[error("no reply within the timeout")]
    TimedOut,
    #[error("the process crashed: {0}")]
    Crashed(String),
    #[error("refused: {0}")]
    Refused(String),
    /// The process's name moved to another node before it took the message
    /// (the message was not handled). The cluster sends it again to the
    /// name's new node; a caller sees it only if that runs out of time.
    #[error("refused: the process moved to another node before taking the message")]
    Moved,
}

impl From<CallError> for types::CallError {
    fn from(error: CallError) -> Self {
        match error {
            CallError::NoSuchComponent(name) => types::CallError::NoSuchComponent(name),
            CallError::TimedOut => types::CallError::TimedOut,
            CallError::Crashed(reason) => types::CallError::Crashed(reason),
            CallError::Refused(reason) => types::CallError::Refused(reason),
            CallError::Moved => types::CallError::Refused(CallError::Moved.to_string()),
        }
    }
}

pub struct ProcessCapability {
    node: Arc<NodeCore>,
    component: Arc<str>,
    self_name: Option<Arc<str>>,
    calls: HostCalls,
}

impl ProcessCapability {
    pub fn new(
        node: Arc<NodeCore>,
        component: Arc<str>,
        self_name: Option<Arc<str>>,
        calls: HostCalls,
    ) -> Self {
        Self {
            node,
            component,
            self_name,
            calls,
        }
    }
}

/// How a call ended, for a trace.
fn call_outcome(result: &Result<Vec<u8>, CallError>) -> String {
    match result {
        Ok(reply) => format!("reply of {} bytes", reply.len()),
        Err(error) => format!("error: {error}"),
    }
}

impl process::Host for ProcessCapability {
    async fn call(
        &mut self,
        name: String,
        message: Vec<u8>,
        timeout_ms: u32,
    ) -> Result<Vec<u8>, types::CallError> {
        let timeout = Duration::from_millis(u64::from(timeout_ms));
        let size = message.len();
        let call = self.node.call(&self.component, &name, message, timeout);
        Ok(self
            .calls
            .traced(
                "process.call",
                || format!("{name:?}, {size} bytes"),
                call_outcome,
                call,
            )
            .await?)
    }

    async fn call_component(
        &mut self,
        component: String,
        name: String,
        message: Vec<u8>,
        timeout_ms: u32,
    ) -> Result<Vec<u8>, types::CallError> {
        self.node.may_call(&self.component, &component)?;
        let timeout = Duration::from_millis(u64::from(timeout_ms));
        let size = message.len();
        let call = self.node.call(&component, &name, message, timeout);
        Ok(self
            .calls
            .traced(
                "process.call-component",
                || format!("{component:?}, {name:?}, {size} bytes"),
                call_outcome,
                call,
            )
            .await?)
    }

    async fn cast(&mut self, name: String, message: Vec<u8>) -> Result<(), types::CallError> {
        let size = message.len();
        let result = self
            .calls
            .traced(
                "process.cast",
                || format!("{name:?}, {size} bytes"),
                |result: &Result<(), CallError>| match result {
                    Ok(()) => "ok".to_string(),
                    Err(error) => format!("error: {error}"),
                },
                async { self.node.cast(&self.component, &name, message) },
            )
            .await;
        Ok(result?)
    }

    async fn self_name(&mut self) -> Option<String> {
        self.self_name.as_deref().map(str::to_string)
    }

    async fn component_name(&mut self) -> String {
        self.component.to_string()
    }
}

impl types::Host for ProcessCapability {}

struct Process;

impl HasData for Process {
    type Data<'a> = &'a mut ProcessCapability;
}

pub(super) fn add_to_linker(linker: &mut Linker<InstanceState>) -> wasmtime::Result<()> {
    types::add_to_linker::<InstanceState, Process>(linker, |state| &mut state.process)?;
    process::add_to_linker::<InstanceState, Process>(linker, |state| &mut state.process)
}
