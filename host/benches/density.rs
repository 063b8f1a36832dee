//! Density: how many live processes of the minimal guest one node holds,
//! and what each costs. Not criterion: one run, figures printed.
//!
//! Starts `DENSITY_PROCESSES` (default 250,000) processes by calling each
//! once, from `DENSITY_CALLERS` (default 64) caller tasks, then calls each
//! once more (its count must be 2: the state survived hibernation), then
//! wakes `DENSITY_WAKES` (default 10,000) hibernated processes one at a
//! time and prints the latency's percentiles. Resident memory and page
//! tables (`VmRSS`, `VmPTE`) are read before and after. Run with:
//!
//! ```sh
//! bash scripts/build.sh
//! cargo bench --profile dist -p host --bench density
//! DENSITY_PROCESSES=1000000 cargo bench --profile dist -p host --bench density
//! DENSITY_HIBERNATE_MEMORY=0 cargo bench --profile dist -p host --bench density  # states in storage
//! ```

use std::alloc::{GlobalAlloc, Layout};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

mod support;
use support::{gauge, minimal_node};

use host::config::ProcessLimits;
use host::node::NodeCore;

/// The host's allocator (mimalloc, as `main.rs` sets it), counting the
/// bytes allocated and not yet freed: what the host's own structures hold,
/// apart from the allocator's pages and wasm memories (which `VmRSS` has).
struct Counting;

