//! Code executions in language sandboxes: every run in fresh namespaces,
//! its own cgroup, rlimits, a seccomp filter, an unprivileged uid and a
//! scratch tmpfs that is gone afterwards.
//!
//! - [`zygote`]: the long-lived `berth-sandbox` process that forks helpers.
//! - [`helper`]: a forked helper, which builds the sandbox around one run.
//! - [`cgroup`]: per-run cgroups on v1 and v2 hosts.
//! - [`seccomp`]: the filters.
//! - [`languages`]: how each language is compiled and run.

pub mod cgroup;
pub mod helper;
pub mod languages;
pub mod netns;
pub mod seccomp;
pub mod zygote;

use cgroup::{Cgroup, Hierarchy, Limits};
use helper::{Ending, Layout, Report, Spec};
use languages::Language;
use std::{
    io,
    os::fd::{AsFd, BorrowedFd, OwnedFd},
    path::{Path, PathBuf},
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, Instant},
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

pub const MAX_CODE_BYTES: usize = 50 * 1024;
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
pub const MAX_TIMEOUT: Duration = Duration::from_secs(60);
pub const DEFAULT_MEMORY_BYTES: u64 = 128 << 20;
pub const MAX_STDIN_BYTES: usize = 1 << 20;

/// How the sandbox is set up on this node.
#[derive(Debug, Clone)]
pub struct SandboxConfig {
    /// The `berth-sandbox` binary (the zygote that forks the helpers)…
    pub helper: PathBuf,
    /// …and arguments before the layout file (`berth __sandbox`).
    pub helper_args: Vec<String>,
    /// Where runs get their directories, and compiled programs are cached.
    pub dir: PathBuf,
    /// The unprivileged identity programs run as.
    pub uid: u32,
    pub gid: u32,
    pub max_memory_bytes: u64,
    /// Cap of stdout and of stderr, each.
    pub max_output_bytes: usize,
    /// Size of `/work` and of `/tmp`, each.
    pub scratch_bytes: u64,
    pub pids: u32,
    pub cpu_millis: u32,
    /// Helpers kept started and waiting in their cgroups, so that a run
    /// does not wait for a process to join a cgroup (slow on cgroup v1).
    pub warm_helpers: usize,
}

impl SandboxConfig {
    pub fn new(helper: PathBuf, dir: PathBuf) -> Self {
        Self {
            helper,
            helper_args: Vec::new(),
            dir,
            uid: 61_000,
            gid: 61_000,
            max_memory_bytes: 1 << 30,
            max_output_bytes: 1 << 20,
            scratch_bytes: 32 << 20,
            pids: 64,
            cpu_millis: 1000,
            warm_helpers: 2,
        }
    }
}

/// One execution as asked.
#[derive(Debug, Clone)]
pub struct Run {
    pub language: String,
    pub code: String,
    pub stdin: Vec<u8>,
    pub timeout: Duration,
    pub memory_bytes: u64,
    /// Only check the code (the language's checker), do not run it.
    pub validate: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Succeeded,
    Failed,
    Timeout,
    MemoryExceeded,
    Rejected,
    Cancelled,
}

/// What an execution did.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub status: Status,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub stdout_truncated: bool,
    pub stderr_truncated: bool,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub wall: Duration,
    pub cpu: Duration,
    pub peak_memory_bytes: u64,
    /// Why it was rejected or failed to compile or start; empty otherwise.
    pub error: String,
}

impl Outcome {
    /// A run that could not happen here.
    pub fn failed(error: String) -> Self {
        Outcome {
            status: Status::Failed,
            ..Outcome::rejected(error)
        }
    }

    fn rejected(error: String) -> Self {
        Outcome {
            status: Status::Rejected,
            stdout: Vec::new(),
            stderr: Vec::new(),
            stdout_truncated: false,
            stderr_truncated: false,
            exit_code: None,
            signal: None,
            wall: Duration::ZERO,
            cpu: Duration::ZERO,
            peak_memory_bytes: 0,
            error,
        }
    }
}

/// Numbers runs and steps uniquely within this process (cgroup names
/// and the cache's partial entries), whatever number of sandboxes it has.
static NEXT: AtomicU64 = AtomicU64::new(0);

fn next_id() -> String {
    format!(
        "{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// Names this sandbox's cgroups apart from other sandboxes' on the host.
fn prefix_of(dir: &Path) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(dir.as_os_str().as_encoded_bytes());
    digest[..4].iter().map(|b| format!("{b:02x}")).collect()
}

/// The sandbox driver of a node.
pub struct Sandbox {
    shared: std::sync::Arc<Shared>,
    /// Clean-ups of finished helpers and refills of the waiting ones,
    /// done off the request's path.
    retiring: tokio_util::task::TaskTracker,
}

impl std::ops::Deref for Sandbox {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.shared
    }
}

/// What the sandbox's background work needs too.
pub struct Shared {
    config: SandboxConfig,
    hierarchy: Hierarchy,
    prefix: String,
    /// Helpers waiting for a run, each in a cgroup of its own with its
    /// sandbox built.
    pool: std::sync::Mutex<std::collections::VecDeque<Warm>>,
    /// A refill of the pool is under way.
    refilling: std::sync::atomic::AtomicBool,
    /// Kept cgroups of finished runs (cgroup v1).
    spares: cgroup::Spares,
    /// Network namespaces, each leased to one helper at a time.
    networks: std::sync::Arc<netns::Pool>,
    /// Forks the helpers.
    zygote: zygote::Zygote,
    /// The memory limit of the latest step: the next waiting helpers get
    /// it, so that a caller's runs of one size need no cgroup writes.
    latest_memory_bytes: AtomicU64,
}

