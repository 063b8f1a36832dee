//! One-shot commands that reach a running node over a hidden link (`host
//! nodes`, `host connect`, `host leave`), and the port mapper (`host epmd`).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use clap::Args;

use super::distribution::LinkArgs;
use host::cluster::tool;
use host::cluster::wire::{ToolReply, ToolRequest};
use host::distribution::{NodeName, epmd};

/// Longest a tool waits for its answer (a join may move a snapshot).
const TOOL_TIMEOUT: Duration = Duration::from_secs(330);

#[derive(Args)]
pub struct NodesArgs {
    /// The node to ask, NAME@HOST.
    node: String,
    #[command(flatten)]
    link: LinkArgs,
}

#[derive(Args)]
pub struct ConnectArgs {
    /// The node that joins, NAME@HOST.
    node: String,
    /// A member of the cluster it joins (or a lone node: they form one).
    other: String,
    #[command(flatten)]
    link: LinkArgs,
}

#[derive(Args)]
pub struct LeaveArgs {
    /// The node that leaves, NAME@HOST.
    node: String,
    #[command(flatten)]
    link: LinkArgs,
}

#[derive(Args)]
pub struct EpmdArgs {
    /// Port to serve on (or to ask, with --names and --kill).
    /// [default: ERL_EPMD_PORT, else 4369]
    #[arg(long)]
    port: Option<u16>,
    /// Address to serve on: loopback, unless nodes of this host must be
    /// found from other hosts (0.0.0.0). Registrations are accepted from
    /// this host only. (A node that starts the port mapper chooses for
    /// itself: 0.0.0.0 when its name's host is not a loopback address.)
    #[arg(long, default_value = "127.0.0.1")]
    address: IpAddr,
    /// List the names registered with the running port mapper, as `epmd -names`.
    #[arg(long, conflicts_with = "kill")]
    names: bool,
    /// Stop the running port mapper, as `epmd -kill` (refused while nodes
    /// are registered).
    #[arg(long)]
    kill: bool,
}

/// Sends `request` to `node` as a hidden tool and returns its reply.
async fn ask(node: &str, link: &LinkArgs, request: ToolRequest) -> anyhow::Result<ToolReply> {
    let node = NodeName::parse(node).map_err(|e| anyhow::anyhow!(e))?;
    let dialer = link.tool_dialer("tool", TOOL_TIMEOUT)?;
    tool::ask(&dialer, &node, request, TOOL_TIMEOUT)
        .await
        .map_err(|e| anyhow::anyhow!(e))
}

fn done(reply: ToolReply) -> anyhow::Result<()> {
    match reply {
        ToolReply::Done(message) => {
            println!("{message}");
            Ok(())
        }
        ToolReply::Failed(reason) => Err(anyhow::anyhow!(reason)),
        ToolReply::Nodes(_) | ToolReply::Console(_) => {
            Err(anyhow::anyhow!("unexpected answer: {reply:?}"))
        }
    }
}

pub async fn nodes(args: NodesArgs) -> anyhow::Result<()> {
    match ask(&args.node, &args.link, ToolRequest::Nodes).await? {
        ToolReply::Nodes(nodes) => {
            print!("{}", host::console::render_nodes(&nodes));
            Ok(())
        }
        other => done(other),
    }
}

pub async fn connect(args: ConnectArgs) -> anyhow::Result<()> {
    let other = NodeName::parse(&args.other).map_err(|e| anyhow::anyhow!(e))?;
    done(ask(&args.node, &args.link, ToolRequest::Connect { other }).await?)
}

pub async fn leave(args: LeaveArgs) -> anyhow::Result<()> {
    done(ask(&args.node, &args.link, ToolRequest::Leave).await?)
}

pub async fn epmd(args: EpmdArgs) -> anyhow::Result<()> {
    let port = match args.port {
        Some(port) => port,
        None => epmd::port_from_env().map_err(|e| anyhow::anyhow!(e))?,
    };
    let local = SocketAddr::from(([127, 0, 0, 1], port));
    if args.names {
        println!("epmd: up and running on port {port} with data:");
        for (name, node_port) in epmd::names(local).await? {
            println!("name {name} at port {node_port}");
        }
        return Ok(());
    }
    if args.kill {
        return match epmd::kill(local).await? {
            true => {
                println!("Killed");
                Ok(())
            }
            false => Err(anyhow::anyhow!(
                "the port mapper refused: nodes are still registered"
            )),
        };
    }
    let addr = SocketAddr::new(args.address, port);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("the port mapper cannot listen on {addr}: {e}"))?;
    tracing::info!("port mapper listening on {addr}");
    let stop = host::shutdown::StopSignals::install()?;
    tokio::select! {
        served = epmd::serve(listener, false) => served?,
        signal = stop.recv() => tracing::info!("port mapper: {signal}, stopping"),
    }
    Ok(())
}
