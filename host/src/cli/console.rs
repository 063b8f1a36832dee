//! The console's client side: `host remote` (an interactive console on a
//! running node, over a hidden link), `host rpc` (one command), `host
//! stop` and `host pid`, and the console `host run --console` attaches to
//! its own node (`start_iex`).
//!
//! The line editor (rustyline) blocks, so the interactive loop runs on a
//! blocking thread and reaches the node with `Handle::block_on`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use rustyline::completion::{Completer, Pair};
use rustyline::error::ReadlineError;
use rustyline::highlight::Highlighter;
use rustyline::hint::Hinter;
use rustyline::history::FileHistory;
use rustyline::validate::Validator;
use rustyline::{Context, Editor, Helper};
use tokio::runtime::Handle;

use super::distribution::LinkArgs;
use host::cluster::tool;
use host::cluster::wire::{ToolReply, ToolRequest};
use host::console::protocol::{self, ConsoleReply, ConsoleRequest};
use host::console::{Console, SessionId, quoted};
use host::distribution::NodeName;
use host::distribution::link::Link;

/// Longest a console waits for one answer (a call may start a process and
/// wait for the cluster).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(60);

/// Longest `host swap` waits for its answer: with `--commit`, a cluster's
/// rollout may take its nodes' sweeps one after another (the node gives up
/// waiting after 15 minutes).
const SWAP_ANSWER_TIMEOUT: Duration = Duration::from_secs(16 * 60);

/// Longest `host stop` waits for the node to be gone.
const STOP_WAIT: Duration = Duration::from_secs(120);

#[derive(Args)]
pub struct RemoteArgs {
    /// The node to attach to, NAME@HOST.
    #[arg(env = "RELEASE_NODE")]
    node: String,
    /// File the console's history is kept in. [default: ~/.host_history]
    #[arg(long, env = "HOST_HISTORY")]
    history: Option<PathBuf>,
    #[command(flatten)]
    link: LinkArgs,
}

#[derive(Args)]
pub struct RpcArgs {
    /// The node to ask (NAME@HOST) and the console command, e.g. `host rpc
    /// node_a@127.0.0.1 ps` or `... 'todo.entries("production_list")'`.
    /// The node may be left out when --node or RELEASE_NODE names it.
    #[arg(value_name = "[NODE] COMMAND", num_args = 1..=2, required = true)]
    words: Vec<String>,
    /// The node to ask, when the command is given alone.
    #[arg(long, env = "RELEASE_NODE")]
    node: Option<String>,
    #[command(flatten)]
    link: LinkArgs,
}

impl RpcArgs {
    /// The node and the command: `NODE COMMAND`, or `COMMAND` with the node
    /// from --node or RELEASE_NODE.
    fn node_and_command(&self) -> anyhow::Result<(&str, &str)> {
        match (self.words.as_slice(), &self.node) {
            ([node, command], _) => Ok((node, command)),
            ([command], Some(node)) => Ok((node, command)),
            ([_], None) => anyhow::bail!(
                "which node? `host rpc NODE COMMAND` (or --node NODE, or RELEASE_NODE)"
            ),
            _ => anyhow::bail!("`host rpc NODE COMMAND`: quote a command of several words"),
        }
    }
}

#[derive(Args)]
pub struct NodeArgs {
    /// The node, NAME@HOST.
    #[arg(env = "RELEASE_NODE")]
    node: String,
    #[command(flatten)]
    link: LinkArgs,
}

/// Where a console's requests go.
#[derive(Clone)]
pub enum Transport {
    Remote(Arc<Link>),
    Local(Arc<Console>, SessionId),
}

impl Transport {
    async fn ask(&self, request: ConsoleRequest) -> Result<ConsoleReply, String> {
        self.ask_within(request, ANSWER_TIMEOUT).await
    }

    async fn ask_within(
        &self,
        request: ConsoleRequest,
        timeout: Duration,
    ) -> Result<ConsoleReply, String> {
        match self {
            Transport::Local(console, id) => Ok(console.serve(*id, request).await),
            Transport::Remote(link) => {
                let body = protocol::encode(&request);
                match tool::request_on(link, ToolRequest::Console(body), timeout).await? {
                    ToolReply::Console(reply) => protocol::decode(&reply),
                    ToolReply::Failed(reason) => Err(reason),
                    other => Err(format!("unexpected answer: {other:?}")),
                }
            }
        }
    }

    async fn run(&self, line: &str) -> Result<ConsoleReply, String> {
        self.ask(ConsoleRequest::Run {
            line: line.to_string(),
        })
        .await
    }
}