/// Where the [`helper::Layout`] every helper reads is, in the sandbox dir.
const LAYOUT_FILE: &str = "layout.json";

/// What a step finds in its `/work`.
#[derive(Clone)]
enum Content<'a> {
    Text(&'a str),
    /// A copy of this file (a compiled program from the cache).
    Copy(PathBuf),
}

/// One step (compile, check or run), in a sandbox of its own.
struct Step<'a> {
    /// `(name in /work, content)`.
    files: Vec<(&'a str, Content<'a>)>,
    argv: &'a [&'a str],
    env: Vec<(String, String)>,
    stdin: &'a [u8],
    wall: Duration,
    memory_bytes: u64,
    /// When the step succeeds: these files of its `/work` are kept in
    /// this cache entry.
    keep: Option<(&'a [&'a str], &'a Path)>,
}

struct StepResult {
    report: Option<Report>,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    stdout_truncated: bool,
    stderr_truncated: bool,
    timed_out: bool,
    cancelled: bool,
    wall: Duration,
    usage: cgroup::Usage,
    /// Why what the step made could not be kept.
    keep_error: Option<io::Error>,
}

impl Sandbox {
    pub fn new(mut config: SandboxConfig) -> io::Result<Self> {
        // Helpers start in `/`, and the cgroup prefix comes from the path:
        // `berth up`'s default `.berth` must mean the same dir everywhere.
        config.dir = std::path::absolute(&config.dir)?;
        config.helper = std::path::absolute(&config.helper)?;
        let hierarchy = Hierarchy::detect()?;
        for dir in ["cache", "root"] {
            std::fs::create_dir_all(config.dir.join(dir))?;
        }
        if !config.helper.is_file() {
            return Err(io::Error::other(format!(
                "the sandbox helper {} is missing",
                config.helper.display()
            )));
        }
        let prefix = prefix_of(&config.dir);
        let zygote = zygote::Zygote::new(
            config.helper.clone(),
            config.helper_args.clone(),
            &config.dir.join(LAYOUT_FILE),
        );
        let sandbox = Self {
            shared: std::sync::Arc::new(Shared {
                config,
                hierarchy,
                prefix,
                pool: Default::default(),
                refilling: Default::default(),
                spares: Default::default(),
                networks: Default::default(),
                zygote,
                latest_memory_bytes: AtomicU64::new(DEFAULT_MEMORY_BYTES),
            }),
            retiring: tokio_util::task::TaskTracker::new(),
        };
        sandbox.sweep();
        let etc = sandbox.config.dir.join("etc");
        make_etc(&etc, sandbox.config.uid, sandbox.config.gid)?;
        let layout = Layout {
            root: sandbox.config.dir.join("root"),
            binds: binds(&etc),
            symlinks: symlinks(),
            tmp_bytes: sandbox.config.scratch_bytes,
        };
        std::fs::write(
            sandbox.config.dir.join(LAYOUT_FILE),
            serde_json::to_vec(&layout).expect("a layout serializes"),
        )?;
        Ok(sandbox)
    }

    /// Kills and removes what runs of an earlier agent with this directory
    /// left: processes and cgroups. (Their mounts were in their own
    /// namespaces, gone with their processes; an agent from before that
    /// mounted runs' tmpfs in `runs/` on the host, which goes too.)
    fn sweep(&self) {
        let groups = cgroup::sweep(&self.hierarchy, &format!("{}-", self.prefix));
        let legacy = self.config.dir.join("runs");
        let mut runs = 0;
        for entry in std::fs::read_dir(&legacy).into_iter().flatten().flatten() {
            let _ = nix::mount::umount2(&entry.path(), nix::mount::MntFlags::MNT_DETACH);
            runs += 1;
        }
        if legacy.exists() {
            if let Err(err) = std::fs::remove_dir_all(&legacy) {
                tracing::warn!(%err, path = %legacy.display(), "removing the old runs dir");
            }
        }
        if groups + runs > 0 {
            tracing::warn!(
                groups,
                runs,
                "removed what earlier sandbox runs left behind"
            );
        }
    }

    pub fn config(&self) -> &SandboxConfig {
        &self.config
    }

    /// The cgroup directory runs' groups are made in (of the pids
    /// controller on cgroup v1).
    pub fn cgroup_parent(&self) -> PathBuf {
        cgroup::parent(&self.hierarchy)
    }

    /// How the names of this sandbox's cgroups begin.
    pub fn cgroup_prefix(&self) -> &str {
        &self.prefix
    }

