//! The Todo server from *Elixir in Action*, as a component.
//!
//! - [`list`]: `Todo.List`, the entries of one list (pure data).
//! - [`server`]: `Todo.Server`, the process owning one list, persisted
//!   through the host's storage ([`store`]).
//! - [`web`]: `Todo.Web`, the HTTP routes; each request reaches its list's
//!   process by name, as `Todo.Cache.server_process(name)` does.
//! - [`api`]: the typed API the console calls (`todo.add-entry(...)`), and
//!   how a list and its messages look to an operator.
//! - [`protocol`]: the messages between the front and a list.
//!
//! Two versions build from this crate: 1.0.0 by default, and 2.0.0 with the
//! feature `v2`, which adds done marks (the JSON API's `"done"`), changes
//! the state a list hands over, and exports `otp:platform/upgrade` to move
//! lists between the two in a hot swap, both ways.

pub mod api;
pub mod date;
pub mod list;
pub mod protocol;
pub mod server;
pub mod store;
pub mod web;

// Entry points of the fuzz targets (`fuzz/`) and their corpora's replay.
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzzing;

use std::cell::RefCell;

use guest_sdk::http::{Request, Response};
use guest_sdk::wasi::http::types::{IncomingRequest, ResponseOutparam};
use guest_sdk::{CallError, Level};

use protocol::{Reply, Request as ListRequest};
use server::TodoServer;
use store::HostStore;

#[cfg(not(feature = "v2"))]
guest_sdk::version!("1.0.0");
#[cfg(all(feature = "v2", not(feature = "faulty-upgrade")))]
guest_sdk::version!("2.0.0");
#[cfg(feature = "faulty-upgrade")]
guest_sdk::version!("2.0.0-faulty");

/// The component's world (`guest-todo/wit/todo.wit`): the platform's
/// service plus the typed API and introspection. The platform's imports are
/// guest-sdk's, so its helpers (HTTP, calls, storage) work unchanged.
mod bindings {
    /// The bindings of `$world`, which both versions generate alike.
    macro_rules! generate {
        ($world:tt) => {
            wit_bindgen::generate!({
                world: $world,
                path: ["../wit", "wit"],
                with: {
                    "otp:platform/types@0.2.0": guest_sdk::otp::platform::types,
                    "otp:platform/process@0.2.0": guest_sdk::otp::platform::process,
                    "otp:platform/storage@0.2.0": guest_sdk::otp::platform::storage,
                    "otp:platform/log@0.2.0": guest_sdk::otp::platform::log,
                    "wasi:http/types@0.2.12": guest_sdk::wasi::http::types,
                    "wasi:io/error@0.2.12": guest_sdk::wasi::io::error,
                    "wasi:io/poll@0.2.12": guest_sdk::wasi::io::poll,
                    "wasi:io/streams@0.2.12": guest_sdk::wasi::io::streams,
                    "wasi:clocks/monotonic-clock@0.2.12": guest_sdk::wasi::clocks::monotonic_clock,
                },
            });
        };
    }
    #[cfg(not(feature = "v2"))]
    generate!("todo:app/todo-service");
    // Version 2 also exports `otp:platform/upgrade`.
    #[cfg(feature = "v2")]
    generate!("todo:app/todo-service-v2");
}

use bindings::exports::otp::platform::behaviour::Guest as Behaviour;
use bindings::exports::otp::platform::introspect::{Guest as Introspect, MessageKind};
use bindings::exports::todo::app::todo::{
    Entry as WitEntry, EntryUpdate, Guest as TodoApi, NewEntry,
};
use bindings::exports::wasi::http::incoming_handler::Guest as HttpHandler;

/// How long the front waits for a list's reply.
#[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
const CALL_TIMEOUT_MS: u32 = 5_000;

thread_local! {
    /// The list this instance serves, when it runs as a process.
    static SERVER: RefCell<Option<TodoServer<HostStore>>> = const { RefCell::new(None) };
}

/// The component. Exported only when built for wasm: the native build
/// exists for unit tests, and cannot link wasm export names.
#[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
struct Todo;

impl Behaviour for Todo {
    fn init(name: String) -> Result<(), String> {
        let server = TodoServer::load(&name, HostStore)?;
        guest_sdk::log(Level::Debug, &format!("list `{name}` loaded"));
        SERVER.set(Some(server));
        Ok(())
    }

