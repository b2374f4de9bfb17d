//! `berth`: bring a Berth up on this host, make certificates, and manage
//! the cluster through the control plane's gRPC API.
//!
//! - [`commands`]: one module per subcommand (`up`, `certs`, `images`, `nodes`, `apps`, `builds`, `keys`, `tenants`).
//! - [`client`]: finding and dialling the control plane as an admin.
//! - [`output`]: tables and JSON.

mod client;
mod commands;
mod output;

use clap::{Parser, Subcommand};

/// First argument that makes `berth` the sandbox helper (see `berth up`).
pub const SANDBOX_HELPER_ARG: &str = "__sandbox";
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "berth",
    version,
    about = "Run other people's code on your own hosts"
)]
struct Cli {
    /// Data directory of the local Berth (certificates, database, endpoints).
    #[arg(long, global = true, env = "BERTH_DATA_DIR", default_value = ".berth")]
    data_dir: PathBuf,
    /// Control plane gRPC endpoint [default: the one `berth up` wrote to the data dir, else https://127.0.0.1:7443].
    #[arg(long, global = true, env = "BERTH_ENDPOINT")]
    endpoint: Option<String>,
    /// Directory holding ca.pem, admin.pem and admin-key.pem [default: DATA_DIR/certs].
    #[arg(long, global = true, env = "BERTH_CERTS")]
    certs: Option<PathBuf>,
    /// Which certificate in the certs directory to call with: NAME.pem and
    /// NAME-key.pem (e.g. a tenant's, from `berth certs issue --role tenant`).
    #[arg(long, global = true, env = "BERTH_IDENTITY", default_value = "admin")]
    identity: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the control plane, one node agent and the gateway on this host.
    Up(commands::up::UpArgs),
    /// Make a certificate authority and leaf certificates.
    #[command(subcommand)]
    Certs(commands::certs::CertsCommand),
    /// Deploy and manage apps.
    Apps(commands::apps::AppsArgs),
    /// Builds and their output.
    #[command(subcommand)]
    Builds(commands::builds::BuildsCommand),
    /// Run code in a sandbox: `berth exec --lang python FILE`.
    Exec(commands::exec::ExecArgs),
    /// The event log (lifecycle of nodes, builds and instances).
    Events(commands::builds::EventsArgs),
    /// Runtime base images.
    #[command(subcommand)]
    Images(commands::images::ImagesCommand),
    /// API keys for the gateway.
    Keys(commands::keys::KeysArgs),
    /// List and manage nodes.
    Nodes(commands::nodes::NodesArgs),
    /// Tenants and their fair shares of the cluster.
    Tenants(commands::tenants::TenantsArgs),
}

fn main() -> std::process::ExitCode {
    // `berth up`'s agent starts this same program as its sandbox helper.
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some(SANDBOX_HELPER_ARG) {
        let code = berth_node_agent::sandbox::helper::main(&args[1..]);
        return std::process::ExitCode::from(u8::try_from(code).unwrap_or(1));
    }
    berth_common::telemetry::init();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: starting the async runtime: {err}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let target = client::Target {
        data_dir: cli.data_dir.clone(),
        endpoint: cli.endpoint,
        certs: cli.certs,
        identity: cli.identity,
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Up(args) => commands::up::run(&cli.data_dir, args).await,
            Command::Certs(command) => commands::certs::run(command),
            Command::Apps(args) => commands::apps::run(&target, args).await,
            Command::Builds(command) => commands::builds::run(&target, command).await,
            Command::Events(args) => commands::builds::events(&target, args).await,
            Command::Exec(args) => commands::exec::run(&target, args).await,
            Command::Images(command) => commands::images::run(command).await,
            Command::Keys(args) => commands::keys::run(&target, args).await,
            Command::Nodes(args) => commands::nodes::run(&target, args).await,
            Command::Tenants(args) => commands::tenants::run(&target, args).await,
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
