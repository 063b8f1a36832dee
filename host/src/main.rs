//! `host`: the command line. `host run` starts a node; `host nodes`,
//! `host connect` and `host leave` talk to a running one; `host epmd` is
//! the port mapper.

mod cli;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| {
                EnvFilter::new("info,cranelift=warn,wasmtime=warn,openraft=warn")
            }),
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
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Run(args) => cli::run::run(*args).await,
            Command::Nodes(args) => cli::tools::nodes(args).await,
            Command::Connect(args) => cli::tools::connect(args).await,
            Command::Leave(args) => cli::tools::leave(args).await,
            Command::Epmd(args) => cli::tools::epmd(args).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
