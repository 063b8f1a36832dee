//! Node configuration: what `host run` is told, with the defaults a node
//! runs with when told nothing. The `Default` impls here are the only
//! place a default is written: the command line shows and uses them
//! (`DurationArg`, `SizeArg`).

use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

/// Everything a node needs to know to start.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeConfig {
    /// The node's name, used in logs and, later, in the cluster.
    pub node_name: String,
    /// Where RocksDB and the compiled-component cache live.
    pub data_dir: PathBuf,
    pub http: HttpConfig,
    pub limits: ProcessLimits,
    pub restarts: RestartIntensity,
    /// Whether every write is fsynced before the guest's call returns.
    pub durability: Durability,
    /// Where Prometheus-style metrics are served; none by default.
    pub metrics_addr: Option<(IpAddr, u16)>,
    /// Whether to write `/tmp/perf-PID.map`, so `perf` names guest functions.
    pub perfmap: bool,
    /// Where compiled components are cached (a release ships them
    /// precompiled there); none: `data_dir/compiled`.
    pub compile_cache: Option<PathBuf>,
    /// Which components may call processes of which other components
    /// (`FROM`, `TO`). A component may always call its own processes.
    pub call_grants: Vec<(String, String)>,
    /// How each instance of the engine's pool is laid out.
    pub instance_layout: InstanceLayout,
}

impl NodeConfig {
    /// A node named `node_name` keeping its data in `data_dir`, every other
    /// setting at its default (as `host run` with no options).
    pub fn new(node_name: &str, data_dir: PathBuf) -> Self {
        Self {
            node_name: node_name.into(),
            data_dir,
            http: HttpConfig::default(),
            limits: ProcessLimits::default(),
            restarts: RestartIntensity::default(),
            durability: Durability::Wal,
            metrics_addr: None,
            perfmap: false,
            compile_cache: None,
            call_grants: Vec::new(),
            instance_layout: InstanceLayout::default(),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct HttpConfig {
    pub host: IpAddr,
    pub port: u16,
    /// Requests with a larger body get 413.
    pub max_body_bytes: usize,
    /// A request that takes longer gets 504 and its handler instance is dropped.
    pub request_deadline: Duration,
    /// HTTP handler instances alive at once; further requests wait their turn.
    pub max_concurrent_requests: u32,
    /// What HTTP handler instances' linear memories may add up to; a
    /// handler that would grow past it is ended (500, outcome unknown).
    pub max_handler_memory: usize,
    /// Requests one handler instance may serve before it is replaced (1: a
    /// fresh instance per request).
    pub instance_reuse: u32,
}

/// Limits that keep one process from hurting the others.
#[derive(Debug, Clone, PartialEq)]
pub struct ProcessLimits {
    /// A process idle this long is stopped and its memory freed.
    pub idle_timeout: Duration,
    /// A process idle this long hibernates: its state is handed over and
    /// kept, its instance freed. None: only when another process needs its
    /// instance.
    pub hibernate_after: Option<Duration>,
    /// Bytes of hibernated processes' states kept in memory; past it they
    /// go to storage (a local column family, not replicated).
    pub hibernated_state_memory: usize,
    /// Instances processes may hold at once; the others hibernate. None:
    /// as many as the machine allows, up to a default (see `wasm::PoolPlan`).
    pub max_instances: Option<u32>,
    /// Longest a process may spend on one message (or on init).
    pub call_deadline: Duration,
    /// Largest linear memory a process (or HTTP handler) may grow to.
    pub max_memory_bytes: usize,
    /// Processes alive at once on this node, hibernated ones included.
    pub max_processes: u32,
    /// Bytes of messages a process's mailbox may hold; past it, sends are
    /// refused.
    pub max_mailbox_bytes: usize,
}

impl ProcessLimits {
    /// How long a process rests before its idle timer is due: the shorter
    /// of `hibernate_after` and `idle_timeout`.
    pub fn shortest_rest(&self) -> Duration {
        self.hibernate_after
            .unwrap_or(Duration::MAX)
            .min(self.idle_timeout)
    }
}

/// What the console runs at once. Each console call and each running trace
/// holds an instance of the engine's pool (a call runs in an instance of
/// its own; a trace renders its events in one), so the pool reserves
/// [`ConsoleLimits::INSTANCES`] for them.
pub struct ConsoleLimits;

impl ConsoleLimits {
    /// Console calls of components' functions running at once.
    pub const CALLS: usize = 8;
    /// Traces running on a node at once.
    pub const TRACES_PER_NODE: usize = 32;
    /// Traces one console session may run at once.
    pub const TRACES_PER_SESSION: usize = 4;
    /// Pool instances the console may hold at once.
    pub const INSTANCES: u32 = (Self::CALLS + Self::TRACES_PER_NODE) as u32;
}

/// OTP's restart intensity, applied per process name: more than
/// `max_restarts` crashes within `period` and the name is refused for
/// `cooldown`.
#[derive(Debug, Clone, PartialEq)]
pub struct RestartIntensity {
    pub max_restarts: u32,
    pub period: Duration,
    pub cooldown: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// A write is in the write-ahead log (the OS page cache) before the call
    /// returns: it survives the host being killed, not a power loss.
    Wal,
    /// A write is fsynced before the call returns (RocksDB groups concurrent
    /// writers into one fsync): it survives a power loss.
    Fsync,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            host: IpAddr::from([0, 0, 0, 0]),
            port: 5454,
            max_body_bytes: 1024 * 1024,
            request_deadline: Duration::from_secs(30),
            max_concurrent_requests: 1024,
            max_handler_memory: 1024 * 1024 * 1024,
            instance_reuse: 128,
        }
    }
}

impl Default for ProcessLimits {
    fn default() -> Self {
        Self {
            idle_timeout: Duration::from_secs(60),
            hibernate_after: Some(Duration::from_secs(10)),
            hibernated_state_memory: 1 << 30,
            max_instances: None,
            call_deadline: Duration::from_secs(5),
            max_memory_bytes: 64 * 1024 * 1024,
            max_processes: 1_000_000,
            max_mailbox_bytes: 16 * 1024 * 1024,
        }
    }
}

impl Default for RestartIntensity {
    fn default() -> Self {
        Self {
            max_restarts: 3,
            period: Duration::from_secs(5),
            cooldown: Duration::from_secs(30),
        }
    }
}

/// Parses a duration as the operator writes it: `60` (seconds, as
/// `TODO_SERVER_EXPIRY` is given in the book), `1500ms`, `5s`, `2m`, `1h`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a duration (try 60, 500ms, 5s, 2m)"))?;
    let seconds = match unit.trim() {
        "" | "s" => number,
        "ms" => number / 1000.0,
        "m" | "min" => number * 60.0,
        "h" => number * 3600.0,
        other => {
            return Err(format!(
                "unknown unit `{other}` in `{text}` (use ms, s, m or h)"
            ));
        }
    };
    Duration::try_from_secs_f64(seconds).map_err(|e| format!("`{text}`: {e}"))
}

