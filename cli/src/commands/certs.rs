//! `berth certs init|issue`: a CA and leaf certificates for every role.

use anyhow::Context;
use berth_pki::{CertificateAuthority, LeafRequest, Role};
use clap::Subcommand;
use std::path::PathBuf;

#[derive(Subcommand)]
pub enum CertsCommand {
    /// Make a new certificate authority: DIR/ca.pem and DIR/ca-key.pem.
    Init {
        #[arg(long)]
        dir: PathBuf,
    },
    /// Issue a leaf certificate signed by the CA in DIR: DIR/NAME.pem and DIR/NAME-key.pem.
    Issue {
        #[arg(long)]
        dir: PathBuf,
        /// control-plane, agent, gateway, admin or tenant (a deployer of the
        /// tenant NAME, over gRPC).
        #[arg(long, value_parser = parse_role)]
        role: Role,
        /// Lowercase DNS name; for agents, the node name; for tenants, the tenant.
        #[arg(long)]
        name: String,
        /// Extra DNS names or IP addresses the holder serves on (repeatable).
        #[arg(long = "san")]
        sans: Vec<String>,
        /// Validity in days.
        #[arg(long, default_value_t = 365)]
        days: u32,
        /// File name stem [default: NAME].
        #[arg(long)]
        out: Option<String>,
    },
}

fn parse_role(value: &str) -> Result<Role, String> {
    value
        .parse()
        .map_err(|e: berth_pki::PkiError| e.to_string())
}

pub fn run(command: CertsCommand) -> anyhow::Result<()> {
    match command {
        CertsCommand::Init { dir } => {
            let ca = CertificateAuthority::generate("Berth CA")?;
            ca.save(&dir)?;
            println!("CA written to {}", dir.join("ca.pem").display());
        }
        CertsCommand::Issue {
            dir,
            role,
            name,
            sans,
            days,
            out,
        } => {
            anyhow::ensure!(days > 0, "--days must be at least 1");
            let ca = CertificateAuthority::load(&dir).with_context(|| {
                format!(
                    "no CA in {} (run `berth certs init --dir {}`)",
                    dir.display(),
                    dir.display()
                )
            })?;
            let stem = out.unwrap_or_else(|| name.clone());
            let issued = ca.issue(&LeafRequest::new(role, &name, days).with_sans(sans))?;
            issued.save(&dir, &stem)?;
            println!(
                "{role} certificate for {name} written to {} and {}",
                dir.join(format!("{stem}.pem")).display(),
                dir.join(format!("{stem}-key.pem")).display()
            );
        }
    }
    Ok(())
}
