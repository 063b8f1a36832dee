//! `host run`: starts a node, and with distribution on, its part in a
//! cluster.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use anyhow::Context as _;
use clap::Args;
use tokio_util::sync::CancellationToken;

use super::distribution::LinkArgs;
use host::boot::{
    self, Distribution, Ending, Listeners, RunningNode, STORAGE_RESTARTS_ENV, storage_restarts,
};
use host::cluster::Settings;
use host::config::{
    Durability, DurationArg, HibernateAfterArg, HttpConfig, InstanceLayout, NodeConfig,
    ProcessLimits, RestartIntensity, SizeArg,
};
use host::console::Console;
use host::distribution::NodeName;
use host::distribution::link::Liveness;
use host::http;
use host::node::ComponentSource;
use host::shutdown::StopSignals;
use host::wasm::{name_from_path, validate_name};

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
    #[arg(long, default_value_t = DurationArg(Settings::default().node_down_after))]
    node_down_after: DurationArg,

    /// Most voters in the cluster's Raft group (an odd number is kept; the
    /// other members are learners: full replicas that do not vote).
    #[arg(long, default_value_t = Settings::default().max_voters as u8,
          value_parser = clap::value_parser!(u8).range(1..=5))]
    voters: u8,

    #[command(flatten)]
    link: LinkArgs,

    /// Address HTTP listens on.
    #[arg(long, env = "HOST_HTTP_HOST", default_value_t = HttpConfig::default().host)]
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
    #[arg(long, env = "TODO_SERVER_EXPIRY",
          default_value_t = DurationArg(ProcessLimits::default().idle_timeout))]
    idle_timeout: DurationArg,

    /// Hibernate a process idle this long: its state is handed over
    /// (`hand-over`) and kept by the host, its instance freed; its next
    /// message restores it (`take-over`). `off`: only when another process
    /// needs its instance. A process whose hand-over fails expires
    /// instead (its state stays in storage).
    #[arg(long, default_value_t = HibernateAfterArg(ProcessLimits::default().hibernate_after))]
    hibernate_after: HibernateAfterArg,

    /// Bytes of hibernated processes' states kept in memory; past it, states
    /// go to storage (a local column family, never replicated, cleared at
    /// start) and are read back on waking.
    #[arg(long, default_value_t = SizeArg(ProcessLimits::default().hibernated_state_memory))]
    hibernate_memory: SizeArg,

    /// Process instances held at once; the other processes hibernate, and
    /// the idlest are hibernated when an instance is needed. [default: 8192, or
    /// what vm.max_map_count and the address space allow]
    #[arg(long)]
    max_instances: Option<u32>,

    /// Longest a process may spend on one message or on init before it is
    /// ended.
    #[arg(long, default_value_t = DurationArg(ProcessLimits::default().call_deadline))]
    call_deadline: DurationArg,

    /// Longest an HTTP request may take; past it the client gets 504.
    #[arg(long, default_value_t = DurationArg(HttpConfig::default().request_deadline))]
    request_deadline: DurationArg,

    /// Largest HTTP request body; larger ones get 413.
    #[arg(long, default_value_t = SizeArg(HttpConfig::default().max_body_bytes))]
    max_body: SizeArg,

    /// Memory cap of each process and request handler; past it, it is ended.
    #[arg(long, default_value_t = SizeArg(ProcessLimits::default().max_memory_bytes))]
    process_memory: SizeArg,

    /// Processes alive at once on this node, hibernated ones included (a
    /// hibernated process costs about 1 KiB of host memory plus its state).
    #[arg(long, default_value_t = ProcessLimits::default().max_processes)]
    max_processes: u32,

    /// Bytes of messages one process's mailbox may hold; past it, calls and
    /// casts to that process are refused (the sender gets `refused`).
    #[arg(long, default_value_t = SizeArg(ProcessLimits::default().max_mailbox_bytes))]
    mailbox_limit: SizeArg,

    /// HTTP request handlers running at once; more requests wait.
    #[arg(long, default_value_t = HttpConfig::default().max_concurrent_requests)]
    max_concurrent_requests: u32,

    /// What HTTP request handlers' memories may add up to, so that a burst
    /// of requests for large answers cannot take the machine's memory; a
    /// handler that would grow past it is ended (500, outcome unknown).
    #[arg(long, default_value_t = SizeArg(HttpConfig::default().max_handler_memory))]
    http_handler_memory: SizeArg,

    /// Requests one HTTP handler instance may serve before it is replaced
    /// (1: a fresh instance for every request). An instance that traps or
    /// runs past its deadline is never reused.
    #[arg(long, default_value_t = HttpConfig::default().instance_reuse)]
    http_instance_reuse: u32,

    /// Crashes of one process name allowed within --restart-period; one more
    /// and the name is refused for --restart-cooldown.
    #[arg(long, default_value_t = RestartIntensity::default().max_restarts)]
    restart_intensity: u32,

    /// Window in which crashes count against --restart-intensity.
    #[arg(long, default_value_t = DurationArg(RestartIntensity::default().period))]
    restart_period: DurationArg,

    /// How long a name that crashed too often is refused.
    #[arg(long, default_value_t = DurationArg(RestartIntensity::default().cooldown))]
    restart_cooldown: DurationArg,

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

    /// What distribution needs, and the address it listens on, unless it
    /// is off.
    fn distribution(&self) -> anyhow::Result<Option<(Distribution, SocketAddr)>> {
        if self.distribution == "none" {
            if self.join.is_some() {
                anyhow::bail!("--join needs distribution: drop --distribution none");
            }
            return Ok(None);
        }
        let me = self.node_name()?;
        let settings = Settings::new(self.node_down_after.0, usize::from(self.voters));
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
        let dialer = self.link.dialer(me, liveness)?;
        if let Some(why) = dialer.cookie.weakness() {
            tracing::warn!(
                "the cookie is weak: {why}. Anyone who guesses it can run code on every node; \
                 use a long random one (the cookie file a node creates has 20 random letters)"
            );
        }
        let distribution = Distribution {
            dialer,
            settings,
            join,
            register: true,
        };
        Ok(Some((distribution, SocketAddr::new(host, self.dist_port))))
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
                max_body_bytes: self.max_body.0,
                request_deadline: self.request_deadline.0,
                max_concurrent_requests: self.max_concurrent_requests.max(1),
                max_handler_memory: self.http_handler_memory.0,
                instance_reuse: self.http_instance_reuse.max(1),
            },
            limits: ProcessLimits {
                idle_timeout: self.idle_timeout.0,
                hibernate_after: self.hibernate_after.0,
                hibernated_state_memory: self.hibernate_memory.0,
                max_instances: self.max_instances,
                call_deadline: self.call_deadline.0,
                max_memory_bytes: self.process_memory.0,
                max_processes: self.max_processes.max(1),
                max_mailbox_bytes: self.mailbox_limit.0,
            },
            restarts: RestartIntensity {
                max_restarts: self.restart_intensity,
                period: self.restart_period.0,
                cooldown: self.restart_cooldown.0,
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
            instance_layout: InstanceLayout::default(),
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

/// `--eval`: one console command on the node's data, no HTTP, no
/// distribution; the exit status says whether it succeeded.
async fn eval(args: &RunArgs, command: &str) -> anyhow::Result<()> {
    let node = boot::open_outside_cluster(args.node_config()?, args.sources()?).await?;
    let console = Console::new(node.operator(), None, CancellationToken::new());
    let ok = super::console::run_once(&console, command).await;
    boot::close(&node).await?;
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
    // Every port first: a port in use fails before anything is compiled.
    let listeners = Listeners {
        http: Some(http::bind(SocketAddr::new(config.http.host, config.http.port), "HTTP").await?),
        metrics: match config.metrics_addr {
            Some((host, port)) => Some(http::bind(SocketAddr::new(host, port), "metrics").await?),
            None => None,
        },
        observer: if args.no_observer {
            None
        } else {
            let addr = SocketAddr::new(args.observer_host, args.observer_port);
            Some(http::bind(addr, "the observer").await?)
        },
        distribution: match &distribution {
            Some((_, listen)) => Some(http::bind(*listen, "distribution").await?),
            None => None,
        },
    };
    let distribution = distribution.map(|(distribution, _)| distribution);
    let running = RunningNode::start(config, sources, distribution, listeners).await?;
    let restarts = storage_restarts();
    if restarts > 0 {
        tracing::warn!(
            "started again to reopen storage after it failed ({restarts} such restarts since \
             the node was started)"
        );
    }
    println!("{}", running.ready_line());
    super::daemon::ready();
    if args.console {
        let (console, node_name, stop) = (
            running.console().clone(),
            running.node().name().to_string(),
            running.console_stop(),
        );
        tokio::spawn(async move {
            if let Err(e) = super::console::attach_local(console, node_name).await {
                eprintln!("error: {e:#}");
            }
            stop.cancel();
        });
    }
    let signal = stop_signals.recv();
    tokio::pin!(signal);
    match running.until_stopped(&mut signal).await {
        Ending::Stop(why) => running.stop(why).await,
        Ending::RestartToReopenStorage(failure) => {
            running.stop_to_restart(&failure).await;
            // A signal that came while the node was stopping asked for a
            // stop, not a restart.
            if let Some(why) = futures_util::FutureExt::now_or_never(&mut signal) {
                tracing::info!("{why} while restarting to reopen storage: stopped instead");
                return Ok(());
            }
            Err(restart_in_place())
        }
    }
}

/// Starts this node again in this very process: `exec` of the same binary
/// with the same arguments and environment, so the pid stays (a release's
/// pid file and whoever supervises the node still see it), plus the count
/// of such restarts. Returns only if it could not.
fn restart_in_place() -> anyhow::Error {
    use std::os::unix::process::CommandExt as _;
    let mut args = std::env::args_os();
    let name = args.next().unwrap_or_else(|| "host".into());
    // /proc/self/exe runs this binary even when its file was replaced.
    let error = std::process::Command::new("/proc/self/exe")
        .arg0(name)
        .args(args)
        .env(STORAGE_RESTARTS_ENV, (storage_restarts() + 1).to_string())
        .exec();
    anyhow::anyhow!("cannot restart to reopen storage ({error}): start the node again")
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        run: RunArgs,
    }

    #[test]
    fn every_default_of_host_run_is_the_configs() {
        let cli = Cli::try_parse_from(["host", "guest.wasm"]).expect("parsed");
        let config = cli.run.node_config().expect("a config");
        let defaults = NodeConfig::new(&config.node_name, config.data_dir.clone());
        assert_eq!(config, defaults);
        let settings = Settings::new(cli.run.node_down_after.0, usize::from(cli.run.voters));
        assert_eq!(settings, Settings::default());
    }

    #[test]
    fn defaults_that_help_writes_in_words_are_the_real_ones() {
        use clap::CommandFactory;
        let help = Cli::command().render_long_help().to_string();
        let port = format!("[default: {}]", HttpConfig::default().port);
        let instances = format!("[default: {},", host::wasm::DEFAULT_PROCESS_INSTANCES);
        for default in [port, instances] {
            assert!(help.contains(&default), "--help says `{default}`:\n{help}");
        }
    }
}
