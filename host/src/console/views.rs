//! How the console shows processes: `ps`, `tree`, `info`, as plain text
//! from plain data (so they are tested without a node).

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use super::protocol::ProcessRow;
use crate::cluster::wire::{NodeInfo, Role};

/// One line per node: name, role, status, link, leader.
pub fn render_nodes(nodes: &[NodeInfo]) -> String {
    let width = nodes
        .iter()
        .map(|node| node.name.to_string().len())
        .max()
        .unwrap_or(4)
        .max(4);
    let mut out = format!(
        "{:width$}  {:8}  {:6}  {:9}  LEADER\n",
        "NODE", "ROLE", "STATUS", "LINK"
    );
    for node in nodes {
        let role = match node.role {
            Role::Voter => "voter",
            Role::Learner => "learner",
            Role::Joining => "joining",
            Role::Alone => "alone",
        };
        out.push_str(&format!(
            "{:width$}  {:8}  {:6}  {:9}  {}\n",
            node.name.to_string(),
            role,
            if node.up { "up" } else { "down" },
            if node.linked { "linked" } else { "no link" },
            if node.leader { "leader" } else { "" },
        ));
    }
    out
}

/// What `ps` sorts by (largest first, except names).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortBy {
    Memory,
    Mailbox,
    Messages,
    Restarts,
    Name,
}

