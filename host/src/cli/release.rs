//! `host release`: builds a release directory (`host::release`).

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Args;

use host::release::{self, ReleaseSpec};
use host::wasm::{name_from_path, validate_name};

#[derive(Args)]
pub struct ReleaseArgs {
    /// Components to ship, as PATH or NAME=PATH (the first serves HTTP at /).
    #[arg(required = true, value_name = "COMPONENT")]
    components: Vec<String>,
    /// The release's name: its script is bin/NAME.
    #[arg(long, default_value = "todo")]
    name: String,
    /// The release's version (releases/VERSION/).
    #[arg(long = "release-version", default_value = env!("CARGO_PKG_VERSION"))]
    version: String,
    /// Where to build it (replaced if it exists, unless --add). [default: _build/prod/rel/NAME]
    #[arg(long)]
    out: Option<PathBuf>,
    /// Add this version beside those already in --out (a release built
    /// before), as a new release version does: releases/VERSION/ with its
    /// components. The release keeps starting its current version until
    /// `bin/NAME upgrade VERSION` swaps a running node to it.
    #[arg(long)]
    add: bool,
}

pub async fn build(args: ReleaseArgs) -> anyhow::Result<()> {
    let components = args
        .components
        .iter()
        .map(|spec| {
            let (name, path) = match spec.split_once('=') {
                Some((name, path)) => (name.to_string(), PathBuf::from(path)),
                None => (name_from_path(spec.as_ref()), PathBuf::from(spec)),
            };
            validate_name(&name).with_context(|| format!("in `{spec}`: name it with NAME=PATH"))?;
            Ok((name, path))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let spec = ReleaseSpec {
        out: args
            .out
            .clone()
            .unwrap_or_else(|| PathBuf::from("_build/prod/rel").join(&args.name)),
        name: args.name.clone(),
        version: args.version.clone(),
        host_binary: std::env::current_exe().context("cannot find the host binary")?,
        components,
        add: args.add,
    };
    let (name, version) = (args.name, args.version);
    let out = tokio::task::spawn_blocking(move || release::build(&spec))
        .await
        .context("building the release panicked")??;
    if args.add {
        println!(
            "Release version {version} added at {} (`bin/{name} upgrade {version}` swaps a running node to it)",
            out.display()
        );
    } else {
        println!("Release created at {}", out.display());
    }
    Ok(())
}
