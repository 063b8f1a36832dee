//! The console's side of a trace: reads the events a [`Tracer`] collects,
//! renders them (by the component where it can), and writes them to the
//! session's output until the trace is over.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use wasmtime::Store;
use wasmtime::component::{Func, Instance, Val};

use super::Session;
use crate::node::OperatorAccess;
use crate::process::trace::{EventKind, TraceEvent, Tracer, render_bytes};
use crate::wasm::{Component, StoreData, guarded};

/// One running trace, as the console holds it.
pub struct Trace {
    /// What is traced: a process, or a component's host calls.
    pub what: String,
    /// What it counts: `message` or `call`.
    pub unit: &'static str,
    pub component: String,
    pub tracer: Arc<Tracer>,
    pub events: mpsc::Receiver<TraceEvent>,
    pub duration: Duration,
    /// Takes the tracer off what it traces, once the trace is over.
    pub detach: Box<dyn FnOnce() + Send>,
}

/// Runs `trace` for `session` until its count, its duration or the
/// session ends (or `cancel`), then detaches it.
pub async fn run(
    node: OperatorAccess,
    session: Arc<Session>,
    trace: Trace,
    cancel: CancellationToken,
) {
    let Trace {
        what,
        unit,
        component,
        tracer,
        mut events,
        duration,
        detach,
    } = trace;
    // Whatever ends this task (a panic included), the trace is taken off
    // what it traces and the session stops waiting for it.
    let _ended = Ended {
        detach: Some(detach),
        session: session.clone(),
        cancel: cancel.clone(),
    };
    // Host calls are described by the host: no instance to render them.
    let mut renderer = match node.component(&component) {
        Some(component) if !what.contains("host calls") => {
            Renderer::new(&node, component.clone()).await
        }
        _ => Renderer::Bytes,
    };
    let deadline = tokio::time::Instant::now()
        .checked_add(duration)
        .unwrap_or_else(tokio::time::Instant::now);
    let mut shown = 0u64;
    let why = loop {
        let event = tokio::select! {
            event = events.recv() => event,
            () = tokio::time::sleep_until(deadline) => break format!("its {duration:?} are up"),
            () = cancel.cancelled() => break "stopped".to_string(),
            () = tokio::time::sleep(Duration::from_millis(200)) => {
                if tracer.is_finished() && events.is_empty() {
                    break format!("its {} shown", counted(tracer.limits().count, unit));
                }
                continue;
            }
        };
        let Some(event) = event else {
            break "the process is gone".to_string();
        };
        let text = renderer.render(&node, &event).await;
        session.print(format_event(&event, &text));
        shown += 1;
    };
    let dropped = tracer.dropped();
    session.print(format!(
        "trace of {what} ended ({why}): {shown} shown{}",
        if dropped > 0 {
            format!(", {dropped} dropped (over the rate)")
        } else {
            String::new()
        }
    ));
}

/// `1 message`, `2 messages`.
pub fn counted(count: u64, unit: &str) -> String {
    if count == 1 {
        format!("1 {unit}")
    } else {
        format!("{count} {unit}s")
    }
}

/// Ends a trace when its task ends, however it ends.
struct Ended {
    detach: Option<Box<dyn FnOnce() + Send>>,
    session: Arc<Session>,
    cancel: CancellationToken,
}

impl Drop for Ended {
    fn drop(&mut self) {
        if let Some(detach) = self.detach.take() {
            detach();
        }
        // Ends the watcher of the session's stop tokens too.
        self.cancel.cancel();
        self.session.trace_ended();
    }
}

/// `14:03:04.120 guest_todo/production_list <7> call: add 2023-01-01 "x"`
fn format_event(event: &TraceEvent, text: &str) -> String {
    let what = match event.kind {
        EventKind::Call => "call",
        EventKind::Cast => "cast",
        EventKind::Reply => "reply",
        EventKind::HostCall => {
            return format!("{} {} host call: {text}", clock(event.at), event.key);
        }
    };
    format!(
        "{} {} <{}> {what}: {text}",
        clock(event.at),
        event.key,
        event.pid
    )
}

/// `HH:MM:SS.mmm`, UTC.
fn clock(at: SystemTime) -> String {
    let since = at.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
    let seconds = since.as_secs() % 86_400;
    format!(
        "{:02}:{:02}:{:02}.{:03}",
        seconds / 3600,
        seconds / 60 % 60,
        seconds % 60,
        since.subsec_millis()
    )
}

/// Renders trace events: by the component's `render-message`, in an
/// instance that holds no process, or as bytes.
enum Renderer {
    Component {
        store: Box<Store<StoreData>>,
        render: Func,
        _instance: Instance,
    },
    Bytes,
}

impl Renderer {
    async fn new(node: &OperatorAccess, component: Arc<Component>) -> Self {
        let Some(exports) = component.code().introspect().cloned() else {
            return Renderer::Bytes;
        };
        let deadline = node.limits().call_deadline;
        let Ok((store, instance)) = component.one_off_instance(deadline).await else {
            return Renderer::Bytes;
        };
        let mut store = Box::new(store);
        match instance.get_func(&mut *store, exports.render_message) {
            Some(render) => Renderer::Component {
                store,
                render,
                _instance: instance,
            },
            None => Renderer::Bytes,
        }
    }

    async fn render(&mut self, node: &OperatorAccess, event: &TraceEvent) -> String {
        if event.kind == EventKind::HostCall {
            return String::from_utf8_lossy(&event.bytes).into_owned();
        }
        let bytes = render_bytes(&event.bytes, event.len);
        let Renderer::Component { store, render, .. } = self else {
            return bytes;
        };
        let kind = match event.kind {
            EventKind::Call => "call",
            EventKind::Cast => "cast",
            EventKind::Reply | EventKind::HostCall => "reply",
        };
        let params = [
            Val::Enum(kind.to_string()),
            Val::List(event.bytes.iter().map(|b| Val::U8(*b)).collect()),
        ];
        let mut results = [Val::Bool(false)];
        let deadline = node.limits().call_deadline;
        match guarded(
            deadline,
            render.call_async(&mut **store, &params, &mut results),
        )
        .await
        {
            Ok(()) => match &results[0] {
                Val::Option(Some(text)) => match text.as_ref() {
                    Val::String(text) if event.bytes.len() == event.len => text.clone(),
                    Val::String(text) => format!("{text} (cut at {} bytes)", event.bytes.len()),
                    _ => bytes,
                },
                _ => bytes,
            },
            Err(reason) => {
                // A trapped instance is not used again.
                *self = Renderer::Bytes;
                format!("{bytes} (render-message failed: {reason})")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_read_well() {
        assert_eq!(counted(1, "call"), "1 call");
        assert_eq!(counted(20, "message"), "20 messages");
    }

    #[test]
    fn times_are_utc_clock_times() {
        assert_eq!(
            clock(UNIX_EPOCH + Duration::from_millis(3_723_045)),
            "01:02:03.045"
        );
    }
}
