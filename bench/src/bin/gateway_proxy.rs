//! The gateway against nginx and against no proxy at all: the same hyper
//! upstream, the same load, alternating rounds in one run.
//!
//! - fixed concurrency with `wrk` (req/s, p50/p99 latency);
//! - a fixed rate from an open-loop generator here on its own threads and
//!   the kernel's high-resolution timers (p50/p99 from each request's
//!   scheduled time, so a stall counts fully);
//! - CPU per request and peak RSS of the proxy process (from /proc);
//! - memory per concurrent 1 GiB upload through the gateway.
//!
//! Needs `wrk` and `nginx` (Debian packages) and a release `berth-gateway`.

use anyhow::{bail, Context};
use bytes::Bytes;
use clap::Parser;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::{body::Incoming, service::service_fn, Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::{
    convert::Infallible,
    net::SocketAddr,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

#[derive(Parser, Clone)]
struct Args {
    /// The gateway binary to measure.
    #[arg(long, default_value = "target/release/berth-gateway")]
    gateway_bin: PathBuf,
    /// Rounds; each runs every target once, in turn.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Length of each load run.
    #[arg(long, default_value = "8s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Connections for the fixed-concurrency runs.
    #[arg(long, default_value_t = 32)]
    connections: usize,
    /// Requests per second for the fixed-rate runs.
    #[arg(long, default_value_t = 2000)]
    rate: u64,
    /// Kept connections of the fixed-rate generator (each carries one
    /// request at a time).
    #[arg(long, default_value_t = 64)]
    rate_connections: usize,
    /// Event-loop threads of the gateway (`--gateway-threads`); 1 matches
    /// nginx's one worker process.
    #[arg(long, default_value_t = 1)]
    gateway_threads: usize,
    /// Only the fixed-rate runs (no `wrk`).
    #[arg(long)]
    no_wrk: bool,
    /// Concurrent 1 GiB uploads through the gateway (0 skips the phase).
    #[arg(long, default_value_t = 4)]
    uploads: usize,
}

const KEY: &str = "berth_benchkey0000000000000000000000000000";

/// The upstream: `ok` for anything; POST bodies are read and dropped.
fn start_upstream() -> anyhow::Result<SocketAddr> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let _ = stream.set_nodelay(true);
                tokio::spawn(async move {
                    let service = service_fn(|req: Request<Incoming>| async move {
                        let mut body = req.into_body();
                        while let Some(frame) = body.frame().await {
                            if frame.is_err() {
                                break;
                            }
                        }
                        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok\n"))))
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
    });
    Ok(addr)
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

struct Proxy {
    name: &'static str,
    addr: SocketAddr,
    child: Option<Child>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Proxy {
    fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }
}

fn start_nginx(dir: &std::path::Path, upstream: SocketAddr) -> anyhow::Result<Proxy> {
    let port = free_port()?;
    let d = dir.display();
    let conf = format!(
        "worker_processes 1;\nmaster_process off;\ndaemon off;\npid {d}/nginx.pid;\nerror_log {d}/nginx-error.log warn;\n\
         events {{ worker_connections 8192; }}\n\
         http {{\n  access_log off;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n  fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
         client_max_body_size 0;\n  proxy_request_buffering off;\n  proxy_buffering off;\n\
         keepalive_requests 100000000;\n  keepalive_timeout 300s;\n\
         upstream app {{ server {upstream}; keepalive 128; keepalive_requests 100000000; }}\n\
         server {{\n    listen 127.0.0.1:{port};\n    location / {{\n      proxy_pass http://app;\n      proxy_http_version 1.1;\n      proxy_set_header Connection \"\";\n    }}\n  }}\n}}\n"
    );
    let file = dir.join("nginx.conf");
    std::fs::write(&file, conf)?;
    let child = Command::new("nginx")
        .arg("-c")
        .arg(&file)
        .arg("-e")
        .arg(dir.join("nginx-error.log"))
        .stdout(Stdio::null())
        .spawn()
        .context("starting nginx (apt-get install nginx-light)")?;
    Ok(Proxy {
        name: "nginx",
        addr: SocketAddr::from(([127, 0, 0, 1], port)),
        child: Some(child),
    })
}

fn start_gateway(
    bin: &PathBuf,
    dir: &std::path::Path,
    upstream: SocketAddr,
    threads: usize,
) -> anyhow::Result<Proxy> {
    let port = free_port()?;
    let routes = serde_json::json!({
        "apps": [{ "id": "bench", "backends": [upstream.to_string()], "max_body_bytes": 4u64 << 30 }],
        "keys": [{ "id": "bench", "key": KEY, "rate_per_second": 10_000_000.0, "burst": 10_000_000 }],
    });
    let file = dir.join("routes.json");
    std::fs::write(&file, routes.to_string())?;
    let child = Command::new(bin)
        .args([
            "--gateway-addr",
            &format!("127.0.0.1:{port}"),
            "--gateway-metrics-addr",
            "127.0.0.1:0",
            "--gateway-threads",
            &threads.to_string(),
            "--static-routes",
        ])
        .arg(&file)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .with_context(|| {
            format!(
                "starting {} (cargo build --release -p berth-gateway)",
                bin.display()
            )
        })?;
    Ok(Proxy {
        name: "berth-gateway",
        addr: SocketAddr::from(([127, 0, 0, 1], port)),
        child: Some(child),
    })
}

async fn wait_up(addr: SocketAddr) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("nothing listens on {addr}")
}

/// CPU seconds (user + system) a process's threads have used, to the
/// nanosecond (the scheduler's run time of each thread, from
/// `/proc/PID/task/*/schedstat`; `/proc/PID/stat` counts in 10 ms ticks).
fn cpu_seconds(pid: u32) -> f64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0.0;
    };
    let nanos: u64 = tasks
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("schedstat")).ok())
        .filter_map(|line| line.split_whitespace().next()?.parse::<u64>().ok())
        .sum();
    nanos as f64 / 1e9
}

fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

#[derive(Debug, Clone, Copy, Default)]
struct Sample {
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
    /// Microseconds of proxy CPU per request.
    cpu_us: f64,
}

fn parse_latency(text: &str) -> f64 {
    let text = text.trim();
    let (number, factor) = if let Some(v) = text.strip_suffix("us") {
        (v, 0.001)
    } else if let Some(v) = text.strip_suffix("ms") {
        (v, 1.0)
    } else if let Some(v) = text.strip_suffix('s') {
        (v, 1000.0)
    } else {
        (text, 1.0)
    };
    number.parse::<f64>().unwrap_or(f64::NAN) * factor
}

fn wrk(proxy: &Proxy, args: &Args) -> anyhow::Result<Sample> {
    let cpu_before = proxy.pid().map(cpu_seconds);
    let output = Command::new("wrk")
        .args(["-t1", &format!("-c{}", args.connections)])
        .arg(format!("-d{}s", args.duration.as_secs().max(1)))
        .args(["--latency", "-H", &format!("Authorization: Bearer {KEY}")])
        .arg(format!("http://{}/run/bench/", proxy.addr))
        .output()
        .context("running wrk (apt-get install wrk)")?;
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let mut sample = Sample::default();
    let mut requests = 0.0;
    for line in text.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["Requests/sec:", v] => sample.rps = v.parse().unwrap_or(0.0),
            ["50%", v] => sample.p50_ms = parse_latency(v),
            ["99%", v] => sample.p99_ms = parse_latency(v),
            [n, "requests", "in", ..] => requests = n.parse().unwrap_or(0.0),
            _ => {}
        }
    }
    if text.contains("Non-2xx") || sample.rps == 0.0 {
        bail!("wrk against {}: {text}", proxy.name);
    }
    if let (Some(before), Some(pid)) = (cpu_before, proxy.pid()) {
        sample.cpu_us = (cpu_seconds(pid) - before) / requests * 1e6;
    }
    Ok(sample)
}

/// Open loop at `rate` per second, on threads of its own: one sender sleeps
/// to each request's scheduled time on the kernel's high-resolution timers
/// (tokio's timers tick in milliseconds, coarser than what is measured
/// here) and writes the request on a kept connection that has nothing in
/// flight; a reader thread per connection takes the answer. Latency runs
/// from the scheduled time to the answer's last byte, so a stall of the
/// proxy counts fully, and the generator's own timing is the same for
/// every target.
fn fixed_rate(
    proxy: &Proxy,
    rate: u64,
    duration: Duration,
    connections: usize,
) -> anyhow::Result<Sample> {
    use std::io::Write;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::Arc;
    struct Conn {
        stream: std::net::TcpStream,
        busy: AtomicBool,
        /// Nanoseconds from `start` to the request's scheduled time.
        scheduled: AtomicU64,
    }
    /// The connections, shut down however the run ends (their readers
    /// then end too).
    struct Conns(Vec<Arc<Conn>>);
    impl Drop for Conns {
        fn drop(&mut self) {
            for c in &self.0 {
                let _ = c.stream.shutdown(std::net::Shutdown::Both);
            }
        }
    }
    let request = format!(
        "GET /run/bench/ HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {KEY}\r\n\r\n",
        proxy.addr
    );
    let start = Instant::now();
    let mut conns = Conns(Vec::with_capacity(connections));
    let mut readers = Vec::with_capacity(connections);
    for _ in 0..connections {
        let stream = std::net::TcpStream::connect(proxy.addr)?;
        stream.set_nodelay(true)?;
        let conn = Arc::new(Conn {
            stream: stream.try_clone()?,
            busy: AtomicBool::new(false),
            scheduled: AtomicU64::new(0),
        });
        let reader = conn.clone();
        readers.push(std::thread::spawn(move || {
            read_answers(stream, &reader.busy, &reader.scheduled, start)
        }));
        conns.0.push(conn);
    }
    let conns = &conns.0;
    // The schedule starts once every connection is open.
    let begin = start.elapsed().as_nanos() as u64;
    // The sender's sleeps end within a microsecond of the deadline asked
    // for, not within the default 50 µs of timer slack.
    // SAFETY: PR_SET_TIMERSLACK only sets a value of the calling thread.
    unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong) };
    let cpu_before = proxy.pid().map(cpu_seconds);
    let total = (rate as f64 * duration.as_secs_f64()) as u64;
    let interval = 1e9 / rate as f64;
    for i in 0..total {
        let due = begin + (interval * i as f64) as u64;
        let now = start.elapsed().as_nanos() as u64;
        if due > now {
            std::thread::sleep(Duration::from_nanos(due - now));
        }
        // A free connection; when all are in flight, wait for one: the wait
        // counts in the latency.
        let conn = loop {
            let found = (0..connections)
                .map(|k| &conns[(i as usize + k) % connections])
                .find(|c| !c.busy.load(Ordering::Acquire));
            match found {
                Some(c) => break c,
                None if start.elapsed() > duration * 2 => {
                    bail!("no answer from {} in time", proxy.name)
                }
                None => std::thread::sleep(Duration::from_micros(10)),
            }
        };
        conn.scheduled.store(due, Ordering::Release);
        conn.busy.store(true, Ordering::Release);
        (&conn.stream).write_all(request.as_bytes())?;
    }
    let sent = start.elapsed() - Duration::from_nanos(begin);
    let deadline = Instant::now() + Duration::from_secs(10);
    while conns.iter().any(|c| c.busy.load(Ordering::Acquire)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    let mut sample = Sample {
        rps: total as f64 / sent.as_secs_f64(),
        ..Sample::default()
    };
    if let (Some(before), Some(pid)) = (cpu_before, proxy.pid()) {
        sample.cpu_us = (cpu_seconds(pid) - before) / total as f64 * 1e6;
    }
    for c in conns {
        let _ = c.stream.shutdown(std::net::Shutdown::Both);
    }
    let mut latencies = Vec::with_capacity(total as usize);
    for reader in readers {
        latencies.extend(
            reader
                .join()
                .map_err(|_| anyhow::anyhow!("a reader panicked"))??,
        );
    }
    if latencies.len() as u64 != total {
        bail!(
            "{} of {total} requests answered by {}",
            latencies.len(),
            proxy.name
        );
    }
    latencies.sort_by(f64::total_cmp);
    let pick = |q: f64| latencies[((latencies.len() as f64 - 1.0) * q) as usize];
    sample.p50_ms = pick(0.50);
    sample.p99_ms = pick(0.99);
    Ok(sample)
}

