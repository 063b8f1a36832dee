//! The console: what `bin/todo remote`, `start_iex` and `rpc` talk to. A
//! node serves it; clients send it command lines and print what comes
//! back.
//!
//! It owns the commands (`commands`: the table that is also the dispatch,
//! and a file per group of handlers), sessions (`session`), how processes
//! are shown (`views`), calls of components' exported functions in WAVE
//! (`wave`), and the console's side of traces (`trace_output`). It reads
//! the node through [`OperatorAccess`] alone and the cluster through
//! `Cluster`'s public surface (nodes, placement, asking another member's
//! console); it changes nothing but what an operator asks for (a kill, a
//! trace, a connect, a stop).

mod commands;
pub mod protocol;
mod session;
mod trace_output;
mod views;
mod wave;
mod words;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use futures_util::future::BoxFuture;
use tokio_util::sync::CancellationToken;

use crate::cluster::wire::{NodeInfo, Role};
use crate::cluster::{Cluster, ConsoleService};
use crate::config::ConsoleLimits;
use crate::distribution::NodeName;
use crate::distribution::link::Link;
use crate::metrics::Series;
use crate::node::OperatorAccess;
use crate::process::ProcessKey;
use commands::{COMMANDS, Completes, Invocation};
use protocol::{ConsoleReply, ConsoleRequest, NodeFigures, ProcessRow};
pub use session::{Session, SessionId};
use views::SortBy;
pub use views::render_nodes;
#[cfg(any(test, feature = "fuzzing"))]
pub use wave::fuzz_call;
pub use words::{quoted, words};

/// How long a console waits for another member's answer.
const MEMBER_TIMEOUT: Duration = Duration::from_secs(5);

/// Processes `tree` shows per component unless told.
const TREE_LIMIT: u64 = 100;

/// What `ps`, `tree` and the observer show of the cluster.
#[derive(Default)]
pub struct ClusterView {
    pub rows: Vec<ProcessRow>,
    pub figures: Vec<NodeFigures>,
    /// Members that could not be asked, and why.
    pub missing: Vec<String>,
}

pub struct Console {
    this: Weak<Console>,
    node: OperatorAccess,
    cluster: Option<Arc<Cluster>>,
    sessions: Mutex<HashMap<SessionId, Arc<Session>>>,
    /// Clients attached now (remote, rpc, start_iex), for the metrics page.
    sessions_attached: AtomicU64,
    /// Cancelled by `stop`: the node's start waits on it.
    stop_node: CancellationToken,
    /// Console calls of components' functions running at once.
    calls: tokio::sync::Semaphore,
    /// The observer's address, with its token, once it serves.
    observer_url: OnceLock<String>,
}

impl Console {
    pub fn new(
        node: OperatorAccess,
        cluster: Option<Arc<Cluster>>,
        stop_node: CancellationToken,
    ) -> Arc<Self> {
        Arc::new_cyclic(|this| Self {
            this: this.clone(),
            node,
            cluster,
            sessions: Mutex::new(HashMap::new()),
            sessions_attached: AtomicU64::new(0),
            stop_node,
            calls: tokio::sync::Semaphore::new(ConsoleLimits::CALLS),
            observer_url: OnceLock::new(),
        })
    }

    /// Where the observer serves (`observer` prints it).
    pub fn set_observer_url(&self, url: String) {
        let _ = self.observer_url.set(url);
    }

    /// The console's series for the metrics page.
    pub fn series(&self) -> Vec<Series> {
        vec![Series::gauge(
            "host_console_sessions",
            "Console clients attached (remote, rpc, start_iex).",
            self.sessions_attached.load(Ordering::Relaxed),
        )]
    }

    /// Serves one request of session `id`.
    pub async fn serve(self: &Arc<Self>, id: SessionId, request: ConsoleRequest) -> ConsoleReply {
        let session = self.session(id);
        self.serve_in(&session, request).await
    }

