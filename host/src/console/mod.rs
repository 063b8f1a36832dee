//! The console: what `bin/todo remote`, `start_iex` and `rpc` talk to. A
//! node serves it; clients send it command lines and print what comes
//! back.
//!
//! It owns the commands (`commands`), how processes are shown (`views`),
//! calls of components' exported functions in WAVE (`wave`), and the
//! console's side of traces (`trace_output`). It reads the node through
//! `NodeCore` (registry, supervisor, components) and the cluster through
//! `Cluster`'s public surface (nodes, placement, asking another member's
//! console); it changes nothing but what an operator asks for (a kill, a
//! trace, a connect, a stop).
//!
//! Sessions: every client is a session (a remote console is one per hidden
//! link, `start_iex` has its own). A session's traces print into its
//! output, which the client reads with `Output`; they stop by themselves
//! when the session ends (the link drops), whatever the client did.

mod commands;
pub mod protocol;
mod trace_output;
mod views;
mod wave;

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime};

use futures_util::future::BoxFuture;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::cluster::{Cluster, ConsoleService};
use crate::dist::NodeName;
use crate::dist::link::Link;
use crate::node::NodeCore;
use crate::registry::ProcessKey;
use crate::trace::{DEFAULT_TRACE_DURATION, TraceLimits, Tracer};
use commands::{Options, words};
use protocol::{ConsoleReply, ConsoleRequest, ProcessRow};
use views::SortBy;

pub use commands::COMMANDS;
pub use views::render_nodes;

/// Lines a session's output holds for its client; past it, the oldest go.
const OUTPUT_LINES: usize = 10_000;

/// How long a console waits for another member's answer.
const MEMBER_TIMEOUT: Duration = Duration::from_secs(5);

/// Processes `tree` shows per component unless told.
const TREE_LIMIT: u64 = 100;

/// A session's identity: the link's address for a remote one.
pub type SessionId = usize;

pub struct Console {
    this: Weak<Console>,
    node: Arc<NodeCore>,
    cluster: Option<Arc<Cluster>>,
    sessions: Mutex<HashMap<SessionId, Arc<Session>>>,
    /// Cancelled by `stop`: the node's start waits on it.
    stop_node: CancellationToken,
}

/// One client's console.
pub struct Session {
    output: Mutex<VecDeque<String>>,
    printed: Notify,
    traces: Mutex<usize>,
    /// Cancelled when the client goes away: its traces stop.
    ended: CancellationToken,
    /// Cancelled by `untrace` (then replaced): the running traces stop.
    untraced: Mutex<CancellationToken>,
}

impl Session {
    fn new() -> Self {
        Self {
            output: Mutex::new(VecDeque::new()),
            printed: Notify::new(),
            traces: Mutex::new(0),
            untraced: Mutex::new(CancellationToken::new()),
            ended: CancellationToken::new(),
        }
    }

    /// What a new trace of this session stops on: the session ending, or
    /// `untrace`.
    fn trace_stopper(&self) -> CancellationToken {
        let untraced = self.untraced.lock().unwrap_or_else(|p| p.into_inner());
        let stopper = CancellationToken::new();
        let (ended, untraced, token) = (self.ended.clone(), untraced.clone(), stopper.clone());
        tokio::spawn(async move {
            tokio::select! {
                () = ended.cancelled() => {}
                () = untraced.cancelled() => {}
                () = token.cancelled() => {}
            }
            token.cancel();
        });
        stopper
    }

    /// Stops the running traces; later ones are not affected.
    fn untrace(&self) {
        let mut untraced = self.untraced.lock().unwrap_or_else(|p| p.into_inner());
        untraced.cancel();
        *untraced = CancellationToken::new();
    }

    fn print(&self, line: String) {
        let mut output = self.output.lock().unwrap_or_else(|p| p.into_inner());
        if output.len() == OUTPUT_LINES {
            output.pop_front();
        }
        output.push_back(line);
        drop(output);
        self.printed.notify_one();
    }

    fn trace_started(&self) {
        *self.traces.lock().unwrap_or_else(|p| p.into_inner()) += 1;
    }

