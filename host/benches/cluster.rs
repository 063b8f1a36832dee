//! Cluster benchmarks on three nodes in one process, linked over loopback
//! TCP exactly as separate nodes are (handshake, frames, Raft):
//!
//! - remote call round trip: a call from node 2 to a live process held by
//!   node 1, one at a time, p50 and p99; beside it the same call made on
//!   node 1 itself;
//! - first calls to new names, and calls to the same names once they live,
//!   from many callers at once on node 2 (names spread over all nodes);
//! - a replicated write (a Todo list's add: one storage batch through the
//!   Raft leader) on the leader and from a follower, p50 and p99.
//!
//! Run after building the guests (`scripts/build-guests.sh`):
//! `cargo bench [--profile dist] -p host --bench cluster`. See BENCHMARKS.md.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use host::boot::{Distribution, Listeners, RunningNode};
use host::cluster::{Cluster, Settings};
use host::config::ProcessLimits;
use host::distribution::link::Liveness;
use host::distribution::mesh::Dialer;
use host::distribution::{Cookie, NodeName};
use host::node::{ComponentSource, NodeCore};

mod support;
use support::{COMPONENT, add_entry, config, guest_wasm};

const SEQUENTIAL_CALLS: usize = 20_000;
const NEW_NAMES: usize = 6_000;
const CALLERS: usize = 64;
const WRITES: usize = 5_000;
const TIMEOUT: Duration = Duration::from_secs(10);

/// The Todo guest, whose list processes make the replicated writes.
const TODO: &str = "todo";

struct Member {
    running: RunningNode,
    name: NodeName,
}

impl Member {
    fn node(&self) -> &Arc<NodeCore> {
        self.running.node()
    }

    fn cluster(&self) -> &Arc<Cluster> {
        self.running.cluster().expect("a member")
    }

    /// A name of `component` whose process this member holds.
    fn holds(&self, component: &str, prefix: &str) -> String {
        (0..10_000)
            .map(|i| format!("{prefix}-{i}"))
            .find(|name| self.cluster().holder_of(component, name) == Some(self.name.clone()))
            .expect("a name held by the member")
    }
}

/// Three nodes, each started as `host run` starts one (but found by
/// fixed addresses, not the port mapper), the second and third joined to
/// the first.
async fn start_cluster(dirs: &[tempfile::TempDir]) -> Vec<Member> {
    let mut listeners = Vec::new();
    for _ in dirs {
        listeners.push(
            tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind"),
        );
    }
    let names: Vec<NodeName> = (0..dirs.len())
        .map(|i| NodeName::parse(&format!("n{i}@127.0.0.1")).expect("name"))
        .collect();
    let addresses: HashMap<NodeName, SocketAddr> = names
        .iter()
        .cloned()
        .zip(listeners.iter().map(|l| l.local_addr().expect("addr")))
        .collect();
    let settings = Settings {
        node_down_after: Duration::from_secs(3),
        max_voters: 3,
        write_timeout: Duration::from_secs(6),
    };
    let mut members = Vec::new();
    for ((dir, listener), name) in dirs.iter().zip(listeners).zip(&names) {
        // Three engines in one process: each pool's address space must
        // fit beside the others', so each node holds fewer processes.
        let limits = ProcessLimits {
            max_processes: 4_000,
            ..ProcessLimits::default()
        };
        let sources = vec![
            ComponentSource {
                name: COMPONENT.into(),
                path: guest_wasm("minimal"),
            },
            ComponentSource {
                name: TODO.into(),
                path: guest_wasm("guest_todo"),
            },
        ];
        let distribution = Distribution {
            dialer: Dialer {
                me: name.clone(),
                cookie: Cookie::from_text("bench").expect("cookie"),
                tls: None,
                epmd_port: 0,
                fixed_addresses: addresses.clone(),
                handshake_timeout: Duration::from_secs(5),
                liveness: Liveness {
                    ping_every: settings.tick(),
                    silence_limit: settings.node_down_after,
                },
            },
            settings: settings.clone(),
            join: None,
            register: false,
        };
        let listeners = Listeners {
            distribution: Some(listener),
            ..Listeners::default()
        };
        let running = RunningNode::start(
            config(&name.to_string(), dir.path(), limits),
            sources,
            Some(distribution),
            listeners,
        )
        .await
        .expect("node starts");
        members.push(Member {
            running,
            name: name.clone(),
        });
    }
    for member in &members[1..] {
        member.cluster().join(&members[0].name).await.expect("join");
    }
    // Every node up and serving, and slots spread.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ready = members.iter().all(|member| {
            let nodes = member.cluster().nodes();
            nodes.len() == members.len() && nodes.iter().all(|node| node.up && node.linked)
        });
        let spread = (0..3000).any(|i| {
            members[0]
                .cluster()
                .holder_of(COMPONENT, &format!("probe-{i}"))
                == Some(members[2].name.clone())
        });
        if ready && spread {
            break;
        }
        assert!(Instant::now() < deadline, "the cluster did not form");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    members
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index]
}

