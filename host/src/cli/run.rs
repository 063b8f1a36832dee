//! `host run`: starts a node, and with distribution on, its part in a
//! cluster.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::dist::DistArgs;
use host::cluster::{Cluster, Settings};
use host::component::{name_from_path, validate_name};
use host::config::{
    Durability, HttpConfig, NodeConfig, ProcessLimits, RestartIntensity, SlotLayout,
    parse_duration, parse_size,
};
use host::console::Console;
use host::dist::NodeName;
use host::dist::epmd;
use host::dist::link::Liveness;
use host::dist::mesh::{DialError, Dialer, Mesh};
use host::http::{self, Ingress};
use host::metrics;
use host::node::{ComponentSource, NodeCore};
use host::observer::Observer;
use host::shutdown::StopSignals;

/// What a node with distribution on is told.
struct Distribution {
    dialer: Dialer,
    listen: SocketAddr,
    settings: Settings,
    join: Option<NodeName>,
}

#[derive(Args)]
pub struct RunArgs {
    /// Components to run, as PATH or NAME=PATH (the name defaults to the file
    /// name without `.wasm`). The first serves HTTP at `/`; each other one
    /// that serves HTTP is mounted at `/NAME/`.
    #[arg(required = true, value_name = "COMPONENT")]
    components: Vec<String>,

    /// This node's name, NAME@HOST (a bare NAME is NAME@ this machine's
    /// host name). It is in every log line and metric; peers and tools find
    /// the node by it, through the port mapper on HOST.
    #[arg(long, env = "RELEASE_NODE", default_value = "node")]
    node: String,

