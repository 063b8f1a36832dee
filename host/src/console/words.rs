//! How a console line is split into words and options. Also reads the
//! lines of a release's `vm.args` (`crate::release`).

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

/// `word` quoted so that [`words`] reads it back as it is: how the tools
/// write a path or a name into a console line.
pub fn quoted(word: &str) -> String {
    format!("\"{}\"", word.replace('\\', "\\\\").replace('"', "\\\""))
}

/// Options of the form `--name VALUE`, and the plain words left.
pub struct Options {
    pub plain: Vec<String>,
    pairs: Vec<(String, String)>,
    switches: Vec<String>,
}

impl Options {
    /// Splits `words` (after the command) given the option names it takes.
    pub fn parse(words: &[String], known: &[&str]) -> Result<Self, String> {
        Self::parse_with_switches(words, known, &[])
    }

    /// Like [`Options::parse`], also taking `switches`: options without a
    /// value.
    pub fn parse_with_switches(
        words: &[String],
        known: &[&str],
        switches: &[&str],
    ) -> Result<Self, String> {
        let mut plain = Vec::new();
        let mut pairs = Vec::new();
        let mut given = Vec::new();
        let mut iter = words.iter();
        while let Some(word) = iter.next() {
            match word.strip_prefix("--") {
                Some(name) if switches.contains(&name) => given.push(name.to_string()),
                Some(name) if known.contains(&name) => {
                    let value = iter
                        .next()
                        .ok_or_else(|| format!("--{name} needs a value"))?;
                    pairs.push((name.to_string(), value.clone()));
                }
                Some(name) => {
                    let all: Vec<&str> = known.iter().chain(switches).copied().collect();
                    return Err(format!(
                        "unknown option --{name}{}",
                        if all.is_empty() {
                            String::new()
                        } else {
                            format!(" (options: --{})", all.join(", --"))
                        }
                    ));
                }
                None => plain.push(word.clone()),
            }
        }
        Ok(Self {
            plain,
            pairs,
            switches: given,
        })
    }

    /// Whether switch `name` was given.
    pub fn has(&self, name: &str) -> bool {
        self.switches.iter().any(|given| given == name)
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
}
