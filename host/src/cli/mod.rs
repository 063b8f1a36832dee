//! The subcommands of the `host` binary: argument parsing and the wiring of
//! the library's parts, nothing more. A node's start and stop sequence is
//! the library's (`host::boot`); `run` turns options into a
//! `NodeConfig` and calls it.

pub mod args_file;
pub mod console;
pub mod daemon;
pub mod distribution;
pub mod release;
pub mod run;
pub mod tools;
