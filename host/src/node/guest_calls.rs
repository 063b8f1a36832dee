//! What guests may ask of the node: calls and casts to processes by name,
//! within the grants the operator gave (`--allow-call FROM=TO`). The
//! capabilities see the node through this alone.

use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use futures_util::future::BoxFuture;

use crate::capabilities::GuestCalls;
use crate::process::{CallError, Processes};
use crate::wasm::Component;

/// The node's [`GuestCalls`]. It holds the node's processes weakly: the
/// processes hold the components, whose grants hold this.
pub(super) struct NodeCalls {
    processes: OnceLock<Weak<Processes<Component>>>,
    /// `(FROM, TO)`: component FROM may call processes of component TO.
    grants: Vec<(String, String)>,
}

impl NodeCalls {
    pub fn new(grants: Vec<(String, String)>) -> Self {
        Self {
            processes: OnceLock::new(),
            grants,
        }
    }

    /// Connects the calls to the processes they go to, once those exist.
    pub fn attach(&self, processes: &Arc<Processes<Component>>) {
        let _ = self.processes.set(Arc::downgrade(processes));
    }

    fn processes(&self) -> Result<Arc<Processes<Component>>, CallError> {
        self.processes
            .get()
            .and_then(Weak::upgrade)
            .ok_or_else(|| CallError::Refused("the node is stopping".into()))
    }
}

impl GuestCalls for NodeCalls {
    fn call<'a>(
        &'a self,
        component: &'a str,
        name: &'a str,
        message: Vec<u8>,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<Vec<u8>, CallError>> {
        Box::pin(async move {
            self.processes()?
                .call(component, name, message, timeout)
                .await
        })
    }

    fn cast(&self, component: &str, name: &str, message: Vec<u8>) -> Result<(), CallError> {
        self.processes()?.cast(component, name, message)
    }

    /// A process answers whoever calls it, so an ungranted call to another
    /// component's process could read that component's data.
    fn may_call(&self, from: &str, to: &str) -> Result<(), CallError> {
        if !self.processes()?.has_component(to) {
            return Err(CallError::NoSuchComponent(to.to_string()));
        }
        let granted = from == to
            || self
                .grants
                .iter()
                .any(|(granted_from, granted_to)| granted_from == from && granted_to == to);
        if granted {
            Ok(())
        } else {
            Err(CallError::Refused(format!(
                "component `{from}` may not call processes of `{to}`; \
                 the operator can allow it with --allow-call {from}={to}"
            )))
        }
    }
}