fn report(what: &str, mut samples: Vec<Duration>) {
    samples.sort_unstable();
    let mean = samples.iter().sum::<Duration>() / samples.len() as u32;
    println!(
        "{what}: p50 {:.1} µs, p99 {:.1} µs, mean {:.1} µs ({} calls)",
        percentile(&samples, 0.5).as_secs_f64() * 1e6,
        percentile(&samples, 0.99).as_secs_f64() * 1e6,
        mean.as_secs_f64() * 1e6,
        samples.len()
    );
}

async fn timed_calls(node: &Arc<NodeCore>, name: &str, count: usize) -> Vec<Duration> {
    let mut samples = Vec::with_capacity(count);
    for _ in 0..count {
        let started = Instant::now();
        node.call(COMPONENT, name, Vec::new(), TIMEOUT)
            .await
            .expect("call");
        samples.push(started.elapsed());
    }
    samples
}

/// Calls every name once from `CALLERS` tasks on `node`; returns calls/s.
async fn call_all(node: &Arc<NodeCore>, names: &Arc<Vec<String>>) -> f64 {
    let started = Instant::now();
    let tasks: Vec<_> = (0..CALLERS)
        .map(|caller| {
            let (node, names) = (node.clone(), names.clone());
            tokio::spawn(async move {
                for name in names.iter().skip(caller).step_by(CALLERS) {
                    node.call(COMPONENT, name, Vec::new(), TIMEOUT)
                        .await
                        .expect("call");
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("caller");
    }
    names.len() as f64 / started.elapsed().as_secs_f64()
}

fn main() {
    let runtime = support::runtime();
    let dirs: Vec<tempfile::TempDir> = (0..3)
        .map(|_| tempfile::tempdir().expect("temp dir"))
        .collect();
    // Everything runs in a task on the runtime, as every real caller does:
    // timed from `block_on`'s thread, each call would also pay two OS
    // thread wake-ups.
    let work = runtime.spawn(async move {
        let members = start_cluster(&dirs).await;
        let (holder, caller) = (&members[1], &members[2]);
        let remote = holder.holds(COMPONENT, "remote");
        // Warm up both paths (process started, links busy once).
        timed_calls(caller.node(), &remote, 2_000).await;
        timed_calls(holder.node(), &remote, 2_000).await;
        report(
            "remote call round trip (node 2 to a process on node 1)",
            timed_calls(caller.node(), &remote, SEQUENTIAL_CALLS).await,
        );
        report(
            "local call round trip (the same process, from node 1)",
            timed_calls(holder.node(), &remote, SEQUENTIAL_CALLS).await,
        );

        let leader_name = caller
            .cluster()
            .nodes()
            .into_iter()
            .find(|node| node.leader)
            .expect("a leader")
            .name;
        let leader = members.iter().find(|m| m.name == leader_name).expect("leader");
        let follower = members.iter().find(|m| m.name != leader_name).expect("follower");
        for (what, member) in [("on the leader", leader), ("from a follower", follower)] {
            // A list held by that member: each add is one replicated batch
            // (the entry and the next id), made by the list's process.
            let list = member.holds(TODO, "writes");
            let mut samples = Vec::with_capacity(WRITES);
            for i in 0..WRITES {
                let add = add_entry(20_240_401, &format!("entry {i:04}"));
                let started = Instant::now();
                member
                    .node()
                    .call(TODO, &list, add, TIMEOUT)
                    .await
                    .expect("a replicated add");
                samples.push(started.elapsed());
            }
            report(
                &format!("replicated write (a Todo list's add: one batch) {what}"),
                samples,
            );
        }

        let names: Arc<Vec<String>> = Arc::new((0..NEW_NAMES).map(|i| format!("new-{i}")).collect());
        let first = call_all(caller.node(), &names).await;
        let live = call_all(caller.node(), &names).await;
        let here = names
            .iter()
            .filter(|name| caller.cluster().holder_of(COMPONENT, name) == Some(caller.name.clone()))
            .count();
        println!(
            "first calls to {NEW_NAMES} new names from node 2 ({CALLERS} callers; {here} held by node 2): {first:.0} calls/s"
        );
        println!("calls to the same {NEW_NAMES} names, now live: {live:.0} calls/s");
    });
    runtime.block_on(work).expect("the benchmark ran");
}
