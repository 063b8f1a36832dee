//! Who a process is: its id on this node, its cluster-wide name, the
//! registration it runs under in a cluster, and why the node may stop it.
//! Plain values, shared by every layer above.

use std::fmt;
use std::sync::{Arc, OnceLock};

use serde::{Deserialize, Serialize};

/// A process id, unique within the node's lifetime. A process keeps it
/// while it hibernates.
pub type Pid = u64;

/// The cluster-wide name of a process: `component/name`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ProcessKey {
    pub component: Arc<str>,
    pub name: Arc<str>,
}

impl ProcessKey {
    pub fn new(component: &str, name: &str) -> Self {
        Self {
            component: Arc::from(component),
            name: Arc::from(name),
        }
    }
}

impl fmt::Display for ProcessKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.component, self.name)
    }
}

/// Which registration of a name a process is, in a cluster: the placement
/// slot of its name, the node that held the slot, and the log index at
/// which that node got it (its epoch). The cluster applies a process's
/// writes only while its fence is current, so two processes of one name
/// never both write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Fence {
    pub slot: u16,
    pub node: u64,
    pub epoch: u64,
}

/// Why a process was told to stop by the node (not by its own doing).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopReason {
    /// Its name is now held by another registration: waiting calls are
    /// answered `Moved`, so their callers send them again, to the new one.
    Moved,
    /// The node is cut off from the cluster's majority.
    CutOff(String),
    /// An operator killed it (`kill NAME`): it ends as if it crashed, and
    /// its next message starts it again, as a supervisor restarts a child.
    Killed,
}

/// Set once to make a process stop before its next message.
#[derive(Default)]
pub struct StopFlag(OnceLock<StopReason>);

impl StopFlag {
    pub fn reason(&self) -> Option<&StopReason> {
        self.0.get()
    }

    /// Sets the reason; false if one was set already.
    pub fn set(&self, reason: StopReason) -> bool {
        self.0.set(reason).is_ok()
    }
}