    async fn serve_in(
        self: &Arc<Self>,
        session: &Arc<Session>,
        request: ConsoleRequest,
    ) -> ConsoleReply {
        match request {
            ConsoleRequest::Run { line } => {
                let mut reply = self.run(session, &line).await;
                reply.live = session.tracing();
                reply
            }
            ConsoleRequest::Complete { line } => ConsoleReply {
                ok: true,
                completions: self.complete(&line),
                ..ConsoleReply::default()
            },
            ConsoleRequest::Output => {
                let text = session.take_output(Duration::from_secs(1)).await;
                ConsoleReply {
                    text,
                    ok: true,
                    live: session.tracing(),
                    ..ConsoleReply::default()
                }
            }
            ConsoleRequest::Processes { limit, figures } => {
                let processes = self.local_rows(usize::try_from(limit).unwrap_or(usize::MAX));
                ConsoleReply {
                    ok: true,
                    figures: if figures {
                        Some(self.figures().await)
                    } else {
                        None
                    },
                    processes,
                    ..ConsoleReply::default()
                }
            }
        }
    }

    async fn run(self: &Arc<Self>, session: &Arc<Session>, line: &str) -> ConsoleReply {
        let line = line.trim();
        if wave::is_call(line) {
            let Ok(_permit) = self.calls.try_acquire() else {
                return ConsoleReply::failed(format!(
                    "{} console calls are running on this node already: try again\n",
                    ConsoleLimits::CALLS
                ));
            };
            return match wave::call(&self.node, line).await {
                Ok(text) => ConsoleReply::ok(text + "\n"),
                Err(text) => ConsoleReply::failed(text + "\n"),
            };
        }
        let words = match words(line) {
            Ok(words) => words,
            Err(e) => return ConsoleReply::failed(e + "\n"),
        };
        let Some((name, args)) = words.split_first() else {
            return ConsoleReply::ok("");
        };
        let result = match commands::find(name) {
            Some(command) => {
                command
                    .run(Invocation {
                        console: self,
                        session,
                        line,
                        args,
                    })
                    .await
            }
            None => Err(format!("unknown command `{name}`; `help` lists them")),
        };
        match result {
            Ok(text) => ConsoleReply::ok(text),
            Err(text) => ConsoleReply::failed(text + "\n"),
        }
    }

    fn me(&self) -> String {
        self.node.name().to_string()
    }

    /// Why this node's storage takes no more writes, once it has failed one.
    pub fn storage_failure(&self) -> Option<String> {
        self.node.storage_failure()
    }

    /// The name of the node this console runs on.
    pub fn node_name(&self) -> String {
        self.me()
    }

    /// `[COMPONENT/]NAME` to a process key; the component defaults to the
    /// first one that runs processes.
    fn key(&self, text: &str) -> Result<ProcessKey, String> {
        if let Some((component, name)) = text.split_once('/')
            && self.node.component(component).is_some()
        {
            return Ok(ProcessKey::new(component, name));
        }
        let component = self
            .node
            .components()
            .iter()
            .find(|component| component.code().process_pre().is_some())
            .ok_or("no component on this node runs processes")?;
        Ok(ProcessKey::new(component.name(), text))
    }

    /// The member holding `key`, when it is not this node. A command that
    /// came from another member is never sent on: while two members' views
    /// of the placement differ, it would bounce between them.
    fn held_elsewhere(&self, session: &Session, key: &ProcessKey) -> Option<NodeName> {
        if session.from_member {
            return None;
        }
        let cluster = self.cluster.as_ref()?;
        let holder = cluster.holder_of(&key.component, &key.name)?;
        (holder != *cluster.me()).then_some(holder)
    }

    /// Runs `line` on member `node`'s console and returns its text.
    async fn forward(&self, node: &NodeName, line: &str) -> Result<String, String> {
        let cluster = self.cluster.as_ref().ok_or("not in a cluster")?;
        let request = protocol::encode(&ConsoleRequest::Run {
            line: line.to_string(),
        });
        let reply: ConsoleReply =
            protocol::decode(&cluster.ask_console(node, request, MEMBER_TIMEOUT).await?)?;
        if reply.ok {
            Ok(reply.text)
        } else {
            Err(reply.text.trim_end().to_string())
        }
    }

