//! `berth keys create|list|revoke`: API keys for the gateway.

use crate::{
    client::{reply, Target},
    output::{self, Format},
};
use berth_proto::{
    domain::KeyRole,
    pb::{self, api_key_service_client::ApiKeyServiceClient},
    views::KeyView,
};
use clap::{Args, Subcommand};

#[derive(Args)]
pub struct KeysArgs {
    #[command(subcommand)]
    command: KeysCommand,
    /// Output format.
    #[arg(short, long, global = true, value_enum, default_value_t)]
    output: Format,
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Make a key; it is printed once and cannot be shown again.
    Create {
        /// Tenant whose apps the key reaches (made when new) [default: the
        /// caller's own tenant, or `default` for an admin].
        #[arg(long, default_value = "")]
        tenant: String,
        /// A name to tell the key apart.
        #[arg(long, default_value = "")]
        name: String,
        /// admin (every tenant, nodes, cleanup), deployer (manage the
        /// tenant's apps, builds, keys, events and executions) or invoker
        /// (call the tenant's apps and run code).
        #[arg(long, value_parser = parse_role, default_value = "invoker")]
        role: KeyRole,
        /// Same as `--role admin`.
        #[arg(long, conflicts_with = "role")]
        admin: bool,
        /// Requests per second allowed (token bucket) [default: 100].
        #[arg(long, default_value_t = 0.0)]
        rate: f64,
        /// Requests allowed in a burst [default: 200, at least the rate].
        #[arg(long, default_value_t = 0)]
        burst: u32,
    },
    /// List keys (never the keys themselves).
    List {
        /// Only this tenant's keys.
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Revoke a key by id; gateways refuse it within moments.
    Revoke { id: String },
}

fn parse_role(value: &str) -> Result<KeyRole, String> {
    value
        .parse()
        .map_err(|_| format!("{value:?} is not admin, deployer or invoker"))
}

fn print(format: Format, keys: &[KeyView]) -> anyhow::Result<()> {
    let rows = keys
        .iter()
        .map(|k| {
            vec![
                k.id.clone(),
                k.tenant.clone(),
                k.name.clone(),
                format!("{}…", k.prefix),
                k.role.clone(),
                format!("{}/s, burst {}", k.rate_per_second, k.burst),
                if k.revoked_at.is_some() {
                    "revoked"
                } else {
                    "active"
                }
                .to_owned(),
            ]
        })
        .collect();
    output::print(
        format,
        &keys,
        &["ID", "TENANT", "NAME", "PREFIX", "ROLE", "RATE", "STATE"],
        rows,
    )
}

pub async fn run(target: &Target, args: KeysArgs) -> anyhow::Result<()> {
    let mut client = ApiKeyServiceClient::new(target.connect().await?);
    match args.command {
        KeysCommand::Create {
            tenant,
            name,
            role,
            admin,
            rate,
            burst,
        } => {
            let role = if admin { KeyRole::Admin } else { role };
            let created = reply(
                client
                    .create_api_key(pb::CreateApiKeyRequest {
                        tenant,
                        name,
                        admin: role == KeyRole::Admin,
                        role: pb::KeyRole::from(role).into(),
                        rate_per_second: rate,
                        burst,
                    })
                    .await,
            )?;
            let mut view = KeyView::from(created.api_key.unwrap_or_default());
            match args.output {
                Format::Json => {
                    view.key = Some(created.key);
                    println!("{}", serde_json::to_string_pretty(&view)?);
                }
                Format::Table => {
                    println!("{}", created.key);
                    eprintln!(
                        "key {} for tenant {}: keep it now, it is not shown again",
                        view.id, view.tenant
                    );
                }
            }
            Ok(())
        }
        KeysCommand::List { tenant } => {
            let listed = reply(
                client
                    .list_api_keys(pb::ListApiKeysRequest {
                        tenant: tenant.unwrap_or_default(),
                    })
                    .await,
            )?;
            let keys: Vec<KeyView> = listed.api_keys.into_iter().map(KeyView::from).collect();
            print(args.output, &keys)
        }
        KeysCommand::Revoke { id } => {
            let key = reply(client.revoke_api_key(pb::RevokeApiKeyRequest { id }).await)?;
            print(args.output, &[KeyView::from(key)])
        }
    }
}