    /// Languages whose toolchain this host has.
    pub fn languages(&self) -> Vec<&'static Language> {
        languages::LANGUAGES
            .iter()
            .filter(|l| Path::new(l.toolchain).exists())
            .collect()
    }

    /// Checks a run against the limits: the reason when it is refused.
    pub fn check(&self, run: &Run) -> Result<&'static Language, String> {
        let language = languages::find(&run.language)
            .filter(|l| Path::new(l.toolchain).exists())
            .ok_or_else(|| {
                let known: Vec<&str> = self.languages().iter().map(|l| l.name).collect();
                format!(
                    "language {:?} is not available here (available: {})",
                    run.language,
                    known.join(", ")
                )
            })?;
        if run.code.len() > MAX_CODE_BYTES {
            return Err(format!(
                "code is {} bytes; the limit is {MAX_CODE_BYTES} bytes",
                run.code.len()
            ));
        }
        if run.code.contains('\0') {
            return Err("code contains a NUL byte".into());
        }
        if run.timeout.is_zero() || run.timeout > MAX_TIMEOUT {
            return Err(format!(
                "timeout {:?} is outside (0, {MAX_TIMEOUT:?}]",
                run.timeout
            ));
        }
        if run.memory_bytes < (16 << 20) || run.memory_bytes > self.config.max_memory_bytes {
            return Err(format!(
                "memory {} bytes is outside 16 MiB..{} bytes",
                run.memory_bytes, self.config.max_memory_bytes
            ));
        }
        if run.stdin.len() > MAX_STDIN_BYTES {
            return Err(format!(
                "stdin is {} bytes; the limit is {MAX_STDIN_BYTES} bytes",
                run.stdin.len()
            ));
        }
        Ok(language)
    }

    /// Runs `run` to the end; never panics on what the code does.
    pub async fn run(&self, run: Run) -> Outcome {
        self.run_until(run, &CancellationToken::new()).await
    }

    /// [`Sandbox::run`], ended early (status `cancelled`) when `cancel` fires.
    pub async fn run_until(&self, run: Run, cancel: &CancellationToken) -> Outcome {
        let language = match self.check(&run) {
            Ok(language) => language,
            Err(reason) => return Outcome::rejected(reason),
        };
        if cancel.is_cancelled() {
            return Outcome {
                status: Status::Cancelled,
                error: "cancelled".into(),
                ..Outcome::rejected(String::new())
            };
        }
        self.compile_and_run(language, &run, cancel).await
    }

    /// Lets the waiting helpers go and waits until every finished run is
    /// cleaned up: afterwards nothing of this sandbox's runs is left on the
    /// host (no process, cgroup, mount or directory). The next run starts
    /// helpers again.
    pub async fn settle(&self) {
        self.retiring.close();
        let _ = tokio::time::timeout(Duration::from_secs(30), self.retiring.wait()).await;
        self.retiring.reopen();
        // Each waits for its helper's end: blocking work.
        let shared = self.shared.clone();
        let _ = tokio::task::spawn_blocking(move || shared.release_waiting()).await;
        self.spares.release();
    }

    fn env(&self, language: &Language) -> Vec<(String, String)> {
        let mut env: Vec<(String, String)> = [
            ("PATH", "/usr/local/bin:/usr/bin:/bin"),
            ("HOME", "/work"),
            ("TMPDIR", "/tmp"),
            ("LANG", "C.UTF-8"),
        ]
        .iter()
        .chain(language.env.iter())
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
        env.sort();
        env
    }

    fn cache_key(&self, language: &Language, code: &str) -> String {
        use sha2::Digest;
        let mut hash = sha2::Sha256::new();
        hash.update(language.name.as_bytes());
        // The toolchain's identity: its size and modification time.
        if let Ok(meta) = std::fs::metadata(language.toolchain) {
            hash.update(meta.len().to_le_bytes());
            if let Ok(modified) = meta.modified() {
                hash.update(format!("{modified:?}").as_bytes());
            }
        }
        for arg in language.compile.unwrap_or_default() {
            hash.update(arg.as_bytes());
            hash.update([0]);
        }
        hash.update(code.as_bytes());
        hash.finalize().iter().map(|b| format!("{b:02x}")).collect()
    }

    async fn compile_and_run(
        &self,
        language: &Language,
        run: &Run,
        cancel: &CancellationToken,
    ) -> Outcome {
        let code = (language.file, Content::Text(&run.code));
        if run.validate {
            let step = Step {
                files: vec![code],
                argv: language.check,
                env: self.env(language),
                stdin: &[],
                // The caller's limits, for checking as for running.
                wall: run.timeout,
                memory_bytes: run.memory_bytes,
                keep: None,
            };
            let result = self.step(step, cancel).await;
            return self.outcome(result, None);
        }
        let mut files = vec![code.clone()];
        if let Some(compile) = language.compile {
            let cache = self
                .config
                .dir
                .join("cache")
                .join(self.cache_key(language, &run.code));
            let cached = language.artifacts.iter().all(|a| cache.join(a).is_file());
            if !cached {
                let step = Step {
                    files: vec![code.clone()],
                    argv: compile,
                    env: self.env(language),
                    stdin: &[],
                    // The caller's limits, for compiling as for running.
                    wall: run.timeout,
                    memory_bytes: run.memory_bytes,
                    // What the compiler made, for this run and the next of the same code.
                    keep: Some((language.artifacts, &cache)),
                };
                let compiled = self.step(step, cancel).await;
                let ok = matches!(
                    compiled.report.as_ref().map(|r| &r.ending),
                    Some(Ending::Exited(0))
                ) && !compiled.timed_out
                    && !compiled.cancelled;
                if !ok {
                    let mut outcome = self.outcome(compiled, None);
                    outcome.status = match outcome.status {
                        Status::Timeout | Status::MemoryExceeded | Status::Cancelled => {
                            outcome.status
                        }
                        _ => Status::Failed,
                    };
                    if outcome.error.is_empty() {
                        outcome.error = "compilation failed".into();
                    }
                    return outcome;
                }
                if let Some(err) = compiled.keep_error {
                    return Outcome {
                        status: Status::Failed,
                        error: format!("sandbox set-up: keeping the compiled program: {err}"),
                        ..Outcome::rejected(String::new())
                    };
                }
            }
            files.extend(
                language
                    .artifacts
                    .iter()
                    .map(|a| (*a, Content::Copy(cache.join(a)))),
            );
        }
        let step = Step {
            files,
            argv: language.run,
            env: self.env(language),
            stdin: &run.stdin,
            wall: run.timeout,
            memory_bytes: run.memory_bytes,
            keep: None,
        };
        let cpu_limit = run.timeout;
        let result = self.step(step, cancel).await;
        self.outcome(result, Some(cpu_limit))
    }

    fn outcome(&self, result: StepResult, cpu_limit: Option<Duration>) -> Outcome {
        let (mut exit_code, mut signal, mut error) = (None, None, String::new());
        match result.report.as_ref().map(|r| &r.ending) {
            Some(Ending::Exited(code)) => exit_code = Some(*code),
            Some(Ending::Signaled(sig)) => signal = Some(*sig),
            Some(Ending::SetupFailed(why)) => error = format!("sandbox set-up: {why}"),
            None => {}
        }
        let cpu = result.usage.cpu.max(Duration::from_micros(
            result.report.as_ref().map_or(0, |r| r.cpu_micros),
        ));
        let over_cpu = cpu_limit.is_some_and(|limit| cpu >= limit) || signal == Some(libc::SIGXCPU);
        let status = if result.cancelled {
            Status::Cancelled
        } else if result.timed_out || over_cpu {
            Status::Timeout
        } else if result.usage.oom_killed {
            Status::MemoryExceeded
        } else if exit_code == Some(0) {
            Status::Succeeded
        } else {
            Status::Failed
        };
        if error.is_empty() {
            error = match status {
                Status::Cancelled => "cancelled".into(),
                Status::Timeout if result.timed_out => {
                    "the run took longer than its time limit".into()
                }
                Status::Timeout => "the run used more CPU time than its time limit".into(),
                Status::MemoryExceeded => {
                    "the run used more memory than its limit and was killed".into()
                }
                Status::Failed if result.report.is_none() => {
                    "the sandbox ended without saying how the run went".into()
                }
                _ => String::new(),
            };
        }
        let peak = result
            .usage
            .peak_memory_bytes
            .max(result.report.as_ref().map_or(0, |r| r.max_rss_bytes));
        Outcome {
            status,
            stdout: result.stdout,
            stderr: result.stderr,
            stdout_truncated: result.stdout_truncated,
            stderr_truncated: result.stderr_truncated,
            exit_code,
            signal,
            wall: result.wall,
            cpu,
            peak_memory_bytes: peak,
            error,
        }
    }

    async fn step(&self, step: Step<'_>, cancel: &CancellationToken) -> StepResult {
        let failed = |why: String| StepResult {
            report: Some(Report {
                ending: Ending::SetupFailed(why),
                cpu_micros: 0,
                max_rss_bytes: 0,
            }),
            stdout: Vec::new(),
            stderr: Vec::new(),
            stdout_truncated: false,
            stderr_truncated: false,
            timed_out: false,
            cancelled: false,
            wall: Duration::ZERO,
            usage: cgroup::Usage::default(),
            keep_error: None,
        };
        let limits = Limits {
            memory_bytes: step.memory_bytes,
            pids: self.config.pids,
            cpu_millis: self.config.cpu_millis,
        };
        let phase = Instant::now();
        // A helper already in a cgroup of its own, its sandbox built,
        // waiting for its spec.
        let mut warm = match self.take_warm(limits).await {
            Ok(warm) => warm,
            Err(err) => return failed(err),
        };
        let spec = Spec {
            argv: step.argv.iter().map(|a| (*a).to_owned()).collect(),
            env: step.env,
            uid: self.config.uid,
            gid: self.config.gid,
            file_size_bytes: self.config.scratch_bytes,
            open_files: 256,
            cpu_seconds: step.wall.as_secs().max(1) + 1,
        };
        // The spec first: the helper reads it and makes the program's
        // process ready (its limits, identity, signals, descriptors) while
        // the run's files are written here; the process starts at the go
        // byte that comes with the program's input.
        let mut stdin = warm.helper.stdin.take().expect("piped");
        let framed = spec.encode();
        let sent = match stdin.try_write(&framed) {
            Ok(n) => n,
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => 0,
            // The helper is gone; its missing report will say so.
            Err(_) => framed.len(),
        };
        if sent < framed.len() {
            let _ = stdin.write_all(&framed[sent..]).await;
        }
        if let Err(err) = self.fill(warm.work.as_fd(), &step.files) {
            self.retire(warm);
            return failed(format!("the run's files: {err}"));
        }
        tracing::debug!(took = ?phase.elapsed(), "sandbox: helper and files");
        let started = Instant::now();
        let mut input = Vec::with_capacity(1 + step.stdin.len());
        input.push(helper::GO);
        input.extend_from_slice(step.stdin);
        // What the pipe takes now is written here (usually all of it: no
        // hand-off to another task, and stdin closes at once); the rest by
        // a task of its own, which closes stdin when done.
        let written = match stdin.try_write(&input) {
            Ok(n) => n,
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => 0,
            Err(_) => input.len(),
        };
        let feeder = (written < input.len()).then(|| {
            tokio::spawn(async move {
                let _ = stdin.write_all(&input[written..]).await;
            })
        });
        let cap = self.config.max_output_bytes;
        // Read here, not in tasks of their own: no hand-off between threads
        // when the run ends.
        let out = read_capped(warm.helper.stdout.take().expect("piped"), cap);
        let err = read_capped(warm.helper.stderr.take().expect("piped"), cap);
        let report = read_report(warm.helper.report.take().expect("piped"));
        // The report and the end of both outputs are the end of the run.
        // The helper (its pid namespace's init) writes the report when the
        // program ends and then lets go of its own copies of the outputs;
        // their last copies close when the program and what it started are
        // gone, at the latest when the helper kills what is left right after
        // the report (its own exit, which tears the namespaces down, comes
        // when the clean-up kills it).
        let outputs = async { tokio::join!(out, err, report) };
        tokio::pin!(outputs);
        // With no helper left waiting, the next one starts now; otherwise
        // after this run, whose processes then have the machine (a helper
        // joining its cgroups holds up every fork and exit on the host).
        let refilled = self.pool_is_empty();
        if refilled {
            self.refill_later();
        }
        let (timed_out, cancelled, ended) = tokio::select! {
            ended = &mut outputs => (false, false, Some(ended)),
            _ = tokio::time::sleep(step.wall) => (true, false, None),
            _ = cancel.cancelled() => (false, true, None),
        };
        let ((stdout, stdout_truncated), (stderr, stderr_truncated), report) = match ended {
            Some(ended) => ended,
            None => {
                // The helper itself first (it may not have joined its
                // cgroup yet, if it was started for this run), then the
                // group, which holds everything the helper started, however
                // it forked.
                warm.helper.kill();
                warm.group.kill_all();
                // Bounded: a descriptor of the outputs can outlive every
                // process (sent into a unix socket and left in flight there,
                // it is freed only by the kernel's collector).
                tokio::time::timeout(AFTER_KILL, &mut outputs)
                    .await
                    .unwrap_or(((Vec::new(), false), (Vec::new(), false), None))
            }
        };
        let wall = started.elapsed();
        tracing::debug!(took = ?wall, "sandbox: helper ran");
        if let Some(feeder) = feeder {
            feeder.abort();
        }
        let usage = warm.group.usage();
        let succeeded = !timed_out
            && !cancelled
            && matches!(report.as_ref().map(|r| &r.ending), Some(Ending::Exited(0)));
        let keep_error = match step.keep {
            Some((artifacts, cache)) if succeeded => {
                keep(warm.work.as_fd(), artifacts, cache).err()
            }
            _ => None,
        };
        // The next helper once this run's cgroup is read (a helper's start
        // makes a cgroup and moves into it, which holds the host's cgroup
        // locks for a moment), then this one's clean-up: one task, one
        // thread woken.
        let shared = self.shared.clone();
        self.retiring.spawn_blocking(move || {
            if !refilled {
                shared.refill_unless_under_way();
            }
            drop(warm);
        });
        StepResult {
            report,
            stdout,
            stderr,
            stdout_truncated,
            stderr_truncated,
            timed_out,
            cancelled,
            wall,
            usage,
            keep_error,
        }
    }

    /// Puts a step's files in its `/work` (the tmpfs `work`), owned by the
    /// sandbox user.
    fn fill(&self, work: BorrowedFd<'_>, files: &[(&str, Content<'_>)]) -> io::Result<()> {
        for (name, content) in files {
            let file = match content {
                Content::Text(text) => {
                    let mut file = create_in(work, name, 0o644)?;
                    io::Write::write_all(&mut file, text.as_bytes())?;
                    file
                }
                Content::Copy(source) => copy_plain(std::fs::File::open(source)?, |mode| {
                    create_in(work, name, mode)
                })?,
            };
            std::os::unix::fs::fchown(&file, Some(self.config.uid), Some(self.config.gid))?;
        }
        Ok(())
    }

    /// Cleans up after a helper (processes, tmpfs, cgroup) off
    /// the request's path; [`Sandbox::settle`] waits for it.
    fn retire(&self, warm: Warm) {
        self.retiring.spawn_blocking(move || drop(warm));
    }
}