impl SortBy {
    pub const NAMES: [&'static str; 5] = ["memory", "mailbox", "messages", "restarts", "name"];

    pub fn parse(text: &str) -> Result<Self, String> {
        Ok(match text {
            "memory" | "mem" => SortBy::Memory,
            "mailbox" | "queue" => SortBy::Mailbox,
            "messages" | "msgs" => SortBy::Messages,
            "restarts" => SortBy::Restarts,
            "name" => SortBy::Name,
            other => {
                return Err(format!(
                    "cannot sort by `{other}`: use one of {}",
                    Self::NAMES.join(", ")
                ));
            }
        })
    }
}

fn restarts(row: &ProcessRow) -> u64 {
    row.restarts.as_ref().map_or(0, |r| r.count)
}

/// `ps`: one line per process, the first `limit` after sorting, and a
/// total line.
pub fn ps(mut rows: Vec<ProcessRow>, sort: SortBy, limit: usize, now: SystemTime) -> String {
    let total = rows.len();
    let total_memory: usize = rows.iter().map(|r| r.info.memory).sum();
    match sort {
        SortBy::Memory => rows.sort_by_key(|r| std::cmp::Reverse(r.info.memory)),
        SortBy::Mailbox => rows.sort_by_key(|r| std::cmp::Reverse(r.info.queued_messages)),
        SortBy::Messages => rows.sort_by_key(|r| std::cmp::Reverse(r.info.messages)),
        SortBy::Restarts => rows.sort_by_key(|r| std::cmp::Reverse(restarts(r))),
        SortBy::Name => rows.sort_by(|a, b| {
            (&a.info.component, &a.info.name).cmp(&(&b.info.component, &b.info.name))
        }),
    }
    let shown = &rows[..rows.len().min(limit)];
    let name_width = shown
        .iter()
        .map(|r| r.info.component.len() + 1 + r.info.name.len())
        .max()
        .unwrap_or(0)
        .clamp(4, 48);
    let node_width = shown.iter().map(|r| r.node.len()).max().unwrap_or(0).max(4);
    let version_width = shown
        .iter()
        .map(|r| r.info.version.len())
        .max()
        .unwrap_or(0)
        .clamp(7, 24);
    let mut out = format!(
        "{:name_width$}  {:node_width$}  {:version_width$}  {:>6}  {:>9}  {:>7}  {:>9}  {:>8}  {:>8}\n",
        "NAME", "NODE", "VERSION", "PID", "MEMORY", "MAILBOX", "MESSAGES", "RESTARTS", "UPTIME"
    );
    for row in shown {
        let info = &row.info;
        let mut name = format!("{}/{}", info.component, info.name);
        if name.len() > name_width {
            name.truncate(name.floor_char_boundary(name_width - 1));
            name.push('…');
        }
        out.push_str(&format!(
            "{name:name_width$}  {:node_width$}  {:version_width$}  {:>6}  {:>9}  {:>7}  {:>9}  {:>8}  {:>8}{}\n",
            row.node,
            info.version,
            info.pid,
            bytes(info.memory),
            info.queued_messages,
            info.messages,
            restarts(row),
            age(info.started, now),
            if info.traced { "  (traced)" } else { "" },
        ));
    }
    out.push_str(&format!(
        "{total} {} ({} shown), {} of linear memory\n",
        if total == 1 { "process" } else { "processes" },
        shown.len(),
        bytes(total_memory)
    ));
    out
}

/// `tree`: node, component (its supervisor), processes, with the restart
/// history of those that crashed. Names that crashed and are not running
/// are shown too: that is where a crash loop is seen.
pub fn tree(
    rows: &[ProcessRow],
    crashed_idle: &[(String, ProcessRow)],
    intensity: &str,
    limit: usize,
    now: SystemTime,
) -> String {
    let mut nodes: BTreeMap<&str, BTreeMap<&str, Vec<&ProcessRow>>> = BTreeMap::new();
    for row in rows {
        nodes
            .entry(&row.node)
            .or_default()
            .entry(&row.info.component)
            .or_default()
            .push(row);
    }
    let mut out = String::new();
    for (node, components) in &nodes {
        out.push_str(&format!("{node}\n"));
        let count = components.len();
        for (index, (component, processes)) in components.iter().enumerate() {
            let last = index + 1 == count;
            let (branch, indent) = if last {
                ("└─", "   ")
            } else {
                ("├─", "│  ")
            };
            out.push_str(&format!(
                "{branch} {component}  supervisor: one_for_one, {intensity}; {} {}\n",
                processes.len(),
                if processes.len() == 1 {
                    "process"
                } else {
                    "processes"
                }
            ));
            let mut sorted = processes.clone();
            sorted.sort_by(|a, b| a.info.name.cmp(&b.info.name));
            let shown = sorted.len().min(limit);
            for (i, row) in sorted.iter().take(shown).enumerate() {
                let last_child = i + 1 == shown && shown == sorted.len();
                let child = if last_child { "└─" } else { "├─" };
                let info = &row.info;
                out.push_str(&format!(
                    "{indent}{child} {}  pid {}  version {}  up {}  {} messages  {}\n",
                    info.name,
                    info.pid,
                    info.version,
                    age(info.started, now),
                    info.messages,
                    bytes(info.memory)
                ));
                if let Some(restarts) = &row.restarts {
                    let bar = if last_child { "   " } else { "│  " };
                    push_restarts(&mut out, &format!("{indent}{bar}   "), restarts, now);
                }
            }
            if sorted.len() > shown {
                out.push_str(&format!(
                    "{indent}└─ ... {} more (ps lists them all)\n",
                    sorted.len() - shown
                ));
            }
        }
    }
    if !crashed_idle.is_empty() {
        out.push_str("crashed, not running now:\n");
        for (node, row) in crashed_idle {
            out.push_str(&format!(
                "  {}/{} on {node}\n",
                row.info.component, row.info.name
            ));
            if let Some(restarts) = &row.restarts {
                push_restarts(&mut out, "    ", restarts, now);
            }
        }
    }
    if out.is_empty() {
        out.push_str("no processes are running\n");
    }
    out
}

fn push_restarts(
    out: &mut String,
    indent: &str,
    restarts: &crate::process::Restarts,
    now: SystemTime,
) {
    out.push_str(&format!(
        "{indent}restarts: {} since the node started\n",
        restarts.count
    ));
    for (at, reason) in restarts.recent.iter().rev() {
        out.push_str(&format!("{indent}  {} ago: {reason}\n", age(*at, now)));
    }
}

/// `info NAME`.
pub fn info(row: &ProcessRow, now: SystemTime) -> String {
    let info = &row.info;
    let mut out = format!(
        "name:      {}/{}\nnode:      {}\nversion:   {}\npid:       {}\nmemory:    {}\nmailbox:   {} messages, {}\nmessages:  {} handled\nstarted:   {} ago\ntraced:    {}\n",
        info.component,
        info.name,
        row.node,
        info.version,
        info.pid,
        bytes(info.memory),
        info.queued_messages,
        bytes(info.queued_bytes),
        info.messages,
        age(info.started, now),
        if info.traced { "yes" } else { "no" },
    );
    match &row.restarts {
        Some(restarts) => push_restarts(&mut out, "", restarts, now),
        None => out.push_str("restarts:  none\n"),
    }
    out
}

/// `1.5 MiB`.
pub fn bytes(count: usize) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut value = count as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{count} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// `3s`, `4m`, `2h`, `5d`.
pub fn age(since: SystemTime, now: SystemTime) -> String {
    let elapsed = now
        .duration_since(since)
        .unwrap_or(Duration::ZERO)
        .as_secs();
    match elapsed {
        0..60 => format!("{elapsed}s"),
        60..3600 => format!("{}m", elapsed / 60),
        3600..86400 => format!("{}h", elapsed / 3600),
        _ => format!("{}d", elapsed / 86400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::process::ProcessInfo;
    use crate::process::Restarts;

    fn row(name: &str, memory: usize, messages: u64, crashes: u64) -> ProcessRow {
        let now = SystemTime::now();
        ProcessRow {
            node: "node_a@127.0.0.1".into(),
            info: ProcessInfo {
                component: "guest_todo".into(),
                name: name.into(),
                pid: 7,
                started: now - Duration::from_secs(125),
                messages,
                memory,
                queued_messages: 0,
                queued_bytes: 0,
                traced: false,
                version: "1.0.0".into(),
            },
            restarts: (crashes > 0).then(|| Restarts {
                count: crashes,
                recent: [(
                    now - Duration::from_secs(5),
                    "trapped: unreachable".to_string(),
                )]
                .into(),
            }),
        }
    }

    #[test]
    fn ps_sorts_limits_and_totals() {
        let rows = vec![
            row("small", 1024, 1, 0),
            row("big", 4 * 1024 * 1024, 2, 0),
            row("busy", 2048, 900, 0),
        ];
        let text = ps(rows.clone(), SortBy::Memory, 2, SystemTime::now());
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[1].starts_with("guest_todo/big"), "{text}");
        assert!(lines[2].starts_with("guest_todo/busy"), "{text}");
        assert!(
            lines[1].contains("4.0 MiB") && lines[1].contains("2m"),
            "{text}"
        );
        assert!(
            text.ends_with("3 processes (2 shown), 4.0 MiB of linear memory\n"),
            "{text}"
        );
        let by_messages = ps(rows, SortBy::Messages, 10, SystemTime::now());
        assert!(
            by_messages
                .lines()
                .nth(1)
                .is_some_and(|l| l.contains("busy"))
        );
    }

    #[test]
    fn tree_shows_restart_history_and_crashed_names() {
        let rows = vec![row("production_list", 1024, 3, 2)];
        let idle = vec![("node_b".to_string(), row("poisoned", 0, 0, 4))];
        let text = tree(&rows, &idle, "3 restarts in 5s", 100, SystemTime::now());
        assert!(
            text.starts_with("node_a@127.0.0.1\n└─ guest_todo  supervisor"),
            "{text}"
        );
        assert!(
            text.contains("production_list  pid 7  version 1.0.0"),
            "{text}"
        );
        assert!(
            text.contains("restarts: 2 since the node started"),
            "{text}"
        );
        assert!(text.contains("5s ago: trapped: unreachable"), "{text}");
        assert!(text.contains("guest_todo/poisoned on node_b"), "{text}");
    }

    #[test]
    fn sizes_and_ages_read_well() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        let now = SystemTime::now();
        assert_eq!(age(now - Duration::from_secs(59), now), "59s");
        assert_eq!(age(now - Duration::from_secs(7200), now), "2h");
        assert!(SortBy::parse("bogus").is_err());
    }
}
