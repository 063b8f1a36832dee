//! Metrics in the Prometheus text format, served on `--metrics-port`.
//!
//! Each part of the node counts its own and hands its [`Series`] over when
//! the page is asked for: the processes (`crate::node`), HTTP ingress, the
//! cluster, the console. This module only renders and serves them.

use std::convert::Infallible;
use std::fmt::Write as _;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode};

/// One metric and its value now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Series {
    pub name: &'static str,
    pub kind: Kind,
    pub help: &'static str,
    pub value: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Gauge,
    Counter,
}

impl Series {
    pub fn gauge(name: &'static str, help: &'static str, value: u64) -> Self {
        Self {
            name,
            kind: Kind::Gauge,
            help,
            value,
        }
    }

    pub fn counter(name: &'static str, help: &'static str, value: u64) -> Self {
        Self {
            name,
            kind: Kind::Counter,
            help,
            value,
        }
    }
}

/// Where the page's series come from, read each time it is asked for.
pub type Source = Arc<dyn Fn() -> Vec<Series> + Send + Sync>;

/// The metrics page of node `node`.
pub fn render(node: &str, series: &[Series]) -> String {
    let mut out = String::new();
    for Series {
        name,
        kind,
        help,
        value,
    } in series
    {
        let kind = match kind {
            Kind::Gauge => "gauge",
            Kind::Counter => "counter",
        };
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        let _ = writeln!(out, "{name}{{node=\"{node}\"}} {value}");
    }
    out
}

/// Serves `GET /metrics` of node `node` from `source`.
pub async fn handle(
    node: Arc<str>,
    source: Source,
    request: Request<hyper::body::Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let response = if request.uri().path() == "/metrics" {
        Response::builder()
            .header("content-type", "text/plain; version=0.0.4")
            .body(Full::new(Bytes::from(render(&node, &source()))))
    } else {
        Response::builder()
            .status(StatusCode::NOT_FOUND)
            .body(Full::new(Bytes::from_static(b"not found: try /metrics\n")))
    };
    Ok(response.unwrap_or_else(|_| Response::new(Full::new(Bytes::new()))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_series_has_its_help_type_and_node() {
        let page = render(
            "a@h",
            &[
                Series::gauge("x_now", "X now.", 3),
                Series::counter("y_total", "Ys.", 7),
            ],
        );
        assert_eq!(
            page,
            "# HELP x_now X now.\n# TYPE x_now gauge\nx_now{node=\"a@h\"} 3\n\
             # HELP y_total Ys.\n# TYPE y_total counter\ny_total{node=\"a@h\"} 7\n"
        );
    }
}
