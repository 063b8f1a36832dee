//! `--args-file FILE`: options read from a file, as Erlang's `-args_file`
//! reads `vm.args`. Expanded into the command line before it is parsed.
//!
//! A line is split into words (double quotes group words with spaces);
//! lines starting with `#` are comments; `${VAR}` is the environment
//! variable VAR. `--node` and `--cookie` in the file give way to
//! RELEASE_NODE and RELEASE_COOKIE when those are set: the environment
//! (or env.sh) wins, as in a `mix release`.

use std::ffi::OsString;
use std::path::Path;

/// The arguments with every `--args-file FILE` replaced by its options.
pub fn expand(args: Vec<OsString>) -> Result<Vec<OsString>, String> {
    let mut expanded = Vec::with_capacity(args.len());
    let mut iter = args.into_iter();
    while let Some(arg) = iter.next() {
        if arg == "--args-file" {
            let file = iter.next().ok_or("--args-file needs a file")?;
            expanded.extend(read(Path::new(&file))?.into_iter().map(OsString::from));
        } else {
            expanded.push(arg);
        }
    }
    Ok(expanded)
}

fn read(path: &Path) -> Result<Vec<String>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut words = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let at = |e: String| format!("{}, line {}: {e}", path.display(), index + 1);
        let line = substitute(line).map_err(at)?;
        words.extend(split(&line).map_err(at)?);
    }
    Ok(without_overridden(words))
}

/// Replaces `${VAR}` with the environment variable VAR.
fn substitute(line: &str) -> Result<String, String> {
    let mut out = String::with_capacity(line.len());
    let mut rest = line;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find('}')
            .ok_or_else(|| "`${` is not closed".to_string())?;
        let name = &after[..end];
        let value = std::env::var(name)
            .map_err(|_| format!("${{{name}}} is not set in the environment"))?;
        out.push_str(&value);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

fn split(line: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut current = String::new();
    let (mut in_word, mut quoted) = (false, false);
    for c in line.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                in_word = true;
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

/// Drops `--node X` and `--cookie X` (or `--node=X`) when the environment
/// gives them.
fn without_overridden(words: Vec<String>) -> Vec<String> {
    let overridden = |option: &str| match option {
        "--node" => std::env::var_os("RELEASE_NODE").is_some(),
        "--cookie" => std::env::var_os("RELEASE_COOKIE").is_some(),
        _ => false,
    };
    let mut kept = Vec::with_capacity(words.len());
    let mut iter = words.into_iter();
    while let Some(word) = iter.next() {
        let option = word.split('=').next().unwrap_or_default().to_string();
        if overridden(&option) {
            if !word.contains('=') {
                iter.next();
            }
            continue;
        }
        kept.push(word);
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_become_words_without_comments() {
        let dir = tempfile::tempdir().expect("temp dir");
        let file = dir.path().join("vm.args");
        std::fs::write(
            &file,
            "## comment\n\n--max-processes 5000\ntodo=\"a b/t.wasm\"\n  --idle-timeout=5s\n",
        )
        .expect("write");
        let args = expand(vec![
            "host".into(),
            "run".into(),
            "--args-file".into(),
            file.into(),
            "--x".into(),
        ])
        .expect("expanded");
        assert_eq!(
            args,
            [
                "host",
                "run",
                "--max-processes",
                "5000",
                "todo=a b/t.wasm",
                "--idle-timeout=5s",
                "--x"
            ]
            .map(OsString::from)
        );
    }

    #[test]
    fn unknown_variables_and_open_quotes_are_errors() {
        assert!(substitute("${SURELY_NOT_SET_ANYWHERE_42}").is_err());
        assert!(substitute("${OPEN").is_err());
        assert_eq!(substitute("plain").as_deref(), Ok("plain"));
        assert!(split("\"open").is_err());
    }
}
