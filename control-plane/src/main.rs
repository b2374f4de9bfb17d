use anyhow::Context;
use berth_control_plane::ControlPlaneArgs;
use clap::Parser;

/// Berth control plane: the gRPC API, node registry and scheduler.
#[derive(Parser)]
#[command(name = "berth-control-plane", version)]
struct Cli {
    #[command(flatten)]
    args: ControlPlaneArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    berth_common::telemetry::init();
    let cli = Cli::parse();
    let (grpc_addr, metrics_addr) = (cli.args.grpc_addr, cli.args.metrics_addr);
    let config = cli.args.into_config()?;
    let grpc = tokio::net::TcpListener::bind(grpc_addr)
        .await
        .with_context(|| format!("binding gRPC address {grpc_addr}"))?;
    let metrics = tokio::net::TcpListener::bind(metrics_addr)
        .await
        .with_context(|| format!("binding metrics address {metrics_addr}"))?;
    // One line on stdout says where it listens (useful with port 0).
    println!(
        "berth-control-plane listening: grpc {} metrics {}",
        grpc.local_addr()?,
        metrics.local_addr()?
    );
    let shutdown = berth_common::shutdown::on_signal();
    berth_control_plane::run(config, grpc, metrics, shutdown).await?;
    Ok(())
}
