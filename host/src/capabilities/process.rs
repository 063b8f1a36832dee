//! `otp:platform/process`: calls and casts by name, and the caller's identity.

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use wasmtime::component::{HasData, Linker};

use super::bindings::{process, types};
use super::{HasCapabilities, HostCalls};
use crate::process::CallError;

/// What guests may ask of the node's processes: calls and casts by name,
/// within what the operator granted. The node implements it
/// (`crate::node`); the capability sees nothing else of the node.
pub trait GuestCalls: Send + Sync {
    /// A call to process `name` of `component`, wherever it lives.
    fn call<'a>(
        &'a self,
        component: &'a str,
        name: &'a str,
        message: Vec<u8>,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<Vec<u8>, CallError>>;

    /// A cast to process `name` of `component`, wherever it lives.
    fn cast(&self, component: &str, name: &str, message: Vec<u8>) -> Result<(), CallError>;

    /// May component `from` call processes of component `to`? Its own,
    /// always; another's only where the operator granted it.
    fn may_call(&self, from: &str, to: &str) -> Result<(), CallError>;
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
    calls: Arc<dyn GuestCalls>,
    component: Arc<str>,
    self_name: Option<Arc<str>>,
    host_calls: HostCalls,
}

impl ProcessCapability {
    pub fn new(
        calls: Arc<dyn GuestCalls>,
        component: Arc<str>,
        self_name: Option<Arc<str>>,
        host_calls: HostCalls,
    ) -> Self {
        Self {
            calls,
            component,
            self_name,
            host_calls,
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
        let call = self.calls.call(&self.component, &name, message, timeout);
        Ok(self
            .host_calls
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
        self.calls.may_call(&self.component, &component)?;
        let timeout = Duration::from_millis(u64::from(timeout_ms));
        let size = message.len();
        let call = self.calls.call(&component, &name, message, timeout);
        Ok(self
            .host_calls
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
            .host_calls
            .traced(
                "process.cast",
                || format!("{name:?}, {size} bytes"),
                |result: &Result<(), CallError>| match result {
                    Ok(()) => "ok".to_string(),
                    Err(error) => format!("error: {error}"),
                },
                async { self.calls.cast(&self.component, &name, message) },
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

pub(super) fn add_to_linker<T: HasCapabilities>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
    types::add_to_linker::<T, Process>(linker, |state| &mut state.capabilities().process)?;
    process::add_to_linker::<T, Process>(linker, |state| &mut state.capabilities().process)
}
