//! Metrics in the Prometheus text format, served on `--metrics-port`: the
//! first piece of observation (process count, crashes, expiries), before the
//! remote console arrives.

use std::convert::Infallible;
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode};

use crate::http::Ingress;

#[derive(Default)]
pub struct Metrics {
    processes_started: AtomicU64,
    processes_crashed: AtomicU64,
    processes_expired: AtomicU64,
    starts_refused: AtomicU64,
    mailbox_full: AtomicU64,
    http_requests: AtomicU64,
    http_errors: AtomicU64,
    nodes_down: AtomicU64,
    console_sessions: AtomicU64,
    processes_hibernated: AtomicU64,
    processes_woken: AtomicU64,
    hand_overs_failed: AtomicU64,
}

impl Metrics {
    pub fn started(&self) {
        self.processes_started.fetch_add(1, Ordering::Relaxed);
    }
    pub fn crashed(&self) {
        self.processes_crashed.fetch_add(1, Ordering::Relaxed);
    }
    pub fn expired(&self) {
        self.processes_expired.fetch_add(1, Ordering::Relaxed);
    }
    pub fn refused(&self) {
        self.starts_refused.fetch_add(1, Ordering::Relaxed);
    }
    /// A process handed its state over and dropped its instance.
    pub fn hibernated(&self) {
        self.processes_hibernated.fetch_add(1, Ordering::Relaxed);
    }
    /// A hibernated process got a message and took its state back.
    pub fn woken(&self) {
        self.processes_woken.fetch_add(1, Ordering::Relaxed);
    }
    /// A process's hand-over trapped or failed: it expired instead.
    pub fn hand_over_failed(&self) {
        self.hand_overs_failed.fetch_add(1, Ordering::Relaxed);
    }
    pub fn mailbox_full(&self) {
        self.mailbox_full.fetch_add(1, Ordering::Relaxed);
    }
    pub fn http_request(&self) {
        self.http_requests.fetch_add(1, Ordering::Relaxed);
    }
    /// Another member of the cluster was declared down.
    pub fn node_down(&self) {
        self.nodes_down.fetch_add(1, Ordering::Relaxed);
    }
    /// A console client attached (`remote`, `rpc`, `start_iex`).
    pub fn console_attached(&self) {
        self.console_sessions.fetch_add(1, Ordering::Relaxed);
    }
    pub fn console_detached(&self) {
        self.console_sessions.fetch_sub(1, Ordering::Relaxed);
    }
    /// Processes' crashes since the node started.
    pub fn crashes(&self) -> u64 {
        self.processes_crashed.load(Ordering::Relaxed)
    }
    /// A request the host answered itself with an error (413, 503, 504, 500).
    pub fn http_error(&self) {
        self.http_errors.fetch_add(1, Ordering::Relaxed);
    }
}

/// The metrics page of the node behind `ingress`.
pub fn render(ingress: &Ingress) -> String {
    let node = ingress.node();
    let m = node.metrics();
    let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
    let mut series: Vec<(&str, &str, &str, u64)> = vec![
        (
            "host_processes",
            "gauge",
            "Processes alive now.",
            node.registry().len() as u64,
        ),
        (
            "host_processes_started_total",
            "counter",
            "Processes started.",
            load(&m.processes_started),
        ),
        (
            "host_processes_crashed_total",
            "counter",
            "Processes ended by a trap, deadline, memory cap or failed init.",
            load(&m.processes_crashed),
        ),
        (
            "host_processes_expired_total",
            "counter",
            "Processes stopped after being idle.",
            load(&m.processes_expired),
        ),
        (
            "host_processes_hibernated_total",
            "counter",
            "Times a process handed its state over and freed its instance (idle, or to make room).",
            load(&m.processes_hibernated),
        ),
        (
            "host_processes_woken_total",
            "counter",
            "Times a hibernated process was started again from its handed-over state.",
            load(&m.processes_woken),
        ),
        (
            "host_hand_overs_failed_total",
            "counter",
            "Hand-overs that trapped or failed: the process expired instead of hibernating.",
            load(&m.hand_overs_failed),
        ),
        (
            "host_hibernated_state_bytes",
            "gauge",
            "Bytes of hibernated processes' states kept in memory (--hibernate-memory).",
            node.sleeping_states().in_memory() as u64,
        ),
        (
            "host_hibernated_states_spilled_total",
            "counter",
            "Hibernated processes' states written to storage, past --hibernate-memory.",
            node.sleeping_states().spilled(),
        ),
        (
            "host_instance_slots",
            "gauge",
            "Instance slots processes may hold at once (--max-instances).",
            u64::from(node.slots().total()),
        ),
        (
            "host_instance_slots_held",
            "gauge",
            "Instance slots held by running processes now; the rest of the processes hibernate.",
            u64::from(node.slots().held()),
        ),
        (
            "host_process_starts_refused_total",
            "counter",
            "Starts refused by restart intensity, or for want of an instance slot.",
            load(&m.starts_refused),
        ),
        (
            "host_messages_refused_mailbox_full_total",
            "counter",
            "Messages refused because the receiving mailbox was full.",
            load(&m.mailbox_full),
        ),
        (
            "host_http_requests_total",
            "counter",
            "HTTP requests received.",
            load(&m.http_requests),
        ),
        (
            "host_http_host_errors_total",
            "counter",
            "HTTP requests the host answered with an error itself.",
            load(&m.http_errors),
        ),
        (
            "host_http_idle_handlers",
            "gauge",
            "HTTP handler instances waiting, warm, for their next request.",
            ingress.idle_handlers() as u64,
        ),
        (
            "host_cluster_nodes_down_total",
            "counter",
            "Times another member of the cluster was declared down (silent past --node-down-after).",
            load(&m.nodes_down),
        ),
        (
            "host_console_sessions",
            "gauge",
            "Console clients attached (remote, rpc, start_iex).",
            load(&m.console_sessions),
        ),
        (
            "host_traces_running",
            "gauge",
            "Traces running: of processes' messages and of components' host calls.",
            node.traces_running() as u64,
        ),
    ];
    if let Some(router) = node.router() {
        series.extend(router.gauges());
    }
    let node_name = node.name();
    let mut out = String::new();
    for (name, kind, help, value) in series {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        let _ = writeln!(out, "{name}{{node=\"{node_name}\"}} {value}");
    }
    out
}

/// Serves `GET /metrics`.
pub async fn handle(
    ingress: Arc<Ingress>,
    request: Request<hyper::body::Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let response = if request.uri().path() == "/metrics" {
        Response::builder()
            .header("content-type", "text/plain; version=0.0.4")
            .body(Full::new(Bytes::from(render(&ingress))))
    } else {
        Response::builder()
            .status(StatusCode::NOT_FOUND)
            .body(Full::new(Bytes::from_static(b"not found: try /metrics\n")))
    };
    Ok(response.unwrap_or_else(|_| Response::new(Full::new(Bytes::new()))))
}
