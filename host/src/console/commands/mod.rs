//! The console's commands. The table is the dispatch: each command's name,
//! usage, help, what Tab completes after it, and the function that runs it,
//! in one row. The handlers live a file per group, as mini-redis has a file
//! per command: `processes` (ps, top, tree, info, state, kill, memory),
//! `tracing` (trace, trace-calls, untrace), `cluster` (nodes, connect),
//! `swap` (versions, swap, promote, rollback, commit) and `node` (help,
//! logs, functions, observer, pid, version, stop, exit).

mod cluster;
mod node;
mod processes;
mod swap;
mod tracing;

use std::sync::Arc;

use futures_util::future::BoxFuture;

use super::Console;
use super::session::Session;

/// What a handler is given: the console, the session it runs in, the line
/// as typed (to forward it to another member) and its words after the
/// command's name.
pub struct Invocation<'a> {
    pub console: &'a Arc<Console>,
    pub session: &'a Arc<Session>,
    pub line: &'a str,
    pub args: &'a [String],
}

/// What a handler answers: text to print, or why it failed.
pub type Reply<'a> = BoxFuture<'a, Result<String, String>>;

type Handler = for<'a> fn(Invocation<'a>) -> Reply<'a>;

/// What Tab offers after a command's name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Completes {
    Nothing,
    /// The cluster's nodes.
    Nodes,
    /// This node's live processes.
    Processes,
    /// The commands.
    Commands,
    /// `ps`'s sort keys after `--sort`.
    SortKeys,
    /// The components.
    Components,
}

/// One console command.
pub struct Command {
    pub name: &'static str,
    /// Other names it answers to, not listed by `help`.
    pub also: &'static [&'static str],
    pub usage: &'static str,
    pub about: &'static str,
    pub completes: Completes,
    run: Handler,
}

impl Command {
    pub fn run<'a>(&self, invocation: Invocation<'a>) -> Reply<'a> {
        (self.run)(invocation)
    }
}

