//! Entry points of the Todo guest's fuzz targets (`fuzz/`, built natively)
//! and of the test that replays their corpora (`fuzz/corpus/TARGET/`):
//! what reaches the guest from outside, read by the guest's own code.
//!
//! - `todo_http`: requests to the routes, in sequence, on lists served
//!   in-process over an in-memory store. No request may fail on the
//!   server's side (a 5xx: the store never fails here), and every list
//!   loaded again from the store must be the list that was served: an
//!   acknowledged write is stored, a refused one is not.
//! - `todo_state`: messages to a list (as the front sends them) and states
//!   handed over to a list (a hibernated list waking, a hot swap). A
//!   message that reads is handled; a state that is taken over hands over
//!   a state that is taken over as the same list.
//!
//! Compiled for tests and with the feature `fuzzing` only.

use crate::protocol::{Reply, Request as ListRequest};
use crate::server::TodoServer;
use crate::store::memory::MemoryStore;
use crate::web::local::LocalLists;

/// A target: its name, and what it runs on the fuzzer's bytes.
pub type Target = (&'static str, fn(&[u8]));

/// Every target, by name (its binary in `fuzz/`, its corpus folder).
pub const TARGETS: &[Target] = &[("todo_http", http), ("todo_state", state)];

/// Requests separated by NUL bytes, each `METHOD TARGET`, a newline, then
/// its body.
pub fn http(data: &[u8]) {
    let lists = LocalLists::default();
    for request in data.split(|b| *b == 0) {
        let (head, body) = match request.iter().position(|b| *b == b'\n') {
            Some(at) => (&request[..at], &request[at + 1..]),
            None => (request, &[][..]),
        };
        let head = String::from_utf8_lossy(head);
        let (method, target) = head.split_once(' ').unwrap_or((&head, "/"));
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        let request = guest_sdk::http::Request {
            method: method.into(),
            path: path.into(),
            query: query.into(),
            body: body.to_vec(),
        };
        let response = crate::web::route(&lists, &request);
        assert!(
            (200..500).contains(&response.status),
            "{} {}?{} answered {}",
            request.method,
            request.path,
            request.query,
            response.status
        );
    }
    for (served, stored) in lists.served_and_stored() {
        assert_eq!(served, stored, "a list is not stored as it was served");
    }
}

/// The first byte chooses: a message to a list (0), a reply read by the
/// front (1), or a handed-over state (2).
pub fn state(data: &[u8]) {
    let Some((&kind, bytes)) = data.split_first() else {
        return;
    };
    match kind % 3 {
        0 => {
            let Ok(request) = ListRequest::decode(bytes) else {
                return;
            };
            assert_eq!(
                ListRequest::decode(&request.encode()).as_ref(),
                Ok(&request)
            );
            let mut server = TodoServer::load("list", MemoryStore::default()).expect("a list");
            let reply = server.handle(request);
            assert_eq!(Reply::decode(&reply.encode()), reply);
        }
        1 => {
            let reply = Reply::decode(bytes);
            assert_eq!(Reply::decode(&reply.encode()), reply);
        }
        _ => {
            let Ok(server) = TodoServer::take_over("list", bytes, MemoryStore::default()) else {
                return;
            };
            let again = TodoServer::take_over("list", &server.hand_over(), MemoryStore::default())
                .expect("a list takes over its own state");
            assert_eq!(again.render_state(), server.render_state());
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    /// Writes the seed inputs each corpus started from (`seed-*`); the
    /// fuzzer grew the rest. Run by hand:
    /// `cargo test -p guest-todo fuzzing -- --ignored`.
    #[test]
    #[ignore = "writes fuzz/corpus"]
    fn write_seed_inputs() {
        use crate::date::Date;
        use crate::list::TodoList;

        let date = Date::parse("2023-12-19").expect("date");
        let mut server = TodoServer::load("bob", MemoryStore::default()).expect("list");
        server.handle(ListRequest::Add {
            date,
            title: "Dentist".into(),
        });
        let with = |first: u8, rest: &[u8]| [&[first][..], rest].concat();
        let entry = TodoList::default().new_entry(date, "Movies".into());
        let seeds: &[(&str, Vec<Vec<u8>>)] = &[
            (
                "todo_http",
                vec![
                    b"POST /add_entry?list=bob&date=2023-12-19&title=Dentist\0\
                      GET /entries?list=bob&date=2023-12-19"
                        .to_vec(),
                    b"POST /lists/bob/entries\n{\"date\":\"2023-12-20\",\"title\":\"Shopping\"}\0\
                      GET /lists/bob/entries\0\
                      PATCH /lists/bob/entries/1\n{\"title\":\"Groceries\"}\0\
                      DELETE /lists/bob/entries/1\0\
                      GET /lists/bob/entries/1"
                        .to_vec(),
                ],
            ),
            (
                "todo_state",
                vec![
                    with(
                        0,
                        &ListRequest::Add {
                            date,
                            title: "Dentist".into(),
                        }
                        .encode(),
                    ),
                    with(0, &ListRequest::Entries { date: Some(date) }.encode()),
                    with(1, &Reply::Entry(entry).encode()),
                    with(2, &server.hand_over()),
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
    fn every_fuzz_target_replays_its_corpus() {
        for (target, run) in TARGETS {
            let folder = Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../fuzz/corpus")
                .join(target);
            let entries =
                std::fs::read_dir(&folder).unwrap_or_else(|e| panic!("{}: {e}", folder.display()));
            let mut replayed = 0;
            for entry in entries {
                let path = entry.expect("an entry").path();
                let bytes = std::fs::read(&path).expect("an input");
                let outcome = std::thread::scope(|scope| scope.spawn(|| run(&bytes)).join());
                assert!(outcome.is_ok(), "{} fails", path.display());
                replayed += 1;
            }
            assert!(replayed > 0, "{target} has no corpus");
        }
    }
}
