//! The tools' side of the hidden channel: a one-shot command sent to a
//! node over a hidden link (authenticated like a member's, but the node
//! never counts it as one).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::BoxFuture;

use super::wire::{self, Request, Response, ToolReply, ToolRequest};
use crate::dist::NodeName;
use crate::dist::link::{Link, LinkHandler};
use crate::dist::mesh::Dialer;

/// A tool serves nothing: whatever a node asks of it is refused.
struct ServesNothing;

impl LinkHandler for ServesNothing {
    fn request(&self, _link: Arc<Link>, _body: Bytes) -> BoxFuture<'static, Vec<u8>> {
        Box::pin(async { wire::encode(&Response::Refused("a tool serves nothing".into())) })
    }
    fn message(&self, _link: &Arc<Link>, _body: Bytes) {}
    fn link_down(&self, _link: &Arc<Link>) {}
}

/// Sends `request` to `node` and waits up to `timeout` for its reply.
pub async fn ask(
    dialer: &Dialer,
    node: &NodeName,
    request: ToolRequest,
    timeout: Duration,
) -> Result<ToolReply, String> {
    let link = dialer
        .dial(node, true, Arc::new(ServesNothing))
        .await
        .map_err(|e| {
            if e.is_wrong_cookie() {
                format!("{node} refused the connection: the cookies differ")
            } else {
                e.to_string()
            }
        })?;
    let answer = link
        .request(&wire::encode(&Request::Tool(request)), timeout)
        .await;
    link.close("the tool is done");
    match wire::decode::<Response>(&answer.map_err(|e| e.to_string())?)? {
        Response::Tool(reply) => Ok(reply),
        Response::Refused(reason) => Err(reason),
        other => Err(format!("unexpected answer from {node}: {other:?}")),
    }
}