/// Reads `200` answers with a `Content-Length` off one connection until it
/// is shut down (a proxy that never answers is shut down by the sender); returns each one's latency in milliseconds from its
/// scheduled time.
fn read_answers(
    mut stream: std::net::TcpStream,
    busy: &std::sync::atomic::AtomicBool,
    scheduled: &std::sync::atomic::AtomicU64,
    start: Instant,
) -> anyhow::Result<Vec<f64>> {
    use std::io::Read;
    use std::sync::atomic::Ordering;
    let mut latencies = Vec::new();
    let mut buf = vec![0u8; 64 << 10];
    let mut filled = 0;
    loop {
        let n = match stream.read(&mut buf[filled..]) {
            Ok(0) if busy.load(Ordering::Acquire) => {
                bail!("the proxy closed a connection with a request in flight")
            }
            Ok(0) => return Ok(latencies),
            Ok(n) => n,
            Err(err) => return Err(err.into()),
        };
        filled += n;
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut head = httparse::Response::new(&mut headers);
        let httparse::Status::Complete(head_len) = head.parse(&buf[..filled])? else {
            continue;
        };
        if head.code != Some(200) {
            bail!("answer {:?}", head.code);
        }
        let length: usize = head
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case("content-length"))
            .and_then(|h| std::str::from_utf8(h.value).ok()?.parse().ok())
            .context("an answer without Content-Length")?;
        if filled < head_len + length {
            continue;
        }
        let done = start.elapsed().as_nanos() as u64;
        latencies.push(done.saturating_sub(scheduled.load(Ordering::Acquire)) as f64 / 1e6);
        buf.copy_within(head_len + length..filled, 0);
        filled -= head_len + length;
        busy.store(false, Ordering::Release);
    }
}

