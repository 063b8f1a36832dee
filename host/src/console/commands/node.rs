//! The node and the console itself: `help`, `logs`, `functions`,
//! `observer`, `pid`, `version`, `stop`, `exit`.

use std::future::ready;
use std::time::Duration;

use super::{Invocation, Reply};
use crate::console::wave;

pub fn help(call: Invocation<'_>) -> Reply<'_> {
    Box::pin(ready(super::help(call.args.first().map(String::as_str))))
}

pub fn logs(call: Invocation<'_>) -> Reply<'_> {
    let count = match call.args.first() {
        Some(text) => match text.parse() {
            Ok(count) => count,
            Err(_) => {
                return Box::pin(ready(Err(format!(
                    "logs takes a number of lines, not `{text}`"
                ))));
            }
        },
        None => 20,
    };
    let mut out = crate::logs::recent_lines(count).join("\n");
    out.push('\n');
    Box::pin(ready(Ok(out)))
}

pub fn functions(call: Invocation<'_>) -> Reply<'_> {
    Box::pin(ready(Ok(wave::functions(&call.console.node))))
}

pub fn observer(call: Invocation<'_>) -> Reply<'_> {
    let answer = match call.console.observer_url.get() {
        Some(url) => Ok(format!("{url}\n")),
        None => Err("this node serves no observer (started with --no-observer)".into()),
    };
    Box::pin(ready(answer))
}

pub fn pid(_call: Invocation<'_>) -> Reply<'_> {
    Box::pin(ready(Ok(format!("{}\n", std::process::id()))))
}

pub fn version(call: Invocation<'_>) -> Reply<'_> {
    let mut out = format!("host {}\n", env!("CARGO_PKG_VERSION"));
    for component in call.console.node.components() {
        let code = component.code();
        out.push_str(&format!(
            "component {} ({}{}{})\n",
            component.name(),
            if code.process_pre().is_some() {
                "processes"
            } else {
                ""
            },
            if code.http_pre().is_some() {
                ", http"
            } else {
                ""
            },
            if code.introspect().is_some() {
                ", introspect"
            } else {
                ""
            },
        ));
    }
    Box::pin(ready(Ok(out)))
}

pub fn stop(call: Invocation<'_>) -> Reply<'_> {
    // Answer first, then stop: the node closes its links as it goes.
    let stop = call.console.stop_node.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        stop.cancel();
    });
    Box::pin(ready(Ok(format!("{} is stopping\n", call.console.me()))))
}

pub fn exit(_call: Invocation<'_>) -> Reply<'_> {
    Box::pin(ready(Ok(String::new())))
}
