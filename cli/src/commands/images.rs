//! `berth images bootstrap`: make the runtime base images from Debian
//! packages, for hosts that reach no image registry.

use berth_node_agent::docker::{self, base_images};
use clap::Subcommand;

#[derive(Subcommand)]
pub enum ImagesCommand {
    /// Make the base images (debootstrap + import); existing ones are kept.
    Bootstrap {
        /// Only these runtimes (repeatable) [default: all].
        #[arg(long = "runtime")]
        runtimes: Vec<String>,
        /// Debian mirror to debootstrap from.
        #[arg(
            long,
            env = "BERTH_DEBIAN_MIRROR",
            default_value = "http://deb.debian.org/debian"
        )]
        mirror: String,
        /// Make them again even if they exist.
        #[arg(long)]
        force: bool,
    },
}

pub async fn run(command: ImagesCommand) -> anyhow::Result<()> {
    let ImagesCommand::Bootstrap {
        runtimes,
        mirror,
        force,
    } = command;
    let selected: Vec<_> = if runtimes.is_empty() {
        base_images::ALL.iter().collect()
    } else {
        runtimes
            .iter()
            .map(|r| {
                base_images::by_runtime(r).ok_or_else(|| {
                    let known: Vec<_> = base_images::ALL.iter().map(|b| b.runtime).collect();
                    anyhow::anyhow!(
                        "no base image for runtime {r:?}; known: {}",
                        known.join(", ")
                    )
                })
            })
            .collect::<anyhow::Result<_>>()?
    };
    let engine = docker::connect().await?;
    let options = base_images::BootstrapOptions {
        mirror,
        force,
        ..Default::default()
    };
    for base in selected {
        println!(
            "{}: making {} (a minute or two on first run)…",
            base.runtime, base.image
        );
        match base_images::ensure(&engine, base, &options).await? {
            base_images::Outcome::AlreadyPresent => {
                println!("{}: {} already present", base.runtime, base.image)
            }
            base_images::Outcome::Made => println!("{}: {} made", base.runtime, base.image),
        }
    }
    Ok(())
}
