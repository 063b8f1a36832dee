//! Distribution: how nodes find, authenticate and talk to each other.
//!
//! This module owns the transport and nothing above it:
//! - `name`: node names, `name@host`;
//! - `cookie`: the shared secret, where it comes from, and the rules for its
//!   file;
//! - `epmd`: the EPMD-compatible port mapper (client, and the `host epmd`
//!   daemon); `socket_owner`: which local user a loopback peer is;
//! - `frame`: length-prefixed frames with a cap;
//! - `handshake`: version negotiation and the mutual cookie challenge;
//! - `gate`: who may start a handshake, how many at once, and what a
//!   failure costs its address;
//! - `tls`: optional TLS under the handshake;
//! - `link`: one authenticated connection, multiplexing requests, responses,
//!   one-way messages and pings;
//! - `mesh`: the links to every member, the listener, re-dialling, and the
//!   tie-break between simultaneous links.
//!
//! It moves bytes between named nodes and says when links come and go. What
//! the bytes mean (Raft, calls, joins) is the cluster's (`crate::cluster`),
//! which reaches this module through [`mesh::Mesh`] and
//! [`link::LinkHandler`] only. Nothing here knows about processes, storage
//! or Raft: of the host it uses only the leaves (`crate::budget`,
//! `crate::metrics`).

pub mod cookie;
pub mod epmd;
pub mod frame;
pub mod gate;
pub mod handshake;
pub mod link;
pub mod mesh;
pub mod name;
pub mod socket_owner;
pub mod tls;

pub use cookie::Cookie;
pub use name::NodeName;
