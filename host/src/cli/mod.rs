//! The subcommands of the `host` binary: argument parsing and the wiring of
//! the library's parts, nothing more.

pub mod dist;
pub mod run;
pub mod tools;
