//! Starting and stopping a node: the whole sequence `host run` follows, in
//! the library, so that the command line, the benchmarks and the tests run
//! the very same one.
//!
//! Start: open the node (engine, storage, components, processes) off the
//! async workers; with distribution on, start its part in a cluster (the
//! mesh on its listener, the name with the port mapper, membership resumed
//! or joined); the console; then the servers (metrics, observer, HTTP).
//! Ports are bound by the caller before any of it, so a port in use fails
//! before anything is compiled.
//!
//! Stop: a member leaves its cluster first (its names move, its data stays
//! a copy of the cluster's), the servers stop accepting and let in-flight
//! requests finish, every process finishes its mailbox, Raft and the links
//! shut down, and storage is flushed.
//!
//! Restart to reopen storage: a database that failed a write takes no
//! more until it is reopened (`storage::health`). Once the cause looks gone
//! (a file can be written where it lives, and the disk has room), the node
//! stops as above but stays a member and skips the flush (what was
//! acknowledged is in the write-ahead log), and the command line starts it
//! again in the same process (`exec`, the same pid and arguments). Reopening
//! storage inside a running node is deliberately not done: Raft's core
//! stops for good on a storage error, hibernated states past their budget
//! are written without the log, and reads hold the database by reference;
//! a restart reopens all of it the way every restart is tested to.
//!
//! This is the top of the library: it may use every module, and nothing
//! uses it but the command line, benches and tests.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::budget::{ConnectionCap, FileBudget, Listener};
use crate::cluster::{self, Cluster, Settings};
use crate::config::NodeConfig;
use crate::console::Console;
use crate::distribution::mesh::{DialError, Dialer, Mesh};
use crate::distribution::{NodeName, epmd};
use crate::http::{self, Ingress};
use crate::metrics::{self, Source};
use crate::node::{ComponentSource, NodeCore};
use crate::observer::Observer;

/// How long `--join` waits for its peer to come up (nodes started together
/// by a supervisor come up in any order).
const JOIN_WAIT: Duration = Duration::from_secs(60);

/// How often a node whose storage failed checks whether the cause is gone;
/// doubled for each restart it already made for it (a cause that comes
/// back at once does not make it restart in a loop), up to 5 minutes.
const REOPEN_CHECK_EVERY: Duration = Duration::from_secs(5);
const REOPEN_CHECK_AT_MOST: Duration = Duration::from_secs(300);
/// How long one check may take (a hung disk does not hang the node).
const REOPEN_CHECK_TIMEOUT: Duration = Duration::from_secs(10);
/// Restarts to reopen storage a node makes before it stops trying: a cause
/// the check cannot see (corruption, say) would otherwise restart it for
/// ever. It then serves reads and refuses writes until an operator acts.
const MAX_STORAGE_RESTARTS: u32 = 5;

/// Counts a node's restarts to reopen storage, across them (the command
/// line sets it when it restarts the node).
pub const STORAGE_RESTARTS_ENV: &str = "HOST_RESTARTS_TO_REOPEN_STORAGE";

/// The restarts this node made to reopen its storage, since it was started.
pub fn storage_restarts() -> u32 {
    std::env::var(STORAGE_RESTARTS_ENV)
        .ok()
        .and_then(|count| count.parse().ok())
        .unwrap_or(0)
}

/// Why a running node ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ending {
    /// Asked to: by a signal, a tool's `leave`, or the console; says which.
    Stop(&'static str),
    /// Storage failed (why), and the cause looks gone: the node restarts
    /// to reopen it.
    RestartToReopenStorage(String),
}

/// What a node with distribution on is told.
pub struct Distribution {
    pub dialer: Dialer,
    pub settings: Settings,
    /// Join this node's cluster at start (`--join`).
    pub join: Option<NodeName>,
    /// Register the name with the port mapper (`host run` does; the
    /// benches find each other by fixed addresses instead).
    pub register: bool,
}

/// The listeners a node serves on, bound by the caller. Each is optional:
/// a benchmark runs a node with distribution alone.
#[derive(Default)]
pub struct Listeners {
    pub http: Option<TcpListener>,
    pub metrics: Option<TcpListener>,
    pub observer: Option<TcpListener>,
    pub distribution: Option<TcpListener>,
}

/// A running node and everything started with it.
pub struct RunningNode {
    node: Arc<NodeCore>,
    cluster: Option<Arc<Cluster>>,
    console: Arc<Console>,
    /// Stops the servers, the port mapper's registration and the cluster's
    /// loops.
    stop: CancellationToken,
    /// Cancelled by the console's `stop`.
    console_stop: CancellationToken,
    servers: Vec<JoinHandle<()>>,
    ready_line: String,
}

