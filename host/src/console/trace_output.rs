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
use crate::component::LoadedComponent;
use crate::node::NodeCore;
use crate::process::guarded;
use crate::registry::ProcessKey;
use crate::state::InstanceState;
use crate::trace::{EventKind, TraceEvent, Tracer};

/// Runs one trace of `key` for `session` until its count, its duration or
/// the session ends, then takes it off the process.
pub async fn run(
    node: Arc<NodeCore>,
    session: Arc<Session>,
    key: ProcessKey,
    tracer: Arc<Tracer>,
    mut events: mpsc::Receiver<TraceEvent>,
    duration: Duration,
    cancel: CancellationToken,
) {
    let mut renderer = match node.component(&key.component) {
        Some(component) => Renderer::new(&node, component.clone()).await,
        None => Renderer::Bytes,
    };
    let deadline = tokio::time::Instant::now() + duration;
    let mut shown = 0u64;
    let why = loop {
        let event = tokio::select! {
            event = events.recv() => event,
            () = tokio::time::sleep_until(deadline) => break format!("its {duration:?} are up"),
            () = cancel.cancelled() => break "stopped".to_string(),
            () = tokio::time::sleep(Duration::from_millis(200)) => {
                if tracer.is_finished() && events.is_empty() {
                    break format!("its {} messages are shown", tracer.limits().count);
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
    node.registry().set_trace(&key, None);
    let dropped = tracer.dropped();
    session.print(format!(
        "trace of {key} ended ({why}): {shown} shown{}",
        if dropped > 0 {
            format!(", {dropped} dropped (over the rate)")
        } else {
            String::new()
        }
    ));
    session.trace_ended();
}

/// `14:03:04.120 guest_todo/production_list <7> call: add 2023-01-01 "x"`
fn format_event(event: &TraceEvent, text: &str) -> String {
    let what = match event.kind {
        EventKind::Call => "call",
        EventKind::Cast => "cast",
        EventKind::Reply => "reply",
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

/// Bytes as a trace shows them when the component cannot: printable ASCII
/// as is, the rest as `\xNN`, cut at 120 characters.
pub fn render_bytes(bytes: &[u8], len: usize) -> String {
    let mut out = String::new();
    for &byte in bytes {
        if out.len() >= 120 {
            break;
        }
        match byte {
            b' '..=b'~' => out.push(char::from(byte)),
            _ => out.push_str(&format!("\\x{byte:02x}")),
        }
    }
    if out.len() >= 120 || bytes.len() < len {
        out.push_str(&format!("... ({len} bytes)"));
    }
    format!("<<{out}>>")
}

/// Renders trace events: by the component's `render-message`, in an
/// instance that holds no process, or as bytes.
enum Renderer {
    Component {
        store: Box<Store<InstanceState>>,
        render: Func,
        _instance: Instance,
    },
    Bytes,
}

impl Renderer {
    async fn new(node: &Arc<NodeCore>, component: Arc<LoadedComponent>) -> Self {
        let Some(exports) = component.introspect().cloned() else {
            return Renderer::Bytes;
        };
        let state = InstanceState::new(node, component.name(), None, None);
        let mut store = Box::new(node.runtime().new_store(state));
        let deadline = node.config().limits.call_deadline;
        let Ok(instance) = guarded(deadline, component.instantiate(&mut store)).await else {
            return Renderer::Bytes;
        };
        match instance.get_func(&mut *store, exports.render_message) {
            Some(render) => Renderer::Component {
                store,
                render,
                _instance: instance,
            },
            None => Renderer::Bytes,
        }
    }

    async fn render(&mut self, node: &NodeCore, event: &TraceEvent) -> String {
        let bytes = render_bytes(&event.bytes, event.len);
        let Renderer::Component { store, render, .. } = self else {
            return bytes;
        };
        let kind = match event.kind {
            EventKind::Call => "call",
            EventKind::Cast => "cast",
            EventKind::Reply => "reply",
        };
        let params = [
            Val::Enum(kind.to_string()),
            Val::List(event.bytes.iter().map(|b| Val::U8(*b)).collect()),
        ];
        let mut results = [Val::Bool(false)];
        let deadline = node.config().limits.call_deadline;
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
    fn bytes_render_readably_and_bounded() {
        assert_eq!(render_bytes(b"ok\x01", 3), "<<ok\\x01>>");
        let long = vec![b'a'; 300];
        let shown = render_bytes(&long, 300);
        assert!(shown.ends_with("... (300 bytes)>>"), "{shown}");
        assert!(shown.len() < 160);
        assert_eq!(
            clock(UNIX_EPOCH + Duration::from_millis(3_723_045)),
            "01:02:03.045"
        );
    }
}