    /// `name`: start distribution (a listener for peers and tools, and the
    /// name registered with this host's port mapper, started if none runs).
    /// `none`: neither; the node can neither join a cluster nor be reached
    /// by tools. (`sname` is taken as `name`.)
    #[arg(long, env = "RELEASE_DISTRIBUTION", default_value = "name",
          value_parser = ["name", "sname", "none"])]
    distribution: String,

    /// Address the distribution listener binds. [default: the address the
    /// host part of --node resolves to, so node_a@127.0.0.1 listens on
    /// loopback only]
    #[arg(long)]
    dist_host: Option<IpAddr>,

    /// Port of the distribution listener (0: any free port; peers learn it
    /// from the port mapper).
    #[arg(long, default_value_t = 0)]
    dist_port: u16,

    /// Join the cluster of NODE (NAME@HOST) at start, as `host connect`
    /// does at run time. A node that is already a member resumes instead.
    #[arg(long, value_name = "NODE")]
    join: Option<String>,

    /// A member silent this long is declared down: its names start on the
    /// other nodes. A node cut off from the majority stops its processes
    /// after half of it, before its names can be taken over.
    #[arg(long, value_parser = parse_duration, default_value = "3s")]
    node_down_after: Duration,

    /// Most voters in the cluster's Raft group (an odd number is kept; the
    /// other members are learners: full replicas that do not vote).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u8).range(1..=5))]
    voters: u8,

    #[command(flatten)]
    dist: DistArgs,

    /// Address HTTP listens on.
    #[arg(long, env = "HOST_HTTP_HOST", default_value = "0.0.0.0")]
    http_host: IpAddr,

    /// Port HTTP listens on (0 picks a free one). Also read from TODO_PORT or
    /// TODO_HTTP_PORT, as in the book. [default: 5454]
    #[arg(long, env = "TODO_PORT")]
    http_port: Option<u16>,

    /// Directory for storage and the compiled-component cache.
    /// [default: data/NODE]
    #[arg(long, env = "HOST_DATA_DIR")]
    data_dir: Option<PathBuf>,

    /// Directory of compiled components (a release ships them there,
    /// compiled for its machine). [default: DATA_DIR/compiled]
    #[arg(long, value_name = "DIR")]
    compile_cache: Option<PathBuf>,

    /// Stop a process idle this long (its state stays in storage). A bare
    /// number is seconds, as the book's TODO_SERVER_EXPIRY.
    #[arg(long, env = "TODO_SERVER_EXPIRY", value_parser = parse_duration, default_value = "60s")]
    idle_timeout: Duration,

    /// Hibernate a process idle this long: its state is handed over
    /// (`hand-over`) and kept by the host, its instance freed; its next
    /// message restores it (`take-over`). `off`: only when another process
    /// needs an instance slot. A process whose hand-over fails expires
    /// instead (its state stays in storage).
    #[arg(long, value_parser = parse_hibernate_after, default_value = "10s")]
    hibernate_after: HibernateAfter,

    /// Bytes of hibernated processes' states kept in memory; past it, states
    /// go to storage (a local column family, never replicated, cleared at
    /// start) and are read back on waking.
    #[arg(long, value_parser = parse_size, default_value = "1GiB")]
    hibernate_memory: usize,

    /// Process instances held at once; the other processes hibernate, and
    /// the idlest are hibernated when a slot is needed. [default: 8192, or
    /// what vm.max_map_count and the address space allow]
    #[arg(long)]
    max_instances: Option<u32>,

    /// Longest a process may spend on one message or on init before it is
    /// ended.
    #[arg(long, value_parser = parse_duration, default_value = "5s")]
    call_deadline: Duration,

    /// Longest an HTTP request may take; past it the client gets 504.
    #[arg(long, value_parser = parse_duration, default_value = "30s")]
    request_deadline: Duration,

    /// Largest HTTP request body; larger ones get 413.
    #[arg(long, value_parser = parse_size, default_value = "1MiB")]
    max_body: usize,

    /// Memory cap of each process and request handler; past it, it is ended.
    #[arg(long, value_parser = parse_size, default_value = "64MiB")]
    process_memory: usize,

    /// Processes alive at once on this node, hibernated ones included (a
    /// hibernated process costs about 1 KiB of host memory plus its state).
    #[arg(long, default_value_t = 1_000_000)]
    max_processes: u32,

    /// Bytes of messages one process's mailbox may hold; past it, calls and
    /// casts to that process are refused (the sender gets `refused`).
    #[arg(long, value_parser = parse_size, default_value = "16MiB")]
    mailbox_limit: usize,

    /// HTTP request handlers running at once; more requests wait.
    #[arg(long, default_value_t = 1024)]
    max_concurrent_requests: u32,

    /// Requests one HTTP handler instance may serve before it is replaced
    /// (1: a fresh instance for every request). An instance that traps or
    /// runs past its deadline is never reused.
    #[arg(long, default_value_t = 128)]
    http_instance_reuse: u32,

    /// Crashes of one process name allowed within --restart-period; one more
    /// and the name is refused for --restart-cooldown.
    #[arg(long, default_value_t = 3)]
    restart_intensity: u32,

    /// Window in which crashes count against --restart-intensity.
    #[arg(long, value_parser = parse_duration, default_value = "5s")]
    restart_period: Duration,

    /// How long a name that crashed too often is refused.
    #[arg(long, value_parser = parse_duration, default_value = "30s")]
    restart_cooldown: Duration,

    /// Fsync every write before acknowledging it (survives power loss;
    /// concurrent writes share an fsync). Without it a write is in the
    /// write-ahead log before it is acknowledged (survives the host being
    /// killed).
    #[arg(long)]
    fsync: bool,

    /// Serve Prometheus metrics on this port (same address as HTTP).
    #[arg(long)]
    metrics_port: Option<u16>,

    /// Let component FROM call processes of component TO (the guest's
    /// `call-component`). Without it a component may call only its own
    /// processes, since a process answers whoever calls it. Repeatable.
    #[arg(long, value_name = "FROM=TO", value_parser = parse_grant)]
    allow_call: Vec<(String, String)>,

    /// Write /tmp/perf-PID.map as guests are compiled, so `perf report`
    /// names guest functions instead of showing bare JIT addresses.
    #[arg(long)]
    perfmap: bool,

    /// Port of the observer, the node's web page of processes, memory and
    /// rates (0: any free port; the ready line and the console's `observer`
    /// say which, with the page's token).
    #[arg(long, default_value_t = 0)]
    observer_port: u16,

    /// Address the observer listens on: loopback by default; reach it from
    /// elsewhere through an SSH tunnel.
    #[arg(long, default_value = "127.0.0.1")]
    observer_host: IpAddr,

    /// Serve no observer page.
    #[arg(long)]
    no_observer: bool,

    /// Attach a console to this node in this terminal (`bin/todo
    /// start_iex`). Leaving it (exit, Ctrl-D, Ctrl-C) stops the node.
    #[arg(long, conflicts_with_all = ["daemon", "eval"])]
    pub console: bool,

    /// Start in the background: return once the node is ready (its ready
    /// line printed), or fail with the tail of its log. Its logs go to
    /// --log-dir (host.log, rotated; stdout.log for what guests print).
    #[arg(long, requires = "log_dir", conflicts_with = "eval")]
    pub daemon: bool,

    /// Where a daemon's logs go.
    #[arg(long, value_name = "DIR")]
    pub log_dir: Option<PathBuf>,

    /// Write log lines to FILE instead of stderr, rotated at 10 MiB (5
    /// old files kept: FILE.1 newest ... FILE.5).
    #[arg(long, value_name = "FILE")]
    pub log_file: Option<PathBuf>,

    /// Run one console command on this node's data and stop, without HTTP
    /// or distribution (`bin/todo eval`). Refused while the node runs.
    /// Data that belongs to a cluster is read, not written.
    #[arg(long, value_name = "COMMAND")]
    eval: Option<String>,
}

