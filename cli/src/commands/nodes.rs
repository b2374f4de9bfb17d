//! `berth nodes [list|get|drain|undrain]`.

use crate::{
    client::{reply, Target},
    output::{self, Format},
};
use berth_proto::{
    domain::NodeState,
    pb::{self, node_service_client::NodeServiceClient},
    views::NodeView,
};
use chrono::Utc;
use clap::{Args, Subcommand};

#[derive(Args)]
pub struct NodesArgs {
    #[command(subcommand)]
    command: Option<NodesCommand>,
    /// Output format.
    #[arg(short, long, global = true, value_enum, default_value_t)]
    output: Format,
}

#[derive(Subcommand)]
enum NodesCommand {
    /// List nodes (the default).
    List {
        /// Only nodes in this state: ready, draining or down.
        #[arg(long)]
        state: Option<String>,
    },
    /// Show one node.
    Get { name: String },
    /// Place no new work on a node.
    Drain { name: String },
    /// Let a drained node take work again.
    Undrain { name: String },
}

fn rows(nodes: &[NodeView]) -> Vec<Vec<String>> {
    let now = Utc::now();
    nodes
        .iter()
        .map(|n| {
            let runtimes: Vec<_> = n
                .runtimes
                .iter()
                .filter(|r| r.available)
                .map(|r| r.name.as_str())
                .collect();
            vec![
                n.name.clone(),
                n.state.clone(),
                n.address.clone(),
                format!("{:.1}", f64::from(n.cpu_millis) / 1000.0),
                output::bytes(n.memory_bytes),
                runtimes.join(","),
                n.firewall.clone(),
                n.last_heartbeat_at
                    .map_or("never".into(), |t| output::ago((now - t).num_seconds())),
            ]
        })
        .collect()
}

const HEADERS: [&str; 8] = [
    "NAME",
    "STATE",
    "ADDRESS",
    "CPU",
    "MEMORY",
    "RUNTIMES",
    "FIREWALL",
    "LAST HEARTBEAT",
];

pub async fn run(target: &Target, args: NodesArgs) -> anyhow::Result<()> {
    let mut client = NodeServiceClient::new(target.connect().await?);
    let format = args.output;
    let single = |node: pb::Node| {
        let view = NodeView::from(node);
        let rows = rows(std::slice::from_ref(&view));
        output::print(format, &view, &HEADERS, rows)
    };
    match args.command.unwrap_or(NodesCommand::List { state: None }) {
        NodesCommand::List { state } => {
            let state = match state {
                None => pb::NodeState::Unspecified,
                Some(s) => pb::NodeState::from(s.parse::<NodeState>().map_err(|_| {
                    anyhow::anyhow!("--state must be ready, draining or down, not {s:?}")
                })?),
            };
            let nodes = reply(
                client
                    .list_nodes(pb::ListNodesRequest {
                        state: state as i32,
                    })
                    .await,
            )?
            .nodes;
            let views: Vec<NodeView> = nodes.into_iter().map(NodeView::from).collect();
            let rows = rows(&views);
            output::print(format, &views, &HEADERS, rows)
        }
        NodesCommand::Get { name } => {
            single(reply(client.get_node(pb::GetNodeRequest { name }).await)?)
        }
        NodesCommand::Drain { name } => single(reply(
            client.drain_node(pb::DrainNodeRequest { name }).await,
        )?),
        NodesCommand::Undrain { name } => single(reply(
            client.undrain_node(pb::UndrainNodeRequest { name }).await,
        )?),
    }
}
