//! Hot swap: `versions`, `swap`, `promote`, `rollback`, `commit`
//! (ARCHITECTURE.md, "Hot swap"). On a lone node they act on its versions;
//! on a member of a cluster, on the cluster's rollout (recorded in its log,
//! followed by every node), whichever node they are typed on.

use std::future::ready;
use std::path::PathBuf;
use std::sync::Arc;

use super::{Invocation, Reply};
use crate::cluster::Cluster;
use crate::cluster::rollout::RolloutOptions;
use crate::console::words::Options;
use crate::node::{SwapOptions, VersionSource};
use crate::process::VersionFigures;

pub fn versions(call: Invocation<'_>) -> Reply<'_> {
    let mut out = String::new();
    let rollouts = call
        .console
        .cluster
        .as_ref()
        .map(|cluster| cluster.rollouts())
        .unwrap_or_default();
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
        for rollout in rollouts.iter().filter(|r| r.component == view.component) {
            for line in &rollout.lines {
                out.push_str(&format!("  {line}\n"));
            }
        }
    }
    Box::pin(ready(Ok(out)))
}

/// `swap`'s usage line.
pub const SWAP_USAGE: &str = "swap COMPONENT PATH [--canary PERCENT] [--version LABEL] \
                              [--max-failures PERCENT] [--down] [--commit] [--all-at-once]";

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
            &["down", "commit", "all-at-once"],
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
        let path = PathBuf::from(path);
        let label = options.get("version").map(str::to_string);
        let rollout = RolloutOptions {
            canary: percent("canary", 100)?,
            max_failures: percent("max-failures", 10)?,
            down: options.has("down"),
            all_at_once: options.has("all-at-once"),
            commit: options.has("commit"),
        };
        if rollout.commit && rollout.canary < 100 {
            return Err("--commit waits for every process to move: not with --canary".into());
        }
        let console = call.console;
        let text = match console.cluster.as_ref().filter(|c| c.is_member()) {
            Some(cluster) => {
                let checked = console.node.check_version(component, &path, label).await?;
                cluster.roll_out(component, checked, rollout).await?
            }
            None if rollout.all_at_once => {
                return Err("--all-at-once is for a cluster: this node is alone".into());
            }
            None => {
                let swap = SwapOptions {
                    source: VersionSource::File(path),
                    label,
                    canary: rollout.canary,
                    max_failures: rollout.max_failures,
                    down: rollout.down,
                    commit: rollout.commit,
                };
                console.node.swap(component, swap).await?
            }
        };
        Ok(text + "\n")
    })
}

pub fn promote(call: Invocation<'_>) -> Reply<'_> {
    Box::pin(async move {
        let component = one_component(&call, "promote COMPONENT")?;
        let text = match member(&call) {
            Some(cluster) => cluster.promote_rollout(component).await?,
            None => call.console.node.promote(component)?,
        };
        Ok(text + "\n")
    })
}

pub fn rollback(call: Invocation<'_>) -> Reply<'_> {
    Box::pin(async move {
        let component = one_component(&call, "rollback COMPONENT")?;
        let text = match member(&call) {
            Some(cluster) => cluster.roll_back_rollout(component).await?,
            None => call.console.node.rollback(component)?,
        };
        Ok(text + "\n")
    })
}

pub fn commit(call: Invocation<'_>) -> Reply<'_> {
    Box::pin(async move {
        let component = one_component(&call, "commit COMPONENT")?;
        let text = match member(&call) {
            Some(cluster) => cluster.commit_rollout(component).await?,
            None => call.console.node.commit(component)?,
        };
        Ok(text + "\n")
    })
}

/// The cluster, if this node is a member: swaps are the cluster's then.
fn member<'a>(call: &Invocation<'a>) -> Option<&'a Arc<Cluster>> {
    call.console
        .cluster
        .as_ref()
        .filter(|cluster| cluster.is_member())
}

fn one_component<'a>(call: &Invocation<'a>, usage: &str) -> Result<&'a str, String> {
    match call.args {
        [component] => Ok(component),
        _ => Err(format!("usage: {usage}")),
    }
}