impl RunArgs {
    fn node_name(&self) -> anyhow::Result<NodeName> {
        NodeName::parse(&self.node).map_err(|e| anyhow::anyhow!("--node: {e}"))
    }

    /// What distribution needs, unless it is off.
    fn distribution(&self) -> anyhow::Result<Option<Distribution>> {
        if self.distribution == "none" {
            if self.join.is_some() {
                anyhow::bail!("--join needs distribution: drop --distribution none");
            }
            return Ok(None);
        }
        let me = self.node_name()?;
        let settings = Settings {
            node_down_after: self.node_down_after.max(Duration::from_millis(200)),
            max_voters: usize::from(self.voters),
            write_timeout: (self.node_down_after * 2).max(Duration::from_secs(1)),
        };
        let liveness = Liveness {
            ping_every: settings.tick(),
            silence_limit: settings.node_down_after,
        };
        let host = match self.dist_host {
            Some(host) => host,
            None => me
                .resolve_host(0)
                .map_err(|e| anyhow::anyhow!("{e}: give --dist-host"))?[0]
                .ip(),
        };
        let join = match &self.join {
            Some(other) => {
                Some(NodeName::parse(other).map_err(|e| anyhow::anyhow!("--join: {e}"))?)
            }
            None => None,
        };
        Ok(Some(Distribution {
            dialer: self.dist.dialer(me, liveness)?,
            listen: SocketAddr::new(host, self.dist_port),
            settings,
            join,
        }))
    }

    fn node_config(&self) -> anyhow::Result<NodeConfig> {
        let port = match self.http_port {
            Some(port) => port,
            None => match std::env::var("TODO_HTTP_PORT") {
                Ok(text) => text
                    .trim()
                    .parse()
                    .with_context(|| format!("TODO_HTTP_PORT=`{text}` is not a port number"))?,
                Err(_) => HttpConfig::default().port,
            },
        };
        let name = self.node_name()?;
        Ok(NodeConfig {
            node_name: name.to_string(),
            data_dir: self
                .data_dir
                .clone()
                .unwrap_or_else(|| PathBuf::from("data").join(name.alive())),
            http: HttpConfig {
                host: self.http_host,
                port,
                max_body_bytes: self.max_body,
                request_deadline: self.request_deadline,
                max_concurrent_requests: self.max_concurrent_requests.max(1),
                instance_reuse: self.http_instance_reuse.max(1),
            },
            limits: ProcessLimits {
                idle_timeout: self.idle_timeout,
                hibernate_after: self.hibernate_after.0,
                hibernated_state_memory: self.hibernate_memory,
                max_instances: self.max_instances,
                call_deadline: self.call_deadline,
                max_memory_bytes: self.process_memory,
                max_processes: self.max_processes.max(1),
                max_mailbox_bytes: self.mailbox_limit,
            },
            restarts: RestartIntensity {
                max_restarts: self.restart_intensity,
                period: self.restart_period,
                cooldown: self.restart_cooldown,
            },
            durability: if self.fsync {
                Durability::Fsync
            } else {
                Durability::Wal
            },
            metrics_addr: self.metrics_port.map(|port| (self.http_host, port)),
            perfmap: self.perfmap,
            compile_cache: self.compile_cache.clone(),
            call_grants: self.allow_call.clone(),
            slot_layout: SlotLayout::default(),
        })
    }

