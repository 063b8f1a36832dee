//! HTTP ingress: hyper in front, a component's `wasi:http/incoming-handler`
//! behind.
//!
//! A request is handled by an instance of the component that is not a
//! process. A fresh instance per request costs more than the request itself,
//! so an instance that handled a request cleanly serves up to
//! `--http-instance-reuse` requests (as `wasmtime serve` and Spin do); one
//! that trapped or ran past its deadline is dropped. The contract says
//! handlers keep no state between requests: they reach state through
//! processes. The host answers some requests itself, before any guest runs:
//! 413 for a body over the limit, 503 when no handler permit comes free
//! before the deadline (`--max-concurrent-requests`), 504 when the handler runs past the request deadline, 500
//! when it traps before answering.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::uri::{PathAndQuery, Uri};
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};
use tokio::time::Instant;
use wasmtime::Store;
use wasmtime_wasi_http::WasiHttpView as _;
use wasmtime_wasi_http::p2::bindings::Proxy;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;

use crate::budget::MemoryBudget;
use crate::config::HttpConfig;
use crate::metrics::Series;
use crate::process::Targets;
use crate::wasm::{Component, StoreData, describe_trap};

/// Where requests go: the first component at `/`, every other one that
/// serves HTTP under `/<its name>/`.
pub struct Ingress {
    config: HttpConfig,
    /// Components' names in load order: the first is mounted at `/`.
    names: Vec<Arc<str>>,
    /// Which version of each component serves (a swap changes it).
    targets: Arc<Targets<Component>>,
    /// One per handler running at once (`--max-concurrent-requests`).
    handler_permits: Arc<Semaphore>,
    /// What handlers' linear memories may add up to
    /// (`--http-handler-memory`).
    handler_memory: Arc<MemoryBudget>,
    /// Idle handler instances, per component name.
    warm: HashMap<String, Arc<WarmHandlers>>,
    requests: AtomicU64,
    host_errors: AtomicU64,
}

/// A handler instance that served its requests cleanly, ready for another.
struct WarmHandler {
    /// The version it is an instance of.
    component: Arc<Component>,
    store: Store<StoreData>,
    proxy: Proxy,
    served: u32,
}

/// Idle handler instances kept per component for the next requests: a
/// burst of concurrent requests leaves no more than this many behind.
const MAX_WARM: usize = 64;
/// A handler whose linear memory grew past this (it built a large answer)
/// is not kept: its memory goes back when the request ends, instead of
/// staying with an idle instance.
const MAX_WARM_MEMORY: usize = 4 * 1024 * 1024;

/// Idle handler instances of one component, most recently used last (so
/// the hottest memory is reused first).
#[derive(Default)]
struct WarmHandlers {
    idle: Mutex<Vec<WarmHandler>>,
    /// The targets' epoch when the idle ones were last checked against
    /// them.
    checked: std::sync::atomic::AtomicU64,
}

impl WarmHandlers {
    /// The most recently used idle handler of version `component`.
    fn take(&self, component: &Arc<Component>) -> Option<WarmHandler> {
        let mut idle = self.lock();
        let at = idle
            .iter()
            .rposition(|handler| Arc::ptr_eq(&handler.component, component))?;
        Some(idle.remove(at))
    }

    /// Keeps `handler` for another request. Once per change of the
    /// targets, drops the handlers of versions that no longer serve (a swap
    /// moved requests away); nothing is checked while none changes.
    fn put(&self, handler: WarmHandler, targets: &Targets<Component>) {
        let epoch = targets.epoch();
        let mut idle = self.lock();
        if self.checked.swap(epoch, Ordering::Relaxed) != epoch {
            let serving = |version: &Arc<Component>| {
                targets.get(version.name()).is_some_and(|(_, target)| {
                    let target = target.load();
                    Arc::ptr_eq(&target.current, version)
                        || target
                            .next
                            .as_ref()
                            .is_some_and(|next| Arc::ptr_eq(&next.code, version))
                })
            };
            idle.retain(|handler| serving(&handler.component));
            if !serving(&handler.component) {
                return;
            }
        }
        if idle.len() < MAX_WARM {
            idle.push(handler);
        }
    }

