//! What a console client and a node's console say to each other, encoded
//! with postcard inside the cluster's opaque `ToolRequest::Console`.

use serde::{Deserialize, Serialize};

use crate::process::{ProcessInfo, Restarts};

#[derive(Debug, Serialize, Deserialize)]
pub enum ConsoleRequest {
    /// Runs one command line.
    Run { line: String },
    /// Completions of the line's last word.
    Complete { line: String },
    /// What the session's running traces printed since the last ask,
    /// waiting up to a second for something.
    Output,
    /// This node's processes (asked member to member by `ps`, `tree` and
    /// the observer): the `limit` largest in memory, and, when asked, the
    /// node's figures (reading them costs the node a pass over its memory
    /// maps: only the observer and `memory` want them).
    Processes { limit: u32, figures: bool },
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct ConsoleReply {
    /// What to print.
    pub text: String,
    /// Whether the command succeeded (`rpc`'s exit status).
    pub ok: bool,
    /// A trace of this session is running: ask for `Output` until not.
    pub live: bool,
    /// For `Complete`: the candidates for the last word.
    pub completions: Vec<String>,
    /// For `Processes`.
    pub processes: Vec<ProcessRow>,
    /// For `Processes`: the node's own figures.
    pub figures: Option<NodeFigures>,
}

/// One node's memory and counts, as `memory` and the observer show them.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct NodeFigures {
    pub node: String,
    /// Resident memory and page tables, in bytes (from /proc; 0 if unknown).
    pub resident: usize,
    pub page_tables: usize,
    /// Memory mappings of the process, and the kernel's limit.
    pub mappings: usize,
    pub max_map_count: usize,
    pub processes: usize,
    pub max_processes: u32,
    /// The processes' linear memory, all together.
    pub linear_memory: usize,
    /// Process crashes since the node started.
    pub crashes: u64,
    /// Messages handled by the live processes (a rate is its change).
    pub messages: u64,
}

/// One process, with the node it runs on and its restart history.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProcessRow {
    pub node: String,
    pub info: ProcessInfo,
    pub restarts: Option<Restarts>,
}

impl ConsoleReply {
    pub fn ok(text: impl Into<String>) -> Self {
        Self {
            text: text.into(),
            ok: true,
            ..Self::default()
        }
    }

    pub fn failed(text: impl Into<String>) -> Self {
        Self {
            text: text.into(),
            ok: false,
            ..Self::default()
        }
    }
}

pub fn encode(value: &impl Serialize) -> Vec<u8> {
    postcard::to_allocvec(value).unwrap_or_default()
}

pub fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, String> {
    postcard::from_bytes(bytes).map_err(|e| format!("malformed console message: {e}"))
}
