//! `--args-file FILE`: options read from a file, as Erlang's `-args_file`
//! reads `vm.args`. Expanded into the command line before it is parsed.
//!
//! A line is split into words as a console line is (double quotes group
//! words with spaces); lines starting with `#` are comments; `${VAR}` is
//! the environment variable VAR. `--node` and `--cookie` in the file give way to
//! RELEASE_NODE and RELEASE_COOKIE when those are set: the environment
//! (or env.sh) wins, as in a `mix release`.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::Args;
use host::console::words as split_words;

/// `host vm-arg FILE OPTION`.
#[derive(Args)]
pub struct VmArgArgs {
    /// The args file (a release's vm.args).
    file: PathBuf,
    /// The option, without its dashes: `node`, `cookie`, `max-processes`.
    option: String,
}

/// Prints the value the args file gives `--OPTION` (the last one), read
/// with the same rules as `--args-file`; nothing when it gives none. The
/// release's script asks this rather than parsing the file itself.
pub fn print_value(args: &VmArgArgs) -> anyhow::Result<()> {
    let words = read_words(&args.file).map_err(|e| anyhow::anyhow!(e))?;
    let option = format!("--{}", args.option);
    let mut value = None;
    let mut iter = words.iter();
    while let Some(word) = iter.next() {
        if *word == option {
            value = iter.next().cloned();
        } else if let Some(inline) = word.strip_prefix(&format!("{option}=")) {
            value = Some(inline.to_string());
        }
    }
    if let Some(value) = value {
        println!("{value}");
    }
    Ok(())
}

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
    Ok(without_overridden(read_words(path)?))
}

/// Every word of the file, variables substituted inside each word (after
/// splitting, so a value with spaces or quotes stays one word).
fn read_words(path: &Path) -> Result<Vec<String>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    words_of(&text, &|name| std::env::var(name).ok())
        .map_err(|e| format!("{}, {e}", path.display()))
}

/// The words of an args file's `text`, `${VAR}` looked up with `lookup`.
fn words_of(text: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let at = |e: String| format!("line {}: {e}", index + 1);
        for word in split_words(line).map_err(at)? {
            words.push(substitute(&word, lookup).map_err(at)?);
        }
    }
    Ok(words)
}

/// Replaces `${VAR}` with VAR's value from `lookup` (the environment).
fn substitute(line: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(line.len());
    let mut rest = line;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find('}')
            .ok_or_else(|| "`${` is not closed".to_string())?;
        let name = &after[..end];
        let value =
            lookup(name).ok_or_else(|| format!("${{{name}}} is not set in the environment"))?;
        out.push_str(&value);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
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
    fn a_variable_with_spaces_or_quotes_stays_one_word() {
        let lookup = |name: &str| match name {
            "RELEASE_ROOT" => Some("/opt/My Apps/todo".to_string()),
            "ODD" => Some("a\"b".to_string()),
            _ => None,
        };
        let words = words_of(
            "x=${RELEASE_ROOT}/a.wasm --node n@h --cookie ${ODD}\n",
            &lookup,
        )
        .expect("words");
        assert_eq!(
            words,
            [
                "x=/opt/My Apps/todo/a.wasm",
                "--node",
                "n@h",
                "--cookie",
                "a\"b"
            ]
        );
    }

    #[test]
    fn unknown_variables_and_open_quotes_are_errors() {
        let none = |_: &str| None;
        assert!(substitute("${UNSET}", &none).is_err());
        assert!(substitute("${OPEN", &none).is_err());
        assert_eq!(substitute("plain", &none).as_deref(), Ok("plain"));
        let error = words_of("\n--node \"open\n", &none).expect_err("an error");
        assert!(error.starts_with("line 2:"), "{error}");
    }
}