    fn sources(&self) -> anyhow::Result<Vec<ComponentSource>> {
        self.components
            .iter()
            .map(|spec| {
                let (name, path) = match spec.split_once('=') {
                    Some((name, path)) => (name.to_string(), PathBuf::from(path)),
                    None => (name_from_path(spec.as_ref()), PathBuf::from(spec)),
                };
                validate_name(&name)
                    .with_context(|| format!("in `{spec}`: name it with NAME=PATH"))?;
                Ok(ComponentSource { name, path })
            })
            .collect()
    }
}

/// `--hibernate-after`: a duration, or never by the clock.
#[derive(Debug, Clone, Copy)]
struct HibernateAfter(Option<Duration>);

fn parse_hibernate_after(text: &str) -> Result<HibernateAfter, String> {
    match text.trim() {
        "off" | "never" => Ok(HibernateAfter(None)),
        text => parse_duration(text).map(|after| HibernateAfter(Some(after))),
    }
}

/// `FROM=TO`, two component names.
fn parse_grant(text: &str) -> Result<(String, String), String> {
    let (from, to) = text
        .split_once('=')
        .ok_or_else(|| format!("`{text}` is not FROM=TO"))?;
    for name in [from, to] {
        validate_name(name).map_err(|e| e.to_string())?;
    }
    Ok((from.to_string(), to.to_string()))
}

/// Opens the node, compiling components off the async workers.
async fn start_node(
    config: NodeConfig,
    sources: Vec<ComponentSource>,
) -> anyhow::Result<Arc<NodeCore>> {
    tokio::task::spawn_blocking(move || NodeCore::start(config, &sources))
        .await
        .context("node start-up panicked")?
}

/// `--eval`: one console command on the node's data, no HTTP, no
/// distribution; the exit status says whether it succeeded.
async fn eval(args: &RunArgs, command: &str) -> anyhow::Result<()> {
    let node = start_node(args.node_config()?, args.sources()?).await?;
    if host::cluster::belongs_to_cluster(node.storage()) {
        node.storage().refuse_writes_outside_cluster();
    }
    let console = Console::new(node.clone(), None, CancellationToken::new());
    let ok = super::console::run_once(&console, command).await;
    node.stop_processes(node.config().limits.call_deadline * 2)
        .await;
    node.storage().flush()?;
    if ok {
        Ok(())
    } else {
        Err(anyhow::anyhow!("`{command}` failed"))
    }
}

pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    if let Some(command) = &args.eval {
        return eval(&args, command).await;
    }
    let config = args.node_config()?;
    let sources = args.sources()?;
    let distribution = args.distribution()?;
    let stop_signals = StopSignals::install_with(!args.console)?;
    let http_addr = SocketAddr::new(config.http.host, config.http.port);
    let http_listener = http::bind(http_addr, "HTTP").await?;
    let metrics_listener = match config.metrics_addr {
        Some((host, port)) => Some(http::bind(SocketAddr::new(host, port), "metrics").await?),
        None => None,
    };
    let observer_listener = if args.no_observer {
        None
    } else {
        let addr = SocketAddr::new(args.observer_host, args.observer_port);
        Some(http::bind(addr, "the observer").await?)
    };
    let dist_listener = match &distribution {
        Some(distribution) => Some(http::bind(distribution.listen, "distribution").await?),
        None => None,
    };
    let drain = config.http.request_deadline;
    let call_deadline = config.limits.call_deadline;
    let node = start_node(config, sources).await?;
    for component in node.components() {
        tracing::info!(
            node = %node.name(),
            component = %component.name(),
            code = %component.code_origin(),
            processes = component.process_pre().is_some(),
            http = component.http_pre().is_some(),
            "component loaded"
        );
    }
    let stop = CancellationToken::new();
    let (cluster, dist_line) = match (distribution, dist_listener) {
        (Some(distribution), Some(listener)) => {
            let addr = listener.local_addr()?;
            let cluster = start_cluster(&node, distribution, listener, stop.clone()).await?;
            (Some(cluster), format!(", distribution on {addr}"))
        }
        _ => (None, String::new()),
    };
    let console_stop = CancellationToken::new();
    let console = Console::new(node.clone(), cluster.clone(), console_stop.clone());
    if let Some(cluster) = &cluster {
        cluster.serve_console(console.clone());
    }

    let mut servers = Vec::new();
    let ingress = Ingress::new(node.clone());
    let metrics_line = match metrics_listener {
        Some(listener) => {
            let addr = listener.local_addr()?;
            let ingress = ingress.clone();
            let service = move |request| metrics::handle(ingress.clone(), request);
            servers.push(tokio::spawn(http::serve(
                listener,
                service,
                stop.clone(),
                drain,
            )));
            format!(", metrics on http://{addr}/metrics")
        }
        None => String::new(),
    };
    let observer_line = match observer_listener {
        Some(listener) => {
            let addr = listener.local_addr()?;
            let observer = Observer::new(console.clone(), stop.clone())?;
            let url = format!("http://{addr}/?token={}", observer.token());
            console.set_observer_url(url.clone());
            let service = move |request| Arc::clone(&observer).handle(request);
            servers.push(tokio::spawn(http::serve(
                listener,
                service,
                stop.clone(),
                drain,
            )));
            format!(", observer on {url}")
        }
        None => String::new(),
    };
    let http_addr = http_listener.local_addr()?;
    let service = move |request| Arc::clone(&ingress).handle(request);
    servers.push(tokio::spawn(http::serve(
        http_listener,
        service,
        stop.clone(),
        drain,
    )));
    println!(
        "node {}: HTTP listening on http://{http_addr}{metrics_line}{dist_line}{observer_line}",
        node.name()
    );
    super::daemon::ready();
    if args.console {
        let (console, node_name, stop) = (
            console.clone(),
            node.name().to_string(),
            console_stop.clone(),
        );
        tokio::spawn(async move {
            if let Err(e) = super::console::attach_local(console, node_name).await {
                eprintln!("error: {e:#}");
            }
            stop.cancel();
        });
    }

    let left_cluster = async {
        match &cluster {
            Some(cluster) => cluster.stop_requested().await,
            None => std::future::pending().await,
        }
    };
    let why = tokio::select! {
        signal = stop_signals.recv() => signal,
        () = left_cluster => "left its cluster",
        () = console_stop.cancelled() => "stop asked from the console",
    };
    tracing::info!(node = %node.name(), "{why}: stopping; in-flight requests finish first");
    if let Some(cluster) = &cluster
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
    node.stop_processes(call_deadline * 2).await;
    if let Some(cluster) = &cluster {
        cluster.shut_down().await;
    }
    node.storage().flush()?;
    tracing::info!(node = %node.name(), "stopped");
    Ok(())
}

/// How long `--join` waits for its peer to come up (nodes started together
/// by a supervisor come up in any order).
const JOIN_WAIT: Duration = Duration::from_secs(60);

/// Waits until `other` can be reached; a peer that is not running (yet)
/// is waited for, anything else (a wrong cookie) fails at once.
async fn wait_for_peer(mesh: &Arc<Mesh>, other: &NodeName) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + JOIN_WAIT;
    let mut said = false;
    loop {
        match mesh.connect(other).await {
            Ok(_) => return Ok(()),
            Err(e @ (DialError::NotFound { .. } | DialError::Connect { .. }))
                if tokio::time::Instant::now() < deadline =>
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
    let cluster = Cluster::start(node.clone(), mesh.clone(), distribution.settings).await?;
    tokio::spawn(mesh.clone().serve(listener));
    epmd::register_and_keep(epmd_port, me.alive().to_string(), port, stop)
        .await
        .with_context(|| {
            format!("cannot register {me} with the port mapper on port {epmd_port}")
        })?;
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
