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
//! `GET /notes/NAME/A-B-C` casts `note:A`, `note:B`, `note:C` to process NAME,
//! then calls it with `journal`, which answers every note it was ever cast,
//! in the order taken: a test of message order (and of state kept across
//! hibernation, since the journal is handed over with the count).
//!
//! Processes whose name starts with `bad-init` fail in `init`; those whose
//! name starts with `bad-hand-over` trap in `hand-over`. The HTTP
//! handler itself misbehaves on `GET /front/trap`, `/front/loop` and
//! `/front/hog`; `GET /front/count` answers how many requests this handler
//! instance has served (to test how often the host reuses one). `GET /peek/KEY` reads KEY from this component's storage
//! (nothing of another component's can be read), `PUT /poke/KEY` writes the
//! body there. `GET /other/COMPONENT/NAME` calls process NAME of another
//! component with `echo`.
//!
//! `GET /wasi/fs`, `/wasi/env` and `/wasi/socket/PORT` try what a component
//! is never granted (reading the host's files, its environment, a TCP
//! connection to 127.0.0.1:PORT) and answer `403 denied: ...` with what
//! they met, or `200 allowed: ...` should any of it work.

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
    static JOURNAL: std::cell::RefCell<Vec<String>> = const { std::cell::RefCell::new(Vec::new()) };
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
        if message == b"journal" {
            return JOURNAL
                .with_borrow(|journal| journal.join(","))
                .into_bytes();
        }
        misbehave(&message);
        let calls = CALLS.get() + 1;
        CALLS.set(calls);
        let name = guest_sdk::self_name().unwrap_or_default();
        format!("{name}: call #{calls}").into_bytes()
    }

    fn handle_cast(message: Vec<u8>) {
        if let Some(note) = message.strip_prefix(b"note:") {
            let note = String::from_utf8_lossy(note).into_owned();
            JOURNAL.with_borrow_mut(|journal| journal.push(note));
            return;
        }
        misbehave(&message);
    }

    /// The count, then the journal's notes, comma-separated.
    fn hand_over() -> Vec<u8> {
        let name = guest_sdk::self_name().unwrap_or_default();
        if name.starts_with("bad-hand-over") {
            std::process::abort();
        }
        let mut state = CALLS.get().to_le_bytes().to_vec();
        state.extend(
            JOURNAL
                .with_borrow(|journal| journal.join(","))
                .into_bytes(),
        );
        state
    }

    fn take_over(_name: String, state: Vec<u8>) -> Result<(), String> {
        let (count, journal) = state
            .split_first_chunk::<8>()
            .ok_or_else(|| "expected at least 8 bytes".to_string())?;
        CALLS.set(u64::from_le_bytes(*count));
        let journal = String::from_utf8_lossy(journal);
        JOURNAL.set(
            journal
                .split(',')
                .filter(|note| !note.is_empty())
                .map(str::to_string)
                .collect(),
        );
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
        ("GET", ["wasi", "fs"]) => try_files(),
        ("GET", ["wasi", "env"]) => try_environment(),
        ("GET", ["wasi", "socket", port]) => try_socket(port),
        ("GET", ["notes", name, notes]) => {
            for note in notes.split('-') {
                if let Err(e) = guest_sdk::cast(name, format!("note:{note}").as_bytes()) {
                    return call_error(e);
                }
            }
            match guest_sdk::call(name, b"journal", 10_000) {
                Ok(reply) => Response::text(200, reply),
                Err(e) => call_error(e),
            }
        }
        ("GET", [action, name]) => match guest_sdk::call(name, action.as_bytes(), 10_000) {
            Ok(reply) => Response::text(200, reply),
            Err(e) => call_error(e),
        },
        _ => Response::text(404, "not found"),
    }
}

/// `403 denied: WHAT`, or `200 allowed: WHAT`.
fn verdict(allowed: bool, what: String) -> Response {
    if allowed {
        Response::text(200, format!("allowed: {what}"))
    } else {
        Response::text(403, format!("denied: {what}"))
    }
}

/// Reads a file every Linux host has, and lists the current directory.
fn try_files() -> Response {
    let file = std::fs::read_to_string("/etc/passwd");
    let listing = std::fs::read_dir(".");
    let allowed = file.is_ok() || listing.is_ok();
    let what = format!(
        "read /etc/passwd: {}; list .: {}",
        file.map_or_else(|e| e.to_string(), |text| format!("{} bytes", text.len())),
        listing.map_or_else(|e| e.to_string(), |_| "listed".to_string())
    );
    verdict(allowed, what)
}

/// Counts the environment variables and arguments the component sees.
fn try_environment() -> Response {
    let names: Vec<String> = std::env::vars().map(|(name, _)| name).collect();
    let arguments = std::env::args().count();
    verdict(
        !names.is_empty() || arguments > 0,
        format!(
            "{} variables [{}], {arguments} arguments",
            names.len(),
            names.join(" ")
        ),
    )
}

/// Connects to 127.0.0.1:PORT.
fn try_socket(port: &str) -> Response {
    let Ok(port) = port.parse::<u16>() else {
        return Response::text(400, "not a port");
    };
    match std::net::TcpStream::connect(("127.0.0.1", port)) {
        Ok(_) => verdict(true, format!("connected to 127.0.0.1:{port}")),
        Err(e) => verdict(false, format!("connect to 127.0.0.1:{port}: {e}")),
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