/// Why a helper did not start.
enum Start {
    Failed(String),
    /// The zygote took the request and was lost: what the request carried
    /// may still be used by a helper it forks.
    Lost(String),
}

/// How long a run's outputs may take to end once everything of the run
/// has been killed.
const AFTER_KILL: Duration = Duration::from_secs(2);

/// A new file `name` in the directory `dir` with `mode`, nothing written
/// through a link.
fn create_in(dir: BorrowedFd<'_>, name: &str, mode: u32) -> io::Result<std::fs::File> {
    use rustix::fs::{Mode, OFlags};
    let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    Ok(rustix::fs::openat(dir, name, flags, Mode::from_raw_mode(mode))?.into())
}

/// A new file at `path` with `mode`, nothing written through a link.
fn create_at(path: &Path, mode: u32) -> io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
}

/// Copies `source`, an ordinary file, into the new file `create` makes
/// with its permission bits less setuid, setgid, sticky and write for
/// group and others (the cache is root's).
fn copy_plain(
    mut source: std::fs::File,
    create: impl FnOnce(u32) -> io::Result<std::fs::File>,
) -> io::Result<std::fs::File> {
    use std::os::unix::fs::MetadataExt;
    let meta = source.metadata()?;
    if !meta.is_file() {
        return Err(io::Error::other("not an ordinary file"));
    }
    let mut file = create(meta.mode() & 0o755)?;
    io::copy(&mut source, &mut file)?;
    Ok(file)
}

