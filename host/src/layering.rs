//! The layering of `host/src`, checked: `lib.rs` lists the modules from the
//! bottom layer up, and a module may use only the modules listed before it
//! (and itself). So the picture of imports between folders has no cycle,
//! and one that comes back fails here, naming the file and the line.
//!
//! Run it alone with `cargo test -p host --lib layering`.

use std::path::{Path, PathBuf};

const SOURCE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/src");

/// The top-level modules, in `lib.rs`'s order: the layers, lowest first.
fn layers() -> Vec<String> {
    let lib = std::fs::read_to_string(Path::new(SOURCE).join("lib.rs")).expect("lib.rs");
    lib.lines()
        .filter_map(|line| line.trim().strip_prefix("pub mod "))
        .map(|rest| rest.trim_end_matches(';').to_string())
        .collect()
}

/// Every `.rs` file of module `name`: `name.rs`, or the folder `name/`.
fn files_of(name: &str) -> Vec<PathBuf> {
    let file = Path::new(SOURCE).join(format!("{name}.rs"));
    if file.exists() {
        return vec![file];
    }
    let mut files = Vec::new();
    let mut folders = vec![Path::new(SOURCE).join(name)];
    while let Some(folder) = folders.pop() {
        for entry in std::fs::read_dir(&folder).expect("a module's folder") {
            let path = entry.expect("an entry").path();
            if path.is_dir() {
                folders.push(path);
            } else if path.extension().is_some_and(|ext| ext == "rs") {
                files.push(path);
            }
        }
    }
    files
}

/// The top-level modules a line of code names as `crate::module`.
fn modules_named(line: &str) -> Vec<&str> {
    let code = line.split("//").next().unwrap_or_default();
    code.match_indices("crate::")
        .map(|(at, prefix)| {
            let rest = &code[at + prefix.len()..];
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            &rest[..end]
        })
        .collect()
}

#[test]
fn no_module_uses_one_of_a_higher_layer() {
    let layers = layers();
    assert!(layers.len() > 10, "lib.rs lists the layers: {layers:?}");
    let mut wrong = Vec::new();
    for (rank, module) in layers.iter().enumerate() {
        for file in files_of(module) {
            let text = std::fs::read_to_string(&file).expect("a source file");
            for (number, line) in text.lines().enumerate() {
                for used in modules_named(line) {
                    let shown = file.strip_prefix(SOURCE).unwrap_or(&file).display();
                    match layers.iter().position(|layer| layer == used) {
                        Some(used_rank) if used_rank <= rank => {}
                        Some(_) => wrong.push(format!(
                            "{shown}:{}: `{module}` uses `crate::{used}`, a layer above it",
                            number + 1
                        )),
                        None if used.is_empty() => wrong.push(format!(
                            "{shown}:{}: name one module per `use crate::...` line",
                            number + 1
                        )),
                        None => wrong.push(format!(
                            "{shown}:{}: `crate::{used}` is not a module lib.rs lists",
                            number + 1
                        )),
                    }
                }
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "the layering is broken (lib.rs lists the layers, lowest first):\n{}",
        wrong.join("\n")
    );
}

#[test]
fn the_checker_sees_what_it_must() {
    assert_eq!(
        modules_named("use crate::process::{CallError, Fence}; // crate::cluster"),
        vec!["process"]
    );
    assert_eq!(
        modules_named("    x: crate::wasm::Engine, y: crate::node::A"),
        vec!["wasm", "node"]
    );
    assert!(files_of("process").len() > 10);
    assert_eq!(files_of("boot").len(), 1);
}