    fn trace_ended(&self) {
        let mut traces = self.traces.lock().unwrap_or_else(|p| p.into_inner());
        *traces = traces.saturating_sub(1);
        drop(traces);
        self.printed.notify_one();
    }

    fn tracing(&self) -> bool {
        *self.traces.lock().unwrap_or_else(|p| p.into_inner()) > 0
    }

    /// What was printed since the last call, waiting up to `wait` for
    /// something when nothing was.
    async fn take_output(&self, wait: Duration) -> String {
        let take = || {
            let mut output = self.output.lock().unwrap_or_else(|p| p.into_inner());
            output.drain(..).map(|line| line + "\n").collect::<String>()
        };
        let text = take();
        if !text.is_empty() || !self.tracing() {
            return text;
        }
        let _ = tokio::time::timeout(wait, self.printed.notified()).await;
        take()
    }
}

impl Console {
    pub fn new(
        node: Arc<NodeCore>,
        cluster: Option<Arc<Cluster>>,
        stop_node: CancellationToken,
    ) -> Arc<Self> {
        Arc::new_cyclic(|this| Self {
            this: this.clone(),
            node,
            cluster,
            sessions: Mutex::new(HashMap::new()),
            stop_node,
        })
    }

    /// The session `id`, made on first use.
    pub fn session(&self, id: SessionId) -> Arc<Session> {
        let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        sessions
            .entry(id)
            .or_insert_with(|| Arc::new(Session::new()))
            .clone()
    }

