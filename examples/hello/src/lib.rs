//! The smallest `wasi:http` component: every request gets 200 `hello`. It
//! exports the incoming handler and nothing else (no process behaviour),
//! so an HTTP benchmark against it measures what the host costs a request
//! before any process is called: the floor the Todo routes are compared
//! with (`scripts/bench-http.sh`).

mod bindings {
    wit_bindgen::generate!({
        world: "example:hello/hello",
        path: ["../../wit", "wit"],
        with: {
            "wasi:http/types@0.2.12": guest_sdk::wasi::http::types,
            "wasi:io/error@0.2.12": guest_sdk::wasi::io::error,
            "wasi:io/poll@0.2.12": guest_sdk::wasi::io::poll,
            "wasi:io/streams@0.2.12": guest_sdk::wasi::io::streams,
            "wasi:clocks/monotonic-clock@0.2.12": guest_sdk::wasi::clocks::monotonic_clock,
        },
    });
}

use bindings::exports::wasi::http::incoming_handler::Guest;
use guest_sdk::http::Response;
use guest_sdk::wasi::http::types::{IncomingRequest, ResponseOutparam};

struct Hello;

impl Guest for Hello {
    fn handle(_request: IncomingRequest, outparam: ResponseOutparam) {
        Response::text(200, "hello").send(outparam);
    }
}

bindings::export!(Hello with_types_in bindings);
