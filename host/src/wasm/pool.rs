//! Sizing the engine's instance pool from the node's limits and the
//! machine: a node either starts with a pool that fits, or fails at once
//! saying which limit is short and what to change.
//!
//! The pool has an instance for each HTTP handler and console instance
//! allowed at once, and `--max-instances` for processes (the process
//! runtime's instance permits); processes beyond those hibernate.

use wasmtime::{Enabled, PoolingAllocationConfig};

#[cfg(doc)]
use crate::config::InstanceLayout;
use crate::config::{ConsoleLimits, NodeConfig};

/// Core instances, memories and tables a component instance may use. A Rust
/// guest built for `wasm32-wasip2` has one memory and a handful of small
/// adapter modules; these leave room for larger guests.
const CORE_INSTANCES_PER_COMPONENT: u32 = 16;
const MEMORIES_PER_COMPONENT: u32 = 2;
const TABLES_PER_COMPONENT: u32 = 8;

/// Memory mappings one pool instance costs (`vm.max_map_count` counts
/// them): its fiber stack and the stack's guard page from the start, and,
/// while an instance is in it, its linear memory and its table made
/// accessible inside their reserved regions (each splits one mapping in
/// two). Measured: 2 per pool instance at start, 4 more while it is in use, whatever
/// the [`InstanceLayout`].
const MAPPINGS_PER_INSTANCE: u64 = 6;

/// Mappings left for everything but the pool: the binary and its
/// libraries, thread stacks, RocksDB, the allocator.
const MAPPINGS_RESERVED: u64 = 8192;

/// Share of the process's address space the pool may take (the rest is
/// for the heap, RocksDB and thread stacks): three quarters of 128 TiB, the
/// user address space of x86-64 and AArch64 with 4-level page tables, or of
/// `ulimit -v` when lower.
const USER_ADDRESS_SPACE: u64 = 1 << 47;

/// Process instances when the operator says nothing and the machine allows
/// more. A live instance costs about 50 KiB of resident memory and page
/// tables; a hibernated process about 0.5 KiB plus its state.
pub const DEFAULT_PROCESS_INSTANCES: u32 = 8192;

/// Host memory a process costs while it hibernates, besides its state:
/// what `--max-processes` is checked against.
const HIBERNATED_PROCESS_BYTES: u64 = 1024;

/// How the instance pool is sized, from the node's limits and the machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolPlan {
    /// Instances processes may hold at once.
    pub process_instances: u32,
    /// Every pool instance: processes, HTTP handlers and the console.
    pub instances: u32,
}

/// What the machine allows a process: its limits, read once at start.
#[derive(Debug, Clone, Copy)]
pub struct MachineLimits {
    /// `vm.max_map_count`.
    pub max_map_count: u64,
    /// The address space this process may map (`ulimit -v`, or the user
    /// address space).
    pub address_space: u64,
    /// Physical memory.
    pub memory: u64,
}

impl MachineLimits {
    /// This machine's limits (Linux defaults where one cannot be read).
    pub fn read() -> Self {
        let max_map_count = std::fs::read_to_string("/proc/sys/vm/max_map_count")
            .ok()
            .and_then(|text| text.trim().parse().ok())
            .unwrap_or(65_530);
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes into the struct it is given, nothing else.
        let read = unsafe { libc::getrlimit(libc::RLIMIT_AS, &mut limit) } == 0;
        let address_space = if read && limit.rlim_cur != libc::RLIM_INFINITY {
            limit.rlim_cur.min(USER_ADDRESS_SPACE)
        } else {
            USER_ADDRESS_SPACE
        };
        let memory = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|text| {
                let line = text.lines().find(|line| line.starts_with("MemTotal:"))?;
                let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
                Some(kib * 1024)
            })
            .unwrap_or(u64::MAX);
        Self {
            max_map_count,
            address_space,
            memory,
        }
    }
}

