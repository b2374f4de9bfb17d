use berth_node_agent::AgentArgs;
use clap::Parser;

/// Berth node agent: runs deployments and executions on this host.
#[derive(Parser)]
#[command(name = "berth-node-agent", version)]
struct Cli {
    #[command(flatten)]
    args: AgentArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    berth_common::telemetry::init();
    let config = Cli::parse().args.into_config()?;
    let shutdown = berth_common::shutdown::on_signal();
    berth_node_agent::run(config, shutdown).await?;
    Ok(())
}