/// Parses a size: `65536`, `64KiB`, `64MiB`, `1GiB` (also `KB`, `MB`, `GB`,
/// `k`, `m`, `g`, all taken as powers of 1024).
pub fn parse_size(text: &str) -> Result<usize, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: usize = number
        .parse()
        .map_err(|_| format!("`{text}` is not a size (try 1048576, 64KiB, 64MiB)"))?;
    let scale: usize = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        other => {
            return Err(format!(
                "unknown unit `{other}` in `{text}` (use KiB, MiB or GiB)"
            ));
        }
    };
    number
        .checked_mul(scale)
        .ok_or_else(|| format!("`{text}` is too large"))
}

/// A duration on the command line: read as [`parse_duration`] reads it,
/// shown as an operator writes it (`5s`, `1500ms`), so that `--help` shows
/// the default the node runs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DurationArg(pub Duration);

impl FromStr for DurationArg {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        parse_duration(text).map(DurationArg)
    }
}

impl fmt::Display for DurationArg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let millis = self.0.as_millis();
        if millis.is_multiple_of(1000) {
            write!(f, "{}s", millis / 1000)
        } else {
            write!(f, "{millis}ms")
        }
    }
}

/// A size on the command line: read as [`parse_size`] reads it, shown in
/// the largest unit that divides it (`64MiB`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SizeArg(pub usize);