impl PoolPlan {
    /// The pool for `config` on a machine with `machine`'s limits, or why
    /// none fits, naming the limit and what to change.
    pub fn new(config: &NodeConfig, machine: &MachineLimits) -> Result<Self, String> {
        let limits = &config.limits;
        let others =
            u64::from(config.http.max_concurrent_requests) + u64::from(ConsoleLimits::INSTANCES);
        let by_mappings = (machine.max_map_count.saturating_sub(MAPPINGS_RESERVED)
            / MAPPINGS_PER_INSTANCE)
            .saturating_sub(others);
        let per_instance = config
            .instance_layout
            .address_space(limits.max_memory_bytes);
        let by_address_space =
            (machine.address_space / 4 * 3 / per_instance).saturating_sub(others);
        let fits = by_mappings.min(by_address_space);
        let bookkeeping = u64::from(limits.max_processes) * HIBERNATED_PROCESS_BYTES;
        if bookkeeping > machine.memory / 2 {
            return Err(format!(
                "--max-processes {} would need up to {} MiB of host memory with every process \
                 hibernated (about 1 KiB each, plus its state), more than half of this machine's \
                 {} MiB: lower --max-processes",
                limits.max_processes,
                bookkeeping >> 20,
                machine.memory >> 20
            ));
        }
        let wanted = match limits.max_instances {
            Some(wanted) => u64::from(wanted),
            None => fits.min(u64::from(DEFAULT_PROCESS_INSTANCES)),
        }
        .min(u64::from(limits.max_processes));
        if wanted > by_mappings || wanted == 0 && by_mappings == 0 {
            let needed = (wanted.max(1) + others) * MAPPINGS_PER_INSTANCE + MAPPINGS_RESERVED;
            return Err(format!(
                "{} process instances and {others} for HTTP handlers and the console need about \
                 {needed} memory mappings ({MAPPINGS_PER_INSTANCE} per instance, {MAPPINGS_RESERVED} \
                 for the rest), and the kernel allows {} (vm.max_map_count). Lower \
                 --max-instances (at most {by_mappings} fit) or --max-concurrent-requests, or \
                 raise the limit: sudo sysctl -w vm.max_map_count={needed}",
                wanted.max(1),
                machine.max_map_count
            ));
        }
        if wanted > by_address_space || wanted == 0 {
            return Err(format!(
                "{} process instances and {others} for HTTP handlers and the console need about \
                 {} GiB of address space ({} MiB reserved per instance), and this process \
                 may map {} GiB (ulimit -v, or the CPU's user address space; the pool takes at \
                 most three quarters). Lower --max-instances (at most {by_address_space} fit) or \
                 --max-concurrent-requests, or raise ulimit -v",
                wanted.max(1),
                ((wanted.max(1) + others) * per_instance) >> 30,
                per_instance >> 20,
                machine.address_space >> 30
            ));
        }
        let process_instances = u32::try_from(wanted).unwrap_or(u32::MAX);
        Ok(Self {
            process_instances,
            instances: process_instances
                .saturating_add(config.http.max_concurrent_requests)
                .saturating_add(ConsoleLimits::INSTANCES),
        })
    }
}

/// Bytes of tables a freed pool instance keeps resident.
const KEEP_RESIDENT_TABLE: usize = 64 * 1024;

