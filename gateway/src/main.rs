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
    let (addr, metrics_addr) = (cli.args.gateway_addr, cli.args.gateway_metrics_addr);
    let static_routes = cli.args.static_routes.clone();
    let config = cli.args.into_config()?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding gateway address {addr}"))?;
    let metrics = tokio::net::TcpListener::bind(metrics_addr)
        .await
        .with_context(|| format!("binding gateway metrics address {metrics_addr}"))?;
    let listeners = berth_gateway::Listeners {
        users: listener,
        metrics,
    };
    let shutdown = berth_common::shutdown::on_signal();
    match static_routes {
        Some(path) => {
            let routes = berth_gateway::routes::Routes::default();
            routes.apply(&berth_gateway::static_routes::load(&path)?);
            berth_gateway::serve(config, listeners, routes, None, shutdown).await
        }
        None => berth_gateway::run(config, listeners, shutdown).await,
    }
}
