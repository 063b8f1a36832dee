//! `otp:platform/log`: guest log lines go to the host's `tracing` output,
//! tagged with node, component and process, under the `guest` target (so
//! `RUST_LOG=guest=debug` turns them up without the host's own chatter).

use std::sync::Arc;

use tracing::{debug, error, info, trace, warn};
use wasmtime::component::{HasData, Linker};

use super::HasCapabilities;
use super::bindings::log::{self, Level};

pub struct LogCapability {
    node: Arc<str>,
    component: Arc<str>,
    process: Option<Arc<str>>,
}

impl LogCapability {
    pub fn new(node: Arc<str>, component: Arc<str>, process: Option<Arc<str>>) -> Self {
        Self {
            node,
            component,
            process,
        }
    }
}

/// Longest guest log message kept; longer ones are cut there (a guest
/// could otherwise fill the host's log with megabytes per line).
const MAX_MESSAGE_BYTES: usize = 8 * 1024;

impl log::Host for LogCapability {
    fn log(&mut self, level: Level, mut message: String) {
        if message.len() > MAX_MESSAGE_BYTES {
            let mut end = MAX_MESSAGE_BYTES;
            while !message.is_char_boundary(end) {
                end -= 1;
            }
            message.truncate(end);
            message.push_str(" [cut]");
        }
        let node = &*self.node;
        let component = &*self.component;
        let process = self.process.as_deref().unwrap_or("<http>");
        match level {
            Level::Trace => {
                trace!(target: "guest", node = %node, component = %component, process = %process, "{message}")
            }
            Level::Debug => {
                debug!(target: "guest", node = %node, component = %component, process = %process, "{message}")
            }
            Level::Info => {
                info!(target: "guest", node = %node, component = %component, process = %process, "{message}")
            }
            Level::Warn => {
                warn!(target: "guest", node = %node, component = %component, process = %process, "{message}")
            }
            Level::Error => {
                error!(target: "guest", node = %node, component = %component, process = %process, "{message}")
            }
        }
    }
}

struct Log;

impl HasData for Log {
    type Data<'a> = &'a mut LogCapability;
}

pub(super) fn add_to_linker<T: HasCapabilities>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
    log::add_to_linker::<T, Log>(linker, |state| &mut state.capabilities().log)
}
