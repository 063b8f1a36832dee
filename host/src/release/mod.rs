//! Releases: a self-contained directory that runs a node on a machine with
//! no Rust toolchain, laid out as a `mix release`:
//!
//! ```text
//! bin/NAME                  the start script (POSIX sh): start, daemon, remote,
//!                           upgrade, downgrade, versions...
//! bin/host                  this host binary
//! lib/compiled/*.cwasm      every version's components, compiled for this
//!                           machine (keyed by their bytes: versions share it)
//! releases/COOKIE           a random cookie, mode 0400
//! releases/start_erl.data   the version the script starts
//! releases/VSN/lib/*.wasm   version VSN's components
//! releases/VSN/env.sh       sourced by the script: RELEASE_NODE, TODO_PORT...
//! releases/VSN/vm.args      the node's options, one per line
//! tmp/                      daemons' logs (tmp/log/NODE)
//! data/                     each node's storage (data/NODE), made at start
//! ```
//!
//! `host release --add` adds a version beside the others (as a new version
//! of a `mix release` is laid out beside the old one for a relup), and
//! `bin/NAME upgrade VSN` / `downgrade VSN` hot-swap a running node to it.
//!
//! This module only writes files: it owns the layout and the templates,
//! and compiles components with `crate::wasm` the way a node loads them
//! (and the cookie with `crate::distribution`'s rules).

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::Context as _;

use crate::config::{NodeConfig, ProcessLimits};
use crate::distribution::cookie;
use crate::wasm::{Engine, LoadedComponent};

const BIN_SCRIPT: &str = include_str!("templates/bin.sh");
const ENV_SH: &str = include_str!("templates/env.sh");
const VM_ARGS: &str = include_str!("templates/vm.args");

/// What to build.
pub struct ReleaseSpec {
    /// The release's name: the script is `bin/NAME`.
    pub name: String,
    pub version: String,
    /// Where it goes; replaced if it exists.
    pub out: PathBuf,
    /// The host binary to ship.
    pub host_binary: PathBuf,
    /// The components, as (name, `.wasm` file), in load order.
    pub components: Vec<(String, PathBuf)>,
    /// Add the version beside the ones in `out` instead of replacing it.
    pub add: bool,
}

