//! What processes run: a [`Component`]'s instances, as the process runtime
//! asks for them ([`crate::process::Code`]). Every guest call is bounded by
//! the deadline it is given (`guard`), so a trap, a loop or a runaway
//! allocation ends only that instance.

use std::sync::Arc;
use std::time::Duration;

use wasmtime::Store;
use wasmtime::component::Instance as WasmInstance;

use super::component::{Component, ProcessStore};
use super::exports::IntrospectExports;
use super::guard::guarded;
use super::store::StoreData;
use crate::capabilities::bindings::ProcessComponent;
use crate::process::{Code, Instance, Start, Who};

/// A live instance of a process: its store, and the exports it is called
/// through.
pub struct ProcessInstance {
    store: Store<StoreData>,
    bindings: ProcessComponent,
    instance: WasmInstance,
    component: Arc<str>,
    introspect: Option<IntrospectExports>,
}

impl Code for Component {
    type Instance = ProcessInstance;

    async fn start(
        &self,
        who: Who<'_>,
        start: &Start,
        deadline: Duration,
    ) -> Result<ProcessInstance, String> {
        let name = &who.key.name;
        let mut store = self.new_store(Some(ProcessStore {
            name,
            fence: who.fence,
            memory: who.memory.clone(),
        }));
        let (instance, bindings) =
            guarded(deadline, self.code().instantiate_process(&mut store)).await?;
        let behaviour = bindings.otp_platform_behaviour();
        let started = match start {
            Start::Init => guarded(deadline, behaviour.call_init(&mut store, name)).await,
            Start::TakeOver(state) => {
                guarded(deadline, behaviour.call_take_over(&mut store, name, state)).await
            }
        };
        started??;
        Ok(ProcessInstance {
            store,
            bindings,
            instance,
            component: self.name().clone(),
            introspect: self.code().introspect().cloned(),
        })
    }
}

impl Instance for ProcessInstance {
    async fn handle_call(&mut self, message: &[u8], deadline: Duration) -> Result<Vec<u8>, String> {
        let behaviour = self.bindings.otp_platform_behaviour();
        guarded(
            deadline,
            behaviour.call_handle_call(&mut self.store, message),
        )
        .await
    }

    async fn handle_cast(&mut self, message: &[u8], deadline: Duration) -> Result<(), String> {
        let behaviour = self.bindings.otp_platform_behaviour();
        guarded(
            deadline,
            behaviour.call_handle_cast(&mut self.store, message),
        )
        .await
    }

    async fn hand_over(&mut self, deadline: Duration) -> Result<Vec<u8>, String> {
        let behaviour = self.bindings.otp_platform_behaviour();
        guarded(deadline, behaviour.call_hand_over(&mut self.store)).await
    }

    async fn render_state(&mut self, deadline: Duration) -> Result<Result<String, String>, String> {
        let Some(exports) = &self.introspect else {
            return Ok(Err(format!(
                "component `{}` does not export otp:platform/introspect: its state cannot be shown",
                self.component
            )));
        };
        let render = match self
            .instance
            .get_typed_func::<(), (String,)>(&mut self.store, &exports.render_state)
        {
            Ok(render) => render,
            Err(e) => return Ok(Err(format!("render-state has an unexpected type: {e}"))),
        };
        guarded(deadline, render.call_async(&mut self.store, ()))
            .await
            .map(|(state,)| Ok(state))
    }
}