/// Opens the node, compiling components off the async workers.
async fn open_node(
    config: NodeConfig,
    sources: Vec<ComponentSource>,
) -> anyhow::Result<Arc<NodeCore>> {
    tokio::task::spawn_blocking(move || NodeCore::start(config, &sources))
        .await
        .context("node start-up panicked")?
}

/// Opens the node's data outside of any cluster, for one console command
/// (`eval`): no HTTP, no distribution, and, for a member's data, no
/// writes. Stop it with [`close`].
pub async fn open_outside_cluster(
    config: NodeConfig,
    sources: Vec<ComponentSource>,
) -> anyhow::Result<Arc<NodeCore>> {
    let node = open_node(config, sources).await?;
    cluster::set_local_writes(&node.cluster_access().store(), true);
    Ok(node)
}

/// Stops what [`open_outside_cluster`] opened: every process finishes its
/// mailbox, and storage is flushed.
pub async fn close(node: &NodeCore) -> anyhow::Result<()> {
    node.stop_processes(node.config().limits.call_deadline * 2)
        .await;
    node.flush()
}

impl RunningNode {
    /// Starts a node on `listeners`, with its part in a cluster when
    /// `distribution` is given.
    pub async fn start(
        config: NodeConfig,
        sources: Vec<ComponentSource>,
        distribution: Option<Distribution>,
        listeners: Listeners,
    ) -> anyhow::Result<Self> {
        let drain = config.http.request_deadline;
        let http_config = config.http.clone();
        let node = open_node(config, sources).await?;
        cluster::set_local_writes(&node.cluster_access().store(), false);
        for component in node.components() {
            let code = component.code();
            tracing::info!(
                node = %node.name(),
                component = %component.name(),
                code = %code.code_origin(),
                processes = code.process_pre().is_some(),
                http = code.http_pre().is_some(),
                "component loaded"
            );
        }
        let stop = CancellationToken::new();
        // Where it listens, in the ready line's order.
        let (mut http_at, mut metrics_at, mut distribution_at, mut observer_at) =
            (None, None, None, None);
        let cluster = match (distribution, listeners.distribution) {
            (Some(distribution), Some(listener)) => {
                distribution_at = Some(format!("distribution on {}", listener.local_addr()?));
                Some(start_cluster(&node, distribution, listener, stop.clone()).await?)
            }
            _ => None,
        };
        let console_stop = CancellationToken::new();
        let console = Console::new(node.operator(), cluster.clone(), console_stop.clone());
        if let Some(cluster) = &cluster {
            cluster.serve_console(console.clone());
        }
        let names = node.components().iter().map(|c| c.name().clone()).collect();
        let ingress = Ingress::new(http_config, names, node.targets().clone());
        let caps = ListenerCaps::of_this_process(&node);
        let mut servers = Vec::new();
        if let Some(listener) = listeners.metrics {
            let addr = listener.local_addr()?;
            let source = metrics_source(&node, &ingress, cluster.clone(), &console, &caps);
            let name = node.name();
            let service = move |request| metrics::handle(name.clone(), source.clone(), request);
            servers.push(tokio::spawn(http::serve(
                listener,
                caps.metrics.clone(),
                caps.slow_readers.clone(),
                service,
                stop.clone(),
                drain,
            )));
            metrics_at = Some(format!("metrics on http://{addr}/metrics"));
        }
        if let Some(listener) = listeners.observer {
            let addr = listener.local_addr()?;
            let observer = Observer::new(console.clone(), stop.clone())?;
            let url = format!("http://{addr}/?token={}", observer.token());
            console.set_observer_url(url.clone());
            let service = move |request| Arc::clone(&observer).handle(request);
            servers.push(tokio::spawn(http::serve(
                listener,
                caps.observer.clone(),
                caps.slow_readers.clone(),
                service,
                stop.clone(),
                drain,
            )));
            observer_at = Some(format!("observer on {url}"));
        }
        if let Some(listener) = listeners.http {
            let addr = listener.local_addr()?;
            let service = move |request| Arc::clone(&ingress).handle(request);
            servers.push(tokio::spawn(http::serve(
                listener,
                caps.http.clone(),
                caps.slow_readers.clone(),
                service,
                stop.clone(),
                drain,
            )));
            http_at = Some(format!("HTTP listening on http://{addr}"));
        }
        let listening: Vec<String> = [http_at, metrics_at, distribution_at, observer_at]
            .into_iter()
            .flatten()
            .collect();
        let ready_line = format!("node {}: {}", node.name(), listening.join(", "));
        Ok(Self {
            node,
            cluster,
            console,
            stop,
            console_stop,
            servers,
            ready_line,
        })
    }

    pub fn node(&self) -> &Arc<NodeCore> {
        &self.node
    }

    pub fn cluster(&self) -> Option<&Arc<Cluster>> {
        self.cluster.as_ref()
    }