impl FromStr for SizeArg {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        parse_size(text).map(SizeArg)
    }
}

impl fmt::Display for SizeArg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let bytes = self.0;
        match [(30, "GiB"), (20, "MiB"), (10, "KiB")]
            .into_iter()
            .find(|(shift, _)| bytes != 0 && bytes.is_multiple_of(1 << shift))
        {
            Some((shift, unit)) => write!(f, "{}{unit}", bytes >> shift),
            None => write!(f, "{bytes}"),
        }
    }
}

/// `--hibernate-after`: a duration, or never by the clock (`off`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HibernateAfterArg(pub Option<Duration>);

impl FromStr for HibernateAfterArg {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        match text.trim() {
            "off" | "never" => Ok(HibernateAfterArg(None)),
            text => parse_duration(text).map(|after| HibernateAfterArg(Some(after))),
        }
    }
}

impl fmt::Display for HibernateAfterArg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(after) => DurationArg(after).fmt(f),
            None => write!(f, "off"),
        }
    }
}

/// How each instance of the engine's pool is laid out (`crate::wasm`
/// builds the pool from it). The defaults are what `host run` uses; what each
/// field costs, measured one at a time, is in `BENCHMARKS.md` ("What each
/// pool option costs"), and is why the defaults are what they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InstanceLayout {
    /// Address space reserved for a linear memory. At 4 GiB a 32-bit
    /// guest's bounds checks are done by the MMU, not by code in every load.
    pub memory_reservation: u64,
    /// Inaccessible bytes after each linear memory.
    pub memory_guard: u64,
    /// A guest's fiber stack, host calls included (wasmtime's
    /// `async_stack_size`); the guest's own frames may use a quarter of it
    /// (1 MiB: 256 KiB for the guest, half wasmtime's default, which saves
    /// a page-table page per instance; a guest that recurses deeper traps,
    /// and only its process crashes).
    pub stack_size: usize,
    /// Bytes of linear memory a freed pool instance keeps resident and
    /// resets in place for the next one, rather than giving them back.
    pub keep_resident: usize,
    /// Whether a freed pool instance's stack is zeroed before its next use.
    pub stack_zeroing: bool,
}

impl Default for InstanceLayout {
    fn default() -> Self {
        Self {
            memory_reservation: 4 << 30,
            memory_guard: 32 << 20,
            stack_size: 1 << 20,
            keep_resident: 128 << 10,
            stack_zeroing: false,
        }
    }
}

impl InstanceLayout {
    /// Address space one pool instance reserves: its linear memory's region (at
    /// least the node's memory cap) and guard, its stack, and its share of
    /// the tables and instance metadata.
    pub(crate) fn address_space(&self, max_memory_bytes: usize) -> u64 {
        let memory = self.memory_reservation.max(max_memory_bytes as u64);
        memory + self.memory_guard + self.stack_size as u64 + (6 << 20)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_an_operator_writes_them() {
        assert_eq!(parse_duration("60"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("1500ms"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("0.5s"), Ok(Duration::from_millis(500)));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("5 fortnights").is_err());
    }

    #[test]
    fn arguments_read_back_what_they_show() {
        for text in ["60s", "1500ms", "0s", "3s"] {
            let duration: DurationArg = text.parse().expect("a duration");
            assert_eq!(duration.to_string(), text);
        }
        for text in ["1GiB", "64MiB", "128KiB", "1000"] {
            let size: SizeArg = text.parse().expect("a size");
            assert_eq!(size.to_string(), text);
        }
        assert_eq!(SizeArg(3 << 20).to_string(), "3MiB");
        for text in ["off", "10s"] {
            let after: HibernateAfterArg = text.parse().expect("a setting");
            assert_eq!(after.to_string(), text);
        }
    }

    #[test]
    fn sizes_are_powers_of_1024() {
        assert_eq!(parse_size("65536"), Ok(65536));
        assert_eq!(parse_size("64KiB"), Ok(64 * 1024));
        assert_eq!(parse_size("64MiB"), Ok(64 << 20));
        assert_eq!(parse_size("1g"), Ok(1 << 30));
        assert!(parse_size("lots").is_err());
        assert!(parse_size("99999999999999999999GiB").is_err());
    }
}
