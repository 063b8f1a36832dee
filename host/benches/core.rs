//! Core benchmarks: spawning a process (instantiate + init), a local call
//! round trip, storage put and get. Run with `cargo bench -p host` after
//! building the guests (`scripts/build-guests.sh`); see BENCHMARKS.md.

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};

mod support;
use support::{add_entry, entries_of, minimal_node, node_running};

use host::config::{Durability, ProcessLimits};
use host::node::NodeCore;
use host::storage::Storage;
use host::wasm::ProcessStore;

fn node(data_dir: &std::path::Path) -> Arc<NodeCore> {
    minimal_node("bench", data_dir, ProcessLimits::default())
}

fn processes(c: &mut Criterion) {
    let runtime = support::runtime();
    let dir = tempfile::tempdir().expect("temp dir");
    let node = runtime.block_on(async { node(dir.path()) });
    let component = node.components()[0].clone();
    let pre = component
        .code()
        .process_pre()
        .expect("a process component")
        .clone();
    let store = || {
        component.new_store(Some(ProcessStore {
            name: "p",
            fence: None,
            memory: Arc::default(),
        }))
    };

    c.bench_function("spawn: instantiate + init", |b| {
        b.to_async(&runtime).iter(|| async {
            let mut store = store();
            let instance = pre
                .instantiate_async(&mut store)
                .await
                .expect("instantiate");
            instance
                .otp_platform_behaviour()
                .call_init(&mut store, "p")
                .await
                .expect("init call")
                .expect("init ok");
        })
    });

    // The parts of a spawn, to see where its time goes.
    c.bench_function("spawn part: store and its state", |b| b.iter(store));
    c.bench_function("spawn part: store, state and instantiation", |b| {
        b.to_async(&runtime).iter(|| async {
            let mut store = store();
            pre.instantiate_async(&mut store)
                .await
                .expect("instantiate");
        })
    });

    // Callers are always tasks on the node's runtime (request handlers,
    // other processes), so the calls are made and timed inside one. Timed
    // from outside (criterion's own thread), every call would also pay two
    // OS thread wake-ups, which swung the figure between 5 and 20 µs.
    c.bench_function("call round trip (live process)", |b| {
        b.to_async(&runtime).iter_custom(|iterations| {
            let node = node.clone();
            async move {
                let caller = tokio::spawn(async move {
                    let started = Instant::now();
                    for _ in 0..iterations {
                        node.call("minimal", "counter", Vec::new(), Duration::from_secs(5))
                            .await
                            .expect("call");
                    }
                    started.elapsed()
                });
                caller.await.expect("caller task")
            }
        })
    });
}

/// A Todo list's `handle-call` as the book's GET makes it: the entries of
/// one date, from a list holding three (the HTTP benchmark's prefill). Set
/// beside the minimal guest's round trip, it is what the list's own work
/// and the message's and reply's copying add to a call.
fn todo_call(c: &mut Criterion) {
    let runtime = support::runtime();
    let dir = tempfile::tempdir().expect("temp dir");
    let node = runtime.block_on(async {
        node_running(
            "bench",
            dir.path(),
            ProcessLimits::default(),
            "todo",
            "guest_todo",
        )
    });
    let date = 20_240_401;
    let lists: Vec<String> = (0..LISTS).map(|i| format!("list-{i}")).collect();
    runtime.block_on(async {
        for list in &lists {
            for title in ["Dentist", "Shopping", "Movies"] {
                node.call("todo", list, add_entry(date, title), Duration::from_secs(5))
                    .await
                    .expect("add an entry");
            }
        }
    });
    let request = entries_of(date);
    // One list, called again and again: its instance stays in the caches.
    // 1,000 lists in turn, as the HTTP benchmark's GET calls them: each
    // call meets an instance the others pushed out of them.
    for (bench, in_turn) in [
        ("call round trip (Todo list: 3 entries of a date)", 1),
        (
            "call round trip (Todo list: 3 entries of a date, 1,000 lists in turn)",
            LISTS,
        ),
    ] {
        c.bench_function(bench, |b| {
            b.to_async(&runtime).iter_custom(|iterations| {
                let (node, request, lists) = (node.clone(), request.clone(), lists.clone());
                async move {
                    let caller = tokio::spawn(async move {
                        let started = Instant::now();
                        for i in 0..iterations as usize {
                            let list = &lists[i % in_turn];
                            let reply = node
                                .call("todo", list, request.clone(), Duration::from_secs(5))
                                .await
                                .expect("call");
                            assert_eq!(reply.first(), Some(&1), "Reply::Entries");
                        }
                        started.elapsed()
                    });
                    caller.await.expect("caller task")
                }
            })
        });
    }
}

/// Lists of the HTTP benchmark's prefill.
const LISTS: usize = 1000;

fn storage(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("temp dir");
    let storage = Storage::open(dir.path(), Durability::Wal).expect("open");
    let ns = storage.namespace("bench");
    let value = vec![7u8; 64];
    let mut i = 0u64;
    c.bench_function("storage put (64-byte value, WAL)", |b| {
        b.to_async(&runtime).iter(|| {
            i += 1;
            let key = i.to_be_bytes();
            let ns = ns.clone();
            let value = value.clone();
            async move { ns.put(&key, &value).await.expect("put") }
        })
    });
    c.bench_function("storage get (hit)", |b| {
        b.iter(|| ns.get(&42u64.to_be_bytes()).expect("get"))
    });
}

criterion_group!(benches, processes, todo_call, storage);
criterion_main!(benches);