    /// This node's processes: the `limit` largest in memory.
    fn local_rows(&self, limit: usize) -> Vec<ProcessRow> {
        let node = self.me();
        let mut processes = self.node.processes();
        if processes.len() > limit {
            processes.sort_by_key(|info| std::cmp::Reverse(info.memory));
            processes.truncate(limit);
        }
        processes
            .into_iter()
            .map(|info| {
                let key = ProcessKey::new(&info.component, &info.name);
                ProcessRow {
                    node: node.clone(),
                    restarts: self.node.restarts_of(&key),
                    info,
                }
            })
            .collect()
    }

    /// The processes (each node's `limit` largest in memory) and, when
    /// asked, the figures of every member up (or of `only`), and what could
    /// not be asked.
    pub async fn cluster_view(
        &self,
        only: Option<&str>,
        limit: usize,
        figures: bool,
    ) -> ClusterView {
        let mut view = ClusterView::default();
        let me = self.me();
        if only.is_none_or(|only| only == me) {
            view.rows.extend(self.local_rows(limit));
            if figures {
                view.figures.push(self.figures().await);
            }
        }
        let Some(cluster) = &self.cluster else {
            return view;
        };
        let limit = u32::try_from(limit).unwrap_or(u32::MAX);
        let request = protocol::encode(&ConsoleRequest::Processes { limit, figures });
        for member in cluster.nodes() {
            let name = member.name.to_string();
            if name == me || only.is_some_and(|only| only != name) {
                continue;
            }
            if !member.up || !member.linked {
                view.missing.push(format!("{name} is down or not linked"));
                continue;
            }
            match cluster
                .ask_console(&member.name, request.clone(), MEMBER_TIMEOUT)
                .await
                .and_then(|bytes| protocol::decode::<ConsoleReply>(&bytes))
            {
                Ok(reply) => {
                    view.rows.extend(reply.processes);
                    view.figures.extend(reply.figures);
                }
                Err(e) => view.missing.push(format!("{name} did not answer: {e}")),
            }
        }
        view
    }

    /// The cluster's nodes as this node sees them (itself alone without
    /// distribution).
    pub fn nodes_info(&self) -> Vec<NodeInfo> {
        match &self.cluster {
            Some(cluster) => cluster.nodes(),
            None => NodeName::parse(&self.me())
                .into_iter()
                .map(|name| NodeInfo {
                    name,
                    id: 0,
                    role: Role::Alone,
                    up: true,
                    linked: true,
                    leader: false,
                })
                .collect(),
        }
    }

    /// Runs one command line as a console client would, in a session of
    /// its own (the observer's drill-down).
    pub async fn execute(self: &Arc<Self>, line: &str) -> ConsoleReply {
        let session = Arc::new(Session::new());
        let reply = self.run(&session, line).await;
        session.ended.cancel();
        reply
    }

    /// This node's figures. The kernel's (read from /proc, which takes the
    /// process's memory-map lock) are read on a blocking thread.
    pub async fn figures(&self) -> NodeFigures {
        let (resident, page_tables, mappings, max_map_count) =
            tokio::task::spawn_blocking(kernel_figures)
                .await
                .unwrap_or_default();
        let rows = self.node.processes();
        NodeFigures {
            node: self.me(),
            resident,
            page_tables,
            mappings,
            max_map_count,
            processes: rows.len(),
            max_processes: self.node.limits().max_processes,
            linear_memory: rows.iter().map(|row| row.memory).sum(),
            crashes: self.node.crashes(),
            messages: rows.iter().map(|row| row.messages).sum(),
        }
    }

