//! Berth's sandbox driver against a bare process and against bubblewrap
//! with comparable isolation: hello world per language (compiled languages
//! from their cache), and throughput of many python runs at a fixed
//! concurrency. Alternating, same machine, same run.
//!
//! Needs root (namespaces, cgroups), `bwrap` (Debian's bubblewrap) and a
//! release `berth-sandbox` helper.

use anyhow::{bail, Context};
use berth_node_agent::sandbox::{Run, Sandbox, SandboxConfig, Status};
use clap::Parser;
use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

#[derive(Parser)]
struct Args {
    /// The sandbox helper binary.
    #[arg(long, default_value = "target/release/berth-sandbox")]
    helper: PathBuf,
    /// Runs of each kind per language.
    #[arg(long, default_value_t = 15)]
    runs: usize,
    /// Python runs for the throughput phase.
    #[arg(long, default_value_t = 1000)]
    throughput_runs: usize,
    #[arg(long, default_value_t = 2)]
    concurrency: usize,
    /// Data dir of a running `berth up`: also time HTTP `/execute` through
    /// its gateway, control plane and agent against the driver alone.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Only these languages' hello worlds (comma-separated); all by default.
    #[arg(long, value_delimiter = ',')]
    languages: Vec<String>,
}

struct Case {
    language: &'static str,
    file: &'static str,
    code: &'static str,
    /// How to build it for the bare and bwrap runs (in the work dir).
    build: Option<&'static [&'static str]>,
    run: &'static [&'static str],
}

const CASES: &[Case] = &[
    Case {
        language: "python",
        file: "main.py",
        code: "print('hello')\n",
        build: None,
        run: &["/usr/bin/python3", "-I", "-B", "main.py"],
    },
    Case {
        language: "javascript",
        file: "main.js",
        code: "console.log('hello')\n",
        build: None,
        run: &["/usr/bin/node", "main.js"],
    },
    Case {
        language: "cpp",
        file: "main.cpp",
        code: "#include <cstdio>\nint main(){puts(\"hello\");}\n",
        build: Some(&["/usr/bin/g++", "-O2", "-std=c++17", "-o", "main", "main.cpp"]),
        run: &["./main"],
    },
    Case {
        language: "java",
        file: "Main.java",
        code: "public class Main { public static void main(String[] a) { System.out.println(\"hello\"); } }\n",
        build: Some(&["/usr/bin/javac", "Main.java"]),
        run: &["/usr/bin/java", "-XX:+UseSerialGC", "-Xshare:off", "-XX:TieredStopAtLevel=1", "Main"],
    },
];

