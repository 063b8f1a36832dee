//! The tools' side of the hidden channel: a one-shot command sent to a
//! node over a hidden link (authenticated like a member's, but the node
//! never counts it as one).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::BoxFuture;

use super::wire::{self, Request, Response, ToolReply, ToolRequest};
use crate::distribution::NodeName;
use crate::distribution::link::{Link, LinkHandler};
use crate::distribution::mesh::Dialer;

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
    let link = connect(dialer, node).await?;
    let answer = request_on(&link, request, timeout).await;
    link.close("the tool is done");
    answer
}

/// A hidden link to `node`, for a tool that asks several things (a remote
/// console). A wrong cookie is said in one line.
pub async fn connect(dialer: &Dialer, node: &NodeName) -> Result<Arc<Link>, String> {
    dialer
        .dial(node, true, Arc::new(ServesNothing))
        .await
        .map_err(|e| {
            if e.is_wrong_cookie() {
                format!("{node} refused the connection: the cookies differ")
            } else {
                e.to_string()
            }
        })
}

/// Sends `request` on `link` and waits up to `timeout` for the reply.
pub async fn request_on(
    link: &Link,
    request: ToolRequest,
    timeout: Duration,
) -> Result<ToolReply, String> {
    let answer = link
        .request(&wire::encode(&Request::Tool(request)), timeout)
        .await
        .map_err(|e| format!("{}: {e}", link.peer()))?;
    match wire::decode::<Response>(&answer)? {
        Response::Tool(reply) => Ok(reply),
        Response::Refused(reason) => Err(reason),
        other => Err(format!("unexpected answer from {}: {other:?}", link.peer())),
    }
}
