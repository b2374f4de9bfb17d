//! `berth apps …`: deploy user APIs and manage them.

use crate::{
    client::{reply, Target},
    output::{self, Format},
};
use anyhow::Context;
use berth_proto::{
    domain::{AppState, BuildState, Runtime},
    pb::{self, app_service_client::AppServiceClient, build_service_client::BuildServiceClient},
    views::{AppView, InstanceStatsView, LogLineView},
};
use clap::{Args, Subcommand};
use std::{
    path::{Path, PathBuf},
    time::Duration,
};
use tonic::transport::Channel;

#[derive(Args)]
pub struct AppsArgs {
    #[command(subcommand)]
    command: AppsCommand,
    /// Output format.
    #[arg(short, long, global = true, value_enum, default_value_t)]
    output: Format,
}

#[derive(Args, Clone, Default)]
pub struct SourceArgs {
    /// Code: a file (the entry file) or a directory; repeatable.
    #[arg(long = "code")]
    code: Vec<PathBuf>,
    /// Python requirements file, uploaded as requirements.txt.
    #[arg(long)]
    requirements: Option<PathBuf>,
    /// A dependency file uploaded under its own name (package.json, go.mod, …); repeatable.
    #[arg(long = "deps")]
    deps: Vec<PathBuf>,
    /// A zip or tar.gz with a Dockerfile at its root (runtime dockerfile).
    #[arg(long)]
    archive: Option<PathBuf>,
}

#[derive(Args, Clone)]
pub struct SettingsArgs {
    /// App name: a lowercase DNS label.
    #[arg(long)]
    name: Option<String>,
    /// python, node, go or dockerfile [default: dockerfile with --archive, else python].
    #[arg(long)]
    runtime: Option<String>,
    #[arg(long, default_value = "default")]
    tenant: String,
    /// Host name the gateway routes to this app.
    #[arg(long)]
    hostname: Option<String>,
    /// Port the app listens on in its container (it also gets $PORT).
    #[arg(long)]
    port: Option<u16>,
    /// CPU limit: cores (`1`, `0.5`) or millicores (`500m`).
    #[arg(long)]
    cpu: Option<String>,
    /// Memory limit: `512Mi`, `1Gi`, `256M` or bytes.
    #[arg(long)]
    memory: Option<String>,
    #[arg(long)]
    min_instances: Option<u32>,
    #[arg(long)]
    max_instances: Option<u32>,
    /// Environment variable `KEY=VALUE`; repeatable.
    #[arg(long = "env")]
    env: Vec<String>,
    /// Entry file among the code (default main.py / index.js / main.go).
    #[arg(long)]
    entry: Option<String>,
    /// Command overriding the image's (one argument per flag).
    #[arg(long = "command")]
    command: Vec<String>,
    /// Longest a request through the gateway may take [default: 30s].
    #[arg(long, value_parser = humantime::parse_duration)]
    request_timeout: Option<Duration>,
    /// Largest request body the gateway accepts: `100Mi`, `1Gi` or bytes [default: 100Mi].
    #[arg(long)]
    max_body: Option<String>,
    /// With --min-instances 0: scale back to zero after this long without traffic [default: 5m].
    #[arg(long, value_parser = humantime::parse_duration)]
    idle_timeout: Option<Duration>,
}

#[derive(Args, Clone)]
pub struct WaitArgs {
    /// Return as soon as the control plane took the request.
    #[arg(long)]
    no_wait: bool,
    /// Longest wait for the build and the instances.
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    timeout: Duration,
}