    fn len(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<WarmHandler>> {
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// An answer the host gives itself.
struct Rejection {
    status: StatusCode,
    message: String,
}

impl Rejection {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }
}

impl Ingress {
    /// The ingress of the components named `names` (the first at `/`),
    /// each served by the version `targets` says, as `config` says.
    pub fn new(
        config: HttpConfig,
        names: Vec<Arc<str>>,
        targets: Arc<Targets<Component>>,
    ) -> Arc<Self> {
        let permits = config.max_concurrent_requests as usize;
        let warm = names
            .iter()
            .map(|name| (name.to_string(), Arc::default()))
            .collect();
        let handler_memory = Arc::new(MemoryBudget::new(config.max_handler_memory));
        Arc::new(Self {
            config,
            names,
            targets,
            handler_permits: Arc::new(Semaphore::new(permits)),
            handler_memory,
            warm,
            requests: AtomicU64::new(0),
            host_errors: AtomicU64::new(0),
        })
    }

    /// Handler instances waiting, warm, for their next request: counted
    /// when asked (the metrics page), not kept up to date per request.
    fn idle_handlers(&self) -> usize {
        self.warm.values().map(|warm| warm.len()).sum()
    }

    /// HTTP's series for the metrics page.
    pub fn series(&self) -> Vec<Series> {
        vec![
            Series::counter(
                "host_http_requests_total",
                "HTTP requests received.",
                self.requests.load(Ordering::Relaxed),
            ),
            Series::counter(
                "host_http_host_errors_total",
                "HTTP requests the host answered with an error itself.",
                self.host_errors.load(Ordering::Relaxed),
            ),
            Series::gauge(
                "host_http_idle_handlers",
                "HTTP handler instances waiting, warm, for their next request.",
                self.idle_handlers() as u64,
            ),
            Series::gauge(
                "host_http_handler_memory_bytes",
                "Linear memory HTTP handler instances hold now (--http-handler-memory bounds it).",
                self.handler_memory.used() as u64,
            ),
            Series::counter(
                "host_http_handler_memory_refused_total",
                "Times an HTTP handler could not grow its memory: the handlers' budget was spent.",
                self.handler_memory.refused(),
            ),
        ]
    }

    pub async fn handle(
        self: Arc<Self>,
        request: Request<Incoming>,
    ) -> Result<Response<HyperOutgoingBody>, Infallible> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let format = ErrorFormat::asked_by(request.headers());
        Ok(match self.dispatch(request).await {
            Ok(response) => response,
            Err(rejection) => {
                self.host_errors.fetch_add(1, Ordering::Relaxed);
                rejection.into_response(format)
            }
        })
    }

    async fn dispatch(
        &self,
        request: Request<Incoming>,
    ) -> Result<Response<HyperOutgoingBody>, Rejection> {
        let config = &self.config;
        let deadline = Instant::now() + config.request_deadline;
        let (component, request) = self
            .route(request)
            .ok_or_else(|| Rejection::new(StatusCode::NOT_FOUND, "not found"))?;
        if !request.headers().contains_key(header::HOST) && request.uri().authority().is_none() {
            return Err(Rejection::new(
                StatusCode::BAD_REQUEST,
                "missing Host header",
            ));
        }
        // One timer for both waits: reading the body, then a handler permit.
        let mut body_read = false;
        let admitted = tokio::time::timeout_at(deadline, async {
            let request = read_body(request, config.max_body_bytes).await?;
            body_read = true;
            let permit = self.handler_permits.clone().acquire_owned().await;
            let permit = permit.map_err(|_| {
                Rejection::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "not applied: the node is shutting down",
                )
            })?;
            Ok::<_, Rejection>((request, permit))
        })
        .await;
        let (request, permit) = match admitted {
            Ok(admitted) => admitted?,
            Err(_) if body_read => {
                return Err(Rejection::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "not applied: too many requests in flight; try again",
                ));
            }
            Err(_) => {
                return Err(Rejection::new(
                    StatusCode::REQUEST_TIMEOUT,
                    "request body too slow",
                ));
            }
        };
        self.run_handler(component, request, permit, deadline).await
    }

    /// Picks the component for the request's path, stripping its mount
    /// prefix from the path the guest sees.
    fn route<B>(&self, mut request: Request<B>) -> Option<(Arc<Component>, Request<B>)> {
        let path = request.uri().path();
        for name in self.names.iter().skip(1) {
            let prefix = format!("/{name}");
            let rest = match path.strip_prefix(&prefix) {
                Some(rest) if rest.is_empty() || rest.starts_with('/') => rest,
                _ => continue,
            };
            let component = self.version_of(name)?;
            component.code().http_pre()?;
            let rest = if rest.is_empty() { "/" } else { rest };
            let path_and_query = match request.uri().query() {
                Some(query) => format!("{rest}?{query}"),
                None => rest.to_string(),
            };
            let mut parts = request.uri().clone().into_parts();
            parts.path_and_query = PathAndQuery::try_from(path_and_query).ok();
            *request.uri_mut() = Uri::from_parts(parts).ok()?;
            return Some((component, request));
        }
        let main = self.version_of(self.names.first()?)?;
        main.code().http_pre()?;
        Some((main, request))
    }

    /// The version of component `name` a request goes to: during a swap,
    /// the new one (all of them, or the canary's share, spread evenly over
    /// requests), else the current one.
    fn version_of(&self, name: &str) -> Option<Arc<Component>> {
        let (_, target) = self.targets.get(name)?;
        let target = target.load();
        Some(match &target.next {
            Some(next) if next.share >= 100 => next.code.clone(),
            Some(next) if self.requests.load(Ordering::Relaxed) % 100 < u64::from(next.share) => {
                next.code.clone()
            }
            _ => target.current.clone(),
        })
    }

    /// Runs the component's handler in a task of its own: the response head
    /// comes back through a channel while the handler may go on writing the
    /// body. The handler permit is held until the task ends.
    async fn run_handler(
        &self,
        component: Arc<Component>,
        request: Request<Full<Bytes>>,
        permit: OwnedSemaphorePermit,
        deadline: Instant,
    ) -> Result<Response<HyperOutgoingBody>, Rejection> {
        let Some(warm) = self.warm.get(component.name().as_ref()).cloned() else {
            return Err(Rejection::new(StatusCode::NOT_FOUND, "not found"));
        };
        let (sender, receiver) = oneshot::channel();
        let instance_reuse = self.config.instance_reuse;
        let targets = self.targets.clone();
        let memory = self.handler_memory.clone();
        // The task ends at the deadline at the latest, dropping the response
        // sender: a closed channel then means a deadline or a crash.
        tokio::spawn(async move {
            let _permit = permit;
            let name = component.name().clone();
            let served = serve_request(
                &component,
                memory,
                instance_reuse,
                &warm,
                request,
                sender,
                &targets,
            );
            match tokio::time::timeout_at(deadline, served).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::warn!(component = %name, "HTTP handler failed: {}", describe_trap(&e))
                }
                Err(_) => {
                    tracing::warn!(component = %name, "HTTP handler ran past the request deadline")
                }
            }
        });
        // The handler is bounded by the deadline, but a guest could also
        // keep the response's sender alive in its resource table: the wait
        // for the head has the same deadline.
        let past_deadline = || {
            Rejection::new(
                StatusCode::GATEWAY_TIMEOUT,
                "outcome unknown: the request ran past its deadline",
            )
        };
        match tokio::time::timeout_at(deadline, receiver).await {
            Ok(Ok(Ok(response))) => Ok(response),
            Ok(Ok(Err(code))) => Err(Rejection::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("outcome unknown: the request handler failed: {code:?}"),
            )),
            Err(_elapsed) => Err(past_deadline()),
            Ok(Err(_closed)) if Instant::now() >= deadline => Err(past_deadline()),
            Ok(Err(_closed)) => Err(Rejection::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "outcome unknown: the request handler crashed",
            )),
        }
    }
}

