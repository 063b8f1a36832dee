//! The console's commands: their names, their help, and how a line is
//! split into words.

/// Every command, with its usage and one line of help.
pub const COMMANDS: &[(&str, &str, &str)] = &[
    ("help", "help [COMMAND]", "what each command does"),
    (
        "nodes",
        "nodes",
        "the nodes of the cluster, as this node sees them",
    ),
    (
        "connect",
        "connect NODE",
        "join NODE's cluster (as Node.connect); joining one member joins them all",
    ),
    (
        "ps",
        "ps [--node NODE] [--sort memory|mailbox|messages|restarts|name] [--limit N]",
        "processes of the cluster (or of one node), largest first",
    ),
    (
        "top",
        "top [ps options] [--every SECONDS]",
        "ps, refreshed until Ctrl-C",
    ),
    (
        "tree",
        "tree [--limit N]",
        "node, component (its supervisor), processes, with restart history",
    ),
    (
        "info",
        "info NAME",
        "one process: node, memory, mailbox, messages, started, restarts",
    ),
    (
        "state",
        "state NAME",
        "a process's state, rendered by its component (as :sys.get_state)",
    ),
    (
        "memory",
        "memory",
        "this node's memory: resident, page tables, mappings, per component",
    ),
    (
        "logs",
        "logs [N]",
        "the node's last N log lines (default 20)",
    ),
    (
        "kill",
        "kill NAME",
        "end a process as if it crashed; its next message starts it again",
    ),
    (
        "trace",
        "trace NAME [--count N] [--for DURATION] [--rate N]",
        "print the messages a process receives and its replies (as :sys.trace); \
         bounded: 100 messages, 60s, 50 per second by default; Ctrl-C stops it",
    ),
    (
        "trace-calls",
        "trace-calls COMPONENT [FILTER] [--count N] [--for DURATION] [--rate N]",
        "print the host calls (storage, process) the component's instances make, with \
         their durations (as :dbg); FILTER keeps those starting with it, e.g. storage.put",
    ),
    ("untrace", "untrace", "stop this console's traces"),
    (
        "functions",
        "functions",
        "the functions components export, callable as INTERFACE.FUNCTION(ARGS)",
    ),
    (
        "observer",
        "observer",
        "the address of the node's observer page (loopback: tunnel to it with ssh -L)",
    ),
    ("pid", "pid", "the node's operating-system process id"),
    (
        "version",
        "version",
        "the host's version and the components loaded",
    ),
    (
        "stop",
        "stop",
        "stop the node gracefully (a member leaves its cluster first)",
    ),
    (
        "exit",
        "exit",
        "leave the console (Ctrl-D too); the node keeps running",
    ),
];

/// `help` or `help COMMAND`.
pub fn help(topic: Option<&str>) -> Result<String, String> {
    match topic {
        None => {
            let mut out = String::from(
                "Commands (NAME is a process name, COMPONENT/NAME for another component's):\n",
            );
            for (_, usage, about) in COMMANDS {
                out.push_str(&format!("  {usage}\n      {about}\n"));
            }
            out.push_str(
                "  INTERFACE.FUNCTION(ARGS)\n      call a component's exported function, \
                 arguments in WAVE, e.g.\n      todo.add-entry(\"production_list\", \
                 {date: \"2023-01-01\", title: \"Deploy Successful\"})\n",
            );
            Ok(out)
        }
        Some(topic) => COMMANDS
            .iter()
            .find(|(name, _, _)| *name == topic)
            .map(|(_, usage, about)| format!("{usage}\n    {about}\n"))
            .ok_or_else(|| format!("no command `{topic}`; `help` lists them")),
    }
}

/// Splits a command line (or a line of a release's vm.args) into words;
/// double quotes group words with spaces (`info "my list"`), and inside
/// them a backslash takes the next character as it is.
pub fn words(line: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut current = String::new();
    let mut in_word = false;
    let mut quoted = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                quoted = !quoted;
                in_word = true;
            }
            '\\' if quoted => {
                if let Some(next) = chars.next() {
                    current.push(next);
                }
            }
            c if c.is_whitespace() && !quoted => {
                if in_word {
                    words.push(std::mem::take(&mut current));
                    in_word = false;
                }
            }
            c => {
                current.push(c);
                in_word = true;
            }
        }
    }
    if quoted {
        return Err("a quote is not closed".into());
    }
    if in_word {
        words.push(current);
    }
    Ok(words)
}

/// Options of the form `--name VALUE`, and the plain words left.
pub struct Options {
    pub plain: Vec<String>,
    pairs: Vec<(String, String)>,
}

impl Options {
    /// Splits `words` (after the command) given the option names it takes.
    pub fn parse(words: &[String], known: &[&str]) -> Result<Self, String> {
        let mut plain = Vec::new();
        let mut pairs = Vec::new();
        let mut iter = words.iter();
        while let Some(word) = iter.next() {
            match word.strip_prefix("--") {
                Some(name) if known.contains(&name) => {
                    let value = iter
                        .next()
                        .ok_or_else(|| format!("--{name} needs a value"))?;
                    pairs.push((name.to_string(), value.clone()));
                }
                Some(name) => {
                    return Err(format!(
                        "unknown option --{name}{}",
                        if known.is_empty() {
                            String::new()
                        } else {
                            format!(" (options: --{})", known.join(", --"))
                        }
                    ));
                }
                None => plain.push(word.clone()),
            }
        }
        Ok(Self { plain, pairs })
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .rev()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    /// A numeric option, or `default`.
    pub fn number(&self, name: &str, default: u64) -> Result<u64, String> {
        match self.get(name) {
            Some(text) => text
                .parse()
                .map_err(|_| format!("--{name} takes a number, not `{text}`")),
            None => Ok(default),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_honour_quotes() {
        assert_eq!(
            words(r#"info "my list"  --sort memory"#).expect("words"),
            vec!["info", "my list", "--sort", "memory"]
        );
        assert_eq!(
            words(r#"x "a \"b\"""#).expect("words"),
            vec!["x", "a \"b\""]
        );
        assert!(words("info \"open").is_err());
        assert!(words("   ").expect("words").is_empty());
    }

    #[test]
    fn options_are_checked() {
        let w = |s: &str| words(s).expect("words");
        let options = Options::parse(&w("name --count 5"), &["count", "for"]).expect("ok");
        assert_eq!(options.plain, vec!["name"]);
        assert_eq!(options.number("count", 100), Ok(5));
        assert_eq!(options.number("rate", 50), Ok(50));
        assert!(Options::parse(&w("--bogus 1"), &["count"]).is_err());
        assert!(Options::parse(&w("--count"), &["count"]).is_err());
        assert!(
            Options::parse(&w("--count x"), &["count"])
                .expect("parsed")
                .number("count", 1)
                .is_err()
        );
    }

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
}