/// The pooling allocator's configuration for `plan`.
pub(super) fn pooling_config(node: &NodeConfig, plan: &PoolPlan) -> PoolingAllocationConfig {
    let instances = plan.instances;
    let mut pool = PoolingAllocationConfig::default();
    pool.total_component_instances(instances)
        .total_core_instances(instances.saturating_mul(4))
        .total_memories(
            instances
                .saturating_mul(MEMORIES_PER_COMPONENT)
                .min(instances + 1024),
        )
        .total_tables(instances.saturating_mul(4))
        .total_stacks(instances)
        .max_core_instances_per_component(CORE_INSTANCES_PER_COMPONENT)
        .max_memories_per_component(MEMORIES_PER_COMPONENT)
        .max_tables_per_component(TABLES_PER_COMPONENT)
        .max_memory_size(node.limits.max_memory_bytes)
        // Reset a freed instance by rewriting the pages it dirtied (found
        // with the PAGEMAP_SCAN ioctl, Linux 6.7+) instead of `madvise`:
        // every `madvise` in a multi-threaded process is a TLB shootdown on
        // every core, and those dominated the profile. This doubled HTTP
        // throughput (BENCHMARKS.md). Each used pool instance keeps at most
        // this much resident after its instance is gone.
        .pagemap_scan(Enabled::Auto)
        .linear_memory_keep_resident(node.instance_layout.keep_resident)
        .table_keep_resident(KEEP_RESIDENT_TABLE);
    pool
}

#[cfg(test)]
mod tests {
    use super::*;

    fn machine(max_map_count: u64) -> MachineLimits {
        MachineLimits {
            max_map_count,
            address_space: USER_ADDRESS_SPACE,
            memory: 24 << 30,
        }
    }

    fn config(max_processes: u32, max_instances: Option<u32>) -> NodeConfig {
        let mut config = NodeConfig::new("test", std::path::PathBuf::from("unused"));
        config.limits.max_processes = max_processes;
        config.limits.max_instances = max_instances;
        config
    }

    #[test]
    fn the_default_pool_fits_the_kernels_default_mapping_limit() {
        let plan = PoolPlan::new(&config(1_000_000, None), &machine(65_530)).expect("fits");
        assert_eq!(plan.process_instances, DEFAULT_PROCESS_INSTANCES);
        let mappings = u64::from(plan.instances) * MAPPINGS_PER_INSTANCE + MAPPINGS_RESERVED;
        assert!(mappings <= 65_530, "{mappings}");
    }

    #[test]
    fn a_lower_mapping_limit_gives_fewer_instances_rather_than_a_failure() {
        let plan = PoolPlan::new(&config(1_000_000, None), &machine(30_000)).expect("fits");
        assert!(plan.process_instances < DEFAULT_PROCESS_INSTANCES);
        assert!(u64::from(plan.instances) * MAPPINGS_PER_INSTANCE + MAPPINGS_RESERVED <= 30_000);
    }

    #[test]
    fn too_many_instances_are_refused_naming_the_limit() {
        let error = PoolPlan::new(&config(1_000_000, Some(100_000)), &machine(65_530))
            .expect_err("does not fit");
        assert!(error.contains("vm.max_map_count"), "{error}");
        assert!(error.contains("--max-instances"), "{error}");
        let roomy = machine(10_000_000);
        let error =
            PoolPlan::new(&config(1_000_000, Some(1_000_000)), &roomy).expect_err("does not fit");
        assert!(error.contains("address space"), "{error}");
    }

    #[test]
    fn the_address_space_an_instance_takes_follows_its_layout() {
        let narrow = MachineLimits {
            address_space: 16 << 40,
            ..machine(10_000_000)
        };
        let default = PoolPlan::new(&config(1_000_000, None), &narrow).expect("fits");
        let mut compact = config(1_000_000, None);
        compact.instance_layout.memory_reservation = 64 << 20;
        let compact = PoolPlan::new(&compact, &narrow).expect("fits");
        // Three quarters of 16 TiB hold about 3,040 instances of 4 GiB, 1,064
        // of them for HTTP handlers and the console; with 64 MiB
        // reservations the default 8,192 process instances fit.
        assert!(
            (1900..2000).contains(&default.process_instances),
            "{default:?}"
        );
        assert_eq!(compact.process_instances, DEFAULT_PROCESS_INSTANCES);
    }

    #[test]
    fn more_processes_than_memory_allows_are_refused() {
        let error =
            PoolPlan::new(&config(u32::MAX, None), &machine(65_530)).expect_err("does not fit");
        assert!(error.contains("--max-processes"), "{error}");
    }
}
