//! `host`: the command line. `host run` starts a node; `host remote`,
//! `host rpc`, `host stop`, `host pid`, `host nodes`, `host connect` and
//! `host leave` talk to a running one; `host epmd` is the port mapper;
//! `host release` builds a release directory.

mod cli;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use host::logs::LogSink;
use tracing_subscriber::EnvFilter;

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
        Data lives in RocksDB under --data-dir. Nodes named NAME@HOST and sharing a \
        cookie form a cluster: one registry of names, storage replicated through Raft. \
        Logs go to stderr; set RUST_LOG (e.g. RUST_LOG=debug, RUST_LOG=guest=debug) to \
        see more."
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
    /// it gracefully: a member of a cluster leaves it first (its names move
    /// to the other nodes), then no new requests, in-flight ones finish,
    /// storage is flushed, exit status 0.
    #[command(args_override_self = true)]
    Run(Box<cli::run::RunArgs>),
    /// List the nodes of the cluster, as NODE sees them.
    Nodes(cli::tools::NodesArgs),
    /// Make NODE join the cluster of OTHER (as `Node.connect`): joining one
    /// member joins them all.
    Connect(cli::tools::ConnectArgs),
    /// Make NODE leave its cluster gracefully (its names move to the other
    /// nodes, its data stays as a copy), then stop.
    Leave(cli::tools::LeaveArgs),
    /// The port mapper: maps node names to distribution ports on this host
    /// (Erlang's EPMD protocol). Nodes start it themselves when none runs.
    Epmd(cli::tools::EpmdArgs),
    /// Attach an interactive console to running NODE (as `bin/todo
    /// remote`): inspect processes, call components' functions, trace.
    /// Leaving it (exit, Ctrl-D, Ctrl-C) leaves the node running.
    Remote(cli::console::RemoteArgs),
    /// Run one console command on running NODE and print what it says
    /// (as `bin/todo rpc`); the exit status says whether it succeeded.
    Rpc(cli::console::RpcArgs),
    /// Swap COMPONENT of running NODE to the version in PATH while its
    /// processes keep their state (the console's `swap`, once): checked and
    /// dry-run first; the exit status says whether it started (with
    /// --commit: whether it ended committed). On a member of a cluster it
    /// is the cluster's: every node swaps, one at a time, and a node that
    /// joins or restarts later runs the committed version.
    Swap(cli::console::SwapArgs),
    /// Stop NODE gracefully and return once it is gone (as `bin/todo stop`).
    Stop(cli::console::NodeArgs),
    /// Print the operating-system process id of running NODE.
    Pid(cli::console::NodeArgs),
    /// Build a release: a directory that runs the given components on a
    /// machine without the toolchain, with `bin/NAME start | daemon |
    /// remote | stop ...`, as `mix release`.
    Release(cli::release::ReleaseArgs),
    /// Print the value an args file (a release's vm.args) gives an option,
    /// read as `host run --args-file` reads it (used by bin/NAME).
    VmArg(cli::args_file::VmArgArgs),
}

/// A tool that prints what it gets and exits (not a node, a port mapper or
/// an interactive console).
fn prints_and_exits(command: &Command) -> bool {
    matches!(
        command,
        Command::Nodes(_)
            | Command::Connect(_)
            | Command::Leave(_)
            | Command::Rpc(_)
            | Command::Swap(_)
            | Command::Stop(_)
            | Command::Pid(_)
            | Command::Release(_)
            | Command::VmArg(_)
    )
}

fn main() -> ExitCode {
    let args = match cli::args_file::expand(std::env::args_os().collect()) {
        Ok(args) => args,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let cli = Cli::parse_from(args.iter());
    if prints_and_exits(&cli.command) {
        // A tool whose reader went away (`host rpc ... | head`) ends as
        // other Unix tools do, by SIGPIPE, rather than panicking on a
        // write to a closed pipe. Rust ignores SIGPIPE; the servers keep
        // ignoring it (a peer that goes away must never kill a node).
        // SAFETY: at the start of main, before any thread: resetting a
        // signal's disposition to its default is async-signal-safe.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    // Before any thread: the soft open-file limit up to the hard one, so
    // that a node's budget of descriptors is as large as it may be.
    let file_limit = host::budget::raise_file_limit();
    let mut log_sink = LogSink::Stderr;
    if let Command::Run(run) = &cli.command {
        if run.daemon
            && let Some(log_dir) = &run.log_dir
        {
            // The node gets the command line as given, not expanded: an
            // args file's values (a cookie) stay out of its argv, which
            // every user of the machine can read.
            return cli::daemon::start(std::env::args_os().collect(), log_dir);
        }
        if let Some(file) = &run.log_file {
            match LogSink::file(file) {
                Ok(sink) => log_sink = sink,
                Err(e) => {
                    eprintln!("error: cannot write the log to {}: {e}", file.display());
                    return ExitCode::FAILURE;
                }
            }
        }
    }
    let ansi =
        matches!(log_sink, LogSink::Stderr) && std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| {
                EnvFilter::new("info,cranelift=warn,wasmtime=warn,openraft=warn")
            }),
        )
        .with_writer(log_sink)
        .with_ansi(ansi)
        .init();
    if matches!(cli.command, Command::Run(_) | Command::Epmd(_))
        && file_limit.now > file_limit.before
    {
        tracing::info!(
            "open-file limit raised from {} to {} (the hard limit)",
            file_limit.before,
            file_limit.now
        );
    }
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
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Run(args) => cli::run::run(*args).await,
            Command::Nodes(args) => cli::tools::nodes(args).await,
            Command::Connect(args) => cli::tools::connect(args).await,
            Command::Leave(args) => cli::tools::leave(args).await,
            Command::Epmd(args) => cli::tools::epmd(args).await,
            Command::Remote(args) => cli::console::remote(args).await,
            Command::Rpc(args) => cli::console::rpc(args).await,
            Command::Swap(args) => cli::console::swap(args).await,
            Command::Stop(args) => cli::console::stop(args).await,
            Command::Pid(args) => cli::console::pid(args).await,
            Command::Release(args) => cli::release::build(args).await,
            Command::VmArg(args) => cli::args_file::print_value(&args),
        }
    });
    // A console's line editor blocks a thread in `readline`: the node must
    // not wait for a key press to exit once it has stopped.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
