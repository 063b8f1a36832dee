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

use crate::cluster::wire::{NodeInfo, Role};
use crate::cluster::{Cluster, ConsoleService};
use crate::dist::NodeName;
use crate::dist::link::Link;
use crate::node::NodeCore;
use crate::registry::ProcessKey;
use crate::trace::{DEFAULT_TRACE_DURATION, TraceLimits, Tracer};
use commands::Options;
use protocol::{ConsoleReply, ConsoleRequest, NodeFigures, ProcessRow};
use views::SortBy;

pub use commands::{COMMANDS, words};
pub use views::render_nodes;

/// Lines a session's output holds for its client; past it, the oldest go.
const OUTPUT_LINES: usize = 10_000;

/// How long a console waits for another member's answer.
const MEMBER_TIMEOUT: Duration = Duration::from_secs(5);

/// The bounds of every trace, whatever it asks.
const MAX_TRACE_COUNT: u64 = 1_000_000;
const MAX_TRACE_RATE: u64 = 10_000;
const MAX_TRACE_DURATION: Duration = Duration::from_secs(24 * 3600);
const MAX_TRACES_PER_SESSION: usize = 4;
const MAX_TRACES_PER_NODE: usize = 32;

/// Console calls of components' functions running at once, each in an
/// instance of its own (`runtime::CONSOLE_INSTANCES` reserves them).
const MAX_CONSOLE_CALLS: usize = 8;

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

/// A session's identity: the link's address for a remote one.
pub type SessionId = usize;

pub struct Console {
    this: Weak<Console>,
    node: Arc<NodeCore>,
    cluster: Option<Arc<Cluster>>,
    sessions: Mutex<HashMap<SessionId, Arc<Session>>>,
    /// Cancelled by `stop`: the node's start waits on it.
    stop_node: CancellationToken,
    /// Console calls of components' functions running at once.
    calls: tokio::sync::Semaphore,
    /// The observer's address, with its token, once it serves.
    observer_url: std::sync::OnceLock<String>,
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
    /// Another member's console asking: commands are not forwarded again.
    from_member: bool,
    /// The link of a remote console: a session found under a link's
    /// address belongs to that link only while it lives.
    link: Option<Weak<Link>>,
}

impl Session {
    fn new() -> Self {
        Self::with(false, None)
    }