/// A hidden link to `node`, as a tool named after this process.
async fn connect(node: &str, link: &LinkArgs) -> anyhow::Result<(NodeName, Arc<Link>)> {
    let node = NodeName::parse(node).map_err(|e| anyhow::anyhow!(e))?;
    let dialer = link.tool_dialer("console", Duration::from_secs(10))?;
    let link = tool::connect(&dialer, &node)
        .await
        .map_err(|e| anyhow::anyhow!(e))?;
    Ok((node, link))
}

/// Prints what a command's reply says, then, while a trace it started
/// runs, what the trace prints; Ctrl-C stops the trace. Returns whether
/// the command succeeded.
async fn print_reply(transport: &Transport, reply: ConsoleReply) -> bool {
    // What failed goes to stderr: `rpc`'s stdout is only what succeeded.
    if reply.ok {
        print!("{}", reply.text);
    } else {
        eprint!("{}", reply.text);
    }
    let mut live = reply.live;
    while live {
        tokio::select! {
            output = transport.ask(ConsoleRequest::Output) => match output {
                Ok(output) => {
                    print!("{}", output.text);
                    live = output.live;
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    return false;
                }
            },
            _ = tokio::signal::ctrl_c() => {
                if let Ok(reply) = transport.run("untrace").await {
                    print!("{}", reply.text);
                }
            }
        }
        flush();
    }
    flush();
    reply.ok
}

fn flush() {
    use std::io::Write as _;
    let _ = std::io::stdout().flush();
}

/// Runs one command on an in-process console (`--eval`) and prints what it
/// says; returns whether it succeeded.
pub async fn run_once(console: &Arc<Console>, command: &str) -> bool {
    const EVAL_SESSION: SessionId = 0;
    let transport = Transport::Local(console.clone(), EVAL_SESSION);
    let ok = match transport.run(command).await {
        Ok(reply) => print_reply(&transport, reply).await,
        Err(e) => {
            eprintln!("error: {e}");
            false
        }
    };
    console.end_session(EVAL_SESSION);
    ok
}

/// `host rpc`: one command; the exit status says whether it succeeded.
pub async fn rpc(args: RpcArgs) -> anyhow::Result<()> {
    let (node, command) = args.node_and_command()?;
    let (_, link) = connect(node, &args.link).await?;
    let transport = Transport::Remote(link.clone());
    let reply = transport
        .run(command)
        .await
        .map_err(|e| anyhow::anyhow!(e))?;
    let ok = print_reply(&transport, reply).await;
    link.close("rpc done");
    if ok {
        Ok(())
    } else {
        Err(anyhow::anyhow!("`{command}` failed"))
    }
}

#[derive(Args)]
pub struct SwapArgs {
    /// The node, NAME@HOST.
    #[arg(env = "RELEASE_NODE")]
    node: String,
    /// The component to swap.
    component: String,
    /// The new version's .wasm file, on the node's machine.
    path: PathBuf,
    /// Move this percent of the names (and of HTTP requests) first; the
    /// console's `promote` moves the rest. Without it: every process.
    #[arg(long, value_name = "PERCENT")]
    canary: Option<u8>,
    /// Label the new version so, instead of its own label.
    #[arg(long, value_name = "LABEL")]
    version: Option<String>,
    /// Roll back by itself past this percent of failed moves and crashes
    /// on the new version (10 by default; 2 failures never roll back).
    #[arg(long, value_name = "PERCENT")]
    max_failures: Option<u8>,
    /// PATH is an older version: processes hand their states down to it
    /// (or restart from storage).
    #[arg(long)]
    down: bool,
    /// Wait for the sweep to move the live processes (hibernated ones move
    /// at their wake), then commit; exit 1 if the swap rolled back instead.
    /// In a cluster: wait until every node has swapped, then commit.
    #[arg(long)]
    commit: bool,
    /// In a cluster: swap every node at once, rather than one after
    /// another (the next once the last has swapped).
    #[arg(long)]
    all_at_once: bool,
    #[command(flatten)]
    link: LinkArgs,
}