/// Copies `artifacts` from `work` (a run's `/work`, which its program
/// could write to: no link followed, no FIFO waited on) into the cache
/// entry `cache` (whole or not at all; no setuid or setgid bit a compile
/// step left comes along).
fn keep(work: BorrowedFd<'_>, artifacts: &[&str], cache: &Path) -> io::Result<()> {
    use rustix::fs::{Mode, OFlags};
    let partial = cache.with_extension(format!("partial-{}", next_id()));
    let saved = std::fs::create_dir_all(&partial).and_then(|_| {
        for artifact in artifacts {
            let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
            let source = rustix::fs::openat(work, *artifact, flags, Mode::empty())?;
            copy_plain(source.into(), |mode| {
                create_at(&partial.join(artifact), mode)
            })?;
        }
        match std::fs::rename(&partial, cache) {
            // Another run of the same code kept it first.
            Err(_) if artifacts.iter().all(|a| cache.join(a).is_file()) => Ok(()),
            other => other,
        }
    });
    if saved.is_err() || partial.exists() {
        let _ = std::fs::remove_dir_all(&partial);
    }
    saved
}

/// A helper started ahead, already in its own cgroup, its sandbox built
/// around its own scratch tmpfs, waiting on stdin for a run. Dropping it
/// kills what it runs and removes its cgroup; its mounts go with its
/// namespaces and the descriptor below.
struct Warm {
    helper: zygote::Helper,
    /// The run's `/work`: a tmpfs mounted nowhere on the host (the helper
    /// moved it to `/work` in its own namespace); the run's files go in
    /// through this descriptor. Freed before the cgroup its pages are
    /// charged to is removed (fields drop in order).
    work: OwnedFd,
    group: Cgroup,
    /// Back to the pool once everything above is gone; kept out of it
    /// when a process of the run outlived every kill.
    network: Option<netns::Lease>,
}

