//! The observer: a web page served by the node, as Erlang's `:observer`
//! shows a running system: the cluster's nodes, the process tree per
//! component, memory per process and per node, message and crash rates,
//! live (server-sent events), and a drill-down into one process (its
//! state, its recent messages, its restarts).
//!
//! It listens on loopback by default (reach it through an SSH tunnel, as
//! the book does for `:observer`) and every request must carry the token
//! printed with its address, since the page shows what processes hold.
//! It reads everything through the [`Console`]: the same views as `ps`,
//! `tree`, `info`, `state` and `trace`, never the node's insides (it uses
//! `crate::console` alone).

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures_util::stream;
use http_body_util::{BodyExt, Full, StreamBody, combinators::UnsyncBoxBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response, StatusCode};
use serde_json::{Value, json};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::console::protocol::{ConsoleRequest, NodeFigures, ProcessRow};
use crate::console::{ClusterView, Console, SessionId};

const PAGE: &str = include_str!("page.html");

/// Live streams (the page's updates, a process's messages) served at once;
/// past it, 503: a forgotten browser tab must not grow the node's load.
const MAX_STREAMS: usize = 16;

/// Processes the overview lists, largest memory first; the totals count
/// them all.
const MAX_LISTED: usize = 2000;

/// How often the page is updated.
const UPDATE_EVERY: Duration = Duration::from_secs(1);

pub struct Observer {
    console: Arc<Console>,
    token: String,
    streams: Arc<Semaphore>,
    stop: CancellationToken,
    /// The last view of the cluster, shared by every open page: the node
    /// (and its members, asked over their links) is read once a second
    /// however many pages watch it.
    latest: tokio::sync::Mutex<Option<(Instant, Arc<ClusterView>)>>,
}

type Body = UnsyncBoxBody<Bytes, Infallible>;

impl Observer {
    /// An observer of `console`'s node; its streams end when `stop` is
    /// cancelled.
    pub fn new(console: Arc<Console>, stop: CancellationToken) -> anyhow::Result<Arc<Self>> {
        let mut random = [0u8; 16];
        getrandom::fill(&mut random).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
        Ok(Arc::new(Self {
            console,
            token: random.iter().map(|b| format!("{b:02x}")).collect(),
            streams: Arc::new(Semaphore::new(MAX_STREAMS)),
            stop,
            latest: tokio::sync::Mutex::new(None),
        }))
    }

    /// The token every request must carry (`?token=`).
    pub fn token(&self) -> &str {
        &self.token
    }

    pub async fn handle(
        self: Arc<Self>,
        request: Request<Incoming>,
    ) -> Result<Response<Body>, Infallible> {
        let query = parse_query(request.uri().query().unwrap_or(""));
        if !query
            .get("token")
            .is_some_and(|given| same_secret(given.as_bytes(), self.token.as_bytes()))
        {
            return Ok(text(
                StatusCode::FORBIDDEN,
                "this page needs its token: open the address the node printed \
                 (`bin/todo rpc observer` prints it again)\n",
            ));
        }
        let response = match request.uri().path() {
            "/" | "/index.html" => Response::builder()
                .header("content-type", "text/html; charset=utf-8")
                .header("cache-control", "no-store")
                .body(full(PAGE)),
            "/api/overview" => {
                let overview = self.overview(&mut Rates::default()).await;
                Ok(json_response(&overview))
            }
            "/api/events" => return Ok(self.clone().events()),
            "/api/process" => match query.get("name") {
                Some(name) => Ok(json_response(&self.process(name).await)),
                None => Ok(text(
                    StatusCode::BAD_REQUEST,
                    "name=COMPONENT/NAME is missing\n",
                )),
            },
            "/api/messages" => match query.get("name") {
                Some(name) => return Ok(self.clone().messages(name.clone()).await),
                None => Ok(text(
                    StatusCode::BAD_REQUEST,
                    "name=COMPONENT/NAME is missing\n",
                )),
            },
            _ => Ok(text(StatusCode::NOT_FOUND, "not found\n")),
        };
        Ok(response.unwrap_or_else(|_| text(StatusCode::INTERNAL_SERVER_ERROR, "error\n")))
    }

    /// The cluster's processes and figures, at most [`UPDATE_EVERY`] old.
    async fn view(&self) -> Arc<ClusterView> {
        let mut latest = self.latest.lock().await;
        if let Some((at, view)) = latest.as_ref()
            && at.elapsed() < UPDATE_EVERY - Duration::from_millis(100)
        {
            return view.clone();
        }
        let view = Arc::new(self.console.cluster_view(None, MAX_LISTED, true).await);
        *latest = Some((Instant::now(), view.clone()));
        view
    }

