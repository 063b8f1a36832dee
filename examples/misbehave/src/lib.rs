//! A guest that misbehaves on request, to show (and test) that one bad
//! process hurts nobody else.
//!
//! `GET /ACTION/NAME` sends ACTION to process NAME:
//! - `echo`: answers `NAME: call #N` (N counts calls this process handled);
//! - `trap`: traps (`unreachable`);
//! - `loop`: loops forever;
//! - `hog`: allocates until it is stopped;
//! - `nap`: sleeps 3 s (on the WASI clock), then answers like `echo`: a slow
//!   but well-behaved call, to test that shutdown lets it finish;
//! - `sleep`: a cast, so the caller returns at once, after which the process
//!   loops (its mailbox backs up behind it).
//!
//! `GET /flood/NAME` makes process NAME busy (the `sleep` cast), then casts
//! 1 MiB messages at it until the host refuses one, and says how many it
//! took: a mailbox must not grow without bound in the host's memory.
//!
//! Processes whose name starts with `bad-init` fail in `init`. The HTTP
//! handler itself misbehaves on `GET /front/trap`, `/front/loop` and
//! `/front/hog`; `GET /front/count` answers how many requests this handler
//! instance has served (to test how often the host reuses one). `GET /peek/KEY` reads KEY from this component's storage
//! (nothing of another component's can be read), `PUT /poke/KEY` writes the
//! body there. `GET /other/COMPONENT/NAME` calls process NAME of another
//! component with `echo`.

use std::cell::Cell;
use std::hint::black_box;
use std::time::Duration;

use guest_sdk::http::{Request, Response};
use guest_sdk::wasi::http::types::{IncomingRequest, ResponseOutparam};
use guest_sdk::{Behaviour, HttpHandler};

struct Misbehave;

/// How long `nap` sleeps.
const NAP: Duration = Duration::from_secs(3);

thread_local! {
    static CALLS: Cell<u64> = const { Cell::new(0) };
    static REQUESTS: Cell<u64> = const { Cell::new(0) };
}

impl Behaviour for Misbehave {
    fn init(name: String) -> Result<(), String> {
        if name.starts_with("bad-init") {
            return Err(format!("{name} refuses to start"));
        }
        Ok(())
    }

    fn handle_call(message: Vec<u8>) -> Vec<u8> {
        misbehave(&message);
        let calls = CALLS.get() + 1;
        CALLS.set(calls);
        let name = guest_sdk::self_name().unwrap_or_default();
        format!("{name}: call #{calls}").into_bytes()
    }

    fn handle_cast(message: Vec<u8>) {
        misbehave(&message);
    }

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

/// Does the harm `action` names; returns only for harmless actions.
fn misbehave(action: &[u8]) {
    match action {
        b"trap" => std::process::abort(),
        b"loop" | b"sleep" => loop {
            black_box(());
        },
        b"nap" => std::thread::sleep(NAP),
        b"hog" => {
            let mut hoard: Vec<Vec<u8>> = Vec::new();
            loop {
                hoard.push(vec![1u8; 1 << 20]);
                black_box(&hoard);
            }
        }
        _ => {}
    }
}

impl HttpHandler for Misbehave {
    fn handle(request: IncomingRequest, outparam: ResponseOutparam) {
        let response = match Request::read(&request) {
            Ok(request) => route(&request),
            Err(e) => Response::text(400, e),
        };
        response.send(outparam);
    }
}

fn route(request: &Request) -> Response {
    let segments: Vec<&str> = request.path.split('/').skip(1).collect();
    let served = REQUESTS.get() + 1;
    REQUESTS.set(served);
    match (request.method.as_str(), segments.as_slice()) {
        ("GET", ["front", "count"]) => Response::text(200, served.to_string()),
        ("GET", ["front", action]) => {
            misbehave(action.as_bytes());
            Response::text(200, format!("the front survived `{action}`"))
        }
        ("GET", ["peek", key]) => match guest_sdk::storage::get(key.as_bytes()) {
            Ok(Some(value)) => Response::text(200, value),
            Ok(None) => Response::text(404, "no such key"),
            Err(e) => Response::text(500, format!("{e:?}")),
        },
        ("GET", ["scan"]) => match guest_sdk::storage::scan_prefix(b"", None, 1000) {
            Ok(pairs) => Response::text(200, format!("{} keys", pairs.len())),
            Err(e) => Response::text(500, format!("{e:?}")),
        },
        ("PUT", ["poke", key]) => match guest_sdk::storage::put(key.as_bytes(), &request.body) {
            Ok(()) => Response::text(200, "stored"),
            Err(e) => Response::text(500, format!("{e:?}")),
        },
        ("GET", ["other", component, name]) => {
            match guest_sdk::call_component(component, name, b"echo", 10_000) {
                Ok(reply) => Response::text(200, reply),
                Err(e) => call_error(e),
            }
        }
        ("GET", ["sleep", name]) => match guest_sdk::cast(name, b"sleep") {
            Ok(()) => Response::text(202, "cast sent"),
            Err(e) => call_error(e),
        },
        ("GET", ["flood", name]) => flood(name),
        ("GET", [action, name]) => match guest_sdk::call(name, action.as_bytes(), 10_000) {
            Ok(reply) => Response::text(200, reply),
            Err(e) => call_error(e),
        },
        _ => Response::text(404, "not found"),
    }
}

/// Casts at a busy process until refused; gives up after 1 GiB.
fn flood(name: &str) -> Response {
    if let Err(e) = guest_sdk::cast(name, b"sleep") {
        return call_error(e);
    }
    let message = vec![0u8; 1 << 20];
    for accepted in 0..1024 {
        if let Err(e) = guest_sdk::cast(name, &message) {
            let (_, reason) = describe(e);
            return Response::text(200, format!("accepted {accepted} casts, then {reason}"));
        }
    }
    Response::text(
        500,
        "1024 casts of 1 MiB accepted: the mailbox has no bound",
    )
}

fn call_error(error: guest_sdk::CallError) -> Response {
    let (status, text) = describe(error);
    Response::text(status, text)
}

fn describe(error: guest_sdk::CallError) -> (u16, String) {
    use guest_sdk::CallError;
    match error {
        CallError::TimedOut => (504, "timed out".to_string()),
        CallError::Crashed(reason) => (500, format!("crashed: {reason}")),
        CallError::Refused(reason) => (503, format!("refused: {reason}")),
        CallError::NoSuchComponent(name) => (500, format!("no component {name}")),
    }
}

guest_sdk::export!(Misbehave);