    pub fn console(&self) -> &Arc<Console> {
        &self.console
    }

    /// What the node prints once it serves: its name and where it
    /// listens (supervisors and tests wait for it).
    pub fn ready_line(&self) -> &str {
        &self.ready_line
    }

    /// Cancelled when the console's `stop` is asked for.
    pub fn console_stop(&self) -> CancellationToken {
        self.console_stop.clone()
    }

    /// Waits until something asks the node to stop: `signal` (the
    /// operator's SIGINT or SIGTERM), a tool's `leave`, or the console's
    /// `stop`; or until its storage has failed and can be reopened. Says
    /// why.
    pub async fn until_stopped(&self, signal: impl Future<Output = &'static str>) -> Ending {
        let left_cluster = async {
            match &self.cluster {
                Some(cluster) => cluster.stop_requested().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            signal = signal => Ending::Stop(signal),
            () = left_cluster => Ending::Stop("left its cluster"),
            () = self.console_stop.cancelled() => Ending::Stop("stop asked from the console"),
            failure = storage_reopenable(self.node.clone()) => {
                Ending::RestartToReopenStorage(failure)
            }
        }
    }

    /// Stops the node in order (see the module's doc); `why` goes to the
    /// log.
    pub async fn stop(self, why: &str) -> anyhow::Result<()> {
        let node = self.node.clone();
        self.shut_down(why, true).await;
        node.flush()?;
        tracing::info!(node = %node.name(), "stopped");
        Ok(())
    }

    /// Stops the node so that it can be started again at once to reopen
    /// its failed storage: as [`RunningNode::stop`], but a member stays in
    /// its cluster, and storage, which takes no writes, is not flushed.
    pub async fn stop_to_restart(self, failure: &str) {
        let node = self.node.clone();
        tracing::error!(
            node = %node.name(),
            "storage failed ({failure}) and the cause is gone: restarting to reopen it"
        );
        self.shut_down("restarting to reopen storage", false).await;
    }

    /// Everything but the flush: leaves the cluster first when `leave`.
    async fn shut_down(self, why: &str, leave: bool) {
        let Self {
            node,
            cluster,
            stop,
            servers,
            ..
        } = self;
        tracing::info!(node = %node.name(), "{why}: stopping; in-flight requests finish first");
        if let Some(cluster) = &cluster
            && leave
            && cluster.is_member()
        {
            match cluster.leave().await {
                Ok(done) => tracing::info!(node = %node.name(), "{done}"),
                Err(e) => {
                    tracing::warn!(node = %node.name(), "could not leave the cluster gracefully: {e}")
                }
            }
        }
        stop.cancel();
        for server in servers {
            let _ = server.await;
        }
        node.stop_processes(node.config().limits.call_deadline * 2)
            .await;
        if let Some(cluster) = &cluster {
            cluster.shut_down().await;
        }
    }
}

/// Resolves once storage has failed and what failed it looks gone; says
/// how it failed. Checks every few seconds, less often after each restart
/// already made for it, and logs what is still wrong once a minute; after
/// [`MAX_STORAGE_RESTARTS`], never resolves.
async fn storage_reopenable(node: Arc<NodeCore>) -> String {
    let restarts = storage_restarts();
    let every = REOPEN_CHECK_EVERY
        .saturating_mul(1 << restarts.min(6))
        .min(REOPEN_CHECK_AT_MOST);
    let mut last_said: Option<tokio::time::Instant> = None;
    loop {
        tokio::time::sleep(every).await;
        let Some(failure) = node.storage_failure() else {
            continue;
        };
        if restarts >= MAX_STORAGE_RESTARTS {
            tracing::error!(
                "storage failed ({failure}) after {restarts} restarts to reopen it: not trying \
                 again; reads go on, writes are refused; restart the node once the cause is \
                 fixed"
            );
            return std::future::pending().await;
        }
        let checking = node.clone();
        let check = tokio::task::spawn_blocking(move || checking.storage_can_reopen());
        let still = match tokio::time::timeout(REOPEN_CHECK_TIMEOUT, check).await {
            Ok(Ok(Ok(()))) => return failure,
            Ok(Ok(Err(still))) => still,
            Ok(Err(e)) => format!("the check failed: {e}"),
            Err(_) => format!("the check took over {REOPEN_CHECK_TIMEOUT:?} (a hung disk?)"),
        };
        if last_said.is_none_or(|at| at.elapsed() >= Duration::from_secs(60)) {
            tracing::error!("storage failed ({failure}); not reopened yet: {still}");
            last_said = Some(tokio::time::Instant::now());
        }
    }
}

/// The connection caps of the node's HTTP listeners, from its file budget,
/// and the watch on their slow readers they share.
#[derive(Clone)]
struct ListenerCaps {
    http: Arc<ConnectionCap>,
    metrics: Arc<ConnectionCap>,
    observer: Arc<ConnectionCap>,
    slow_readers: Arc<http::SlowReaders>,
}

impl ListenerCaps {
    /// The caps this process's open-file limit allows; says them in the
    /// log, with a warning when the limit is low.
    fn of_this_process(node: &NodeCore) -> Self {
        let budget = FileBudget::of_this_process();
        tracing::info!(
            node = %node.name(),
            "open-file limit {}: {} kept for storage and the node's links; connections at once: \
             HTTP {}, metrics {}, observer {}",
            budget.limit,
            budget.reserve,
            budget.http_connections,
            budget.metrics_connections,
            budget.observer_connections,
        );
        if budget.is_low() {
            tracing::warn!(
                node = %node.name(),
                "the open-file limit ({}) is low: raise it (`ulimit -n`, or LimitNOFILE= in a \
                 systemd unit) so the listeners can take more connections",
                budget.limit
            );
        }
        Self {
            http: ConnectionCap::new(Listener::Http, budget.http_connections),
            metrics: ConnectionCap::new(Listener::Metrics, budget.metrics_connections),
            observer: ConnectionCap::new(Listener::Observer, budget.observer_connections),
            slow_readers: Arc::default(),
        }
    }