    /// Everything the page shows at one moment.
    async fn overview(&self, rates: &mut Rates) -> Value {
        let view = self.view().await;
        let (figures, missing) = (&view.figures, &view.missing);
        let mut rows: Vec<&ProcessRow> = view.rows.iter().collect();
        let total: usize = figures.iter().map(|f| f.processes).sum();
        rows.sort_by_key(|row| std::cmp::Reverse(row.info.memory));
        rows.truncate(MAX_LISTED);
        let now = SystemTime::now();
        let nodes: Vec<Value> = self
            .console
            .nodes_info()
            .iter()
            .map(|info| {
                let name = info.name.to_string();
                let figures = figures.iter().find(|f| f.node == name);
                let (messages_per_second, crashes_per_second) =
                    figures.map_or((0.0, 0.0), |f| rates.update(f));
                json!({
                    "name": name,
                    "role": format!("{:?}", info.role).to_lowercase(),
                    "up": info.up,
                    "leader": info.leader,
                    "linked": info.linked,
                    "figures": figures,
                    "messages_per_second": messages_per_second,
                    "crashes_per_second": crashes_per_second,
                })
            })
            .collect();
        // This node's versions of each component, and its swap if one runs.
        let versions = self.console.execute("versions").await.text;
        json!({
            "node": self.console.node_name(),
            "versions": versions,
            "storage_failure": self.console.storage_failure(),
            "time_ms": now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64),
            "nodes": nodes,
            "processes": rows.iter().map(|row| process_json(row, now)).collect::<Vec<_>>(),
            "total_processes": total,
            "missing": missing,
        })
    }

    /// `text/event-stream` of the overview, every [`UPDATE_EVERY`].
    fn events(self: Arc<Self>) -> Response<Body> {
        let Some(permit) = self.stream_permit() else {
            return busy();
        };
        let state = (self, Rates::default(), permit, true);
        let updates = stream::unfold(state, |(observer, mut rates, permit, first)| async move {
            if !first {
                tokio::select! {
                    () = tokio::time::sleep(UPDATE_EVERY) => {}
                    () = observer.stop.cancelled() => return None,
                }
            }
            let overview = observer.overview(&mut rates).await;
            let event = format!("event: overview\ndata: {overview}\n\n");
            Some((
                Ok::<_, Infallible>(Frame::data(Bytes::from(event))),
                (observer, rates, permit, false),
            ))
        });
        event_stream(StreamBody::new(updates).boxed_unsync())
    }

    /// One process: `info` and `state`, as the console shows them.
    async fn process(&self, name: &str) -> Value {
        let quoted = quote(name);
        let info = self.console.execute(&format!("info {quoted}")).await;
        let state = self.console.execute(&format!("state {quoted}")).await;
        json!({
            "name": name,
            "running": info.ok,
            "info": info.text,
            "state": state.text,
        })
    }

    /// A bounded trace of one process (20 messages, 60 s, 10 per second),
    /// streamed as events; it stops when the page closes the stream.
    async fn messages(self: Arc<Self>, name: String) -> Response<Body> {
        let Some(permit) = self.stream_permit() else {
            return busy();
        };
        let session = next_session_id();
        let started = self
            .console
            .serve(
                session,
                ConsoleRequest::Run {
                    line: format!("trace {} --count 20 --for 60s --rate 10", quote(&name)),
                },
            )
            .await;
        let first = format!("data: {}\n\n", json!(started.text.trim_end()));
        let guard = SessionGuard {
            console: self.console.clone(),
            id: session,
            _permit: permit,
        };
        // After the trace (or a refusal to start it), an `end` event: the
        // page closes the stream instead of letting the browser reconnect.
        let state = (self, guard, Some(first), Some(started.live));
        let lines = stream::unfold(state, |(observer, guard, first, live)| async move {
            if let Some(first) = first {
                let frame = Frame::data(Bytes::from(first));
                return Some((Ok::<_, Infallible>(frame), (observer, guard, None, live)));
            }
            match live {
                None => return None,
                Some(false) => {
                    let frame = Frame::data(Bytes::from_static(b"event: end\ndata: \n\n"));
                    return Some((Ok(frame), (observer, guard, None, None)));
                }
                Some(true) => {}
            }
            let output = tokio::select! {
                output = observer.console.serve(guard.id, ConsoleRequest::Output) => output,
                () = observer.stop.cancelled() => return None,
            };
            let events: String = output
                .text
                .lines()
                .map(|line| format!("data: {}\n\n", json!(line)))
                .collect();
            let frame = Frame::data(Bytes::from(events));
            Some((Ok(frame), (observer, guard, None, Some(output.live))))
        });
        event_stream(StreamBody::new(lines).boxed_unsync())
    }

    fn stream_permit(&self) -> Option<OwnedSemaphorePermit> {
        self.streams.clone().try_acquire_owned().ok()
    }
}

/// Ends a drill-down's console session (and so its trace) when the page
/// closes the stream.
struct SessionGuard {
    console: Arc<Console>,
    id: SessionId,
    _permit: OwnedSemaphorePermit,
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        self.console.end_session(self.id);
    }
}

