//! Hot swap: `versions`, `swap`, `promote`, `rollback`, `commit`
//! (ARCHITECTURE.md, "Hot swap"). This node's versions; a swap in a
//! cluster is each node's.

use std::future::ready;
use std::path::PathBuf;

use super::{Invocation, Reply};
use crate::console::words::Options;
use crate::node::SwapOptions;
use crate::process::VersionFigures;

pub fn versions(call: Invocation<'_>) -> Reply<'_> {
    let mut out = String::new();
    for view in call.console.node.versions() {
        out.push_str(&format!(
            "{}\n  current: {}\n",
            view.component, view.current
        ));
        if !view.kept.is_empty() {
            out.push_str(&format!("  kept:    {}\n", view.kept.join(", ")));
        }
        if !view.running.is_empty() {
            let running: Vec<String> = view
                .running
                .iter()
                .map(|(version, count)| format!("{count} on {version}"))
                .collect();
            out.push_str(&format!("  running: {}\n", running.join(", ")));
        }
        for (version, figures) in &view.figures {
            out.push_str(&format!("  {version}: {}\n", describe(figures)));
        }
        if let Some(swap) = &view.swap {
            out.push_str(&format!("  swap:    {swap}\n"));
        }
        if let Some(rollback) = &view.rollback {
            out.push_str(&format!("  rollback: {rollback}\n"));
        }
        if let Some(last) = &view.last {
            out.push_str(&format!("  last:    {last}\n"));
        }
    }
    Box::pin(ready(Ok(out)))
}

/// `swap`'s usage line.
pub const SWAP_USAGE: &str = "swap COMPONENT PATH [--canary PERCENT] [--version LABEL] \
                              [--max-failures PERCENT] [--down] [--commit]";

/// A version's figures in one line.
fn describe(figures: &VersionFigures) -> String {
    let calls = if figures.calls == 0 {
        "no calls".to_string()
    } else {
        format!(
            "{} calls, p50 under {:?}, p99 under {:?}",
            figures.calls, figures.call_p50, figures.call_p99
        )
    };
    format!(
        "{} messages, {} crashes, {calls}",
        figures.messages, figures.crashes
    )
}

pub fn swap(call: Invocation<'_>) -> Reply<'_> {
    Box::pin(async move {
        let options = Options::parse_with_switches(
            call.args,
            &["canary", "version", "max-failures"],
            &["down", "commit"],
        )?;
        let [component, path] = options.plain.as_slice() else {
            return Err(format!("usage: {SWAP_USAGE}"));
        };
        let percent = |name: &str, default: u64| -> Result<u8, String> {
            let value = options.number(name, default)?;
            u8::try_from(value)
                .ok()
                .filter(|value| (1..=100).contains(value))
                .ok_or_else(|| format!("--{name} is a percentage, 1 to 100, not {value}"))
        };
        let swap = SwapOptions {
            path: PathBuf::from(path),
            label: options.get("version").map(str::to_string),
            canary: percent("canary", 100)?,
            max_failures: percent("max-failures", 10)?,
            down: options.has("down"),
            commit: options.has("commit"),
        };
        if swap.commit && swap.canary < 100 {
            return Err("--commit waits for every process to move: not with --canary".into());
        }
        let text = call.console.node.swap(component, swap).await?;
        Ok(text + "\n")
    })
}

pub fn promote(call: Invocation<'_>) -> Reply<'_> {
    Box::pin(ready(one_component(&call, "promote COMPONENT").and_then(
        |component| call.console.node.promote(component).map(|text| text + "\n"),
    )))
}

pub fn rollback(call: Invocation<'_>) -> Reply<'_> {
    Box::pin(ready(one_component(&call, "rollback COMPONENT").and_then(
        |component| {
            call.console
                .node
                .rollback(component)
                .map(|text| text + "\n")
        },
    )))
}

pub fn commit(call: Invocation<'_>) -> Reply<'_> {
    Box::pin(ready(one_component(&call, "commit COMPONENT").and_then(
        |component| call.console.node.commit(component).map(|text| text + "\n"),
    )))
}

fn one_component<'a>(call: &Invocation<'a>, usage: &str) -> Result<&'a str, String> {
    match call.args {
        [component] => Ok(component),
        _ => Err(format!("usage: {usage}")),
    }
}