impl Drop for Warm {
    fn drop(&mut self) {
        self.helper.kill();
        // Its end (one wake-up) is the end of its pid namespace, and so of
        // every process the run started: the cgroup is then empty, and its
        // kill below a check that finds nothing, with no polling.
        let ended = self.helper.wait_ended(HELPER_END_WAIT);
        self.group.kill_all();
        if !ended && !self.group.pids().is_empty() {
            // Its sockets could still be open there: the namespace serves
            // no other run.
            tracing::warn!("a sandbox run's processes outlived every kill; its network namespace is not reused");
            std::mem::forget(self.network.take());
        }
    }
}

/// How long a killed helper's end is waited for before its cgroup is
/// killed anyway.
const HELPER_END_WAIT: Duration = Duration::from_secs(2);

/// A size- and inode-limited tmpfs owned by `uid`, mounted nowhere (the
/// new mount API): a run's `/work`.
fn scratch(bytes: u64, uid: u32, gid: u32) -> io::Result<OwnedFd> {
    use rustix::mount::{
        fsconfig_create, fsconfig_set_string, fsmount, fsopen, FsMountFlags, FsOpenFlags,
        MountAttrFlags,
    };
    let fs = fsopen("tmpfs", FsOpenFlags::FSOPEN_CLOEXEC)?;
    for (key, value) in [
        ("size", bytes.to_string()),
        ("nr_inodes", "4096".into()),
        ("mode", "0755".into()),
        ("uid", uid.to_string()),
        ("gid", gid.to_string()),
    ] {
        fsconfig_set_string(fs.as_fd(), key, value)?;
    }
    fsconfig_create(fs.as_fd())?;
    Ok(fsmount(
        fs.as_fd(),
        FsMountFlags::FSMOUNT_CLOEXEC,
        MountAttrFlags::MOUNT_ATTR_NOSUID | MountAttrFlags::MOUNT_ATTR_NODEV,
    )?)
}

impl Shared {
    /// Starts a helper in a fresh cgroup with a fresh scratch tmpfs; it
    /// builds its sandbox and waits for its spec.
    fn start_warm(&self, limits: Limits) -> Result<Warm, String> {
        match self.try_start_warm(limits) {
            Ok(warm) => Ok(warm),
            Err(Start::Failed(why)) => Err(why),
            // Once more, with a new cgroup, tmpfs and network namespace.
            Err(Start::Lost(why)) => {
                tracing::warn!(%why, "asking a new sandbox zygote");
                self.try_start_warm(limits).map_err(|e| match e {
                    Start::Failed(why) | Start::Lost(why) => why,
                })
            }
        }
    }