/// Session ids for the observer's streams, apart from remote consoles'
/// (which are link addresses, never this high).
fn next_session_id() -> SessionId {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static NEXT: AtomicUsize = AtomicUsize::new(usize::MAX / 2);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// Per-node message and crash rates, from the change of their counts
/// between two overviews of one stream.
#[derive(Default)]
struct Rates {
    previous: HashMap<String, (Instant, u64, u64)>,
}

impl Rates {
    fn update(&mut self, figures: &NodeFigures) -> (f64, f64) {
        let now = Instant::now();
        let rates = match self.previous.get(&figures.node) {
            Some((at, messages, crashes)) => {
                let seconds = now.duration_since(*at).as_secs_f64().max(0.001);
                (
                    figures.messages.saturating_sub(*messages) as f64 / seconds,
                    figures.crashes.saturating_sub(*crashes) as f64 / seconds,
                )
            }
            None => (0.0, 0.0),
        };
        self.previous.insert(
            figures.node.clone(),
            (now, figures.messages, figures.crashes),
        );
        rates
    }
}

fn process_json(row: &ProcessRow, now: SystemTime) -> Value {
    let info = &row.info;
    json!({
        "node": row.node,
        "component": info.component,
        "name": info.name,
        "pid": info.pid,
        "memory": info.memory,
        "messages": info.messages,
        "mailbox": info.queued_messages,
        "restarts": row.restarts.as_ref().map_or(0, |r| r.count),
        "uptime_s": now.duration_since(info.started).map_or(0, |d| d.as_secs()),
        "traced": info.traced,
        "version": info.version,
    })
}

/// `COMPONENT/NAME` as one console word.
fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('\\', "\\\\").replace('"', "\\\""))
}

fn parse_query(query: &str) -> HashMap<String, String> {
    query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .map(|(key, value)| (decode(key), decode(value)))
        .collect()
}

/// Percent-decoding (and `+` as space) of one query component.
fn decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        match bytes[index] {
            b'%' if index + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[index + 1..index + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(byte) => {
                        out.push(byte);
                        index += 3;
                        continue;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            byte => out.push(byte),
        }
        index += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn full(text: impl Into<Bytes>) -> Body {
    Full::new(text.into()).boxed_unsync()
}

fn text(status: StatusCode, message: &'static str) -> Response<Body> {
    let mut response = Response::new(full(message));
    *response.status_mut() = status;
    response
}

fn busy() -> Response<Body> {
    text(
        StatusCode::SERVICE_UNAVAILABLE,
        "too many live views are open on this node; close one\n",
    )
}

fn json_response(value: &Value) -> Response<Body> {
    let mut response = Response::new(full(value.to_string()));
    response.headers_mut().insert(
        "content-type",
        hyper::header::HeaderValue::from_static("application/json"),
    );
    response
}

fn event_stream(body: Body) -> Response<Body> {
    let mut response = Response::new(body);
    let headers = response.headers_mut();
    headers.insert(
        "content-type",
        hyper::header::HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(
        "cache-control",
        hyper::header::HeaderValue::from_static("no-store"),
    );
    response
}

/// Whether `given` equals `secret`, in a time that depends on their
/// lengths only: a guesser learns nothing from how fast a wrong token is
/// refused.
fn same_secret(given: &[u8], secret: &[u8]) -> bool {
    given.len() == secret.len()
        && given
            .iter()
            .zip(secret)
            .fold(0u8, |differ, (a, b)| differ | (a ^ b))
            == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_is_compared_whole() {
        assert!(same_secret(b"ab12cd34", b"ab12cd34"));
        for wrong in [&b"ab12cd35"[..], b"bb12cd34", b"ab12cd3", b"ab12cd344", b""] {
            assert!(!same_secret(wrong, b"ab12cd34"), "{wrong:?}");
        }
    }

    #[test]
    fn queries_are_decoded() {
        let query = parse_query("token=ab12&name=guest_todo%2Fmy+list&bad=%zz");
        assert_eq!(query.get("token").map(String::as_str), Some("ab12"));
        assert_eq!(
            query.get("name").map(String::as_str),
            Some("guest_todo/my list")
        );
        assert_eq!(query.get("bad").map(String::as_str), Some("%zz"));
        assert_eq!(decode("%4"), "%4");
    }

    #[test]
    fn names_are_quoted_for_the_console() {
        assert_eq!(quote(r#"a "b"\c"#), r#""a \"b\"\\c""#);
    }

    #[test]
    fn rates_are_changes_per_second() {
        let mut rates = Rates::default();
        let mut figures = NodeFigures {
            node: "n".into(),
            messages: 100,
            crashes: 1,
            ..NodeFigures::default()
        };
        assert_eq!(rates.update(&figures), (0.0, 0.0));
        figures.messages = 50; // processes expired: never negative
        let (messages, crashes) = rates.update(&figures);
        assert_eq!((messages, crashes), (0.0, 0.0));
    }
}
