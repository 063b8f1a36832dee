//! Processes: `ps`/`top`, `tree`, `info`, `state`, `kill`, `memory`.

use std::collections::{BTreeMap, HashSet};
use std::time::SystemTime;

use super::{Invocation, Reply};
use crate::console::protocol::ProcessRow;
use crate::console::views::{self, SortBy};
use crate::console::words::Options;
use crate::console::{ClusterView, TREE_LIMIT};
use crate::process::{ProcessInfo, ProcessKey};

/// `ps` (and `top`, which the client refreshes).
pub fn ps(call: Invocation<'_>) -> Reply<'_> {
    Box::pin(async move {
        let options = Options::parse(call.args, &["node", "sort", "limit", "every"])?;
        let sort = SortBy::parse(options.get("sort").unwrap_or("memory"))?;
        let limit = usize::try_from(options.number("limit", 50)?).unwrap_or(usize::MAX);
        let view = call
            .console
            .cluster_view(options.get("node"), usize::MAX, false)
            .await;
        let mut text = views::ps(view.rows, sort, limit, SystemTime::now());
        for line in view.missing {
            text.push_str(&format!("({line})\n"));
        }
        Ok(text)
    })
}

pub fn tree(call: Invocation<'_>) -> Reply<'_> {
    Box::pin(async move {
        let console = call.console;
        let options = Options::parse(call.args, &["limit"])?;
        let limit = usize::try_from(options.number("limit", TREE_LIMIT)?).unwrap_or(usize::MAX);
        let ClusterView { rows, missing, .. } = console.cluster_view(None, usize::MAX, false).await;
        let running: HashSet<(String, String)> = rows
            .iter()
            .map(|row| (row.info.component.clone(), row.info.name.clone()))
            .collect();
        // Names that crashed and have no process now: shown with their
        // restarts, as a supervisor shows a child that is down.
        let me = console.me();
        let crashed_idle: Vec<(String, ProcessRow)> = console
            .node
            .all_restarts()
            .into_iter()
            .filter(|(key, _)| {
                !running.contains(&(key.component.to_string(), key.name.to_string()))
            })
            .map(|(key, restarts)| {
                let row = ProcessRow {
                    node: me.clone(),
                    info: ProcessInfo {
                        component: key.component.to_string(),
                        name: key.name.to_string(),
                        pid: 0,
                        started: SystemTime::now(),
                        messages: 0,
                        memory: 0,
                        queued_messages: 0,
                        queued_bytes: 0,
                        traced: false,
                        version: String::new(),
                    },
                    restarts: Some(restarts),
                };
                (me.clone(), row)
            })
            .collect();
        let intensity = console.node.restart_intensity();
        let intensity = format!(
            "at most {} restarts in {:?}",
            intensity.max_restarts, intensity.period
        );
        let mut text = views::tree(&rows, &crashed_idle, &intensity, limit, SystemTime::now());
        for line in missing {
            text.push_str(&format!("({line})\n"));
        }
        Ok(text)
    })
}

/// Where a command about one process runs: here, on the key its one
/// argument names, or on the member that holds it (`Err(Ok(text))`: its
/// answer).
async fn one_process(
    call: &Invocation<'_>,
    usage: &str,
) -> Result<ProcessKey, Result<String, String>> {
    let [name] = call.args else {
        return Err(Err(format!("usage: {usage}")));
    };
    let console = call.console;
    let key = console.key(name).map_err(Err)?;
    match console.held_elsewhere(call.session, &key) {
        Some(holder) => Err(console.forward(&holder, call.line).await),
        None => Ok(key),
    }
}

pub fn info(call: Invocation<'_>) -> Reply<'_> {
    Box::pin(async move {
        let key = match one_process(&call, "info NAME").await {
            Ok(key) => key,
            Err(answered) => return answered,
        };
        let console = call.console;
        let row = console
            .local_rows(usize::MAX)
            .into_iter()
            .find(|row| row.info.component == *key.component && row.info.name == *key.name)
            .ok_or_else(|| {
                format!(
                    "no process `{key}` is running on {} (a call starts it)",
                    console.me()
                )
            })?;
        Ok(views::info(&row, SystemTime::now()))
    })
}

pub fn state(call: Invocation<'_>) -> Reply<'_> {
    Box::pin(async move {
        let key = match one_process(&call, "state NAME").await {
            Ok(key) => key,
            Err(answered) => return answered,
        };
        call.console
            .node
            .render_state(&key)
            .await
            .map(|state| state + "\n")
    })
}

pub fn kill(call: Invocation<'_>) -> Reply<'_> {
    Box::pin(async move {
        let key = match one_process(&call, "kill NAME").await {
            Ok(key) => key,
            Err(answered) => return answered,
        };
        let console = call.console;
        if console.node.kill(&key) {
            Ok(format!(
                "{key} killed after its current message; its next message starts it again\n"
            ))
        } else {
            Err(format!("no process `{key}` is running on {}", console.me()))
        }
    })
}

pub fn memory(call: Invocation<'_>) -> Reply<'_> {
    Box::pin(async move {
        let console = call.console;
        let figures = console.figures().await;
        let mut per_component: BTreeMap<String, (usize, usize)> = BTreeMap::new();
        for row in console.node.processes() {
            let entry = per_component.entry(row.component).or_default();
            entry.0 += 1;
            entry.1 += row.memory;
        }
        let mut out = format!(
            "node {}\n  resident:      {}\n  page tables:   {}\n  mappings:      {} (vm.max_map_count: {})\n  processes:     {} of at most {}\n",
            figures.node,
            views::bytes(figures.resident),
            views::bytes(figures.page_tables),
            figures.mappings,
            figures.max_map_count,
            figures.processes,
            figures.max_processes,
        );
        for (component, (count, memory)) in per_component {
            out.push_str(&format!(
                "  {component}: {count} processes, {} of linear memory\n",
                views::bytes(memory)
            ));
        }
        Ok(out)
    })
}
