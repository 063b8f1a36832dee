//! The smallest useful guest. `GET /NAME` calls process NAME, which counts
//! the calls it has handled in its own memory: the count survives between
//! requests while the process lives, and starts again when it expires.

use std::cell::Cell;

use guest_sdk::http::{Request, Response};
use guest_sdk::wasi::http::types::{IncomingRequest, ResponseOutparam};
use guest_sdk::{Behaviour, HttpHandler};

struct Minimal;

thread_local! {
    static CALLS: Cell<u64> = const { Cell::new(0) };
}

impl Behaviour for Minimal {
    fn init(_name: String) -> Result<(), String> {
        Ok(())
    }

    fn handle_call(_message: Vec<u8>) -> Vec<u8> {
        let calls = CALLS.get() + 1;
        CALLS.set(calls);
        calls.to_string().into_bytes()
    }

    fn handle_cast(_message: Vec<u8>) {}

    fn hand_over() -> Vec<u8> {
        CALLS.get().to_le_bytes().to_vec()
    }

    fn take_over(_name: String, state: Vec<u8>) -> Result<(), String> {
        let bytes: [u8; 8] = state
            .try_into()
            .map_err(|_| "expected 8 bytes".to_string())?;
        CALLS.set(u64::from_le_bytes(bytes));
        Ok(())
    }
}

impl HttpHandler for Minimal {
    fn handle(request: IncomingRequest, outparam: ResponseOutparam) {
        let response = match Request::read(&request) {
            Ok(request) => greet(request.path.trim_start_matches('/')),
            Err(e) => Response::text(400, e),
        };
        response.send(outparam);
    }
}

fn greet(name: &str) -> Response {
    if name.is_empty() {
        return Response::text(404, "not found: try GET /NAME");
    }
    match guest_sdk::call(name, b"", 5_000) {
        Ok(count) => {
            let count = String::from_utf8_lossy(&count);
            Response::text(200, format!("hello from {name}: call #{count}"))
        }
        Err(e) => Response::text(503, format!("{e:?}")),
    }
}

guest_sdk::export!(Minimal);