/// Every command, in the order `help` lists them.
pub const COMMANDS: &[Command] = &[
    Command {
        name: "help",
        also: &[],
        usage: "help [COMMAND]",
        about: "what each command does",
        completes: Completes::Commands,
        run: node::help,
    },
    Command {
        name: "nodes",
        also: &[],
        usage: "nodes",
        about: "the nodes of the cluster, as this node sees them",
        completes: Completes::Nothing,
        run: cluster::nodes,
    },
    Command {
        name: "connect",
        also: &[],
        usage: "connect NODE",
        about: "join NODE's cluster (as Node.connect); joining one member joins them all",
        completes: Completes::Nodes,
        run: cluster::connect,
    },
    Command {
        name: "ps",
        also: &[],
        usage: "ps [--node NODE] [--sort memory|mailbox|messages|restarts|name] [--limit N]",
        about: "processes of the cluster (or of one node), largest first",
        completes: Completes::SortKeys,
        run: processes::ps,
    },
    Command {
        name: "top",
        also: &[],
        usage: "top [ps options] [--every SECONDS]",
        about: "ps, refreshed until Ctrl-C",
        completes: Completes::SortKeys,
        run: processes::ps,
    },
    Command {
        name: "tree",
        also: &[],
        usage: "tree [--limit N]",
        about: "node, component (its supervisor), processes, with restart history",
        completes: Completes::Nothing,
        run: processes::tree,
    },
    Command {
        name: "info",
        also: &[],
        usage: "info NAME",
        about: "one process: node, memory, mailbox, messages, started, restarts",
        completes: Completes::Processes,
        run: processes::info,
    },
    Command {
        name: "state",
        also: &[],
        usage: "state NAME",
        about: "a process's state, rendered by its component (as :sys.get_state)",
        completes: Completes::Processes,
        run: processes::state,
    },
    Command {
        name: "memory",
        also: &[],
        usage: "memory",
        about: "this node's memory: resident, page tables, mappings, per component",
        completes: Completes::Nothing,
        run: processes::memory,
    },
    Command {
        name: "logs",
        also: &[],
        usage: "logs [N]",
        about: "the node's last N log lines (default 20)",
        completes: Completes::Nothing,
        run: node::logs,
    },
    Command {
        name: "kill",
        also: &[],
        usage: "kill NAME",
        about: "end a process as if it crashed; its next message starts it again",
        completes: Completes::Processes,
        run: processes::kill,
    },
    Command {
        name: "trace",
        also: &[],
        usage: "trace NAME [--count N] [--for DURATION] [--rate N]",
        about: "print the messages a process receives and its replies (as :sys.trace); \
                bounded: 100 messages, 60s, 50 per second by default; Ctrl-C stops it",
        completes: Completes::Processes,
        run: tracing::trace,
    },
    Command {
        name: "trace-calls",
        also: &[],
        usage: "trace-calls COMPONENT [FILTER] [--count N] [--for DURATION] [--rate N]",
        about: "print the host calls (storage, process) the component's instances make, with \
                their durations (as :dbg); FILTER keeps those starting with it, e.g. storage.put",
        completes: Completes::Nothing,
        run: tracing::trace_calls,
    },
    Command {
        name: "untrace",
        also: &[],
        usage: "untrace",
        about: "stop this console's traces",
        completes: Completes::Nothing,
        run: tracing::untrace,
    },
    Command {
        name: "versions",
        also: &[],
        usage: "versions",
        about: "each component's versions: current, kept, processes per version, a swap's \
                progress (in a cluster: the rollout, node by node)",
        completes: Completes::Nothing,
        run: swap::versions,
    },
    Command {
        name: "swap",
        also: &[],
        usage: swap::SWAP_USAGE,
        about: "swap COMPONENT to the version in PATH (a file on this node's machine) while \
                its processes keep their state: checked and dry-run first; a canary moves \
                that share of names (and of requests); too many failures roll it back; \
                --down: PATH is older, states are handed down; --commit: wait for the \
                sweep, then commit. In a cluster it is the cluster's: recorded in its log, \
                every node swaps, one at a time (--all-at-once: together), and a node that \
                fails rolls them all back",
        completes: Completes::Components,
        run: swap::swap,
    },
    Command {
        name: "promote",
        also: &[],
        usage: "promote COMPONENT",
        about: "move the rest of COMPONENT's processes to its canary's version",
        completes: Completes::Components,
        run: swap::promote,
    },
    Command {
        name: "rollback",
        also: &[],
        usage: "rollback COMPONENT",
        about: "put COMPONENT's processes back on the version its swap started from",
        completes: Completes::Components,
        run: swap::rollback,
    },
    Command {
        name: "commit",
        also: &[],
        usage: "commit COMPONENT",
        about: "end COMPONENT's swap: the new version is current (the old one is kept)",
        completes: Completes::Components,
        run: swap::commit,
    },
    Command {
        name: "functions",
        also: &[],
        usage: "functions",
        about: "the functions components export, callable as INTERFACE.FUNCTION(ARGS)",
        completes: Completes::Nothing,
        run: node::functions,
    },
    Command {
        name: "observer",
        also: &[],
        usage: "observer",
        about: "the address of the node's observer page (loopback: tunnel to it with ssh -L)",
        completes: Completes::Nothing,
        run: node::observer,
    },
    Command {
        name: "pid",
        also: &[],
        usage: "pid",
        about: "the node's operating-system process id",
        completes: Completes::Nothing,
        run: node::pid,
    },
    Command {
        name: "version",
        also: &[],
        usage: "version",
        about: "the host's version and the components loaded",
        completes: Completes::Nothing,
        run: node::version,
    },
    Command {
        name: "stop",
        also: &[],
        usage: "stop",
        about: "stop the node gracefully (a member leaves its cluster first)",
        completes: Completes::Nothing,
        run: node::stop,
    },
    Command {
        name: "exit",
        also: &["quit"],
        usage: "exit",
        about: "leave the console (Ctrl-D too); the node keeps running",
        completes: Completes::Nothing,
        run: node::exit,
    },
];

/// The command called `name` (or one of its other names).
pub fn find(name: &str) -> Option<&'static Command> {
    COMMANDS
        .iter()
        .find(|command| command.name == name || command.also.contains(&name))
}

/// `help` or `help COMMAND`.
pub fn help(topic: Option<&str>) -> Result<String, String> {
    match topic {
        None => {
            let mut out = String::from(
                "Commands (NAME is a process name, COMPONENT/NAME for another component's):\n",
            );
            for command in COMMANDS {
                out.push_str(&format!("  {}\n      {}\n", command.usage, command.about));
            }
            out.push_str(
                "  INTERFACE.FUNCTION(ARGS)\n      call a component's exported function, \
                 arguments in WAVE, e.g.\n      todo.add-entry(\"production_list\", \
                 {date: \"2023-01-01\", title: \"Deploy Successful\"})\n",
            );
            Ok(out)
        }
        Some(topic) => find(topic)
            .map(|command| format!("{}\n    {}\n", command.usage, command.about))
            .ok_or_else(|| format!("no command `{topic}`; `help` lists them")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_command_has_help() {
        assert!(help(None).expect("help").contains("trace NAME"));
        assert!(
            help(Some("state"))
                .expect("help")
                .contains(":sys.get_state")
        );
        assert!(help(Some("bogus")).is_err());
    }

    #[test]
    fn names_are_unique_and_found_by_any_of_them() {
        let mut names: Vec<&str> = COMMANDS
            .iter()
            .flat_map(|command| std::iter::once(command.name).chain(command.also.iter().copied()))
            .collect();
        let count = names.len();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), count, "a name is used twice");
        assert_eq!(find("quit").map(|command| command.name), Some("exit"));
        assert!(find("bogus").is_none());
    }
}