/// Hands `request` to a warm handler instance of `component`, or a new one,
/// and puts the instance back if it finished cleanly and may serve more.
async fn serve_request(
    component: &Arc<Component>,
    memory: Arc<MemoryBudget>,
    instance_reuse: u32,
    warm: &WarmHandlers,
    request: Request<Full<Bytes>>,
    respond: ResponseSender,
    targets: &Targets<Component>,
) -> wasmtime::Result<()> {
    let mut handler = match warm.take(component) {
        Some(handler) => handler,
        None => {
            let Some(pre) = component.code().http_pre() else {
                wasmtime::bail!("component `{}` does not serve HTTP", component.name());
            };
            let mut store = component.new_handler_store(memory);
            let proxy = pre.instantiate_async(&mut store).await?;
            WarmHandler {
                component: component.clone(),
                store,
                proxy,
                served: 0,
            }
        }
    };
    let incoming = handler
        .store
        .data_mut()
        .http()
        .new_incoming_request(Scheme::Http, request)?;
    let outparam = handler
        .store
        .data_mut()
        .http()
        .new_response_outparam(respond)?;
    handler
        .proxy
        .wasi_http_incoming_handler()
        .call_handle(&mut handler.store, incoming, outparam)
        .await?;
    handler.served += 1;
    let data = handler.store.data();
    if handler.served < instance_reuse
        && data.holds_no_resources()
        && data.linear_memory_bytes() <= MAX_WARM_MEMORY
    {
        warm.put(handler, targets);
    }
    Ok(())
}