    fn with(from_member: bool, link: Option<Weak<Link>>) -> Self {
        Self {
            from_member,
            link,
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
        self.running_traces() > 0
    }

    fn running_traces(&self) -> usize {
        *self.traces.lock().unwrap_or_else(|p| p.into_inner())
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
            calls: tokio::sync::Semaphore::new(MAX_CONSOLE_CALLS),
            observer_url: std::sync::OnceLock::new(),
        })
    }

    /// Where the observer serves (`observer` prints it).
    pub fn set_observer_url(&self, url: String) {
        let _ = self.observer_url.set(url);
    }

    /// The session `id`, made on first use.
    pub fn session(&self, id: SessionId) -> Arc<Session> {
        let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        sessions
            .entry(id)
            .or_insert_with(|| {
                self.node.metrics().console_attached();
                Arc::new(Session::new())
            })
            .clone()
    }

    /// The session of remote console `link` (kept under `id`, the link's
    /// address), made on first use, with a watcher that ends it when the
    /// link closes. A session left under the address of a link that is
    /// gone is not reused: it is ended and replaced.
    fn link_session(self: &Arc<Self>, id: SessionId, link: &Arc<Link>) -> Arc<Session> {
        let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(session) = sessions.get(&id) {
            let same_link = session
                .link
                .as_ref()
                .and_then(Weak::upgrade)
                .is_some_and(|current| Arc::ptr_eq(&current, link));
            if same_link {
                return session.clone();
            }
            if let Some(stale) = sessions.remove(&id) {
                self.node.metrics().console_detached();
                stale.ended.cancel();
            }
        }
        let session = Arc::new(Session::with(false, Some(Arc::downgrade(link))));
        sessions.insert(id, session.clone());
        self.node.metrics().console_attached();
        let (watcher, link, watched) = (self.clone(), link.clone(), session.clone());
        tokio::spawn(async move {
            link.closed().await;
            watcher.end_session_if(id, &watched);
        });
        session
    }

    /// Ends session `id` if it is still `session`.
    fn end_session_if(&self, id: SessionId, session: &Arc<Session>) {
        let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        if sessions
            .get(&id)
            .is_some_and(|current| Arc::ptr_eq(current, session))
            && let Some(ended) = sessions.remove(&id)
        {
            self.node.metrics().console_detached();
            ended.ended.cancel();
        }
    }

    /// Ends session `id`: its traces stop.
    pub fn end_session(&self, id: SessionId) {
        let session = self
            .sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id);
        if let Some(session) = session {
            self.node.metrics().console_detached();
            session.ended.cancel();
        }
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
            let Ok(_slot) = self.calls.try_acquire() else {
                return ConsoleReply::failed(format!(
                    "{MAX_CONSOLE_CALLS} console calls are running on this node already: try again\n"
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
        let Some((command, args)) = words.split_first() else {
            return ConsoleReply::ok("");
        };
        let result = match command.as_str() {
            "help" => commands::help(args.first().map(String::as_str)),
            "nodes" => Ok(self.nodes()),
            "connect" => self.connect(args).await,
            "ps" | "top" => self.ps(args).await,
            "tree" => self.tree(args).await,
            "info" => self.info(session, line, args).await,
            "state" => self.state(session, line, args).await,
            "memory" => Ok(self.memory().await),
            "logs" => logs(args),
            "kill" => self.kill(session, line, args).await,
            "trace" => self.trace(session, args),
            "trace-calls" => self.trace_calls(session, args),
            "untrace" => Ok(untrace(session)),
            "functions" => Ok(wave::functions(&self.node)),
            "pid" => Ok(format!("{}\n", std::process::id())),
            "observer" => match self.observer_url.get() {
                Some(url) => Ok(format!("{url}\n")),
                None => Err("this node serves no observer (started with --no-observer)".into()),
            },
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

    /// The name of the node this console runs on.
    pub fn node_name(&self) -> String {
        self.me()
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
        let supervisor = self.node.supervisor();
        let node = self.me();
        let mut processes = self.node.registry().snapshot();
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
                    restarts: supervisor.restarts_of(&key),
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

    async fn ps(&self, args: &[String]) -> Result<String, String> {
        let options = Options::parse(args, &["node", "sort", "limit", "every"])?;
        let sort = SortBy::parse(options.get("sort").unwrap_or("memory"))?;
        let limit = usize::try_from(options.number("limit", 50)?).unwrap_or(usize::MAX);
        let view = self
            .cluster_view(options.get("node"), usize::MAX, false)
            .await;
        let mut text = views::ps(view.rows, sort, limit, SystemTime::now());
        for line in view.missing {
            text.push_str(&format!("({line})\n"));
        }
        Ok(text)
    }

    async fn tree(&self, args: &[String]) -> Result<String, String> {
        let options = Options::parse(args, &["limit"])?;
        let limit = usize::try_from(options.number("limit", TREE_LIMIT)?).unwrap_or(usize::MAX);
        let ClusterView { rows, missing, .. } = self.cluster_view(None, usize::MAX, false).await;
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

    async fn info(&self, session: &Session, line: &str, args: &[String]) -> Result<String, String> {
        let [name] = args else {
            return Err("usage: info NAME".into());
        };
        let key = self.key(name)?;
        if let Some(holder) = self.held_elsewhere(session, &key) {
            return self.forward(&holder, line).await;
        }
        let row = self
            .local_rows(usize::MAX)
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

    async fn state(
        &self,
        session: &Session,
        line: &str,
        args: &[String],
    ) -> Result<String, String> {
        let [name] = args else {
            return Err("usage: state NAME".into());
        };
        let key = self.key(name)?;
        if let Some(holder) = self.held_elsewhere(session, &key) {
            return self.forward(&holder, line).await;
        }
        self.node.render_state(&key).await.map(|state| state + "\n")
    }

    async fn kill(&self, session: &Session, line: &str, args: &[String]) -> Result<String, String> {
        let [name] = args else {
            return Err("usage: kill NAME".into());
        };
        let key = self.key(name)?;
        if let Some(holder) = self.held_elsewhere(session, &key) {
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

    fn trace(&self, session: &Arc<Session>, args: &[String]) -> Result<String, String> {
        let options = Options::parse(args, &["count", "for", "rate"])?;
        let [name] = options.plain.as_slice() else {
            return Err("usage: trace NAME [--count N] [--for DURATION] [--rate N]".into());
        };
        let key = self.key(name)?;
        if let Some(holder) = self.held_elsewhere(session, &key) {
            return Err(format!(
                "{key} runs on {holder}: trace it there (remote {holder})"
            ));
        }
        let (limits, duration) = trace_bounds(&options)?;
        self.room_for_a_trace(session)?;
        let (tracer, events) = Tracer::new(limits);
        let tracer = Arc::new(tracer);
        self.node.registry().trace(&key, tracer.clone())?;
        let node = self.node.clone();
        let detached_key = key.clone();
        let detached = tracer.clone();
        Ok(self.start_trace(
            session,
            trace_output::Trace {
                what: key.to_string(),
                unit: "message",
                component: key.component.to_string(),
                tracer,
                events,
                duration,
                detach: Box::new(move || node.registry().untrace(&detached_key, &detached)),
            },
        ))
    }

    /// `trace-calls COMPONENT [FILTER]`: the host calls of every instance
    /// of the component on this node.
    fn trace_calls(&self, session: &Arc<Session>, args: &[String]) -> Result<String, String> {
        let options = Options::parse(args, &["count", "for", "rate"])?;
        let (component, filter) = match options.plain.as_slice() {
            [component] => (component, None),
            [component, filter] => (component, Some(filter.clone())),
            _ => {
                return Err(
                    "usage: trace-calls COMPONENT [FILTER] [--count N] [--for DURATION] [--rate N]"
                        .into(),
                );
            }
        };
        let slot = self
            .node
            .host_call_slot(component)
            .ok_or_else(|| format!("no component `{component}` is loaded"))?
            .clone();
        let (limits, duration) = trace_bounds(&options)?;
        self.room_for_a_trace(session)?;
        if slot
            .load()
            .as_ref()
            .is_some_and(|tracer| !tracer.is_finished())
        {
            return Err(format!(
                "{component}'s host calls are already traced (by another console): wait for \
                 that trace to end"
            ));
        }
        let (tracer, events) = Tracer::filtered(limits, filter.clone());
        let tracer = Arc::new(tracer);
        slot.store(Some(tracer.clone()));
        let mine = tracer.clone();
        let what = match &filter {
            Some(filter) => format!("{component}'s host calls ({filter}*)"),
            None => format!("{component}'s host calls"),
        };
        Ok(self.start_trace(
            session,
            trace_output::Trace {
                what,
                unit: "call",
                component: component.clone(),
                tracer,
                events,
                duration,
                detach: Box::new(move || {
                    // Only this trace: a later one may have taken the slot.
                    slot.rcu(|current| match current {
                        Some(current) if Arc::ptr_eq(current, &mine) => None,
                        other => other.clone(),
                    });
                }),
            },
        ))
    }

    /// Traces are cheap but not free (a rendering instance each, events to
    /// copy): a few per console, a few dozen per node.
    fn room_for_a_trace(&self, session: &Session) -> Result<(), String> {
        if session.running_traces() >= MAX_TRACES_PER_SESSION {
            return Err(format!(
                "this console already runs {MAX_TRACES_PER_SESSION} traces: untrace first"
            ));
        }
        if self.node.traces_running() >= MAX_TRACES_PER_NODE {
            return Err(format!(
                "{} already runs {MAX_TRACES_PER_NODE} traces: wait for one to end",
                self.me()
            ));
        }
        Ok(())
    }

    fn start_trace(&self, session: &Arc<Session>, trace: trace_output::Trace) -> String {
        let limits = trace.tracer.limits();
        let text = format!(
            "tracing {}: up to {}, for {:?}, at most {} per second\n",
            trace.what,
            trace_output::counted(limits.count, trace.unit),
            trace.duration,
            limits.per_second
        );
        session.trace_started();
        tokio::spawn(trace_output::run(
            self.node.clone(),
            session.clone(),
            trace,
            session.trace_stopper(),
        ));
        text
    }

    /// This node's figures. The kernel's (read from /proc, which takes the
    /// process's memory-map lock) are read on a blocking thread.
    pub async fn figures(&self) -> NodeFigures {
        let (resident, page_tables, mappings, max_map_count) =
            tokio::task::spawn_blocking(kernel_figures)
                .await
                .unwrap_or_default();
        let rows = self.node.registry().snapshot();
        NodeFigures {
            node: self.me(),
            resident,
            page_tables,
            mappings,
            max_map_count,
            processes: rows.len(),
            max_processes: self.node.config().limits.max_processes,
            linear_memory: rows.iter().map(|row| row.memory).sum(),
            crashes: self.node.metrics().crashes(),
            messages: rows.iter().map(|row| row.messages).sum(),
        }
    }

    async fn memory(&self) -> String {
        let figures = self.figures().await;
        let mut per_component: std::collections::BTreeMap<String, (usize, usize)> =
            Default::default();
        for row in self.node.registry().snapshot() {
            let entry = per_component.entry(row.component).or_default();
            entry.0 += 1;
            entry.1 += row.memory;
        }
        let mut out = format!(
            "node {}\n  resident:      {}\n  page tables:   {}\n  mappings:      {} (vm.max_map_count: {})\n  processes:     {} of at most {}\n",
            figures.node,
            views::bytes(figures.resident),
            views::bytes(figures.page_tables),
            figures.mappings,
            figures.max_map_count,
            figures.processes,
            figures.max_processes,
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
        // Answer first, then stop: the node closes its links as it goes.
        let stop = self.stop_node.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            stop.cancel();
        });
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

/// A trace's `--count`, `--rate` and `--for`, or their defaults, within
/// the bounds every trace keeps.
fn trace_bounds(options: &Options) -> Result<(TraceLimits, Duration), String> {
    let limits = TraceLimits {
        count: options.number("count", 100)?.clamp(1, MAX_TRACE_COUNT),
        per_second: options.number("rate", 50)?.clamp(1, MAX_TRACE_RATE),
    };
    let duration = match options.get("for") {
        Some(text) => crate::config::parse_duration(text)?,
        None => DEFAULT_TRACE_DURATION,
    };
    if duration > MAX_TRACE_DURATION {
        return Err(format!(
            "a trace runs at most {}h: --for {}",
            MAX_TRACE_DURATION.as_secs() / 3600,
            options.get("for").unwrap_or_default()
        ));
    }
    Ok((limits, duration))
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
