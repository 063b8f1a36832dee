//! The cluster: `nodes`, `connect`.

use super::{Invocation, Reply};
use crate::console::views::render_nodes;
use crate::distribution::NodeName;

pub fn nodes(call: Invocation<'_>) -> Reply<'_> {
    let console = call.console;
    let mut text = match &console.cluster {
        Some(cluster) => render_nodes(&cluster.nodes()),
        None => format!("{} (distribution is off: it is alone)\n", console.me()),
    };
    if let Some(failure) = console.storage_failure() {
        text.push_str(&format!(
            "{}: storage failed and refuses writes until it restarts: {failure}\n",
            console.me()
        ));
    }
    Box::pin(std::future::ready(Ok(text)))
}

pub fn connect(call: Invocation<'_>) -> Reply<'_> {
    Box::pin(async move {
        let [other] = call.args else {
            return Err("usage: connect NODE".into());
        };
        let cluster = call
            .console
            .cluster
            .as_ref()
            .ok_or("distribution is off on this node: it cannot connect")?;
        let other = NodeName::parse(other)?;
        cluster.join(&other).await.map(|done| done + "\n")
    })
}
