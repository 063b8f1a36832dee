//! `host`: the command line. `host run` starts a node.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

use host::component::{name_from_path, validate_name};
use host::config::{
    Durability, HttpConfig, NodeConfig, ProcessLimits, RestartIntensity, parse_duration, parse_size,
};
use host::http::{self, Ingress};
use host::metrics;
use host::node::{ComponentSource, NodeCore};
use host::shutdown::StopSignals;

/// mimalloc instead of glibc's malloc: the request path allocates many small,
/// short-lived buffers across threads, where glibc spent about 6% of the
/// host's time (BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "host",
    version,
    about = "Runs WebAssembly components as supervised processes, the Erlang/OTP way",
    long_about = "Runs WebAssembly components as supervised processes, the Erlang/OTP way.\n\n\
        Each process is its own component instance with a mailbox, started on the first \
        call to its name, restarted from storage after a crash, stopped when idle. \
        Data lives in RocksDB under --data-dir. Logs go to stderr; set RUST_LOG \
        (e.g. RUST_LOG=debug, RUST_LOG=guest=debug) to see more."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start a node running the given components, in the foreground.
    ///
    /// Prints one line on stdout once HTTP is ready. SIGINT or SIGTERM stops
    /// it gracefully: no new requests, in-flight ones finish, storage is
    /// flushed, exit status 0.
    Run(RunArgs),
}

#[derive(Args)]
struct RunArgs {
    /// Components to run, as PATH or NAME=PATH (the name defaults to the file
    /// name without `.wasm`). The first serves HTTP at `/`; each other one
    /// that serves HTTP is mounted at `/NAME/`.
    #[arg(required = true, value_name = "COMPONENT")]
    components: Vec<String>,

    /// Name of this node, shown in logs and metrics.
    #[arg(long, env = "HOST_NODE", default_value = "node")]
    node: String,

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

    /// Stop a process idle this long (its state stays in storage). A bare
    /// number is seconds, as the book's TODO_SERVER_EXPIRY.
    #[arg(long, env = "TODO_SERVER_EXPIRY", value_parser = parse_duration, default_value = "60s")]
    idle_timeout: Duration,

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

    /// Processes alive at once on this node.
    #[arg(long, default_value_t = 10_000)]
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
}

impl RunArgs {
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
        Ok(NodeConfig {
            node_name: self.node.clone(),
            data_dir: self
                .data_dir
                .clone()
                .unwrap_or_else(|| PathBuf::from("data").join(&self.node)),
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
            call_grants: self.allow_call.clone(),
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

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| EnvFilter::new("info,cranelift=warn,wasmtime=warn")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = match cli.command {
        Command::Run(args) => runtime.block_on(run(args)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    let config = args.node_config()?;
    let sources = args.sources()?;
    let stop_signals = StopSignals::install()?;
    let http_addr = SocketAddr::new(config.http.host, config.http.port);
    let http_listener = http::bind(http_addr, "HTTP").await?;
    let metrics_listener = match config.metrics_addr {
        Some((host, port)) => Some(http::bind(SocketAddr::new(host, port), "metrics").await?),
        None => None,
    };
    let drain = config.http.request_deadline;
    let call_deadline = config.limits.call_deadline;
    // Compiling components is CPU work: keep it off the async workers.
    let node = tokio::task::spawn_blocking(move || NodeCore::start(config, &sources))
        .await
        .context("node start-up panicked")??;
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
    let http_addr = http_listener.local_addr()?;
    let service = move |request| Arc::clone(&ingress).handle(request);
    servers.push(tokio::spawn(http::serve(
        http_listener,
        service,
        stop.clone(),
        drain,
    )));
    println!(
        "node {}: HTTP listening on http://{http_addr}{metrics_line}",
        node.name()
    );

    let signal = stop_signals.recv().await;
    tracing::info!(node = %node.name(), "{signal}: stopping; in-flight requests finish first");
    stop.cancel();
    for server in servers {
        let _ = server.await;
    }
    node.stop_processes(call_deadline * 2).await;
    node.storage().flush()?;
    tracing::info!(node = %node.name(), "stopped");
    Ok(())
}