/// `host swap`: the console's `swap` on a running node, once.
pub async fn swap(args: SwapArgs) -> anyhow::Result<()> {
    let mut line = format!(
        "swap {} {}",
        quoted(&args.component),
        quoted(&args.path.to_string_lossy())
    );
    if let Some(canary) = args.canary {
        line.push_str(&format!(" --canary {canary}"));
    }
    if let Some(version) = &args.version {
        line.push_str(&format!(" --version {}", quoted(version)));
    }
    if let Some(max_failures) = args.max_failures {
        line.push_str(&format!(" --max-failures {max_failures}"));
    }
    for (given, switch) in [
        (args.down, " --down"),
        (args.commit, " --commit"),
        (args.all_at_once, " --all-at-once"),
    ] {
        if given {
            line.push_str(switch);
        }
    }
    let (_, link) = connect(&args.node, &args.link).await?;
    let transport = Transport::Remote(link.clone());
    let request = ConsoleRequest::Run { line };
    let reply = transport
        .ask_within(request, SWAP_ANSWER_TIMEOUT)
        .await
        .map_err(|e| anyhow::anyhow!(e))?;
    let ok = print_reply(&transport, reply).await;
    link.close("swap done");
    if ok {
        Ok(())
    } else {
        Err(anyhow::anyhow!(
            "the swap of {} was refused",
            args.component
        ))
    }
}

/// `host pid`: the node's OS process id.
pub async fn pid(args: NodeArgs) -> anyhow::Result<()> {
    let (_, link) = connect(&args.node, &args.link).await?;
    let reply = Transport::Remote(link.clone())
        .run("pid")
        .await
        .map_err(|e| anyhow::anyhow!(e))?;
    link.close("pid done");
    print!("{}", reply.text);
    Ok(())
}