type ResponseSender = oneshot::Sender<
    Result<Response<HyperOutgoingBody>, wasmtime_wasi_http::p2::bindings::http::types::ErrorCode>,
>;

/// Reads the whole body, refusing more than `limit` bytes: Todo bodies are
/// small, and a bounded buffer is simpler to reason about than a stream.
async fn read_body(
    request: Request<Incoming>,
    limit: usize,
) -> Result<Request<Full<Bytes>>, Rejection> {
    let too_large = || {
        Rejection::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body larger than {limit} bytes"),
        )
    };
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|length| length > limit as u64) {
        return Err(too_large());
    }
    let (parts, body) = request.into_parts();
    let bytes = match Limited::new(body, limit).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e)
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            return Err(too_large());
        }
        Err(e) => {
            return Err(Rejection::new(
                StatusCode::BAD_REQUEST,
                format!("cannot read the request body: {e}"),
            ));
        }
    };
    Ok(Request::from_parts(parts, Full::new(bytes)))
}

/// How the host writes the errors it answers itself: JSON for a client that
/// speaks JSON (its `Accept` or `Content-Type` names `application/json`),
/// as the JSON API's own errors are; plain text for everyone else.
#[derive(Clone, Copy)]
enum ErrorFormat {
    Text,
    Json,
}

impl ErrorFormat {
    fn asked_by(headers: &HeaderMap) -> Self {
        let speaks_json = [header::ACCEPT, header::CONTENT_TYPE].iter().any(|name| {
            headers
                .get(name)
                .and_then(|value| value.to_str().ok())
                .is_some_and(|value| value.contains("application/json"))
        });
        if speaks_json {
            ErrorFormat::Json
        } else {
            ErrorFormat::Text
        }
    }
}

impl Rejection {
    fn into_response(self, format: ErrorFormat) -> Response<HyperOutgoingBody> {
        let (content_type, body) = match format {
            ErrorFormat::Text => ("text/plain; charset=utf-8", self.message),
            ErrorFormat::Json => (
                "application/json",
                serde_json::json!({ "error": self.message }).to_string(),
            ),
        };
        let body = Full::new(Bytes::from(body))
            .map_err(|never| match never {})
            .boxed_unsync();
        let mut response = Response::new(body);
        *response.status_mut() = self.status;
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        response
    }
}