static HEAP_BYTES: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is passed to mimalloc unchanged; only a counter is
// kept beside it.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        HEAP_BYTES.fetch_add(layout.size(), Ordering::Relaxed);
        unsafe { mimalloc::MiMalloc.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        HEAP_BYTES.fetch_sub(layout.size(), Ordering::Relaxed);
        unsafe { mimalloc::MiMalloc.dealloc(ptr, layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        HEAP_BYTES.fetch_add(layout.size(), Ordering::Relaxed);
        unsafe { mimalloc::MiMalloc.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        HEAP_BYTES.fetch_add(new_size, Ordering::Relaxed);
        HEAP_BYTES.fetch_sub(layout.size(), Ordering::Relaxed);
        unsafe { mimalloc::MiMalloc.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn heap() -> usize {
    HEAP_BYTES.load(Ordering::Relaxed)
}

fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(default)
}

/// `VmRSS` and `VmPTE` of this process, in bytes.
fn memory() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|line| line.starts_with(name))
            .and_then(|line| line.split_whitespace().nth(1))
            .and_then(|kib| kib.parse::<u64>().ok())
            .map_or(0, |kib| kib * 1024)
    };
    (field("VmRSS:"), field("VmPTE:"))
}

/// Memory mappings of this process (what `vm.max_map_count` limits).
fn mappings() -> usize {
    std::fs::read_to_string("/proc/self/maps").map_or(0, |maps| maps.lines().count())
}

/// Calls process `p{i}` and returns its reply (its count).
async fn call(node: &Arc<NodeCore>, i: usize) -> String {
    let reply = node
        .call(
            "minimal",
            &format!("p{i}"),
            Vec::new(),
            Duration::from_secs(30),
        )
        .await
        .unwrap_or_else(|e| panic!("call to p{i}: {e}"));
    String::from_utf8_lossy(&reply).into_owned()
}

/// Calls process `p{i}` for every i in `range` from `callers` tasks, and
/// checks each reply is `expected`.
async fn call_all(
    node: &Arc<NodeCore>,
    range: std::ops::Range<usize>,
    callers: usize,
    expected: &str,
) -> Duration {
    let count = range.end;
    let next = Arc::new(AtomicUsize::new(range.start));
    let started = Instant::now();
    let tasks: Vec<_> = (0..callers)
        .map(|_| {
            let (node, next, expected) = (node.clone(), next.clone(), expected.to_string());
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= count {
                        break;
                    }
                    assert_eq!(call(&node, i).await, expected, "p{i}");
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("caller task");
    }
    started.elapsed()
}

fn main() {
    let processes = env_number("DENSITY_PROCESSES", 250_000);
    let callers = env_number("DENSITY_CALLERS", 64);
    let wakes = env_number("DENSITY_WAKES", 10_000).min(processes);
    let runtime = support::runtime();
    let dir = tempfile::tempdir().expect("temp dir");
    let limits = ProcessLimits {
        idle_timeout: Duration::from_secs(3600),
        hibernated_state_memory: env_number("DENSITY_HIBERNATE_MEMORY", 1 << 30),
        max_processes: u32::try_from(processes).unwrap_or(u32::MAX).max(1_000_000),
        ..ProcessLimits::default()
    };
    let node = runtime.block_on(async { minimal_node("density", dir.path(), limits) });
    let slots = gauge(&node, "host_instance_slots");
    let (rss_before, pte_before) = memory();
    let heap_before = heap();
    let mappings_before = mappings();
    println!(
        "node up: {slots} process instances; RSS {} MiB, page tables {} MiB, {mappings_before} memory mappings",
        rss_before >> 20,
        pte_before >> 20
    );

    // In two halves: once the first half has filled the process instances,
    // the second half's growth is what one more (hibernated) process costs.
    let half = processes / 2;
    let first_half = runtime.block_on(call_all(&node, 0..half, callers, "1"));
    let (rss_half, pte_half) = memory();
    let second_half = runtime.block_on(call_all(&node, half..processes, callers, "1"));
    let first = first_half + second_half;
    let (rss, pte) = memory();
    println!(
        "one more hibernated process (second half's growth / its processes): {:.0} bytes resident, {:.0} bytes of page tables",
        rss.saturating_sub(rss_half) as f64 / (processes - half) as f64,
        pte.saturating_sub(pte_half) as f64 / (processes - half) as f64,
    );
    let live = gauge(&node, "host_processes") as usize;
    assert_eq!(live, processes, "every process is alive");
    println!(
        "started {processes} processes in {:.2} s ({:.0}/s); RSS {} MiB (+{:.1} KiB each), page tables {} MiB (+{:.2} KiB each); {} hold instances",
        first.as_secs_f64(),
        processes as f64 / first.as_secs_f64(),
        rss >> 20,
        (rss.saturating_sub(rss_before)) as f64 / 1024.0 / processes as f64,
        pte >> 20,
        (pte.saturating_sub(pte_before)) as f64 / 1024.0 / processes as f64,
        gauge(&node, "host_instance_slots_held"),
    );

    let held = gauge(&node, "host_instance_slots_held");
    println!(
        "memory mappings: {} ({:+} since the node was up: pool instances that were used keep their mappings)",
        mappings(),
        mappings() as i64 - mappings_before as i64,
    );
    println!(
        "host heap: {:.0} bytes per live process ({} of them, {held} holding an instance), state included",
        heap().saturating_sub(heap_before) as f64 / processes as f64,
        processes,
    );
    let second = runtime.block_on(call_all(&node, 0..processes, callers, "2"));
    let (rss, pte) = memory();
    println!(
        "called each once more (count 2: state kept) in {:.2} s ({:.0}/s); RSS {} MiB ({:.1} KiB per process, all counted), page tables {} MiB",
        second.as_secs_f64(),
        processes as f64 / second.as_secs_f64(),
        rss >> 20,
        rss as f64 / 1024.0 / processes as f64,
        pte >> 20,
    );

    // Wake hibernated processes one at a time: the oldest ones, which the
    // second round hibernated to make room for the later ones.
    let mut latencies = runtime.block_on(async {
        let node = node.clone();
        tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(wakes);
            for i in 0..wakes {
                let started = Instant::now();
                let reply = call(&node, i).await;
                latencies.push(started.elapsed());
                assert_eq!(reply, "3");
            }
            latencies
        })
        .await
        .expect("waker task")
    });
    latencies.sort();
    let at = |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
    println!(
        "woke {wakes} hibernated processes one at a time (call round trip included): p50 {:.1} µs, p90 {:.1} µs, p99 {:.1} µs",
        at(0.5).as_secs_f64() * 1e6,
        at(0.9).as_secs_f64() * 1e6,
        at(0.99).as_secs_f64() * 1e6,
    );
    runtime.block_on(node.stop_processes(Duration::from_secs(30)));
}
