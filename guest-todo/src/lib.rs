//! The Todo server from *Elixir in Action*, as a component.
//!
//! - [`list`]: `Todo.List`, the entries of one list (pure data).
//! - [`server`]: `Todo.Server`, the process owning one list, persisted
//!   through the host's storage ([`store`]).
//! - [`web`]: `Todo.Web`, the HTTP routes; each request reaches its list's
//!   process by name, as `Todo.Cache.server_process(name)` does.
//! - [`protocol`]: the messages between the two.

pub mod date;
pub mod list;
pub mod protocol;
pub mod server;
pub mod store;
pub mod web;

use std::cell::RefCell;

use guest_sdk::http::{Request, Response};
use guest_sdk::wasi::http::types::{IncomingRequest, ResponseOutparam};
use guest_sdk::{Behaviour, CallError, HttpHandler, Level};

use protocol::{Reply, Request as ListRequest};
use server::TodoServer;
use store::HostStore;

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

#[cfg(target_arch = "wasm32")]
guest_sdk::export!(Todo);
