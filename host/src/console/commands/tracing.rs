//! Traces: `trace NAME` (a process's messages), `trace-calls COMPONENT` (a
//! component's host calls), `untrace`. Every trace is bounded in count,
//! rate and time, and a few per console and per node at most
//! ([`ConsoleLimits`]): each renders its events in an instance of its own.

use std::sync::Arc;
use std::time::Duration;

use super::{Invocation, Reply};
use crate::config::{ConsoleLimits, parse_duration};
use crate::console::Console;
use crate::console::session::Session;
use crate::console::trace_output::{self, Trace};
use crate::console::words::Options;
use crate::process::trace::{DEFAULT_TRACE_DURATION, TraceLimits, Tracer};

/// The bounds of every trace, whatever it asks.
const MAX_TRACE_COUNT: u64 = 1_000_000;
const MAX_TRACE_RATE: u64 = 10_000;
const MAX_TRACE_DURATION: Duration = Duration::from_secs(24 * 3600);

pub fn trace(call: Invocation<'_>) -> Reply<'_> {
    Box::pin(std::future::ready(trace_process(call)))
}

fn trace_process(call: Invocation<'_>) -> Result<String, String> {
    let (console, session) = (call.console, call.session);
    let options = Options::parse(call.args, &["count", "for", "rate"])?;
    let [name] = options.plain.as_slice() else {
        return Err("usage: trace NAME [--count N] [--for DURATION] [--rate N]".into());
    };
    let key = console.key(name)?;
    if let Some(holder) = console.held_elsewhere(session, &key) {
        return Err(format!(
            "{key} runs on {holder}: trace it there (remote {holder})"
        ));
    }
    let (limits, duration) = trace_bounds(&options)?;
    room_for_a_trace(console, session)?;
    let (tracer, events) = Tracer::new(limits);
    let tracer = Arc::new(tracer);
    console.node.trace(&key, tracer.clone())?;
    let node = console.node.clone();
    let detached = tracer.clone();
    Ok(start_trace(
        console,
        session,
        Trace {
            what: key.to_string(),
            unit: "message",
            component: key.component.to_string(),
            tracer,
            events,
            duration,
            detach: Box::new(move || node.untrace(&key, &detached)),
        },
    ))
}

/// `trace-calls COMPONENT [FILTER]`: the host calls of every instance of
/// the component on this node.
pub fn trace_calls(call: Invocation<'_>) -> Reply<'_> {
    Box::pin(std::future::ready(trace_host_calls(call)))
}

fn trace_host_calls(call: Invocation<'_>) -> Result<String, String> {
    let (console, session) = (call.console, call.session);
    let options = Options::parse(call.args, &["count", "for", "rate"])?;
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
    let hook = console
        .node
        .host_call_hook(component)
        .ok_or_else(|| format!("no component `{component}` is loaded"))?
        .clone();
    let (limits, duration) = trace_bounds(&options)?;
    room_for_a_trace(console, session)?;
    if hook
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
    hook.store(Some(tracer.clone()));
    let mine = tracer.clone();
    let what = match &filter {
        Some(filter) => format!("{component}'s host calls ({filter}*)"),
        None => format!("{component}'s host calls"),
    };
    Ok(start_trace(
        console,
        session,
        Trace {
            what,
            unit: "call",
            component: component.clone(),
            tracer,
            events,
            duration,
            detach: Box::new(move || {
                // Only this trace: a later one may have taken the hook.
                hook.rcu(|current| match current {
                    Some(current) if Arc::ptr_eq(current, &mine) => None,
                    other => other.clone(),
                });
            }),
        },
    ))
}

pub fn untrace(call: Invocation<'_>) -> Reply<'_> {
    let session = call.session;
    let text = if session.tracing() {
        session.untrace();
        "traces stopped\n"
    } else {
        "no trace is running\n"
    };
    Box::pin(std::future::ready(Ok(text.to_string())))
}

/// A trace's `--count`, `--rate` and `--for`, or their defaults, within
/// the bounds every trace keeps.
fn trace_bounds(options: &Options) -> Result<(TraceLimits, Duration), String> {
    let limits = TraceLimits {
        count: options.number("count", 100)?.clamp(1, MAX_TRACE_COUNT),
        per_second: options.number("rate", 50)?.clamp(1, MAX_TRACE_RATE),
    };
    let duration = match options.get("for") {
        Some(text) => parse_duration(text)?,
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

/// Traces are cheap but not free (a rendering instance each, events to
/// copy): a few per console, a few dozen per node.
fn room_for_a_trace(console: &Console, session: &Session) -> Result<(), String> {
    if session.running_traces() >= ConsoleLimits::TRACES_PER_SESSION {
        return Err(format!(
            "this console already runs {} traces: untrace first",
            ConsoleLimits::TRACES_PER_SESSION
        ));
    }
    if console.node.traces_running() >= ConsoleLimits::TRACES_PER_NODE {
        return Err(format!(
            "{} already runs {} traces: wait for one to end",
            console.me(),
            ConsoleLimits::TRACES_PER_NODE
        ));
    }
    Ok(())
}

fn start_trace(console: &Console, session: &Arc<Session>, trace: Trace) -> String {
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
        console.node.clone(),
        session.clone(),
        trace,
        session.trace_stopper(),
    ));
    text
}