    fn series(&self) -> Vec<metrics::Series> {
        let mut series: Vec<metrics::Series> = [&self.http, &self.metrics, &self.observer]
            .into_iter()
            .flat_map(|cap| cap.series())
            .collect();
        series.extend(self.slow_readers.series());
        series
    }
}

/// What the metrics page shows: every part's series, read when asked.
fn metrics_source(
    node: &Arc<NodeCore>,
    ingress: &Arc<Ingress>,
    cluster: Option<Arc<Cluster>>,
    console: &Arc<Console>,
    caps: &ListenerCaps,
) -> Source {
    let (node, ingress, console) = (node.clone(), ingress.clone(), console.clone());
    let caps = caps.clone();
    Arc::new(move || {
        let mut series = node.series();
        series.push(metrics::Series::counter(
            "host_storage_restarts_total",
            "Times this node restarted itself to reopen its storage after a failure, since \
             it was started.",
            u64::from(storage_restarts()),
        ));
        series.extend(ingress.series());
        series.extend(caps.series());
        if let Some(cluster) = &cluster {
            series.extend(cluster.series());
        }
        series.extend(console.series());
        series
    })
}

/// Waits until `other` can be reached; a peer that is not running (yet)
/// is waited for, anything else (a wrong cookie) fails at once.
async fn wait_for_peer(mesh: &Arc<Mesh>, other: &NodeName) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + JOIN_WAIT;
    let mut said = false;
    loop {
        match mesh.connect(other).await {
            Ok(_) => return Ok(()),
            Err(e)
                if (e.is_busy()
                    || matches!(e, DialError::NotFound { .. } | DialError::Connect { .. }))
                    && tokio::time::Instant::now() < deadline =>
            {
                if !said {
                    tracing::info!(node = %mesh.me(), "waiting for {other} to join it: {e}");
                    said = true;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => anyhow::bail!("--join {other}: {e}"),
        }
    }
}

/// Starts this node's part in a cluster: the mesh on `listener`, the name
/// with the port mapper, membership resumed or (`--join`) acquired.
async fn start_cluster(
    node: &Arc<NodeCore>,
    distribution: Distribution,
    listener: TcpListener,
    stop: CancellationToken,
) -> anyhow::Result<Arc<Cluster>> {
    let me = distribution.dialer.me.clone();
    let epmd_port = distribution.dialer.epmd_port;
    let port = listener.local_addr()?.port();
    let mesh = Mesh::new(distribution.dialer);
    let cluster =
        Cluster::start(node.cluster_access(), mesh.clone(), distribution.settings).await?;
    tokio::spawn(mesh.clone().serve(listener));
    if distribution.register {
        let host_addresses = me.resolve_host_async(port).await.unwrap_or_default();
        let listen = epmd::listen_address_for(&host_addresses);
        epmd::register_and_keep(epmd_port, listen, me.alive().to_string(), port, stop)
            .await
            .with_context(|| {
                format!("cannot register {me} with the port mapper on port {epmd_port}")
            })?;
    }
    if let Some(other) = distribution.join {
        if cluster.is_member() {
            tracing::info!(node = %me, "already a member of a cluster: --join {other} is not needed");
        } else {
            wait_for_peer(&mesh, &other).await?;
            let joined = cluster.join(&other).await.map_err(|e| anyhow::anyhow!(e))?;
            tracing::info!(node = %me, "{joined}");
        }
    }
    Ok(cluster)
}