    /// Candidates for the last word of `line`.
    fn complete(&self, line: &str) -> Vec<String> {
        let ends_in_space = line.ends_with(' ');
        let words: Vec<&str> = line.split_whitespace().collect();
        let (done, last) = match (ends_in_space, words.split_last()) {
            (false, Some((last, done))) => (done.to_vec(), *last),
            _ => (words.clone(), ""),
        };
        let command_names = || COMMANDS.iter().map(|command| command.name.to_string());
        let candidates: Vec<String> = match done.first() {
            None => command_names()
                .chain(self.node.components().iter().flat_map(|component| {
                    component
                        .code()
                        .functions()
                        .iter()
                        .map(|f| format!("{}.{}(", f.interface_short, f.name))
                }))
                .collect(),
            Some(name) => match commands::find(name).map(|command| command.completes) {
                Some(Completes::Nodes) => match &self.cluster {
                    Some(cluster) => cluster.nodes().iter().map(|n| n.name.to_string()).collect(),
                    None => Vec::new(),
                },
                Some(Completes::Processes) => self
                    .node
                    .processes()
                    .into_iter()
                    .map(|info| info.name)
                    .collect(),
                Some(Completes::Commands) => command_names().collect(),
                Some(Completes::Components) => self
                    .node
                    .components()
                    .iter()
                    .map(|component| component.name().to_string())
                    .collect(),
                Some(Completes::SortKeys) if done.last() == Some(&"--sort") => {
                    SortBy::NAMES.iter().map(|name| name.to_string()).collect()
                }
                _ => Vec::new(),
            },
        };
        let mut matching: Vec<String> = candidates
            .into_iter()
            .filter(|candidate| candidate.starts_with(last))
            .collect();
        matching.sort();
        matching.dedup();
        matching
    }
}

/// Resident memory and page tables (bytes), memory mappings, and the
/// kernel's limit on them: zero where /proc does not say.
fn kernel_figures() -> (usize, usize, usize, usize) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib = |name: &str| {
        status
            .lines()
            .find(|line| line.starts_with(name))
            .and_then(|line| line.split_whitespace().nth(1))
            .and_then(|kib| kib.parse::<usize>().ok())
            .map_or(0, |kib| kib * 1024)
    };
    let mappings = std::fs::read("/proc/self/maps")
        .map(|maps| maps.iter().filter(|&&byte| byte == b'\n').count())
        .unwrap_or(0);
    let max_map_count = std::fs::read_to_string("/proc/sys/vm/max_map_count")
        .ok()
        .and_then(|text| text.trim().parse().ok())
        .unwrap_or(0);
    (kib("VmRSS:"), kib("VmPTE:"), mappings, max_map_count)
}

impl ConsoleService for Console {
    fn serve(&self, link: Arc<Link>, request: Vec<u8>) -> BoxFuture<'static, Vec<u8>> {
        let id = Arc::as_ptr(&link) as SessionId;
        let console = self.this.upgrade();
        Box::pin(async move {
            let Some(console) = console else {
                return protocol::encode(&ConsoleReply::failed("the node is stopping\n"));
            };
            let request = match protocol::decode::<ConsoleRequest>(&request) {
                Ok(request) => request,
                Err(e) => return protocol::encode(&ConsoleReply::failed(e + "\n")),
            };
            if !link.is_hidden() {
                // Another member's console asking (its `ps`, a forwarded
                // `info`): no session of its own, nothing that outlives
                // the request.
                let transient = Arc::new(Session::with(true, None));
                let reply = console.serve_in(&transient, request).await;
                transient.ended.cancel();
                return protocol::encode(&reply);
            }
            let session = console.link_session(id, &link);
            protocol::encode(&console.serve_in(&session, request).await)
        })
    }
}

/// The fuzz target `console_line` (`fuzz/`): a line typed at the console,
/// read as the console reads it, up to the command it names and the
/// options that command's usage lists. The words, quoted as the tools
/// quote them, must read back as they were.
#[cfg(any(test, feature = "fuzzing"))]
pub fn fuzz_line(line: &str) {
    if wave::is_call(line) {
        let _ = wasm_wave::untyped::UntypedFuncCall::parse(line.trim());
        return;
    }
    let Ok(split) = words(line) else {
        return;
    };
    let quoted_again: Vec<String> = split.iter().map(|word| quoted(word)).collect();
    assert_eq!(words(&quoted_again.join(" ")).as_ref(), Ok(&split));
    let Some((name, args)) = split.split_first() else {
        return;
    };
    if let Some(command) = commands::find(name) {
        let known: Vec<&str> = command
            .usage
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
            .filter_map(|token| token.strip_prefix("--"))
            .collect();
        if let Ok(options) = words::Options::parse(args, &known) {
            for name in &known {
                let _ = options.number(name, 0);
            }
        }
    }
}
