//! What processes run: a [`Component`]'s instances, as the process runtime
//! asks for them ([`crate::process::Code`]). Every guest call is bounded by
//! the deadline it is given (`guard`), so a trap, a loop or a runaway
//! allocation ends only that instance.

use std::sync::Arc;
use std::time::Duration;

use wasmtime::Store;
use wasmtime::component::Instance as WasmInstance;

use super::component::{Component, ProcessStore};
use super::exports::{IntrospectExports, UpgradeExports};
use super::guard::guarded;
use super::store::StoreData;
use crate::capabilities::bindings::ProcessComponent;
use crate::process::{Code, Instance, Start, VersionStats, Who};

/// A live instance of a process: its store, and the exports it is called
/// through.
pub struct ProcessInstance {
    store: Store<StoreData>,
    bindings: ProcessComponent,
    instance: WasmInstance,
    component: Arc<str>,
    introspect: Option<IntrospectExports>,
    upgrade: Option<UpgradeExports>,
}

impl Code for Component {
    type Instance = ProcessInstance;

    fn version(&self) -> &Arc<str> {
        &self.code().version().label
    }

    fn stats(&self) -> &VersionStats {
        self.code().stats()
    }

    fn generation(&self) -> i64 {
        Component::generation(self)
    }

    fn runs_processes(&self) -> bool {
        self.code().process_pre().is_some()
    }

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
        let upgrade = self.code().upgrade();
        let started = match (start, upgrade) {
            (Start::Init, _) => guarded(deadline, behaviour.call_init(&mut store, name)).await,
            (
                Start::TakeOverFrom {
                    state,
                    from_version,
                },
                Some(upgrade),
            ) => {
                take_over_from(
                    &mut store,
                    &instance,
                    upgrade,
                    (name, state, from_version),
                    deadline,
                )
                .await
            }
            // A component without `upgrade` takes any state over as its own.
            (Start::TakeOver(state) | Start::TakeOverFrom { state, .. }, _) => {
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
            upgrade: upgrade.cloned(),
        })
    }
}

impl Instance for ProcessInstance {
    fn interrupted(&self) -> Option<String> {
        self.store.data().unknown_outcome().map(str::to_string)
    }

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

    async fn hand_over_to(
        &mut self,
        version: &str,
        deadline: Duration,
    ) -> Result<Result<Vec<u8>, String>, String> {
        let Some(upgrade) = &self.upgrade else {
            return Ok(Err(format!(
                "component `{}` does not export otp:platform/upgrade: it cannot hand its state down",
                self.component
            )));
        };
        let hand_over_to = match self
            .instance
            .get_typed_func::<(&str,), (Result<Vec<u8>, String>,)>(
                &mut self.store,
                &upgrade.hand_over_to,
            ) {
            Ok(function) => function,
            Err(e) => return Ok(Err(format!("hand-over-to has an unexpected type: {e}"))),
        };
        guarded(
            deadline,
            hand_over_to.call_async(&mut self.store, (version,)),
        )
        .await
        .map(|(state,)| state)
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

/// The guest's `take-over-from`: the outer error is a trap, the inner its
/// refusal.
async fn take_over_from(
    store: &mut Store<StoreData>,
    instance: &WasmInstance,
    upgrade: &UpgradeExports,
    (name, state, from_version): (&str, &[u8], &str),
    deadline: Duration,
) -> Result<Result<(), String>, String> {
    let function = instance
        .get_typed_func::<(&str, &[u8], &str), (Result<(), String>,)>(
            &mut *store,
            &upgrade.take_over_from,
        )
        .map_err(|e| format!("take-over-from has an unexpected type: {e}"))?;
    guarded(
        deadline,
        function.call_async(&mut *store, (name, state, from_version)),
    )
    .await
    .map(|(taken,)| taken)
}