    /// [`Shared::start_warm`], once.
    fn try_start_warm(&self, limits: Limits) -> Result<Warm, Start> {
        let name = format!("{}-{}", self.prefix, next_id());
        let group = Cgroup::create(&self.hierarchy, &name, limits, &self.spares)
            .map_err(|e| Start::Failed(format!("cgroup: {e}")))?;
        let work = scratch(self.config.scratch_bytes, self.config.uid, self.config.gid)
            .map_err(|e| Start::Failed(format!("scratch tmpfs: {e}")))?;
        let procs = group
            .procs_files()
            .map_err(|e| Start::Failed(format!("cgroup: {e}")))?;
        let network = self
            .networks
            .lease()
            .map_err(|e| Start::Failed(format!("network namespace: {e}")))?;
        let request = zygote::Request {
            netns: network.fd(),
            work: work.as_fd(),
            procs: &procs,
        };
        match self.zygote.helper(&request) {
            Ok(helper) => Ok(Warm {
                helper,
                work,
                group,
                network: Some(network),
            }),
            Err(err) if err.kind() == io::ErrorKind::ConnectionAborted => {
                // A helper the lost zygote may still fork enters this
                // namespace: it serves no other run.
                std::mem::forget(network);
                Err(Start::Lost(format!("starting a helper: {err}")))
            }
            Err(err) => Err(Start::Failed(format!("starting a helper: {err}"))),
        }
    }
}

impl Sandbox {
    /// A waiting helper with `limits` set, from the pool when one is there.
    async fn take_warm(&self, limits: Limits) -> Result<Warm, String> {
        self.latest_memory_bytes
            .store(limits.memory_bytes, Ordering::Relaxed);
        loop {
            // The longest waiting first: the most likely to have its
            // sandbox built already.
            let pooled = self
                .pool
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .pop_front();
            let Some(mut warm) = pooled else {
                tracing::debug!("sandbox: no waiting helper");
                // Mounts, a cgroup and the zygote's answer: blocking work.
                let shared = self.shared.clone();
                return tokio::task::spawn_blocking(move || shared.start_warm(limits))
                    .await
                    .unwrap_or_else(|e| Err(format!("starting a helper: {e}")));
            };
            if warm.helper.is_running() {
                if let Err(err) = warm.group.set_limits(limits) {
                    self.retire(warm);
                    return Err(format!("cgroup: {err}"));
                }
                return Ok(warm);
            }
            self.retire(warm);
        }
    }

    fn pool_is_empty(&self) -> bool {
        self.pool
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_empty()
    }

    /// Waits (up to 10 s) until no clean-up or refill is under way in the
    /// background, leaving the waiting helpers be.
    pub async fn quiet(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.retiring.is_empty() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
    }

    /// Tops the pool of waiting helpers up, in the background.
    fn refill_later(&self) {
        let shared = self.shared.clone();
        self.retiring
            .spawn_blocking(move || shared.refill_unless_under_way());
    }
}

impl Shared {
    fn release_waiting(&self) {
        let waiting = std::mem::take(&mut *self.pool.lock().unwrap_or_else(|p| p.into_inner()));
        drop(waiting);
    }

    /// Tops the pool up, unless another thread is doing so.
    fn refill_unless_under_way(&self) {
        if !self.refilling.swap(true, Ordering::AcqRel) {
            self.refill();
            self.refilling.store(false, Ordering::Release);
        }
    }

    fn refill(&self) {
        while self.pool.lock().unwrap_or_else(|p| p.into_inner()).len() < self.config.warm_helpers {
            match self.start_warm(Limits {
                memory_bytes: self.latest_memory_bytes.load(Ordering::Relaxed),
                pids: self.config.pids,
                cpu_millis: self.config.cpu_millis,
            }) {
                Ok(next) => self
                    .pool
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push_back(next),
                Err(err) => {
                    tracing::warn!(%err, "starting a waiting sandbox helper");
                    break;
                }
            }
        }
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        self.release_waiting();
        self.spares.release();
    }
}

/// The helper's report: one line of JSON, read up to its newline (the
/// pipe's end comes only with the helper's exit, after the answer). `None`
/// when the pipe ends first or the line is not a report.
async fn read_report(mut pipe: impl AsyncRead + Unpin) -> Option<Report> {
    let mut line = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        let n = pipe.read(&mut buf).await.ok()?;
        if n == 0 {
            return None;
        }
        line.extend_from_slice(&buf[..n]);
        if let Some(end) = line.iter().position(|b| *b == b'\n') {
            return serde_json::from_slice(&line[..end]).ok();
        }
        if line.len() > helper::MAX_REPORT_BYTES {
            return None;
        }
    }
}

/// Reads all of `pipe`, keeping the first `cap` bytes.
async fn read_capped(mut pipe: impl AsyncRead + Unpin, cap: usize) -> (Vec<u8>, bool) {
    let mut kept = Vec::new();
    let mut truncated = false;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match pipe.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let room = cap.saturating_sub(kept.len());
                if n > room {
                    truncated = true;
                }
                kept.extend_from_slice(&buf[..n.min(room)]);
            }
        }
    }
    (kept, truncated)
}