fn time_command(mut command: Command) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let output = command
        .stdin(Stdio::null())
        .output()
        .context("running a peer")?;
    let took = started.elapsed();
    if !output.status.success() || output.stdout != b"hello\n" {
        bail!(
            "peer run failed: {} {}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(took)
}

fn bare(work: &Path, case: &Case) -> Command {
    let mut command = Command::new(case.run[0]);
    command.args(&case.run[1..]).current_dir(work);
    command
}

/// bubblewrap with what Berth's sandbox does: every namespace, read-only
/// /usr, a fresh /proc, a minimal /dev, tmpfs /tmp, the code at /work,
/// another uid, a new session, a clean environment.
fn bwrap(work: &Path, case: &Case) -> Command {
    let mut command = Command::new("bwrap");
    command
        .args(["--unshare-all", "--die-with-parent", "--new-session"])
        .args(["--ro-bind", "/usr", "/usr"])
        .args([
            "--symlink",
            "usr/bin",
            "/bin",
            "--symlink",
            "usr/lib",
            "/lib",
        ])
        .args([
            "--symlink",
            "usr/lib64",
            "/lib64",
            "--symlink",
            "usr/sbin",
            "/sbin",
        ])
        .args(["--ro-bind", "/etc/alternatives", "/etc/alternatives"])
        .args(["--ro-bind", "/etc/ld.so.cache", "/etc/ld.so.cache"])
        .args([
            "--ro-bind-try",
            "/etc/java-17-openjdk",
            "/etc/java-17-openjdk",
        ])
        .args(["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"])
        .arg("--bind")
        .arg(work)
        .args(["/work", "--chdir", "/work"])
        .args(["--uid", "61000", "--gid", "61000"])
        .args([
            "--clearenv",
            "--setenv",
            "PATH",
            "/usr/bin:/bin",
            "--setenv",
            "HOME",
            "/work",
        ])
        .args(case.run);
    command
}

/// The machine's busy and idle CPU time (all cores), from `/proc/stat`.
struct MachineCpu {
    busy: Duration,
    idle: Duration,
}

impl MachineCpu {
    fn now() -> Self {
        let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
        let ticks: Vec<u64> = stat
            .lines()
            .next()
            .unwrap_or_default()
            .split_whitespace()
            .skip(1)
            .filter_map(|t| t.parse().ok())
            .collect();
        let hz = 100.0; // USER_HZ
        let at = |i: usize| ticks.get(i).copied().unwrap_or(0);
        // user nice system idle iowait irq softirq steal
        let busy = at(0) + at(1) + at(2) + at(5) + at(6) + at(7);
        let idle = at(3) + at(4);
        MachineCpu {
            busy: Duration::from_secs_f64(busy as f64 / hz),
            idle: Duration::from_secs_f64(idle as f64 / hz),
        }
    }

    /// Busy and idle time since `self`.
    fn since(&self) -> (Duration, Duration) {
        let now = MachineCpu::now();
        (
            now.busy.saturating_sub(self.busy),
            now.idle.saturating_sub(self.idle),
        )
    }
}

fn median(mut values: Vec<Duration>) -> Duration {
    values.sort();
    values[values.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

fn run_of(case: &Case) -> Run {
    Run {
        language: case.language.into(),
        code: case.code.into(),
        stdin: Vec::new(),
        timeout: Duration::from_secs(30),
        memory_bytes: 512 << 20,
        validate: false,
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    berth_common::telemetry::init();
    let args = Args::parse();
    let dir = tempfile::tempdir()?;
    let helper = args.helper.canonicalize().with_context(|| {
        format!(
            "{} (cargo build --release -p berth-node-agent)",
            args.helper.display()
        )
    })?;
    let mut config = SandboxConfig::new(helper, dir.path().join("sandbox"));
    config.max_memory_bytes = 1 << 30;
    let sandbox = Arc::new(Sandbox::new(config)?);
    println!("| language | bare process | bwrap | Berth sandbox | Berth / bare | Berth / bwrap |");
    println!("|---|---|---|---|---|---|");
    let chosen = CASES.iter().filter(|case| {
        args.languages.is_empty() || args.languages.iter().any(|l| l == case.language)
    });
    let mut handoffs = Vec::new();
    for case in chosen {
        let work = dir.path().join(format!("work-{}", case.language));
        std::fs::create_dir_all(&work)?;
        std::fs::write(work.join(case.file), case.code)?;
        if let Some(build) = case.build {
            let status = Command::new(build[0])
                .args(&build[1..])
                .current_dir(&work)
                .status()?;
            anyhow::ensure!(status.success(), "building the {} peer", case.language);
        }
        // bwrap's uid must be able to read the work dir.
        Command::new("chmod")
            .args(["-R", "a+rX"])
            .arg(&work)
            .status()?;
        // Warm-up: caches, and Berth's compiled-program cache.
        time_command(bare(&work, case))?;
        time_command(bwrap(&work, case))?;
        let warm = sandbox.run(run_of(case)).await;
        anyhow::ensure!(
            warm.status == Status::Succeeded,
            "{}: {warm:?}",
            case.language
        );
        let (mut b, mut w, mut s, mut h) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for _ in 0..args.runs {
            b.push(time_command(bare(&work, case))?);
            w.push(time_command(bwrap(&work, case))?);
            // In a task, as the agent runs it (not on the main thread,
            // which each of the run's pipe events would have to wake),
            // timed from the driver's call to its return, as the peers
            // are timed around their one call; and apart from that, from
            // the task's spawn to its join (the runtime's two hand-offs
            // between threads, which the peers' runs do not have).
            let handed = Instant::now();
            let task = sandbox.clone();
            let (outcome, took) = tokio::spawn(async move {
                let started = Instant::now();
                let outcome = task.run(run_of(case)).await;
                (outcome, started.elapsed())
            })
            .await?;
            h.push(handed.elapsed());
            s.push(took);
            // Berth's clean-up and next helper, done after answering, do
            // not run into the peers' next runs.
            sandbox.quiet().await;
            anyhow::ensure!(
                outcome.status == Status::Succeeded && outcome.stdout == b"hello\n",
                "{}: {outcome:?}",
                case.language
            );
        }
        let (b, w, s) = (median(b), median(w), median(s));
        handoffs.push((case.language, median(h), b));
        println!(
            "| {} | {} | {} | {} | {:.2}× | {:.2}× |",
            case.language,
            ms(b),
            ms(w),
            ms(s),
            s.as_secs_f64() / b.as_secs_f64(),
            s.as_secs_f64() / w.as_secs_f64()
        );
    }

    for (language, with_handoffs, bare) in handoffs {
        println!(
            "\n{language}, timed from the task's spawn to its join instead: {} ({:.2}× bare)",
            ms(with_handoffs),
            with_handoffs.as_secs_f64() / bare.as_secs_f64()
        );
    }

    let work = dir.path().join("work-python");
    if work.exists() {
        throughput(&sandbox, &work, &args).await?;
    }
    if let Some(data_dir) = &args.data_dir {
        full_path(data_dir, &sandbox, args.runs.max(20)).await?;
    }
    Ok(())
}

/// Many python runs, `concurrency` at a time, in rounds that alternate
/// bare and Berth (the machine's speed drifts).
async fn throughput(sandbox: &Arc<Sandbox>, work: &Path, args: &Args) -> anyhow::Result<()> {
    let work = work.to_path_buf();
    let python = &CASES[0];
    const ROUNDS: usize = 10;
    let per = (args.throughput_runs / args.concurrency / ROUNDS).max(1);
    let n = (per * args.concurrency * ROUNDS) as u32;
    let (mut bare_time, mut berth_time) = (Duration::ZERO, Duration::ZERO);
    let (mut bare_busy, mut bare_idle) = (Duration::ZERO, Duration::ZERO);
    let (mut berth_busy, mut berth_idle) = (Duration::ZERO, Duration::ZERO);
    let mut in_groups = Duration::ZERO;
    let (mut bare_calls, mut berth_calls, mut berth_walls) =
        (Duration::ZERO, Duration::ZERO, Duration::ZERO);
    for _ in 0..ROUNDS {
        let started = Instant::now();
        let cpu = MachineCpu::now();
        let mut handles = Vec::new();
        for _ in 0..args.concurrency {
            let work = work.clone();
            handles.push(std::thread::spawn(move || -> anyhow::Result<Duration> {
                let mut call = Duration::ZERO;
                for _ in 0..per {
                    call += time_command(bare(&work, python))?;
                }
                Ok(call)
            }));
        }
        for h in handles {
            bare_calls += h.join().expect("a bare worker")?;
        }
        bare_time += started.elapsed();
        let (busy, idle) = cpu.since();
        bare_busy += busy;
        bare_idle += idle;

        let started = Instant::now();
        let cpu = MachineCpu::now();
        let mut tasks = Vec::new();
        for _ in 0..args.concurrency {
            let sandbox = sandbox.clone();
            tasks.push(tokio::spawn(async move {
                let mut cpu = Duration::ZERO;
                let (mut call, mut wall) = (Duration::ZERO, Duration::ZERO);
                for _ in 0..per {
                    let t = Instant::now();
                    let outcome = sandbox.run(run_of(python)).await;
                    call += t.elapsed();
                    wall += outcome.wall;
                    if outcome.status != Status::Succeeded {
                        return Err(anyhow::anyhow!("{outcome:?}"));
                    }
                    cpu += outcome.cpu;
                }
                Ok((cpu, call, wall))
            }));
        }
        for t in tasks {
            let (cpu, call, wall) = t.await??;
            in_groups += cpu;
            berth_calls += call;
            berth_walls += wall;
        }
        berth_time += started.elapsed();
        let (busy, idle) = cpu.since();
        berth_busy += busy;
        berth_idle += idle;
    }
    let bare_rate = f64::from(n) / bare_time.as_secs_f64();
    let berth_rate = f64::from(n) / berth_time.as_secs_f64();
    println!(
        "\nthroughput, {n} python runs at concurrency {} (each, in {ROUNDS} alternating rounds): bare {:.1}/s, Berth {:.1}/s, Berth / bare {:.2}×",
        args.concurrency,
        bare_rate,
        berth_rate,
        berth_rate / bare_rate
    );
    println!(
        "machine CPU per run (all processes and kernel threads): bare {}, Berth {}; idle per run: bare {}, Berth {}",
        ms(bare_busy / n),
        ms(berth_busy / n),
        ms(bare_idle / n),
        ms(berth_idle / n)
    );
    println!(
        "of Berth's, in the run's cgroup (helper after joining, init, program): {}",
        ms(in_groups / n)
    );
    println!(
        "one run as its caller waits for it: bare {}, Berth {} (from the go byte to the end: {})",
        ms(bare_calls / n),
        ms(berth_calls / n),
        ms(berth_walls / n)
    );
    Ok(())
}

/// p50 of HTTP `/execute` (gateway → control plane → agent → sandbox) over
/// the p50 of the driver alone, python hello world, alternating.
async fn full_path(data_dir: &Path, sandbox: &Sandbox, runs: usize) -> anyhow::Result<()> {
    use http_body_util::BodyExt;
    let endpoints: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(data_dir.join("endpoints.json"))
            .context("is `berth up` running with this data dir?")?,
    )?;
    let grpc = endpoints["grpc"].as_str().context("no grpc endpoint")?;
    let gateway = endpoints["gateway"]
        .as_str()
        .context("no gateway endpoint")?;
    let tls = berth_pki::TlsFiles::in_dir(&data_dir.join("certs"), "admin").load()?;
    let channel = tls.endpoint(grpc)?.connect().await?;
    let key = berth_proto::pb::api_key_service_client::ApiKeyServiceClient::new(channel)
        .create_api_key(berth_proto::pb::CreateApiKeyRequest {
            tenant: "bench".into(),
            name: "sandbox-exec".into(),
            admin: false,
            role: berth_proto::pb::KeyRole::Unspecified.into(),
            rate_per_second: 100_000.0,
            burst: 100_000,
        })
        .await?
        .into_inner()
        .key;
    let client: hyper_util::client::legacy::Client<_, http_body_util::Full<bytes::Bytes>> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build_http();
    let body = serde_json::json!({"code": "print('hello')", "language": "python"}).to_string();
    // The new key reaches the gateway with its next route update.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let req = hyper::Request::get(format!("{gateway}/info"))
            .header("authorization", format!("Bearer {key}"))
            .body(http_body_util::Full::default())?;
        if client.request(req).await?.status().is_success() {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the gateway never accepted the new key"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (mut http, mut driver) = (Vec::new(), Vec::new());
    for i in 0..=runs {
        let req = hyper::Request::post(format!("{gateway}/execute"))
            .header("authorization", format!("Bearer {key}"))
            .header("content-type", "application/json")
            .body(http_body_util::Full::from(body.clone()))?;
        let started = Instant::now();
        let response = client.request(req).await?;
        let bytes = response.into_body().collect().await?.to_bytes();
        let took = started.elapsed();
        let answer: serde_json::Value = serde_json::from_slice(&bytes)?;
        anyhow::ensure!(answer["output"] == "hello\n", "HTTP /execute: {answer}");
        // Each side's work after answering (clean-up, the next waiting
        // helper) is kept out of the other side's next run: the agent's by
        // a pause, the driver's by waiting for it.
        tokio::time::sleep(Duration::from_millis(30)).await;
        let started = Instant::now();
        let outcome = sandbox.run(run_of(&CASES[0])).await;
        let alone = started.elapsed();
        anyhow::ensure!(outcome.status == Status::Succeeded, "{outcome:?}");
        sandbox.quiet().await;
        if i > 0 {
            http.push(took);
            driver.push(alone);
        }
    }
    let (http, driver) = (median(http), median(driver));
    println!(
        "\nfull path, python hello world: HTTP /execute p50 {}, driver alone p50 {}, overhead {}",
        ms(http),
        ms(driver),
        ms(http.saturating_sub(driver))
    );
    Ok(())
}
