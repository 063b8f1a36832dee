//! Entry points of the fuzz targets (`fuzz/`, run with cargo-fuzz and
//! libFuzzer) and of the test that replays their corpora
//! (`fuzz/corpus/TARGET/`, kept in the repository). One function per
//! target takes the fuzzer's bytes and feeds them to the code that reads
//! what strangers send: distribution frames, handshakes, the port mapper's
//! requests, link messages, console lines and WAVE arguments. (The Todo
//! guest's request parsing has its targets in the guest's crate.)
//!
//! Refusing input is fine. A target panics only on what must never happen:
//! a frame past its cap or memory past its bound, a stranger
//! authenticated, an answer our own client misreads, a value that does not
//! survive its own encoding.
//!
//! Compiled for tests and with the feature `fuzzing` only: nothing here
//! ships in a node.

use bytes::Bytes;

use crate::cluster::wire;
use crate::console;
use crate::console::protocol::{self, ConsoleReply, ConsoleRequest};
use crate::distribution::frame::{self, FrameDecoder, FrameError};
use crate::distribution::link::Incoming;
use crate::wasm::ExportedFunction;

/// A target: its name, and what it runs on the fuzzer's bytes.
pub type Target = (&'static str, fn(&[u8]));

/// Every target that needs nothing but its bytes, by name (the name of its
/// binary in `fuzz/` and of its corpus folder).
pub const TARGETS: &[Target] = &[
    ("frame", frame),
    ("handshake", handshake),
    ("port_mapper", port_mapper),
    ("link_message", link_message),
    ("console_line", console_line),
];

/// A stream of frames, split as a peer's reads arrive. The first byte
/// chooses the cap (the handshake's, or a small one) and how many bytes
/// arrive at a time. The frames must be the stream's own bytes, in order,
/// none past the cap, and the decoder may never hold a frame's worth past
/// its cap.
pub fn frame(data: &[u8]) {
    let Some((&shape, stream)) = data.split_first() else {
        return;
    };
    let limit = if shape & 1 == 0 {
        frame::HANDSHAKE_MAX_FRAME
    } else {
        64
    };
    let mut decoder = FrameDecoder::new(limit);
    let mut decoded = Vec::new();
    for piece in stream.chunks(usize::from(shape >> 1).max(1)) {
        decoder.extend(piece);
        loop {
            match decoder.next_frame() {
                Ok(Some(frame)) => {
                    assert!(frame.len() <= limit, "a frame past its cap");
                    decoded.extend_from_slice(&frame::encode(&frame));
                }
                Ok(None) => break,
                Err(FrameError::TooLarge { length, .. }) => {
                    assert!(length > limit, "refused a frame within its cap");
                    return;
                }
                Err(error) => panic!("bytes in memory failed to decode: {error}"),
            }
        }
        assert!(decoder.buffered() < 4 + limit, "holds more than a frame");
    }
    assert!(
        stream.starts_with(&decoded),
        "frames are the stream's bytes"
    );
    assert_eq!(decoded.len() + decoder.buffered(), stream.len());
}

/// Frames of a handshake, as `handshake::fuzz_frames` says.
pub fn handshake(data: &[u8]) {
    crate::distribution::handshake::fuzz_frames(data);
}

/// Requests to the port mapper, as `epmd::fuzz_requests` says.
pub fn port_mapper(data: &[u8]) {
    crate::distribution::epmd::fuzz_requests(data);
}

/// A frame after the handshake (without its length): a ping, a pong, or a
/// request, response or one-way message whose body is read as each kind
/// of message that travels so (the cluster's, and a console's inside a
/// tool's request). A frame read as a link frame writes back as the same
/// bytes; a message read writes back as bytes that read as itself.
pub fn link_message(data: &[u8]) {
    let Ok(incoming) = Incoming::parse(Bytes::copy_from_slice(data)) else {
        return;
    };
    match incoming {
        Incoming::Ping | Incoming::Pong => assert_eq!(data.len(), 1),
        Incoming::Request { id, body } => {
            assert_eq!(data.get(1..9), Some(&id.to_be_bytes()[..]));
            assert_eq!(data.get(9..), Some(&body[..]));
            survives::<wire::Request>(&body, cluster());
            survives::<ConsoleRequest>(&body, console());
        }
        Incoming::Response { id, body } => {
            assert_eq!(data.get(1..9), Some(&id.to_be_bytes()[..]));
            assert_eq!(data.get(9..), Some(&body[..]));
            survives::<wire::Response>(&body, cluster());
            survives::<ConsoleReply>(&body, console());
        }
        Incoming::OneWay(body) => {
            assert_eq!(data.get(1..), Some(&body[..]));
            survives::<wire::OneWay>(&body, cluster());
        }
    }
}

/// The encoding a message kind travels in: the cluster's, or the
/// console's (inside a tool's request).
type Codec<T> = (fn(&[u8]) -> Result<T, String>, fn(&T) -> Vec<u8>);

fn cluster<T: serde::Serialize + serde::de::DeserializeOwned>() -> Codec<T> {
    (wire::decode::<T>, |value| wire::encode(value))
}

fn console<T: serde::Serialize + serde::de::DeserializeOwned>() -> Codec<T> {
    (protocol::decode::<T>, |value| protocol::encode(value))
}

/// When `bytes` read as a `T`, its encoding reads back as a value with the
/// same encoding.
fn survives<T>(bytes: &[u8], (decode, encode): Codec<T>) {
    let Ok(value) = decode(bytes) else {
        return;
    };
    let encoded = encode(&value);
    let again = decode(&encoded).expect("a message's own encoding reads");
    assert_eq!(encode(&again), encoded, "a message changed on its way back");
}

/// A console line, as `console::fuzz_line` reads it.
pub fn console_line(data: &[u8]) {
    if let Ok(line) = std::str::from_utf8(data) {
        console::fuzz_line(line);
    }
}

/// The target `wave_call`: console calls against the functions a
/// component exports (the fuzz target loads the Todo guest's).
pub struct CallTarget {
    functions: Vec<ExportedFunction>,
}

impl CallTarget {
    /// The functions of the component in `bytes`.
    pub fn new(bytes: &[u8]) -> anyhow::Result<Self> {
        let functions = crate::wasm::exported_functions(bytes)?;
        anyhow::ensure!(
            functions.iter().any(|f| !f.params.is_empty()),
            "the component exports no function that takes arguments"
        );
        Ok(Self { functions })
    }

    pub fn run(&self, data: &[u8]) {
        if let Ok(line) = std::str::from_utf8(data) {
            console::fuzz_call(&self.functions, line);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use super::*;

    /// The inputs kept for `target`: its corpus, with the crashes found.
    fn corpus(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
        let folder = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../fuzz/corpus")
            .join(target);
        let entries =
            std::fs::read_dir(&folder).unwrap_or_else(|e| panic!("{}: {e}", folder.display()));
        let inputs: Vec<_> = entries
            .map(|entry| {
                let path = entry.expect("an entry").path();
                let bytes = std::fs::read(&path).expect("an input");
                (path, bytes)
            })
            .collect();
        assert!(!inputs.is_empty(), "{target} has no corpus");
        inputs
    }

    /// Each input runs on a thread of its own, so that a panic names it.
    fn replay(target: &str, run: impl Fn(&[u8]) + Sync) {
        for (path, bytes) in corpus(target) {
            let outcome = std::thread::scope(|scope| scope.spawn(|| run(&bytes)).join());
            assert!(outcome.is_ok(), "{} fails", path.display());
        }
    }

    #[test]
    fn every_fuzz_target_replays_its_corpus() {
        for (target, run) in TARGETS {
            replay(target, run);
        }
    }

    /// The Todo guest's exports, as the README's test command builds it.
    fn todo_guest() -> Vec<u8> {
        let path = std::env::var_os("GUEST_TODO_WASM")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                // target/release/deps/host-HASH -> target/wasm32-wasip2/release/
                let exe = std::env::current_exe().expect("the test binary");
                let target = exe.ancestors().nth(3).expect("the target folder");
                target.join("wasm32-wasip2/release/guest_todo.wasm")
            });
        std::fs::read(&path).unwrap_or_else(|e| {
            panic!(
                "{}: {e}: build the guests first (scripts/build-guests.sh)",
                path.display()
            )
        })
    }

    /// Writes the seed inputs each corpus started from (`seed-*`); the
    /// fuzzer grew the rest. Run by hand:
    /// `cargo test -p host --lib fuzzing -- --ignored`.
    #[test]
    #[ignore = "writes fuzz/corpus"]
    fn write_seed_inputs() {
        use crate::cluster::wire::{OneWay, Request, ToolRequest};
        use crate::distribution::handshake::{ClientHandshake, ServerHandshake, Step};
        use crate::distribution::{Cookie, NodeName};

        let me = NodeName::parse("client@host").expect("name");
        let cookie = Cookie::from_text("a-cookie-for-the-seeds").expect("cookie");
        let (_, hello) = ClientHandshake::start(&me, &cookie, false, None).expect("hello");
        let mut server = ServerHandshake::new(&me, &cookie).expect("server");
        let Step::Send(challenge) = server.on_frame(&hello[4..]) else {
            panic!("no challenge");
        };
        let with = |first: u8, rest: &[u8]| [&[first][..], rest].concat();
        let request = |kind: u8, payload: &[u8]| {
            let mut packet = ((payload.len() + 1) as u16).to_be_bytes().to_vec();
            packet.push(kind);
            packet.extend_from_slice(payload);
            packet
        };
        let register = |name: &str| {
            let mut body = vec![0x15, 0xb3, 77, 0, 0, 6, 0, 5];
            body.extend_from_slice(&(name.len() as u16).to_be_bytes());
            body.extend_from_slice(name.as_bytes());
            body.extend_from_slice(&8u16.to_be_bytes());
            body.extend_from_slice(b"otp-wasm");
            request(120, &body)
        };
        let console = wire::encode(&ConsoleRequest::Run {
            line: "ps --limit 5".into(),
        });
        let seeds: &[(&str, Vec<Vec<u8>>)] = &[
            (
                "frame",
                vec![
                    with(0, &[frame::encode(b"hello"), frame::encode(b"")].concat()),
                    with(7, &[frame::encode(&[1; 70]), frame::encode(b"x")].concat()),
                    with(2, &[0x16, 0x03, 0x01, 0x02, 0x00]),
                ],
            ),
            (
                "handshake",
                vec![
                    with(0, &hello),
                    with(1, &challenge),
                    with(2, &[]),
                    with(2, &[1, 0, 9, 0x20, 2, 0, 3, 0x01]),
                ],
            ),
            (
                "port_mapper",
                vec![
                    [register("node_a"), request(122, b"node_a"), request(110, &[])].concat(),
                    [register("node_b"), request(107, &[]), register("node_b")].concat(),
                ],
            ),
            (
                "link_message",
                vec![
                    vec![0],
                    with(2, &[&7u64.to_be_bytes()[..], &console].concat()),
                    with(
                        2,
                        &[
                            &8u64.to_be_bytes()[..],
                            &wire::encode(&Request::Tool(ToolRequest::Console(console.clone()))),
                        ]
                        .concat(),
                    ),
                    with(
                        3,
                        &[
                            &7u64.to_be_bytes()[..],
                            &wire::encode(&ConsoleReply::default()),
                        ]
                        .concat(),
                    ),
                    with(
                        4,
                        &wire::encode(&OneWay::Cast {
                            component: "guest_todo".into(),
                            name: "bob".into(),
                            message: vec![1, 2, 3],
                            hops: 0,
                        }),
                    ),
                ],
            ),
            (
                "console_line",
                vec![
                    b"ps --sort memory --limit 5".to_vec(),
                    br#"info "my \"list\"""#.to_vec(),
                    b"trace-calls guest_todo/bob --for 5".to_vec(),
                    br#"todo.entries("bob", none)"#.to_vec(),
                ],
            ),
            (
                "wave_call",
                vec![
                    br#"todo.add-entry("production_list", {date: "2023-01-01", title: "Deploy Successful"})"#
                        .to_vec(),
                    br#"todo.entries("bob", some("2023-12-19"))"#.to_vec(),
                    br#"todo.update-entry("bob", 1, {date: none, title: some("x\u{1F600}")})"#
                        .to_vec(),
                    br#"todo.delete-entry("bob", 18446744073709551615)"#.to_vec(),
                ],
            ),
        ];
        let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus");
        for (target, inputs) in seeds {
            let folder = corpus.join(target);
            std::fs::create_dir_all(&folder).expect("corpus folder");
            for (i, input) in inputs.iter().enumerate() {
                std::fs::write(folder.join(format!("seed-{i}")), input).expect("seed");
            }
        }
    }

    #[test]
    fn the_wave_call_target_replays_its_corpus() {
        let target = CallTarget::new(&todo_guest()).expect("the Todo guest's functions");
        replay("wave_call", |data| target.run(data));
    }
}