/// The `/etc` files toolchains read, copied once into a template that
/// every run binds read-only as its `/etc` (one mount instead of one per
/// file), with a passwd and group of the sandbox's own.
const ETC_FILES: &[&str] = &[
    "alternatives",
    "ld.so.cache",
    "ld.so.conf",
    "ld.so.conf.d",
    "localtime",
    "nsswitch.conf",
    "java-17-openjdk",
    "ssl/certs",
];

/// Copies `source` (a file, a symlink or a directory tree) to `target`.
fn copy_tree(source: &Path, target: &Path) -> io::Result<()> {
    let meta = std::fs::symlink_metadata(source)?;
    if meta.file_type().is_symlink() {
        std::os::unix::fs::symlink(std::fs::read_link(source)?, target)
    } else if meta.is_dir() {
        std::fs::create_dir_all(target)?;
        for entry in std::fs::read_dir(source)? {
            let entry = entry?;
            copy_tree(&entry.path(), &target.join(entry.file_name()))?;
        }
        Ok(())
    } else {
        std::fs::copy(source, target).map(|_| ())
    }
}

/// Makes the `/etc` template in `dir` (anew, from the host's files).
fn make_etc(dir: &Path, uid: u32, gid: u32) -> io::Result<()> {
    if dir.exists() {
        std::fs::remove_dir_all(dir)?;
    }
    std::fs::create_dir_all(dir)?;
    for name in ETC_FILES {
        let source = Path::new("/etc").join(name);
        if source.exists() {
            let target = dir.join(name);
            if let Some(parent) = target.parent() {
                std::fs::create_dir_all(parent)?;
            }
            copy_tree(&source, &target)?;
        }
    }
    std::fs::write(
        dir.join("passwd"),
        format!(
            "root:x:0:0:root:/:/usr/sbin/nologin\nsandbox:x:{uid}:{gid}:sandbox:/work:/usr/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
        ),
    )?;
    std::fs::write(
        dir.join("group"),
        format!("root:x:0:\nsandbox:x:{gid}:\nnogroup:x:65534:\n"),
    )?;
    Ok(())
}

/// What the new root holds, read-only: the system's programs and
/// libraries, and the `/etc` template.
fn binds(etc: &Path) -> Vec<(PathBuf, PathBuf)> {
    let mut binds: Vec<(PathBuf, PathBuf)> = vec![
        (PathBuf::from("/usr"), PathBuf::from("/usr")),
        (etc.to_owned(), PathBuf::from("/etc")),
    ];
    // On hosts where /bin, /lib… are real directories rather than links into /usr.
    for dir in ["/bin", "/sbin", "/lib", "/lib64"] {
        let path = Path::new(dir);
        if path.is_dir() && !path.is_symlink() {
            binds.push((path.to_owned(), path.to_owned()));
        }
    }
    binds
}

/// `/bin` → `usr/bin` and friends, as the host has them.
fn symlinks() -> Vec<(PathBuf, PathBuf)> {
    ["/bin", "/sbin", "/lib", "/lib64"]
        .iter()
        .filter_map(|dir| {
            let target = std::fs::read_link(dir).ok()?;
            Some((PathBuf::from(dir), target))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// What a compile step left setuid reaches the cache as an ordinary
    /// file; a link or FIFO left in `/work` instead is not followed or
    /// waited on, and a link planted where a file is made is not written
    /// through.
    #[test]
    fn copies_drop_setuid_and_follow_no_links() {
        let dir = tempfile::tempdir().unwrap();
        let work = dir.path().join("work");
        let cache = dir.path().join("cache");
        std::fs::create_dir_all(&work).unwrap();
        let work_fd: OwnedFd = std::fs::File::open(&work).unwrap().into();
        std::fs::write(work.join("main"), b"program").unwrap();
        std::fs::set_permissions(work.join("main"), std::fs::Permissions::from_mode(0o6777))
            .unwrap();
        keep(work_fd.as_fd(), &["main"], &cache.join("entry")).unwrap();
        let kept = cache.join("entry/main");
        let mode = std::fs::metadata(&kept).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode & 0o7022, 0, "mode {mode:o}");
        assert_eq!(mode & 0o755, 0o755, "mode {mode:o}");
        assert_eq!(std::fs::read(&kept).unwrap(), b"program");

        let secret = dir.path().join("secret");
        std::fs::write(&secret, b"host file").unwrap();
        std::os::unix::fs::symlink(&secret, work.join("linked")).unwrap();
        assert!(keep(work_fd.as_fd(), &["linked"], &cache.join("linked")).is_err());
        assert!(!cache.join("linked").exists());
        nix::unistd::mkfifo(&work.join("fifo"), nix::sys::stat::Mode::S_IRWXU).unwrap();
        assert!(keep(work_fd.as_fd(), &["fifo"], &cache.join("fifo")).is_err());

        let elsewhere = dir.path().join("elsewhere");
        std::os::unix::fs::symlink(&elsewhere, work.join("planted")).unwrap();
        assert!(create_in(work_fd.as_fd(), "planted", 0o644).is_err());
        assert!(!elsewhere.exists());
    }
}