#[derive(Subcommand)]
enum AppsCommand {
    /// Create an app and deploy it.
    Create {
        #[command(flatten)]
        settings: SettingsArgs,
        #[command(flatten)]
        source: SourceArgs,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Create the app named --name, or redeploy it when it exists.
    Deploy {
        #[command(flatten)]
        settings: SettingsArgs,
        #[command(flatten)]
        source: SourceArgs,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Rebuild and restart an app: with new code when given, else its current code.
    Redeploy {
        id: String,
        #[command(flatten)]
        source: SourceArgs,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// List apps.
    List {
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Show an app with its instances.
    Get { id: String },
    /// Start a stopped app.
    Start { id: String },
    /// Stop an app: its instances are removed.
    Stop { id: String },
    /// Run this many instances (within max_instances), without a redeploy.
    Scale { id: String, instances: u32 },
    /// Delete an app with its builds and instances.
    Delete { id: String },
    /// Print an app's container output (all instances merged, or one).
    Logs {
        id: String,
        /// Keep printing new output.
        #[arg(short, long)]
        follow: bool,
        /// Lines from the end to start with, per instance.
        #[arg(long, default_value_t = 100)]
        tail: u32,
        #[arg(long)]
        instance: Option<String>,
    },
    /// CPU and memory use of each instance.
    Stats { id: String },
    /// Remove orphaned containers and unused app images on every node.
    Cleanup,
}

const HEADERS: [&str; 7] = [
    "ID",
    "NAME",
    "RUNTIME",
    "STATE",
    "INSTANCES",
    "HOSTNAME",
    "MESSAGE",
];

fn rows(apps: &[AppView]) -> Vec<Vec<String>> {
    apps.iter()
        .map(|a| {
            let running = a.instances.iter().filter(|i| i.state == "running").count();
            vec![
                a.id.clone(),
                a.name.clone(),
                a.runtime.clone(),
                a.state.clone(),
                format!("{running}/{}", a.instances.len()),
                a.app_hostname.clone(),
                a.status_message
                    .lines()
                    .next()
                    .unwrap_or("")
                    .chars()
                    .take(60)
                    .collect(),
            ]
        })
        .collect()
}

fn print_app(format: Format, app: pb::App) -> anyhow::Result<()> {
    let view = AppView::from(app);
    match format {
        Format::Json => output::print(format, &view, &HEADERS, Vec::new()),
        Format::Table => {
            output::print(format, &view, &HEADERS, rows(std::slice::from_ref(&view)))?;
            if !view.instances.is_empty() {
                let rows = view
                    .instances
                    .iter()
                    .map(|i| {
                        vec![
                            i.id.clone(),
                            i.node.clone(),
                            i.state.clone(),
                            if i.host_port == 0 {
                                String::new()
                            } else {
                                format!("{}:{}", i.address, i.host_port)
                            },
                            i.container_id.chars().take(12).collect(),
                            i.restarts.to_string(),
                        ]
                    })
                    .collect();
                println!();
                output::print(
                    format,
                    &(),
                    &[
                        "INSTANCE",
                        "NODE",
                        "STATE",
                        "ADDRESS",
                        "CONTAINER",
                        "RESTARTS",
                    ],
                    rows,
                )?;
            }
            Ok(())
        }
    }
}

/// `1`, `0.5`, `500m` → millicores.
fn parse_cpu(value: &str) -> anyhow::Result<u32> {
    let millis = match value.strip_suffix('m') {
        Some(m) => m.parse::<u32>().ok(),
        None => value
            .parse::<f64>()
            .ok()
            .filter(|c| c.is_finite() && *c > 0.0)
            .map(|c| (c * 1000.0).round() as u32),
    };
    millis
        .ok_or_else(|| anyhow::anyhow!("--cpu {value:?}: use cores (1, 0.5) or millicores (500m)"))
}

/// `512Mi`, `1Gi`, `256M`, `1G`, `1048576` → bytes.
pub fn parse_size(flag: &str, value: &str) -> anyhow::Result<u64> {
    let units: [(&str, u64); 8] = [
        ("Ki", 1 << 10),
        ("Mi", 1 << 20),
        ("Gi", 1 << 30),
        ("K", 1000),
        ("M", 1_000_000),
        ("G", 1_000_000_000),
        ("k", 1000),
        ("", 1),
    ];
    for (suffix, factor) in units {
        if let Some(number) = value.strip_suffix(suffix) {
            if let Ok(n) = number.parse::<u64>() {
                return n
                    .checked_mul(factor)
                    .ok_or_else(|| anyhow::anyhow!("{flag} {value:?} is too large"));
            }
        }
    }
    anyhow::bail!("{flag} {value:?}: use 512Mi, 1Gi, 256M or bytes")
}

fn settings(args: &SettingsArgs, source: &SourceArgs) -> anyhow::Result<pb::AppSettings> {
    let name = args
        .name
        .clone()
        .ok_or_else(|| anyhow::anyhow!("--name is required"))?;
    let runtime = match (&args.runtime, &source.archive) {
        (Some(r), _) => r
            .parse::<Runtime>()
            .map_err(|_| anyhow::anyhow!("--runtime must be python, node, go or dockerfile"))?,
        (None, Some(_)) => Runtime::Dockerfile,
        (None, None) => Runtime::Python,
    };
    let mut env = std::collections::HashMap::new();
    for pair in &args.env {
        let (k, v) = pair
            .split_once('=')
            .ok_or_else(|| anyhow::anyhow!("--env {pair:?} is not KEY=VALUE"))?;
        env.insert(k.to_owned(), v.to_owned());
    }
    // A single code file is the entry file unless one is named.
    let entry = args.entry.clone().or_else(|| match source.code.as_slice() {
        [file] if file.is_file() => file.file_name().map(|n| n.to_string_lossy().into_owned()),
        _ => None,
    });
    Ok(pb::AppSettings {
        name,
        tenant: args.tenant.clone(),
        runtime: pb::Runtime::from(runtime) as i32,
        app_hostname: args.hostname.clone().unwrap_or_default(),
        container_port: args.port.map_or(0, u32::from),
        cpu_millis: args.cpu.as_deref().map(parse_cpu).transpose()?.unwrap_or(0),
        memory_bytes: args
            .memory
            .as_deref()
            .map(|v| parse_size("--memory", v))
            .transpose()?
            .unwrap_or(0),
        min_instances: args.min_instances,
        max_instances: args.max_instances,
        env,
        entry: if runtime == Runtime::Dockerfile {
            String::new()
        } else {
            entry.unwrap_or_default()
        },
        command: args.command.clone(),
        request_timeout_ms: args
            .request_timeout
            .map(|d| u32::try_from(d.as_millis()).unwrap_or(u32::MAX)),
        max_body_bytes: args
            .max_body
            .as_deref()
            .map(|v| parse_size("--max-body", v))
            .transpose()?,
        idle_timeout_s: args
            .idle_timeout
            .map(|d| u32::try_from(d.as_secs()).unwrap_or(u32::MAX)),
    })
}

/// Directories never uploaded.
const SKIPPED: &[&str] = &[
    ".git",
    "__pycache__",
    "node_modules",
    ".venv",
    "venv",
    ".berth",
    "target",
];

fn collect_files(source: &SourceArgs) -> anyhow::Result<Vec<pb::SourceFile>> {
    let mut files = Vec::new();
    let mut add = |path: String, file: &Path| -> anyhow::Result<()> {
        let content = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
        files.push(pb::SourceFile { path, content });
        Ok(())
    };
    fn walk(root: &Path, dir: &Path, out: &mut Vec<(String, PathBuf)>) -> anyhow::Result<()> {
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .with_context(|| format!("reading {}", dir.display()))?
            .collect::<Result<_, _>>()?;
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            let kind = entry.file_type()?;
            if kind.is_dir() {
                if !SKIPPED.contains(&name.as_str()) {
                    walk(root, &path, out)?;
                }
            } else if kind.is_file() {
                let relative = path
                    .strip_prefix(root)
                    .expect("under root")
                    .to_string_lossy()
                    .into_owned();
                out.push((relative, path));
            }
        }
        Ok(())
    }
    for code in &source.code {
        if code.is_dir() {
            let mut found = Vec::new();
            walk(code, code, &mut found)?;
            for (relative, path) in found {
                add(relative, &path)?;
            }
        } else {
            let name = code
                .file_name()
                .ok_or_else(|| anyhow::anyhow!("--code {} has no file name", code.display()))?;
            add(name.to_string_lossy().into_owned(), code)?;
        }
    }
    if let Some(requirements) = &source.requirements {
        add("requirements.txt".into(), requirements)?;
    }
    for deps in &source.deps {
        let name = deps
            .file_name()
            .ok_or_else(|| anyhow::anyhow!("--deps {} has no file name", deps.display()))?;
        add(name.to_string_lossy().into_owned(), deps)?;
    }
    Ok(files)
}

const CHUNK: usize = 1 << 20;

/// Reads an archive into upload chunks.
fn archive_chunks(source: &SourceArgs) -> anyhow::Result<Vec<Vec<u8>>> {
    let Some(path) = &source.archive else {
        return Ok(Vec::new());
    };
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(bytes.chunks(CHUNK).map(<[u8]>::to_vec).collect())
}

async fn create(
    client: &mut AppServiceClient<Channel>,
    settings: pb::AppSettings,
    source: &SourceArgs,
) -> anyhow::Result<pb::App> {
    use pb::create_app_request::Part;
    let header = pb::CreateAppHeader {
        settings: Some(settings),
        files: collect_files(source)?,
    };
    let mut messages = vec![pb::CreateAppRequest {
        part: Some(Part::Header(header)),
    }];
    messages.extend(
        archive_chunks(source)?
            .into_iter()
            .map(|c| pb::CreateAppRequest {
                part: Some(Part::ArchiveChunk(c)),
            }),
    );
    reply(client.create_app(tokio_stream::iter(messages)).await)
}

async fn update(
    client: &mut AppServiceClient<Channel>,
    app_id: String,
    settings: Option<pb::AppSettings>,
    source: &SourceArgs,
) -> anyhow::Result<pb::App> {
    use pb::update_app_request::Part;
    let files = collect_files(source)?;
    let chunks = archive_chunks(source)?;
    let reuse_code = files.is_empty() && chunks.is_empty();
    let header = pb::UpdateAppHeader {
        app_id,
        settings,
        files,
        reuse_code,
    };
    let mut messages = vec![pb::UpdateAppRequest {
        part: Some(Part::Header(header)),
    }];
    messages.extend(chunks.into_iter().map(|c| pb::UpdateAppRequest {
        part: Some(Part::ArchiveChunk(c)),
    }));
    reply(client.update_app(tokio_stream::iter(messages)).await)
}

/// Follows the build and the instances until the app runs (or fails),
/// showing progress on stderr.
async fn wait_until_settled(
    channel: &Channel,
    app: pb::App,
    wait: &WaitArgs,
) -> anyhow::Result<pb::App> {
    if wait.no_wait {
        return Ok(app);
    }
    let mut apps = AppServiceClient::new(channel.clone());
    let mut builds = BuildServiceClient::new(channel.clone());
    let progress = indicatif::ProgressBar::new_spinner();
    progress.enable_steady_tick(Duration::from_millis(120));
    let deadline = tokio::time::Instant::now() + wait.timeout;
    let app_id = app.id.clone();
    let mut current = app;
    loop {
        let build = reply(
            builds
                .get_build(pb::GetBuildRequest {
                    build_id: current.current_build_id.clone(),
                })
                .await,
        )?;
        let build_state = BuildState::try_from(build.state).unwrap_or(BuildState::Building);
        let app_state = AppState::try_from(current.state).unwrap_or(AppState::Deploying);
        let running = current
            .instances
            .iter()
            .filter(|i| i.state == pb::InstanceState::Running as i32)
            .count();
        match build_state {
            BuildState::Building => progress.set_message(format!("building {}…", build.image_tag)),
            BuildState::BuildFailed => {
                progress.finish_and_clear();
                anyhow::bail!(
                    "build failed: {}\n(see `berth builds logs {}`)",
                    build.error,
                    build.id
                );
            }
            BuildState::Ready => progress.set_message(format!(
                "starting: {running}/{} instances running",
                current.instances.len()
            )),
        }
        let want = current
            .settings
            .as_ref()
            .and_then(|s| s.min_instances)
            .unwrap_or(1) as usize;
        match app_state {
            AppState::Running if running >= want => break,
            AppState::Stopped => break,
            AppState::Failed => {
                progress.finish_and_clear();
                anyhow::bail!("app failed: {}", current.status_message);
            }
            _ => {}
        }
        if tokio::time::Instant::now() >= deadline {
            progress.finish_and_clear();
            anyhow::bail!(
                "still {app_state} after {:?}: {}",
                wait.timeout,
                current.status_message
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
        current = reply(
            apps.get_app(pb::AppRef {
                app_id: app_id.clone(),
            })
            .await,
        )?;
    }
    progress.finish_and_clear();
    Ok(current)
}

pub async fn run(target: &Target, args: AppsArgs) -> anyhow::Result<()> {
    let channel = target.connect().await?;
    let mut client = AppServiceClient::new(channel.clone());
    let format = args.output;
    match args.command {
        AppsCommand::Create {
            settings: s,
            source,
            wait,
        } => {
            let app = create(&mut client, settings(&s, &source)?, &source).await?;
            print_app(format, wait_until_settled(&channel, app, &wait).await?)
        }
        AppsCommand::Deploy {
            settings: s,
            source,
            wait,
        } => {
            let wanted = settings(&s, &source)?;
            let existing = reply(
                client
                    .list_apps(pb::ListAppsRequest {
                        tenant: wanted.tenant.clone(),
                    })
                    .await,
            )?
            .apps
            .into_iter()
            .find(|a| a.settings.as_ref().is_some_and(|x| x.name == wanted.name));
            let app = match existing {
                Some(app) => update(&mut client, app.id, Some(wanted), &source).await?,
                None => create(&mut client, wanted, &source).await?,
            };
            print_app(format, wait_until_settled(&channel, app, &wait).await?)
        }
        AppsCommand::Redeploy { id, source, wait } => {
            let app = update(&mut client, id, None, &source).await?;
            print_app(format, wait_until_settled(&channel, app, &wait).await?)
        }
        AppsCommand::List { tenant } => {
            let apps = reply(
                client
                    .list_apps(pb::ListAppsRequest {
                        tenant: tenant.unwrap_or_default(),
                    })
                    .await,
            )?
            .apps;
            let views: Vec<AppView> = apps.into_iter().map(AppView::from).collect();
            let rows = rows(&views);
            output::print(format, &views, &HEADERS, rows)
        }
        AppsCommand::Get { id } => print_app(
            format,
            reply(client.get_app(pb::AppRef { app_id: id }).await)?,
        ),
        AppsCommand::Start { id } => print_app(
            format,
            reply(client.start_app(pb::AppRef { app_id: id }).await)?,
        ),
        AppsCommand::Stop { id } => print_app(
            format,
            reply(client.stop_app(pb::AppRef { app_id: id }).await)?,
        ),
        AppsCommand::Scale { id, instances } => print_app(
            format,
            reply(
                client
                    .scale_app(pb::ScaleAppRequest {
                        app_id: id,
                        instances,
                        remove_instance_ids: Vec::new(),
                    })
                    .await,
            )?,
        ),
        AppsCommand::Logs {
            id,
            follow,
            tail,
            instance,
        } => {
            let request = pb::StreamAppLogsRequest {
                app_id: id,
                instance_id: instance.unwrap_or_default(),
                tail,
                follow,
            };
            let mut stream = reply(client.stream_app_logs(request).await)?;
            let mut out = std::io::stdout().lock();
            while let Some(line) = stream
                .message()
                .await
                .map_err(|s| anyhow::anyhow!("{:?}: {}", s.code(), s.message()))?
            {
                use std::io::Write;
                match format {
                    Format::Json => writeln!(
                        out,
                        "{}",
                        serde_json::to_string(&LogLineView::from(line.clone()))?
                    )?,
                    Format::Table => {
                        let short: String = line.instance_id.chars().take(8).collect();
                        out.write_all(format!("{short} | ").as_bytes())?;
                        out.write_all(&line.line)?;
                        out.write_all(b"\n")?;
                    }
                }
                out.flush()?;
            }
            Ok(())
        }
        AppsCommand::Stats { id } => {
            let stats = reply(client.get_app_stats(pb::AppRef { app_id: id }).await)?;
            let views: Vec<InstanceStatsView> = stats
                .instances
                .iter()
                .map(InstanceStatsView::from)
                .collect();
            let rows = stats
                .instances
                .iter()
                .map(|s| {
                    vec![
                        s.instance_id.clone(),
                        format!("{:.1}%", s.cpu_percent),
                        format!("{:.1} MB", s.memory_mb),
                        format!("{:.1}%", s.memory_percent),
                    ]
                })
                .collect();
            output::print(
                format,
                &views,
                &["INSTANCE", "CPU", "MEMORY", "MEMORY %"],
                rows,
            )
        }
        AppsCommand::Cleanup => {
            let done = reply(client.cleanup(pb::CleanupRequest::default()).await)?;
            let json = serde_json::json!({
                "removed_containers": done.removed_containers,
                "removed_images": done.removed_images,
                "removed_code": done.removed_code,
            });
            match format {
                Format::Json => println!("{}", serde_json::to_string_pretty(&json)?),
                Format::Table => println!(
                    "removed {} container(s) and {} image(s)",
                    done.removed_containers.len(),
                    done.removed_images.len()
                ),
            }
            Ok(())
        }
        AppsCommand::Delete { id } => {
            reply(client.delete_app(pb::AppRef { app_id: id.clone() }).await)?;
            match format {
                Format::Json => println!("{}", serde_json::json!({ "id": id, "deleted": true })),
                Format::Table => println!("app {id} deleted"),
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_and_memory_read_like_kubernetes() {
        assert_eq!(parse_cpu("1").unwrap(), 1000);
        assert_eq!(parse_cpu("0.5").unwrap(), 500);
        assert_eq!(parse_cpu("250m").unwrap(), 250);
        assert!(parse_cpu("lots").is_err());
        assert_eq!(parse_size("--memory", "512Mi").unwrap(), 512 << 20);
        assert_eq!(parse_size("--memory", "1Gi").unwrap(), 1 << 30);
        assert_eq!(parse_size("--memory", "256M").unwrap(), 256_000_000);
        assert_eq!(parse_size("--memory", "4096").unwrap(), 4096);
        assert!(parse_size("--memory", "1Xi").is_err());
    }
}