/// `n` concurrent 1 GiB uploads through `proxy`; returns KiB of peak RSS
/// growth per upload.
async fn uploads(proxy: &Proxy, n: usize) -> anyhow::Result<f64> {
    const TOTAL: usize = 1 << 30;
    const CHUNK: usize = 256 << 10;
    let pid = proxy.pid().context("the proxy is a process")?;
    let before = status_kib(pid, "VmRSS");
    let client: hyper_util::client::legacy::Client<_, _> =
        hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build_http();
    let chunk = Bytes::from(vec![7u8; CHUNK]);
    let mut tasks = Vec::new();
    for _ in 0..n {
        let client = client.clone();
        let chunk = chunk.clone();
        let url = format!("http://{}/run/bench/upload", proxy.addr);
        tasks.push(tokio::spawn(async move {
            let frames = futures_stream(chunk, TOTAL / CHUNK);
            let req = Request::post(url)
                .header("authorization", format!("Bearer {KEY}"))
                .header("content-length", TOTAL.to_string())
                .body(StreamBody::new(frames))
                .expect("request");
            let response = client.request(req).await?;
            anyhow::ensure!(
                response.status().is_success(),
                "upload: {}",
                response.status()
            );
            Ok(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    let peak = status_kib(pid, "VmHWM");
    Ok(peak.saturating_sub(before) as f64 / n as f64)
}

/// `count` frames of `chunk`, made as they are sent.
fn futures_stream(
    chunk: Bytes,
    count: usize,
) -> impl tokio_stream::Stream<Item = Result<http_body::Frame<Bytes>, Infallible>> {
    tokio_stream::iter((0..count).map(move |_| Ok(http_body::Frame::data(chunk.clone()))))
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let dir = tempfile::tempdir()?;
    let upstream = start_upstream()?;
    let direct = Proxy {
        name: "direct",
        addr: upstream,
        child: None,
    };
    let nginx = start_nginx(dir.path(), upstream)?;
    let gateway = start_gateway(
        &args.gateway_bin,
        dir.path(),
        upstream,
        args.gateway_threads,
    )?;
    for p in [&direct, &nginx, &gateway] {
        wait_up(p.addr).await?;
    }
    let targets = [&direct, &nginx, &gateway];
    // Warm-up of each.
    for t in targets {
        let short = Args {
            duration: Duration::from_secs(1),
            ..args.clone()
        };
        wrk(t, &short)?;
    }
    let mut closed: Vec<Vec<Sample>> = vec![Vec::new(); 3];
    let mut open: Vec<Vec<Sample>> = vec![Vec::new(); 3];
    for round in 0..args.rounds {
        for (i, t) in targets.iter().enumerate().filter(|_| !args.no_wrk) {
            let s = wrk(t, &args)?;
            eprintln!("round {round} wrk   {:<14} {:>9.0} req/s  p50 {:.3} ms  p99 {:.3} ms  cpu {:.1} µs/req", t.name, s.rps, s.p50_ms, s.p99_ms, s.cpu_us);
            closed[i].push(s);
        }
        for (i, t) in targets.iter().enumerate() {
            let s = fixed_rate(t, args.rate, args.duration, args.rate_connections)?;
            eprintln!("round {round} rate  {:<14} {:>9.0} req/s  p50 {:.3} ms  p99 {:.3} ms  cpu {:.1} µs/req", t.name, s.rps, s.p50_ms, s.p99_ms, s.cpu_us);
            open[i].push(s);
        }
    }
    let summarize = |samples: &Vec<Sample>| {
        let mut rps: Vec<f64> = samples.iter().map(|s| s.rps).collect();
        let mut p50: Vec<f64> = samples.iter().map(|s| s.p50_ms).collect();
        let mut p99: Vec<f64> = samples.iter().map(|s| s.p99_ms).collect();
        let mut cpu: Vec<f64> = samples.iter().map(|s| s.cpu_us).collect();
        Sample {
            rps: median(&mut rps),
            p50_ms: median(&mut p50),
            p99_ms: median(&mut p99),
            cpu_us: median(&mut cpu),
        }
    };
    let rss: Vec<u64> = targets
        .iter()
        .map(|t| t.pid().map_or(0, |pid| status_kib(pid, "VmHWM")))
        .collect();
    println!(
        "\nberth-gateway with {} event-loop thread(s); nginx with one worker process.",
        args.gateway_threads
    );
    if !args.no_wrk {
        println!(
            "\n### Fixed concurrency ({} connections, wrk, median of {} rounds of {:?})\n",
            args.connections, args.rounds, args.duration
        );
        println!("| | req/s | p50 | p99 | CPU per request | peak RSS |");
        println!("|---|---|---|---|---|---|");
        let c: Vec<Sample> = closed.iter().map(summarize).collect();
        for (i, t) in targets.iter().enumerate() {
            let cpu = if i == 0 {
                "—".to_owned()
            } else {
                format!("{:.1} µs", c[i].cpu_us)
            };
            let mem = if i == 0 {
                "—".to_owned()
            } else {
                format!("{:.1} MiB", rss[i] as f64 / 1024.0)
            };
            println!(
                "| {} | {:.0} | {:.3} ms | {:.3} ms | {cpu} | {mem} |",
                t.name, c[i].rps, c[i].p50_ms, c[i].p99_ms
            );
        }
        println!(
            "\nberth-gateway / nginx: throughput {:.2}×, CPU per request {:.2}×, added p99 over direct {:.3} ms vs nginx's {:.3} ms; throughput vs direct {:.2}×",
            c[2].rps / c[1].rps,
            c[2].cpu_us / c[1].cpu_us,
            c[2].p99_ms - c[0].p99_ms,
            c[1].p99_ms - c[0].p99_ms,
            c[2].rps / c[0].rps,
        );
    }
    let o: Vec<Sample> = open.iter().map(summarize).collect();
    println!(
        "\n### Fixed rate ({} req/s, open loop, median of {} rounds)\n",
        args.rate, args.rounds
    );
    println!("| | p50 | p99 | CPU per request |");
    println!("|---|---|---|---|");
    for (i, t) in targets.iter().enumerate() {
        let cpu = if i == 0 {
            "—".to_owned()
        } else {
            format!("{:.1} µs", o[i].cpu_us)
        };
        println!(
            "| {} | {:.3} ms | {:.3} ms | {cpu} |",
            t.name, o[i].p50_ms, o[i].p99_ms
        );
    }
    println!(
        "\nberth-gateway / nginx: CPU per request {:.2}×, added p99 over direct {:.3} ms vs nginx's {:.3} ms",
        o[2].cpu_us / o[1].cpu_us,
        o[2].p99_ms - o[0].p99_ms,
        o[1].p99_ms - o[0].p99_ms,
    );
    // Round by round, each ratio from one round's side-by-side runs (the
    // machine's speed drifts between rounds more than within one).
    let ratios = |samples: &[Vec<Sample>], f: fn(&Sample, &Sample, &Sample) -> f64| {
        let mut r: Vec<f64> = (0..samples[0].len())
            .map(|i| f(&samples[0][i], &samples[1][i], &samples[2][i]))
            .collect();
        let listed = r
            .iter()
            .map(|v| format!("{v:.2}"))
            .collect::<Vec<_>>()
            .join(", ");
        format!("{listed} (median {:.2})", median(&mut r))
    };
    println!("\nRound by round, berth-gateway / nginx:");
    if !args.no_wrk {
        println!(
            "- fixed concurrency: throughput {}; CPU per request {}",
            ratios(&closed, |_, n, g| g.rps / n.rps),
            ratios(&closed, |_, n, g| g.cpu_us / n.cpu_us),
        );
    }
    println!(
        "- fixed rate: CPU per request {}; added p99 over direct, gateway minus nginx, in µs: {}",
        ratios(&open, |_, n, g| g.cpu_us / n.cpu_us),
        ratios(&open, |_, n, g| (g.p99_ms - n.p99_ms) * 1000.0),
    );
    if args.uploads > 0 {
        let per_gateway = uploads(&gateway, args.uploads).await?;
        let per_nginx = uploads(&nginx, args.uploads).await?;
        println!(
            "\n### {} concurrent 1 GiB uploads\n\npeak RSS growth per upload: berth-gateway {:.0} KiB, nginx {:.0} KiB",
            args.uploads, per_gateway, per_nginx
        );
    }
    Ok(())
}