/// `host stop`: stops the node gracefully and returns once it is gone.
pub async fn stop(args: NodeArgs) -> anyhow::Result<()> {
    let (node, link) = connect(&args.node, &args.link).await?;
    let transport = Transport::Remote(link.clone());
    let pid = transport
        .run("pid")
        .await
        .map_err(|e| anyhow::anyhow!(e))?
        .text
        .trim()
        .parse::<u32>()
        .ok();
    match transport.run("stop").await {
        Ok(reply) if !reply.ok => anyhow::bail!("{}", reply.text.trim_end()),
        Ok(_) => {}
        // The link went down with the answer: the node is going; wait for
        // it as for any stop.
        Err(e) if !link.is_open() => tracing::debug!("no answer to stop: {e}"),
        Err(e) => anyhow::bail!(e),
    }
    let gone = async {
        link.closed().await;
        // The node closes its links before it flushes storage: wait for
        // the process itself when it is on this machine.
        if let Some(pid) = pid
            && node_is_local(&node)
        {
            while running(pid) {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    tokio::time::timeout(STOP_WAIT, gone)
        .await
        .map_err(|_| anyhow::anyhow!("{node} is still running after {STOP_WAIT:?}"))?;
    println!("{node} stopped");
    Ok(())
}

/// Whether process `pid` exists and has not exited (an exited process its
/// parent has not reaped yet is a zombie: gone, as far as `stop` cares).
fn running(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command name, which is in parentheses.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

fn node_is_local(node: &NodeName) -> bool {
    node.resolve_host(0)
        .map(|addrs| addrs.iter().any(|addr| addr.ip().is_loopback()))
        .unwrap_or(false)
        || node.host() == host_name()
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_string())
        .unwrap_or_default()
}

/// `host remote`: an interactive console on a running node.
pub async fn remote(args: RemoteArgs) -> anyhow::Result<()> {
    let (node, link) = connect(&args.node, &args.link).await?;
    let transport = Transport::Remote(link.clone());
    println!(
        "Console on {node} (help lists the commands; exit, Ctrl-D or Ctrl-C leave it, the node keeps running)"
    );
    let history = history_file(args.history);
    let handle = Handle::current();
    let node_name = node.to_string();
    tokio::task::spawn_blocking(move || interact(&handle, &transport, &node_name, &history, false))
        .await
        .map_err(|e| anyhow::anyhow!("the console failed: {e}"))??;
    link.close("the console left");
    Ok(())
}

/// The console of `host run --console` (`start_iex`), on its own node.
/// Returns when the operator leaves it.
pub async fn attach_local(console: Arc<Console>, node: String) -> anyhow::Result<()> {
    const LOCAL_SESSION: SessionId = 0;
    let transport = Transport::Local(console.clone(), LOCAL_SESSION);
    println!(
        "Console on {node} (help lists the commands; leaving it with exit, Ctrl-D or Ctrl-C stops this node)"
    );
    let handle = Handle::current();
    let history = history_file(None);
    let result =
        tokio::task::spawn_blocking(move || interact(&handle, &transport, &node, &history, true))
            .await
            .map_err(|e| anyhow::anyhow!("the console failed: {e}"))?;
    console.end_session(LOCAL_SESSION);
    result
}

fn history_file(given: Option<PathBuf>) -> PathBuf {
    given.unwrap_or_else(|| {
        std::env::var_os("HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("."))
            .join(".host_history")
    })
}

/// The read-eval-print loop, on a blocking thread.
fn interact(
    handle: &Handle,
    transport: &Transport,
    node: &str,
    history: &PathBuf,
    own_node: bool,
) -> anyhow::Result<()> {
    let mut editor: Editor<ConsoleHelper, FileHistory> =
        Editor::new().map_err(|e| anyhow::anyhow!("cannot start the line editor: {e}"))?;
    editor.set_helper(Some(ConsoleHelper {
        handle: handle.clone(),
        transport: transport.clone(),
    }));
    let _ = editor.load_history(history);
    let prompt = format!("{node}> ");
    loop {
        let line = match editor.readline(&prompt) {
            Ok(line) => line,
            Err(ReadlineError::Interrupted | ReadlineError::Eof) => break,
            Err(e) => {
                let _ = editor.save_history(history);
                anyhow::bail!("cannot read the console: {e}");
            }
        };
        let command = line.trim();
        if command.is_empty() {
            continue;
        }
        let _ = editor.add_history_entry(command);
        let _ = editor.save_history(history);
        match command {
            "exit" | "quit" => break,
            "stop" if !own_node => {
                let answer = editor
                    .readline(&format!(
                        "Stop {node}? Its processes stop, a member leaves its cluster. [y/N] "
                    ))
                    .unwrap_or_default();
                if !answer.trim().eq_ignore_ascii_case("y") {
                    println!("not stopped");
                    continue;
                }
            }
            "stop" => {
                println!("leaving the console stops this node");
                break;
            }
            _ => {}
        }
        if command == "top" || command.starts_with("top ") {
            handle.block_on(top(transport, command));
            continue;
        }
        handle.block_on(async {
            match transport.run(command).await {
                Ok(reply) => {
                    print_reply(transport, reply).await;
                }
                Err(e) => eprintln!("error: {e}"),
            }
        });
        if command == "stop" {
            break;
        }
    }
    let _ = editor.save_history(history);
    Ok(())
}

/// `top`: `ps` every few seconds until Ctrl-C.
async fn top(transport: &Transport, command: &str) {
    let mut words: Vec<&str> = command.split_whitespace().collect();
    let every = match words.iter().position(|w| *w == "--every") {
        Some(index) if index + 1 < words.len() => {
            let seconds = words[index + 1].parse::<u64>().unwrap_or(2).max(1);
            words.drain(index..=index + 1);
            Duration::from_secs(seconds)
        }
        _ => Duration::from_secs(2),
    };
    words[0] = "ps";
    let ps = words.join(" ");
    loop {
        match transport.run(&ps).await {
            Ok(reply) if reply.ok => {
                // Clear the screen, cursor home.
                print!(
                    "\x1b[2J\x1b[H{}\n(every {every:?}; Ctrl-C stops)\n",
                    reply.text
                );
                flush();
            }
            Ok(reply) => {
                print!("{}", reply.text);
                return;
            }
            Err(e) => {
                eprintln!("error: {e}");
                return;
            }
        }
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            _ = tokio::signal::ctrl_c() => return,
        }
    }
}

/// Tab completion, served by the node.
struct ConsoleHelper {
    handle: Handle,
    transport: Transport,
}

impl Completer for ConsoleHelper {
    type Candidate = Pair;

    fn complete(
        &self,
        line: &str,
        pos: usize,
        _ctx: &Context<'_>,
    ) -> rustyline::Result<(usize, Vec<Pair>)> {
        let before = &line[..pos];
        let start = before
            .rfind(char::is_whitespace)
            .map_or(0, |index| index + 1);
        let reply = self
            .handle
            .block_on(self.transport.ask(ConsoleRequest::Complete {
                line: before.to_string(),
            }));
        let candidates = reply
            .map(|reply| reply.completions)
            .unwrap_or_default()
            .into_iter()
            .map(|candidate| Pair {
                display: candidate.clone(),
                replacement: candidate,
            })
            .collect();
        Ok((start, candidates))
    }
}

impl Hinter for ConsoleHelper {
    type Hint = String;
}

impl Highlighter for ConsoleHelper {}

impl Validator for ConsoleHelper {}

impl Helper for ConsoleHelper {}
