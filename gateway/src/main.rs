use anyhow::Context;
use berth_gateway::GatewayArgs;
use clap::Parser;

/// Berth gateway: users' HTTP traffic to their apps.
#[derive(Parser)]
#[command(name = "berth-gateway", version)]
struct Cli {
    #[command(flatten)]
    args: GatewayArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    berth_common::telemetry::init();
    let cli = Cli::parse();
    let addr = cli.args.gateway_addr;
    let static_routes = cli.args.static_routes.clone();
    let config = cli.args.into_config()?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding gateway address {addr}"))?;
    let shutdown = berth_common::shutdown::on_signal();
    match static_routes {
        Some(path) => {
            let routes = berth_gateway::routes::Routes::default();
            routes.apply(&berth_gateway::static_routes::load(&path)?);
            berth_gateway::serve(config, listener, routes, None, shutdown).await
        }
        None => berth_gateway::run(config, listener, shutdown).await,
    }
}