    /// Ends session `id`: its traces stop.
    pub fn end_session(&self, id: SessionId) {
        let session = self
            .sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id);
        if let Some(session) = session {
            session.ended.cancel();
        }
    }

    /// Serves one request of session `id`.
    pub async fn serve(self: &Arc<Self>, id: SessionId, request: ConsoleRequest) -> ConsoleReply {
        let session = self.session(id);
        match request {
            ConsoleRequest::Run { line } => {
                let mut reply = self.run(&session, &line).await;
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
            ConsoleRequest::Processes => ConsoleReply {
                ok: true,
                processes: self.local_rows(),
                ..ConsoleReply::default()
            },
        }
    }

    async fn run(self: &Arc<Self>, session: &Arc<Session>, line: &str) -> ConsoleReply {
        let line = line.trim();
        if wave::is_call(line) {
            return match wave::call(&self.node, line).await {
                Ok(text) => ConsoleReply::ok(text + "\n"),
                Err(text) => ConsoleReply::failed(text + "\n"),
            };
        }
        let words = match words(line) {
            Ok(words) => words,
            Err(e) => return ConsoleReply::failed(e + "\n"),
        };
        let Some((command, args)) = words.split_first() else {
            return ConsoleReply::ok("");
        };
        let result = match command.as_str() {
            "help" => commands::help(args.first().map(String::as_str)),
            "nodes" => Ok(self.nodes()),
            "connect" => self.connect(args).await,
            "ps" | "top" => self.ps(args).await,
            "tree" => self.tree(args).await,
            "info" => self.info(line, args).await,
            "state" => self.state(line, args).await,
            "memory" => Ok(self.memory()),
            "logs" => logs(args),
            "kill" => self.kill(line, args).await,
            "trace" => self.trace(session, args),
            "untrace" => Ok(untrace(session)),
            "functions" => Ok(wave::functions(&self.node)),
            "pid" => Ok(format!("{}\n", std::process::id())),
            "version" => Ok(self.version()),
            "stop" => Ok(self.stop()),
            "exit" | "quit" => Ok(String::new()),
            other => Err(format!("unknown command `{other}`; `help` lists them")),
        };
        match result {
            Ok(text) => ConsoleReply::ok(text),
            Err(text) => ConsoleReply::failed(text + "\n"),
        }
    }

    fn me(&self) -> String {
        self.node.name().to_string()
    }

    fn nodes(&self) -> String {
        match &self.cluster {
            Some(cluster) => render_nodes(&cluster.nodes()),
            None => format!("{} (distribution is off: it is alone)\n", self.me()),
        }
    }

    async fn connect(&self, args: &[String]) -> Result<String, String> {
        let [other] = args else {
            return Err("usage: connect NODE".into());
        };
        let cluster = self
            .cluster
            .as_ref()
            .ok_or("distribution is off on this node: it cannot connect")?;
        let other = NodeName::parse(other)?;
        cluster.join(&other).await.map(|done| done + "\n")
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
            .find(|component| component.process_pre().is_some())
            .ok_or("no component on this node runs processes")?;
        Ok(ProcessKey::new(component.name(), text))
    }

    /// The member holding `key`, when it is not this node.
    fn held_elsewhere(&self, key: &ProcessKey) -> Option<NodeName> {
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

    fn local_rows(&self) -> Vec<ProcessRow> {
        let supervisor = self.node.supervisor();
        let node = self.me();
        self.node
            .registry()
            .snapshot()
            .into_iter()
            .map(|info| {
                let key = ProcessKey::new(&info.component, &info.name);
                ProcessRow {
                    node: node.clone(),
                    restarts: supervisor.restarts_of(&key),
                    info,
                }
            })
            .collect()
    }

    /// Rows of every member up (or of `only`), and what could not be asked.
    async fn cluster_rows(&self, only: Option<&str>) -> (Vec<ProcessRow>, Vec<String>) {
        let mut rows = Vec::new();
        let mut missing = Vec::new();
        let me = self.me();
        if only.is_none_or(|only| only == me) {
            rows.extend(self.local_rows());
        }
        let Some(cluster) = &self.cluster else {
            return (rows, missing);
        };
        let request = protocol::encode(&ConsoleRequest::Processes);
        for member in cluster.nodes() {
            let name = member.name.to_string();
            if name == me || only.is_some_and(|only| only != name) {
                continue;
            }
            if !member.up || !member.linked {
                missing.push(format!("{name} is down or not linked"));
                continue;
            }
            match cluster
                .ask_console(&member.name, request.clone(), MEMBER_TIMEOUT)
                .await
                .and_then(|bytes| protocol::decode::<ConsoleReply>(&bytes))
            {
                Ok(reply) => rows.extend(reply.processes),
                Err(e) => missing.push(format!("{name} did not answer: {e}")),
            }
        }
        (rows, missing)
    }

    async fn ps(&self, args: &[String]) -> Result<String, String> {
        let options = Options::parse(args, &["node", "sort", "limit", "every"])?;
        let sort = SortBy::parse(options.get("sort").unwrap_or("memory"))?;
        let limit = usize::try_from(options.number("limit", 50)?).unwrap_or(usize::MAX);
        let (rows, missing) = self.cluster_rows(options.get("node")).await;
        let mut text = views::ps(rows, sort, limit, SystemTime::now());
        for line in missing {
            text.push_str(&format!("({line})\n"));
        }
        Ok(text)
    }

    async fn tree(&self, args: &[String]) -> Result<String, String> {
        let options = Options::parse(args, &["limit"])?;
        let limit = usize::try_from(options.number("limit", TREE_LIMIT)?).unwrap_or(usize::MAX);
        let (rows, missing) = self.cluster_rows(None).await;
        let supervisor = self.node.supervisor();
        let running: std::collections::HashSet<(String, String)> = rows
            .iter()
            .map(|row| (row.info.component.clone(), row.info.name.clone()))
            .collect();
        let crashed_idle: Vec<(String, ProcessRow)> = supervisor
            .all_restarts()
            .into_iter()
            .filter(|(key, _)| {
                !running.contains(&(key.component.to_string(), key.name.to_string()))
            })
            .map(|(key, restarts)| {
                (
                    self.me(),
                    ProcessRow {
                        node: self.me(),
                        info: crate::registry::ProcessInfo {
                            component: key.component.to_string(),
                            name: key.name.to_string(),
                            pid: 0,
                            started: SystemTime::now(),
                            messages: 0,
                            memory: 0,
                            queued_messages: 0,
                            queued_bytes: 0,
                            traced: false,
                        },
                        restarts: Some(restarts),
                    },
                )
            })
            .collect();
        let intensity = supervisor.intensity();
        let intensity = format!(
            "at most {} restarts in {:?}",
            intensity.max_restarts, intensity.period
        );
        let mut text = views::tree(&rows, &crashed_idle, &intensity, limit, SystemTime::now());
        for line in missing {
            text.push_str(&format!("({line})\n"));
        }
        Ok(text)
    }

    async fn info(&self, line: &str, args: &[String]) -> Result<String, String> {
        let [name] = args else {
            return Err("usage: info NAME".into());
        };
        let key = self.key(name)?;
        if let Some(holder) = self.held_elsewhere(&key) {
            return self.forward(&holder, line).await;
        }
        let row = self
            .local_rows()
            .into_iter()
            .find(|row| row.info.component == *key.component && row.info.name == *key.name)
            .ok_or_else(|| {
                format!(
                    "no process `{key}` is running on {} (a call starts it)",
                    self.me()
                )
            })?;
        Ok(views::info(&row, SystemTime::now()))
    }

    async fn state(&self, line: &str, args: &[String]) -> Result<String, String> {
        let [name] = args else {
            return Err("usage: state NAME".into());
        };
        let key = self.key(name)?;
        if let Some(holder) = self.held_elsewhere(&key) {
            return self.forward(&holder, line).await;
        }
        self.node.render_state(&key).await.map(|state| state + "\n")
    }

    async fn kill(&self, line: &str, args: &[String]) -> Result<String, String> {
        let [name] = args else {
            return Err("usage: kill NAME".into());
        };
        let key = self.key(name)?;
        if let Some(holder) = self.held_elsewhere(&key) {
            return self.forward(&holder, line).await;
        }
        if self.node.kill(&key) {
            Ok(format!(
                "{key} killed after its current message; its next message starts it again\n"
            ))
        } else {
            Err(format!("no process `{key}` is running on {}", self.me()))
        }
    }

    fn trace(self: &Arc<Self>, session: &Arc<Session>, args: &[String]) -> Result<String, String> {
        let options = Options::parse(args, &["count", "for", "rate"])?;
        let [name] = options.plain.as_slice() else {
            return Err("usage: trace NAME [--count N] [--for DURATION] [--rate N]".into());
        };
        let key = self.key(name)?;
        if let Some(holder) = self.held_elsewhere(&key) {
            return Err(format!(
                "{key} runs on {holder}: trace it there (remote {holder})"
            ));
        }
        let limits = TraceLimits {
            count: options.number("count", 100)?.max(1),
            per_second: options.number("rate", 50)?.max(1),
        };
        let duration = match options.get("for") {
            Some(text) => crate::config::parse_duration(text)?,
            None => DEFAULT_TRACE_DURATION,
        };
        let (tracer, events) = Tracer::new(limits);
        let tracer = Arc::new(tracer);
        self.node.registry().set_trace(&key, Some(tracer.clone()));
        session.trace_started();
        let text = format!(
            "tracing {key}: up to {} messages, for {duration:?}, at most {} per second\n",
            limits.count, limits.per_second
        );
        tokio::spawn(trace_output::run(
            self.node.clone(),
            session.clone(),
            key,
            tracer,
            events,
            duration,
            session.trace_stopper(),
        ));
        Ok(text)
    }

    fn memory(&self) -> String {
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find(|line| line.starts_with(name))
                .and_then(|line| line.split_whitespace().nth(1))
                .and_then(|kib| kib.parse::<usize>().ok())
                .map_or("unknown".to_string(), |kib| views::bytes(kib * 1024))
        };
        let mappings = std::fs::read_to_string("/proc/self/maps")
            .map(|maps| maps.lines().count().to_string())
            .unwrap_or_else(|_| "unknown".into());
        let rows = self.node.registry().snapshot();
        let mut per_component: std::collections::BTreeMap<&str, (usize, usize)> =
            Default::default();
        for row in &rows {
            let entry = per_component.entry(&row.component).or_default();
            entry.0 += 1;
            entry.1 += row.memory;
        }
        let mut out = format!(
            "node {}\n  resident:      {}\n  page tables:   {}\n  mappings:      {mappings} (vm.max_map_count: {})\n  processes:     {} of at most {}\n",
            self.me(),
            field("VmRSS:"),
            field("VmPTE:"),
            std::fs::read_to_string("/proc/sys/vm/max_map_count")
                .map(|text| text.trim().to_string())
                .unwrap_or_else(|_| "unknown".into()),
            rows.len(),
            self.node.config().limits.max_processes,
        );
        for (component, (count, memory)) in per_component {
            out.push_str(&format!(
                "  {component}: {count} processes, {} of linear memory\n",
                views::bytes(memory)
            ));
        }
        out
    }

    fn version(&self) -> String {
        let mut out = format!("host {}\n", env!("CARGO_PKG_VERSION"));
        for component in self.node.components() {
            out.push_str(&format!(
                "component {} ({}{}{})\n",
                component.name(),
                if component.process_pre().is_some() {
                    "processes"
                } else {
                    ""
                },
                if component.http_pre().is_some() {
                    ", http"
                } else {
                    ""
                },
                if component.introspect().is_some() {
                    ", introspect"
                } else {
                    ""
                },
            ));
        }
        out
    }

    fn stop(&self) -> String {
        self.stop_node.cancel();
        format!("{} is stopping\n", self.me())
    }

    /// Candidates for the last word of `line`.
    fn complete(&self, line: &str) -> Vec<String> {
        let ends_in_space = line.ends_with(' ');
        let words: Vec<&str> = line.split_whitespace().collect();
        let (done, last) = match (ends_in_space, words.split_last()) {
            (false, Some((last, done))) => (done.to_vec(), *last),
            _ => (words.clone(), ""),
        };
        let candidates: Vec<String> = match done.first() {
            None => COMMANDS
                .iter()
                .map(|(name, _, _)| name.to_string())
                .chain(self.node.components().iter().flat_map(|component| {
                    component
                        .functions()
                        .iter()
                        .map(|f| format!("{}.{}(", f.interface_short, f.name))
                }))
                .collect(),
            Some(&"connect") => match &self.cluster {
                Some(cluster) => cluster.nodes().iter().map(|n| n.name.to_string()).collect(),
                None => Vec::new(),
            },
            Some(&("info" | "state" | "kill" | "trace")) => self
                .node
                .registry()
                .snapshot()
                .into_iter()
                .map(|info| info.name)
                .collect(),
            Some(&"help") => COMMANDS
                .iter()
                .map(|(name, _, _)| name.to_string())
                .collect(),
            Some(&("ps" | "top")) if done.last() == Some(&"--sort") => {
                SortBy::NAMES.iter().map(|name| name.to_string()).collect()
            }
            _ => Vec::new(),
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

fn untrace(session: &Session) -> String {
    if !session.tracing() {
        return "no trace is running\n".to_string();
    }
    session.untrace();
    "traces stopped\n".to_string()
}

fn logs(args: &[String]) -> Result<String, String> {
    let count = match args.first() {
        Some(text) => text
            .parse()
            .map_err(|_| format!("logs takes a number of lines, not `{text}`"))?,
        None => 20,
    };
    let mut out = crate::logs::recent_lines(count).join("\n");
    out.push('\n');
    Ok(out)
}

impl ConsoleService for Console {
    fn serve(&self, link: Arc<Link>, request: Vec<u8>) -> BoxFuture<'static, Vec<u8>> {
        let id = Arc::as_ptr(&link) as SessionId;
        let console = self.this.upgrade();
        Box::pin(async move {
            let Some(console) = console else {
                return protocol::encode(&ConsoleReply::failed("the node is stopping\n"));
            };
            let new = !console
                .sessions
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .contains_key(&id);
            if new {
                console.session(id);
                let watcher = console.clone();
                tokio::spawn(async move {
                    link.closed().await;
                    watcher.end_session(id);
                });
            }
            let reply = match protocol::decode::<ConsoleRequest>(&request) {
                Ok(request) => console.serve(id, request).await,
                Err(e) => ConsoleReply::failed(e + "\n"),
            };
            protocol::encode(&reply)
        })
    }
}
