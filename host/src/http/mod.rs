//! HTTP: the accept loop every HTTP listener of a node shares (guests'
//! routes, metrics, the observer), with graceful shutdown, and `ingress`,
//! which hands requests to components' `wasi:http/incoming-handler`.
//!
//! Each listener has a connection cap (`crate::budget`): past it, a new
//! connection is answered 503 and closed at once, without a task or a
//! buffer, and counted. `slow_readers` cuts connections whose client
//! stops reading its answer, so they cannot pile up memory.
//!
//! It may use the wasm side (components, their stores), `crate::budget` and
//! `crate::metrics`; it reaches processes only through what guests call.

mod ingress;
mod slow_readers;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use hyper::body::{Body, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

pub use ingress::Ingress;
pub use slow_readers::SlowReaders;

use crate::budget::{ConnectionCap, FailureSummary, and_more, refuse_now};

/// How long a client may take to send its request headers.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// How often a listener logs that accepting fails (out of descriptors, say):
/// once per interval, with the count.
const ACCEPT_FAILURE_INTERVAL: Duration = Duration::from_secs(10);

/// Binds `addr`, saying plainly what is wrong when it cannot.
pub async fn bind(addr: SocketAddr, what: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr).await.map_err(|e| {
        if e.kind() == std::io::ErrorKind::AddrInUse {
            anyhow::anyhow!(
                "cannot listen for {what} on {addr}: the port is already in use \
                 (another node running? choose another port)"
            )
        } else {
            anyhow::anyhow!("cannot listen for {what} on {addr}: {e}")
        }
    })
}

/// Accepts HTTP/1.1 connections on `listener` until `stop` is cancelled,
/// at most `cap` at once, each cut should its client stop reading (`slow`,
/// shared by the node's listeners), then lets in-flight requests finish for
/// up to `drain`.
pub async fn serve<S, F, B>(
    listener: TcpListener,
    cap: Arc<ConnectionCap>,
    slow: Arc<SlowReaders>,
    service: S,
    stop: CancellationToken,
    drain: Duration,
) where
    S: Fn(Request<Incoming>) -> F + Clone + Send + 'static,
    F: Future<Output = Result<Response<B>, Infallible>> + Send + 'static,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let graceful = GracefulShutdown::new();
    let accept_failures = FailureSummary::new(ACCEPT_FAILURE_INTERVAL);
    let at = listener
        .local_addr()
        .map_or_else(|_| "?".to_string(), |addr| addr.to_string());
    loop {
        let (stream, _peer) = tokio::select! {
            _ = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(connection) => connection,
                Err(e) => {
                    // Out of file descriptors and the like: back off, keep serving.
                    if let Some(unlogged) = accept_failures.record(&at) {
                        tracing::warn!("accepting on {at} failed: {e}{}", and_more(unlogged));
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Some(admitted) = cap.admit() else {
            refuse_at_cap(&stream, cap.max());
            continue;
        };
        let _ = stream.set_nodelay(true);
        let service = service.clone();
        let connection = http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_READ_TIMEOUT)
            .serve_connection(TokioIo::new(slow.watch(stream)), service_fn(service));
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            let _admitted = admitted;
            if let Err(e) = connection.await {
                tracing::debug!("connection ended: {e}");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(drain, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("in-flight HTTP requests still running after {drain:?}; closing them");
    }
}

/// Answers a connection past its listener's cap with a 503 and lets it go
/// ([`refuse_now`]): a client that reads it knows nothing was done.
fn refuse_at_cap(stream: &TcpStream, max: usize) {
    let body = format!(
        "not applied: this port is at its cap of {max} open connections; try again shortly\n"
    );
    let answer = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain; charset=utf-8\r\n\
         retry-after: 1\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    refuse_now(stream, answer.as_bytes());
}
