//! `berth tenants list|set`: tenants and their fair shares of the cluster.

use crate::{
    client::{reply, Target},
    output::{self, Format},
};
use berth_proto::{
    pb::{self, tenant_service_client::TenantServiceClient},
    views::TenantView,
};
use clap::{Args, Subcommand};

#[derive(Args)]
pub struct TenantsArgs {
    #[command(subcommand)]
    command: Option<TenantsCommand>,
    /// Output format.
    #[arg(short, long, global = true, value_enum, default_value_t)]
    output: Format,
}

#[derive(Subcommand)]
enum TenantsCommand {
    /// Tenants with the limits that hold for them (the default command).
    List,
    /// Set a tenant's own limits (admins); 0 returns a limit to the
    /// cluster's default, a limit not given is kept.
    Set {
        name: String,
        /// Executions of the tenant running at once.
        #[arg(long)]
        max_running_executions: Option<u32>,
        /// Executions of the tenant waiting for a slot.
        #[arg(long)]
        max_queued_executions: Option<u32>,
        /// Image builds of the tenant at once.
        #[arg(long)]
        max_running_builds: Option<u32>,
    },
}

fn print(format: Format, tenants: &[TenantView]) -> anyhow::Result<()> {
    let show = |own: Option<u32>, now: Option<u32>| {
        let now = now.map_or("-".to_owned(), |n| n.to_string());
        if own.is_some() {
            now
        } else {
            format!("{now} (default)")
        }
    };
    let rows = tenants
        .iter()
        .map(|t| {
            vec![
                t.name.clone(),
                show(
                    t.limits.max_running_executions,
                    t.effective.max_running_executions,
                ),
                show(
                    t.limits.max_queued_executions,
                    t.effective.max_queued_executions,
                ),
                show(t.limits.max_running_builds, t.effective.max_running_builds),
            ]
        })
        .collect();
    output::print(
        format,
        &tenants,
        &["NAME", "RUNNING EXECUTIONS", "WAITING EXECUTIONS", "BUILDS"],
        rows,
    )
}

pub async fn run(target: &Target, args: TenantsArgs) -> anyhow::Result<()> {
    let mut client = TenantServiceClient::new(target.connect().await?);
    match args.command.unwrap_or(TenantsCommand::List) {
        TenantsCommand::List => {
            let listed = reply(client.list_tenants(pb::ListTenantsRequest {}).await)?;
            let tenants: Vec<TenantView> =
                listed.tenants.into_iter().map(TenantView::from).collect();
            print(args.output, &tenants)
        }
        TenantsCommand::Set {
            name,
            max_running_executions,
            max_queued_executions,
            max_running_builds,
        } => {
            let tenant = reply(
                client
                    .set_tenant_limits(pb::SetTenantLimitsRequest {
                        name,
                        limits: Some(pb::TenantLimits {
                            max_running_executions,
                            max_queued_executions,
                            max_running_builds,
                        }),
                    })
                    .await,
            )?;
            print(args.output, &[TenantView::from(tenant)])
        }
    }
}
