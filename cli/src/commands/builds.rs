//! `berth builds …` and `berth events`: build output and the event log.

use crate::{
    client::{reply, Target},
    output::Format,
};
use berth_proto::{
    domain::BuildState,
    pb::{
        self, build_service_client::BuildServiceClient, event_service_client::EventServiceClient,
    },
};
use clap::{Args, Subcommand};
use std::io::Write;

#[derive(Subcommand)]
pub enum BuildsCommand {
    /// Show a build.
    Get {
        id: String,
        #[arg(short, long, value_enum, default_value_t)]
        output: Format,
    },
    /// Print a build's output (the newest 64 KiB are kept).
    Logs {
        id: String,
        /// Keep printing until the build ends.
        #[arg(short, long)]
        follow: bool,
    },
}

pub async fn run(target: &Target, command: BuildsCommand) -> anyhow::Result<()> {
    let mut client = BuildServiceClient::new(target.connect().await?);
    match command {
        BuildsCommand::Get { id, output } => {
            let build = reply(client.get_build(pb::GetBuildRequest { build_id: id }).await)?;
            let state =
                BuildState::try_from(build.state).map_or("unknown".into(), |s| s.to_string());
            let json = serde_json::json!({
                "id": build.id, "app_id": build.app_id, "state": state,
                "image_tag": build.image_tag, "error": build.error,
            });
            match output {
                Format::Json => println!("{}", serde_json::to_string_pretty(&json)?),
                Format::Table => {
                    println!("{} {} {} {}", build.id, state, build.image_tag, build.error)
                }
            }
        }
        BuildsCommand::Logs { id, follow } => {
            let mut stream = reply(
                client
                    .stream_build_logs(pb::StreamBuildLogsRequest {
                        build_id: id,
                        follow,
                    })
                    .await,
            )?;
            let mut out = std::io::stdout().lock();
            while let Some(chunk) = stream
                .message()
                .await
                .map_err(|s| anyhow::anyhow!("{:?}: {}", s.code(), s.message()))?
            {
                out.write_all(&chunk.data)?;
                out.flush()?;
            }
        }
    }
    Ok(())
}

#[derive(Args)]
pub struct EventsArgs {
    /// Keep printing new events.
    #[arg(short, long)]
    follow: bool,
    /// Only this app's events.
    #[arg(long)]
    app: Option<String>,
    /// Start after this sequence number.
    #[arg(long, default_value_t = 0)]
    after: u64,
    #[arg(short, long, value_enum, default_value_t)]
    output: Format,
}

pub async fn events(target: &Target, args: EventsArgs) -> anyhow::Result<()> {
    let mut client = EventServiceClient::new(target.connect().await?);
    let request = pb::WatchEventsRequest {
        after_sequence: args.after,
        follow: args.follow,
        app_id: args.app.unwrap_or_default(),
    };
    let mut stream = reply(client.watch_events(request).await)?;
    while let Some(event) = stream
        .message()
        .await
        .map_err(|s| anyhow::anyhow!("{:?}: {}", s.code(), s.message()))?
    {
        let at = berth_proto::views::time(event.at)
            .map(|t| t.to_rfc3339())
            .unwrap_or_default();
        match args.output {
            Format::Json => println!(
                "{}",
                serde_json::json!({
                    "sequence": event.sequence, "kind": event.kind, "app_id": event.app_id,
                    "app_hostname": event.app_hostname, "node_name": event.node_name,
                    "subject_id": event.subject_id, "message": event.message, "at": at,
                })
            ),
            Format::Table => {
                let subject = if event.node_name.is_empty() {
                    &event.subject_id
                } else {
                    &event.node_name
                };
                println!(
                    "{:>6} {at} {:<18} {subject} {}",
                    event.sequence,
                    event.kind,
                    event.message.lines().next().unwrap_or("")
                );
            }
        }
    }
    Ok(())
}