/// Builds the release and returns its directory.
pub fn build(spec: &ReleaseSpec) -> anyhow::Result<PathBuf> {
    validate_word("release name", &spec.name)?;
    validate_word("release version", &spec.version)?;
    if spec.add {
        return add_version(spec);
    }
    if spec.out.exists() {
        // Replaced only if it is a release (a typo in --out must not wipe
        // a directory that is something else).
        let is_release = spec.out.join("releases").join("start_erl.data").is_file();
        let is_empty = fs::read_dir(&spec.out).is_ok_and(|mut entries| entries.next().is_none());
        anyhow::ensure!(
            is_release || is_empty,
            "{} exists and is not a release: choose another --out, or remove it yourself",
            spec.out.display()
        );
        fs::remove_dir_all(&spec.out)
            .with_context(|| format!("cannot replace {}", spec.out.display()))?;
    }
    let out = &spec.out;
    let version_dir = out.join("releases").join(&spec.version);
    for dir in [
        out.join("bin"),
        out.join("lib").join("compiled"),
        version_dir.clone(),
        out.join("tmp"),
    ] {
        fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    copy_executable(&spec.host_binary, &out.join("bin").join("host"))?;
    write_version(spec)?;
    write_file(
        &out.join("bin").join(&spec.name),
        &BIN_SCRIPT.replace("@NAME@", &spec.name),
        0o755,
    )?;
    write_file(
        &out.join("releases").join("start_erl.data"),
        &spec.version,
        0o644,
    )?;
    cookie::create_file(&out.join("releases").join("COOKIE")).map_err(|e| anyhow::anyhow!(e))?;
    Ok(out.clone())
}

/// Adds version `spec.version` to the release in `spec.out`, leaving its
/// other versions, its host, script, cookie and data as they are.
fn add_version(spec: &ReleaseSpec) -> anyhow::Result<PathBuf> {
    let out = &spec.out;
    anyhow::ensure!(
        out.join("releases").join("start_erl.data").is_file(),
        "{} is not a release: build one first (without --add)",
        out.display()
    );
    let version_dir = out.join("releases").join(&spec.version);
    anyhow::ensure!(
        !version_dir.exists(),
        "the release in {} has a version {} already: give the new one another version",
        out.display(),
        spec.version
    );
    write_version(spec)?;
    Ok(out.clone())
}

/// Writes `releases/VSN/`: the version's components (and their compiled
/// code, shared by all versions), env.sh and vm.args.
fn write_version(spec: &ReleaseSpec) -> anyhow::Result<()> {
    let version_dir = spec.out.join("releases").join(&spec.version);
    let lib = version_dir.join("lib");
    fs::create_dir_all(&lib).with_context(|| format!("cannot create {}", lib.display()))?;
    let mut component_lines = String::new();
    for (name, wasm) in &spec.components {
        let file = format!("{name}.wasm");
        fs::copy(wasm, lib.join(&file))
            .with_context(|| format!("cannot copy {}", wasm.display()))?;
        // The version the script starts (RELEASE_VSN) finds its own.
        component_lines.push_str(&format!(
            "{name}=${{RELEASE_ROOT}}/releases/${{RELEASE_VSN}}/lib/{file}\n"
        ));
    }
    precompile(&spec.components, &spec.out.join("lib").join("compiled"))?;
    let fill = |template: &str| {
        template
            .replace("@NAME@", &spec.name)
            .replace("@COMPONENTS@", component_lines.trim_end())
    };
    // Read by bin/NAME only, and meant to hold RELEASE_COOKIE: its owner's.
    write_file(&version_dir.join("env.sh"), &fill(ENV_SH), 0o600)?;
    // vm.args may hold the cookie: readable by its owner only.
    write_file(&version_dir.join("vm.args"), &fill(VM_ARGS), 0o600)
}

/// Compiles each component with the engine a node uses, into `dir`, where
/// a node started with `--compile-cache dir` finds it (the cache key is the
/// component's bytes with the engine's version and settings, so a node
/// whose engine differs compiles it again instead of running stale code).
fn precompile(components: &[(String, PathBuf)], dir: &Path) -> anyhow::Result<()> {
    let config = NodeConfig {
        limits: ProcessLimits {
            max_processes: 1,
            ..ProcessLimits::default()
        },
        compile_cache: Some(dir.to_path_buf()),
        ..NodeConfig::new("release", dir.to_path_buf())
    };
    let engine = Engine::new(&config)?;
    for (name, wasm) in components {
        LoadedComponent::load(&engine, name, wasm, dir)
            .with_context(|| format!("cannot compile component `{name}`"))?;
    }
    Ok(())
}

/// Names and versions become file names: letters, digits, `_`, `-`, and
/// (not first) `.`.
fn validate_word(what: &str, word: &str) -> anyhow::Result<()> {
    let valid = !word.is_empty()
        && word.len() <= 64
        && !word.starts_with('.')
        && word
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    anyhow::ensure!(
        valid,
        "`{word}` is not a {what}: use letters, digits, `_`, `-` and `.`"
    );
    Ok(())
}

fn copy_executable(from: &Path, to: &Path) -> anyhow::Result<()> {
    fs::copy(from, to).with_context(|| format!("cannot copy {}", from.display()))?;
    fs::set_permissions(to, fs::Permissions::from_mode(0o755))?;
    Ok(())
}

fn write_file(path: &Path, text: &str, mode: u32) -> anyhow::Result<()> {
    fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .with_context(|| format!("cannot set the mode of {}", path.display()))?;
    Ok(())
}