    fn handle_call(message: Vec<u8>) -> Vec<u8> {
        #[cfg(feature = "faulty-upgrade")]
        if guest_sdk::self_name().is_some_and(|name| name.starts_with("crashy")) {
            panic!("a faulty version crashes on every call");
        }
        let reply = match ListRequest::decode(&message) {
            Ok(request) => SERVER.with_borrow_mut(|server| match server {
                Some(server) => server.handle(request),
                None => Reply::Failed("the list was not initialised".into()),
            }),
            Err(e) => Reply::Failed(e),
        };
        reply.encode()
    }

    fn handle_cast(_message: Vec<u8>) {
        guest_sdk::log(
            Level::Warn,
            "a Todo list takes calls, not casts; cast ignored",
        );
    }

    fn hand_over() -> Vec<u8> {
        SERVER.with_borrow(|server| {
            server
                .as_ref()
                .map(TodoServer::hand_over)
                .unwrap_or_default()
        })
    }

    fn take_over(name: String, state: Vec<u8>) -> Result<(), String> {
        SERVER.set(Some(TodoServer::take_over(&name, &state, HostStore)?));
        Ok(())
    }
}

impl Introspect for Todo {
    fn render_state() -> String {
        SERVER.with_borrow(|server| match server {
            Some(server) => server.render_state(),
            None => "not initialised".to_string(),
        })
    }

    fn render_message(kind: MessageKind, message: Vec<u8>) -> Option<String> {
        match kind {
            MessageKind::Call => api::render_request(&message),
            MessageKind::Reply => api::render_reply(&message),
            MessageKind::Cast => None,
        }
    }
}

impl TodoApi for Todo {
    fn add_entry(list: String, entry: NewEntry) -> Result<WitEntry, String> {
        api::add_entry(&ListProcesses, &list, &entry.date, entry.title).map(to_wit)
    }

    fn entries(list: String, date: Option<String>) -> Result<Vec<WitEntry>, String> {
        let entries = api::entries(&ListProcesses, &list, date.as_deref())?;
        Ok(entries.into_iter().map(to_wit).collect())
    }

    fn update_entry(list: String, id: u64, update: EntryUpdate) -> Result<WitEntry, String> {
        api::update_entry(
            &ListProcesses,
            &list,
            id,
            update.date.as_deref(),
            update.title,
        )
        .map(to_wit)
    }

    fn delete_entry(list: String, id: u64) -> Result<(), String> {
        api::delete_entry(&ListProcesses, &list, id)
    }
}

fn to_wit(entry: list::Entry) -> WitEntry {
    WitEntry {
        id: entry.id,
        date: entry.date.to_string(),
        title: entry.title,
    }
}

/// Lists reached through the host: one process per list name.
#[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
struct ListProcesses;

impl web::Lists for ListProcesses {
    fn call(&self, list: &str, request: &ListRequest) -> Result<Reply, CallError> {
        let reply = guest_sdk::call(list, &request.encode(), CALL_TIMEOUT_MS)?;
        Ok(Reply::decode(&reply))
    }
}

impl HttpHandler for Todo {
    fn handle(request: IncomingRequest, outparam: ResponseOutparam) {
        let response = match Request::read(&request) {
            Ok(request) => web::route(&ListProcesses, &request),
            Err(e) => Response::text(400, e),
        };
        response.send(outparam);
    }
}

#[cfg(feature = "v2")]
impl bindings::exports::otp::platform::upgrade::Guest for Todo {
    fn take_over_from(name: String, state: Vec<u8>, from_version: String) -> Result<(), String> {
        #[cfg(feature = "faulty-upgrade")]
        if name.starts_with("faulty") {
            panic!("a faulty upgrade of list `{name}`");
        }
        let server = TodoServer::take_over_from(&name, &state, &from_version, HostStore)?;
        SERVER.set(Some(server));
        Ok(())
    }

    fn hand_over_to(to_version: String) -> Result<Vec<u8>, String> {
        #[cfg(feature = "faulty-upgrade")]
        if guest_sdk::self_name().is_some_and(|name| name.starts_with("stuck")) {
            panic!("a faulty downgrade");
        }
        SERVER.with_borrow(|server| match server {
            Some(server) => server.hand_over_to(&to_version),
            None => Err("the list was not initialised".to_string()),
        })
    }
}

#[cfg(target_arch = "wasm32")]
bindings::export!(Todo with_types_in bindings);
