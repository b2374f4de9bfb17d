//! Time from `CreateApp` (image cached) to the first HTTP 200 from the
//! instance, against `docker run` of the same image plus polling for the
//! first 200 — alternating, same machine, same run.
//!
//! Needs a running `berth up` (its data dir gives the endpoint and the admin
//! certificate) and the `docker` CLI.

use anyhow::{bail, Context};
use berth_proto::pb::{
    self, app_service_client::AppServiceClient, build_service_client::BuildServiceClient,
};
use clap::Parser;
use std::{
    path::PathBuf,
    process::Command,
    time::{Duration, Instant},
};
use tonic::transport::Channel;

#[derive(Parser)]
struct Args {
    /// Data dir of the running `berth up`.
    #[arg(long, default_value = ".berth")]
    data_dir: PathBuf,
    /// Trials of each kind.
    #[arg(long, default_value_t = 7)]
    runs: usize,
}

const APP: &str = r#"
import http.server, os
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = b"ok\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer(("0.0.0.0", int(os.environ["PORT"])), Handler).serve_forever()
"#;
const NAME: &str = "bench-start";
const WAIT: Duration = Duration::from_secs(120);

fn create_request() -> pb::CreateAppRequest {
    pb::CreateAppRequest {
        part: Some(pb::create_app_request::Part::Header(pb::CreateAppHeader {
            settings: Some(pb::AppSettings {
                name: NAME.into(),
                runtime: pb::Runtime::Python as i32,
                cpu_millis: 500,
                memory_bytes: 128 << 20,
                ..Default::default()
            }),
            files: vec![pb::SourceFile {
                path: "main.py".into(),
                content: APP.as_bytes().to_vec(),
            }],
        })),
    }
}

/// One GET; true on a 200.
async fn answers_200(port: u16) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut stream) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else {
        return false;
    };
    if stream
        .write_all(b"GET / HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
        .await
        .is_err()
    {
        return false;
    }
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).await.is_ok()
        && (head.starts_with(b"HTTP/1.0 200") || head.starts_with(b"HTTP/1.1 200"))
}

async fn until_200(port: u16, since: Instant) -> anyhow::Result<Duration> {
    while since.elapsed() < WAIT {
        if answers_200(port).await {
            return Ok(since.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    bail!("no 200 on port {port}")
}

/// Creates the app and returns the time to its first 200, and its id.
async fn berth_trial(apps: &mut AppServiceClient<Channel>) -> anyhow::Result<(Duration, String)> {
    let start = Instant::now();
    let app = apps
        .create_app(tokio_stream::iter(vec![create_request()]))
        .await?
        .into_inner();
    let created = start.elapsed();
    loop {
        let current = apps
            .get_app(pb::AppRef {
                app_id: app.id.clone(),
            })
            .await?
            .into_inner();
        if let Some(instance) = current.instances.iter().find(|i| i.host_port != 0) {
            let port = instance.host_port as u16;
            let placed = start.elapsed();
            let answered = until_200(port, start).await?;
            eprintln!(
                "  berth: CreateApp answered at {created:?}, instance's port known at {placed:?}, first 200 at {answered:?}"
            );
            return Ok((answered, app.id));
        }
        if start.elapsed() > WAIT {
            bail!("the app got no instance: {}", current.status_message);
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn delete_app(apps: &mut AppServiceClient<Channel>, id: &str) -> anyhow::Result<()> {
    apps.delete_app(pb::AppRef {
        app_id: id.to_owned(),
    })
    .await?;
    // Wait until its containers are gone, so trials do not overlap.
    let start = Instant::now();
    while start.elapsed() < WAIT {
        let out = Command::new("docker")
            .args(["ps", "-aq", "--filter", &format!("label=berth.app={id}")])
            .output()?;
        if out.stdout.iter().all(u8::is_ascii_whitespace) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("app {id}'s containers did not go")
}

fn docker(args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new("docker")
        .args(args)
        .output()
        .context("running docker")?;
    if !out.status.success() {
        bail!(
            "docker {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// `docker run` of the same image with the same limits, then polling.
async fn docker_trial(image: &str, code: &str) -> anyhow::Result<Duration> {
    let start = Instant::now();
    let id = docker(&[
        "run",
        "-d",
        "-p",
        "127.0.0.1::8080",
        "-e",
        "PORT=8080",
        "--memory",
        "128m",
        "--cpus",
        "0.5",
        "-v",
        &format!("{code}:/app/code:ro"),
        image,
    ])?;
    let started = start.elapsed();
    let port: u16 = docker(&["port", &id, "8080/tcp"])?
        .lines()
        .next()
        .and_then(|l| l.rsplit(':').next())
        .and_then(|p| p.parse().ok())
        .context("no published port")?;
    let placed = start.elapsed();
    let took = until_200(port, start).await;
    if let Ok(answered) = &took {
        eprintln!(
            "  docker: run returned at {started:?}, port known at {placed:?}, first 200 at {answered:?}"
        );
    }
    docker(&["rm", "-f", &id])?;
    took
}

fn median(mut values: Vec<Duration>) -> Duration {
    values.sort();
    values[values.len() / 2]
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let endpoints: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(args.data_dir.join("endpoints.json"))
            .context("is `berth up` running with this data dir?")?,
    )?;
    let url = endpoints["grpc"].as_str().context("no grpc endpoint")?;
    let tls = berth_pki::TlsFiles::in_dir(&args.data_dir.join("certs"), "admin").load()?;
    let channel = tls.endpoint(url)?.connect().await?;
    let mut apps = AppServiceClient::new(channel.clone());
    let mut builds = BuildServiceClient::new(channel);

    // Warm-up: build the image once, and note it.
    let (_, id) = berth_trial(&mut apps).await?;
    let app = apps
        .get_app(pb::AppRef { app_id: id.clone() })
        .await?
        .into_inner();
    let image = builds
        .get_build(pb::GetBuildRequest {
            build_id: app.current_build_id,
        })
        .await?
        .into_inner()
        .image_tag;
    delete_app(&mut apps, &id).await?;
    let code = tempfile::tempdir()?;
    std::fs::write(code.path().join("main.py"), APP)?;
    std::fs::set_permissions(
        code.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )?;
    let code_path = code.path().display().to_string();
    docker_trial(&image, &code_path).await?;

    let (mut berth, mut peer) = (Vec::new(), Vec::new());
    for run in 0..args.runs {
        let (took, id) = berth_trial(&mut apps).await?;
        delete_app(&mut apps, &id).await?;
        let docker_took = docker_trial(&image, &code_path).await?;
        eprintln!(
            "run {}: berth {took:?}, docker run {docker_took:?}",
            run + 1
        );
        berth.push(took);
        peer.push(docker_took);
    }
    let (b, d) = (median(berth), median(peer));
    println!("| CreateApp (image cached) → first 200 | {:.0} ms | docker run + poll → first 200 | {:.0} ms | {:.2}× |",
        b.as_secs_f64() * 1000.0, d.as_secs_f64() * 1000.0, b.as_secs_f64() / d.as_secs_f64());
    Ok(())
}
