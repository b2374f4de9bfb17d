//! The sandbox helper: a small, single-threaded process the zygote
//! ([`super::zygote`], the `berth-sandbox` program) forks ahead of every
//! run, into a new pid namespace whose init (pid 1) it is. The zygote lives
//! in a mount namespace of its own whose root is the sandbox's root, built
//! once ([`build_root`]): read-only binds of the system's programs and
//! libraries, the `/etc` template and a minimal `/dev`, and nothing of the
//! host besides. A helper joins the run's cgroup, enters the network
//! namespace the agent leased to the run (loopback only), makes new mount
//! (a copy of that small root), IPC and UTS namespaces, moves the run's
//! scratch tmpfs (made by the agent, mounted nowhere on the host) to
//! `/work`, mounts a size-limited `/tmp`, `/dev/shm` and a fresh `/proc`,
//! and installs the seccomp filter on itself — all before the run is
//! known. Then it waits for the run's [`Spec`] on stdin and starts the
//! program, which takes an unprivileged uid with no_new_privs and rlimits
//! before `execve`, and lets go of its own copy of stdin. When the
//! program exits, the helper writes the outcome to the report pipe (fd 3,
//! one line of JSON), lets go of its copies of stdout and stderr and
//! kills whatever is left in its pid namespace. The agent has the run's
//! end once it has the report and the end of both outputs: for a program
//! that leaves nothing behind, as soon as the helper has reported. The
//! helper then waits to be killed, so that the namespaces' teardown comes
//! after the answer.
//!
//! Runs in a fresh fork of the single-threaded zygote: plain blocking
//! calls, no threads.

use super::seccomp;
use nix::{
    mount::{mount, umount2, MntFlags, MsFlags},
    sched::{unshare, CloneFlags},
    sys::{
        resource::{setrlimit, Resource},
        wait::{waitpid, WaitPidFlag, WaitStatus},
    },
    unistd::{chdir, execve, pivot_root, sethostname, Gid, Pid, Uid},
};
use serde::{Deserialize, Serialize};
use std::{
    ffi::CString,
    io::{Read, Write},
    os::fd::{AsFd, FromRawFd, OwnedFd, RawFd},
    path::{Path, PathBuf},
};

/// What every run's root holds: set once per sandbox, read by the zygote,
/// which builds the root from it ([`build_root`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Layout {
    /// An empty directory the zygote mounts the root on (in its own mount
    /// namespace: on the host it stays empty).
    pub root: PathBuf,
    /// `(host path, path in the new root)` bound read-only.
    pub binds: Vec<(PathBuf, PathBuf)>,
    /// `(link, target)` symlinks made in the new root.
    pub symlinks: Vec<(PathBuf, PathBuf)>,
    /// Size of `/tmp` (and at most 8 MiB of `/dev/shm`).
    pub tmp_bytes: u64,
}

/// What the agent asks of one run, sent on stdin as a length (ten decimal
/// digits and a newline: one read takes it, and nothing of what follows)
/// and that many bytes of JSON; the rest of stdin is the program's.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Spec {
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    pub uid: u32,
    pub gid: u32,
    pub file_size_bytes: u64,
    pub open_files: u64,
    pub cpu_seconds: u64,
}

/// The byte the agent writes after the spec once the run's files are in
/// place: the program's process, ready by then, reads it and starts.
pub const GO: u8 = b'>';

/// The largest spec the helper reads.
pub const MAX_SPEC_BYTES: usize = 256 * 1024;

impl Spec {
    /// The bytes the helper reads from stdin before the program's input.
    pub fn encode(&self) -> Vec<u8> {
        let json = serde_json::to_vec(self).expect("a spec serializes");
        let mut framed = format!("{:010}\n", json.len()).into_bytes();
        framed.extend_from_slice(&json);
        framed
    }
}

/// How the program ended, as the helper saw it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub enum Ending {
    Exited(i32),
    Signaled(i32),
    /// The sandbox could not be set up or the program not started.
    SetupFailed(String),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    pub ending: Ending,
    /// CPU time of the whole tree as reaped (user + system).
    pub cpu_micros: u64,
    /// Peak resident size of the largest process, from rusage.
    pub max_rss_bytes: u64,
}

fn fail(what: &str, err: impl std::fmt::Display) -> String {
    format!("{what}: {err}")
}

/// The `berth-sandbox` program's `main`: `berth-sandbox LAYOUT_FILE`, the
/// zygote ([`super::zygote`]) serving the agent on stdin. Returns the exit
/// code.
pub fn main(args: &[String]) -> i32 {
    let [_, layout_path] = args else {
        eprintln!("usage: berth-sandbox LAYOUT_FILE (the agent's socket on stdin)");
        return 2;
    };
    let layout: Layout = match std::fs::read(layout_path)
        .map_err(|e| e.to_string())
        .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
    {
        Ok(layout) => layout,
        Err(err) => {
            eprintln!("berth-sandbox: layout {layout_path}: {err}");
            return 2;
        }
    };
    super::zygote::serve(&layout)
}

/// Where a helper finds what the zygote passed it: stdin, stdout and
/// stderr at 0, 1 and 2, then these.
pub const REPORT_FD: RawFd = 3;
/// The network namespace leased to the run.
pub const NETNS_FD: RawFd = 4;
/// The run's scratch tmpfs, mounted nowhere yet: the run's `/work`.
pub const WORK_FD: RawFd = 5;
/// The first of the cgroup files the helper writes itself into.
pub const PROCS_FD: RawFd = 6;

/// One helper, forked by the zygote (in the sandbox's root, see
/// [`build_root`]) into a new pid namespace (it is that namespace's init,
/// pid 1) with the descriptors above. It joins the run's cgroup through
/// the `procs` files from [`PROCS_FD`] on (the slow part on cgroup v1),
/// makes its mount, IPC and UTS namespaces and finishes the sandbox around
/// the run's scratch tmpfs in the network namespace the agent leased to
/// this run alone, then waits for the spec on stdin: the agent keeps
/// helpers waiting ready. `ignored` are the signals it ignores, which the
/// program's start resets. Returns the exit code; after a run it does not
/// return (see [`stay`]).
pub fn helper(layout: &Layout, procs: usize, ignored: &[i32]) -> i32 {
    // `0`: the writer itself (one thread: this process has no other).
    for fd in PROCS_FD..PROCS_FD + procs as RawFd {
        let file = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
        if let Err(err) = write_all(file, b"0") {
            eprintln!("berth-sandbox: joining the run's cgroup: {err}");
            return 2;
        }
    }
    // Nothing of the agent's beyond stdin, stdout, stderr, the report and
    // what the sandbox is made of.
    if unsafe { libc::close_range(WORK_FD as u32 + 1, u32::MAX, 0) } != 0 {
        return finish(Err(fail(
            "closing inherited descriptors",
            std::io::Error::last_os_error(),
        )));
    }
    match init(layout, ignored) {
        // Let go without a run: nothing to say.
        Ok(None) => 0,
        Ok(Some(report)) => {
            finish(Ok(report));
            // The outputs end once the program and what it started let go:
            // for a program that left nothing behind, now. Their end and
            // the report reach the agent from this process, one wake-up
            // from the CPU the program ended on, rather than one at the
            // program's exit and another at the report.
            unsafe { libc::close_range(1, 2, 0) };
            stay()
        }
        // The sandbox could not be made or the program not started: the
        // agent reads why.
        Err(err) => finish(Err(err)),
    }
}

/// `bytes` written to `fd` in one `write`.
fn write_all(fd: std::os::fd::BorrowedFd<'_>, bytes: &[u8]) -> std::io::Result<()> {
    loop {
        match nix::unistd::write(fd, bytes) {
            Ok(n) if n == bytes.len() => return Ok(()),
            Ok(_) => return Err(std::io::Error::other("written short")),
            Err(nix::errno::Errno::EINTR) => continue,
            Err(err) => return Err(err.into()),
        }
    }
}

/// After the report: whatever the program left running in the namespace
/// is killed (its copies of stdout and stderr close, the end of the run's
/// outputs), and this process, holding the namespaces, stays until the
/// agent, having answered, kills it as it cleans up (or the zygote, and
/// with it the agent, is gone): their teardown does not compete with the
/// answer for the cores.
fn stay() -> ! {
    // From the namespace's init: every other process in the namespace
    // (anywhere else, every process this one may signal: never that).
    if nix::unistd::getpid().as_raw() == 1 {
        unsafe { libc::kill(-1, libc::SIGKILL) };
    }
    loop {
        unsafe { libc::pause() };
    }
}

/// The longest report line (newline included): within `PIPE_BUF`, so
/// that it is written at once, whatever the agent is doing.
pub const MAX_REPORT_BYTES: usize = 4096;

/// Writes how the run ended, or why the sandbox could not be made, to the
/// report pipe; the exit code.
fn finish(outcome: Result<Report, String>) -> i32 {
    let report = outcome.unwrap_or_else(|err| Report {
        ending: Ending::SetupFailed(err),
        cpu_micros: 0,
        max_rss_bytes: 0,
    });
    let pipe = unsafe { std::os::fd::BorrowedFd::borrow_raw(REPORT_FD) };
    if write_report(pipe, &report).is_ok() {
        0
    } else {
        3
    }
}

/// `report` as one line on the report pipe (a setup error is cut until
/// the line, escapes included, fits [`MAX_REPORT_BYTES`]).
fn write_report(pipe: std::os::fd::BorrowedFd<'_>, report: &Report) -> std::io::Result<()> {
    let mut report = report.clone();
    let line = loop {
        let mut line = serde_json::to_vec(&report).map_err(std::io::Error::other)?;
        line.push(b'\n');
        match &mut report.ending {
            Ending::SetupFailed(why) if line.len() > MAX_REPORT_BYTES && !why.is_empty() => {
                let mut end = why.len() / 2;
                while !why.is_char_boundary(end) {
                    end -= 1;
                }
                why.truncate(end);
            }
            _ => break line,
        }
    };
    write_all(pipe, &line)
}

/// Fills `buf` from fd 0, which stays open (it is the program's stdin; a
/// pipe's read takes no more than asked). `Ok(false)` when stdin ended
/// before the first byte.
fn read_stdin_exact(buf: &mut [u8]) -> std::io::Result<bool> {
    let mut stdin =
        std::mem::ManuallyDrop::new(std::fs::File::from(unsafe { OwnedFd::from_raw_fd(0) }));
    let mut filled = 0;
    while filled < buf.len() {
        match stdin.read(&mut buf[filled..]) {
            Ok(0) if filled == 0 => return Ok(false),
            Ok(0) => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

/// The run's spec from stdin; `Ok(None)` when the agent closed stdin
/// instead (it let this waiting helper go).
fn read_spec() -> Result<Option<Spec>, String> {
    let mut header = [0u8; 11];
    if !read_stdin_exact(&mut header).map_err(|e| fail("reading the spec's length", e))? {
        return Ok(None);
    }
    let len: usize = std::str::from_utf8(&header)
        .ok()
        .and_then(|h| h.strip_suffix('\n')?.parse().ok())
        .ok_or_else(|| format!("spec length {:?}", String::from_utf8_lossy(&header)))?;
    if len > MAX_SPEC_BYTES {
        return Err(format!("spec of {len} bytes (at most {MAX_SPEC_BYTES})"));
    }
    let mut json = vec![0u8; len];
    if !read_stdin_exact(&mut json).map_err(|e| fail("reading the spec", e))? && len > 0 {
        return Err("stdin ended before the spec".into());
    }
    serde_json::from_slice(&json)
        .map(Some)
        .map_err(|e| fail("spec", e))
}

fn c(s: &str) -> Result<CString, String> {
    CString::new(s).map_err(|_| format!("{s:?} contains a NUL byte"))
}

fn mkdir_p(path: &Path) -> Result<(), String> {
    std::fs::create_dir_all(path).map_err(|e| fail(&format!("mkdir {}", path.display()), e))
}

/// Binds `source` at `target` read-only (nosuid, nodev).
fn bind_ro(source: &Path, target: &Path) -> Result<(), String> {
    if source.is_dir() {
        mkdir_p(target)?;
    } else {
        if let Some(parent) = target.parent() {
            mkdir_p(parent)?;
        }
        std::fs::write(target, b"").map_err(|e| fail(&format!("touch {}", target.display()), e))?;
    }
    mount(
        Some(source),
        target,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(|e| fail(&format!("bind {}", source.display()), e))?;
    mount(
        None::<&str>,
        target,
        None::<&str>,
        MsFlags::MS_BIND
            | MsFlags::MS_REMOUNT
            | MsFlags::MS_RDONLY
            | MsFlags::MS_NOSUID
            | MsFlags::MS_NODEV,
        None::<&str>,
    )
    .map_err(|e| fail(&format!("read-only {}", source.display()), e))
}

/// Init of the new pid namespace (pid 1): builds the sandbox, waits for
/// the run, starts the program, reports how it ended.
fn init(layout: &Layout, ignored: &[i32]) -> Result<Option<Report>, String> {
    prepare(layout)?;
    // What every program's process gets, whatever the run: set on the
    // init, which the program's process copies.
    for (resource, value) in [
        (Resource::RLIMIT_CORE, 0),
        (Resource::RLIMIT_STACK, 8 << 20),
        (Resource::RLIMIT_MEMLOCK, 0),
        (Resource::RLIMIT_MSGQUEUE, 0),
    ] {
        setrlimit(resource, value, value).map_err(|e| fail(&format!("rlimit {resource:?}"), e))?;
    }
    nix::unistd::setgroups(&[]).map_err(|e| fail("setgroups", e))?;
    chdir("/work").map_err(|e| fail("chdir /work", e))?;
    // The program's stack until its `execve` (see below).
    let mut stack = vec![0u8; 256 * 1024];
    let Some(spec) = read_spec()? else {
        return Ok(None);
    };
    let argv: Vec<CString> = spec.argv.iter().map(|a| c(a)).collect::<Result<_, _>>()?;
    if argv.is_empty() {
        return Err("no program to run".into());
    }
    let env: Vec<CString> = spec
        .env
        .iter()
        .map(|(k, v)| c(&format!("{k}={v}")))
        .collect::<Result<_, _>>()?;
    // The program's process shares the init's memory until it executes
    // (vfork): no page tables copied for a process that is replaced at once.
    // Its limits, identity and descriptors are its own.
    let start = Box::new(|| {
        let err = exec_program(&spec, &argv, &env, ignored);
        let _ = writeln!(std::io::stderr(), "sandbox: {err}");
        unsafe { libc::_exit(127) }
    });
    let program = unsafe {
        nix::sched::clone(
            start,
            &mut stack,
            CloneFlags::CLONE_VM | CloneFlags::CLONE_VFORK,
            Some(libc::SIGCHLD),
        )
    }
    .map_err(|e| fail("starting the program", e))?;
    // The program has its copies now (or has written why it did not
    // start). This process keeps its copies of stdout and stderr until
    // the report is written (see [`helper`]).
    unsafe { libc::close(0) };
    // Reap everything; report when the program itself ends.
    let ending = loop {
        match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::__WALL)) {
            Ok(WaitStatus::Exited(pid, code)) if pid == program => break Ending::Exited(code),
            Ok(WaitStatus::Signaled(pid, signal, _)) if pid == program => {
                break Ending::Signaled(signal as i32)
            }
            Ok(_) | Err(nix::errno::Errno::EINTR) => continue,
            Err(err) => return Err(fail("waiting for the program", err)),
        }
    };
    let usage = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_CHILDREN)
        .map_err(|e| fail("rusage", e))?;
    let micros = |t: nix::sys::time::TimeVal| t.tv_sec() as u64 * 1_000_000 + t.tv_usec() as u64;
    Ok(Some(Report {
        ending,
        cpu_micros: micros(usage.user_time()) + micros(usage.system_time()),
        max_rss_bytes: usage.max_rss() as u64 * 1024,
    }))
}

/// The sandbox's root, built once by the zygote in a mount namespace of
/// its own, which it then lives in (every helper's mount namespace is a
/// copy of it): a small tmpfs, read-only, with the layout's binds and
/// symlinks, a minimal `/dev` and the mount points each run fills in. The
/// host's other mounts are out of reach, and no run copies them.
pub fn build_root(layout: &Layout) -> Result<(), String> {
    unshare(CloneFlags::CLONE_NEWNS).map_err(|e| fail("mount namespace", e))?;
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(|e| fail("private mounts", e))?;
    let root = &layout.root;
    mount(
        Some("tmpfs"),
        root,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("size=1m,mode=0755"),
    )
    .map_err(|e| fail("root tmpfs", e))?;
    let inside = |p: &Path| root.join(p.strip_prefix("/").unwrap_or(p));
    for (source, target) in &layout.binds {
        if source.exists() {
            bind_ro(source, &inside(target))?;
        }
    }
    for (link, target) in &layout.symlinks {
        std::os::unix::fs::symlink(target, inside(link))
            .map_err(|e| fail(&format!("symlink {}", link.display()), e))?;
    }
    for dir in ["work", "tmp", "proc", "dev/shm"] {
        mkdir_p(&root.join(dir))?;
    }
    // /dev: the harmless devices only, bound onto files of the root's own
    // tmpfs (read-only with it; a device stays writable on a read-only mount).
    let dev = root.join("dev");
    for name in ["null", "zero", "random", "urandom"] {
        let target = dev.join(name);
        std::fs::write(&target, b"").map_err(|e| fail("/dev node", e))?;
        mount(
            Some(Path::new("/dev").join(name).as_path()),
            &target,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(|e| fail(&format!("/dev/{name}"), e))?;
    }
    for (name, target) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        std::os::unix::fs::symlink(target, dev.join(name)).map_err(|e| fail("/dev link", e))?;
    }
    // The new root over the old one, then the old one (stacked on top,
    // where this process's directory is) detached: no directory for it.
    chdir(root).map_err(|e| fail("chdir to the new root", e))?;
    pivot_root(".", ".").map_err(|e| fail("pivot_root", e))?;
    umount2(".", MntFlags::MNT_DETACH).map_err(|e| fail("detach the old root", e))?;
    chdir("/").map_err(|e| fail("chdir /", e))?;
    // The root itself read-only now that it is built.
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        None::<&str>,
    )
    .map_err(|e| fail("read-only root", e))
}

/// Everything of a run's sandbox before the run is known: the run's
/// network namespace, new mount (a copy of the zygote's, the sandbox's
/// root), IPC and UTS namespaces, the run's scratch tmpfs at `/work`,
/// `/tmp`, `/dev/shm`, `/proc`, the hostname, and the seccomp filters (on
/// the init itself: the program inherits them).
fn prepare(layout: &Layout) -> Result<(), String> {
    let net = unsafe { OwnedFd::from_raw_fd(NETNS_FD) };
    nix::sched::setns(&net, CloneFlags::CLONE_NEWNET).map_err(|e| fail("network namespace", e))?;
    drop(net);
    // A cgroup namespace too: this process is in the run's cgroup by now,
    // so the program sees that cgroup as its root and nothing of the host's.
    unshare(
        CloneFlags::CLONE_NEWNS
            | CloneFlags::CLONE_NEWIPC
            | CloneFlags::CLONE_NEWUTS
            | CloneFlags::CLONE_NEWCGROUP,
    )
    .map_err(|e| fail("namespaces", e))?;
    // The agent's tmpfs for the run (it keeps a descriptor of its own, to
    // put the run's files in): mounted here alone, gone with this
    // namespace and that descriptor.
    let work = unsafe { OwnedFd::from_raw_fd(WORK_FD) };
    rustix::mount::move_mount(
        work.as_fd(),
        "",
        rustix::fs::CWD,
        "/work",
        rustix::mount::MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
    )
    .map_err(|e| fail("/work", e))?;
    drop(work);
    let tmp = format!("size={},nr_inodes=4096,mode=1777", layout.tmp_bytes);
    let shm = format!(
        "size={},nr_inodes=1024,mode=1777",
        layout.tmp_bytes.min(8 << 20)
    );
    let (plain, noexec) = (
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
    );
    for (fs, target, flags, options) in [
        ("tmpfs", "/tmp", plain, Some(tmp.as_str())),
        ("tmpfs", "/dev/shm", noexec, Some(shm.as_str())),
        ("proc", "/proc", noexec, None),
    ] {
        mount(Some(fs), target, Some(fs), flags, options).map_err(|e| fail(target, e))?;
    }
    let _ = sethostname("sandbox");
    let program = seccomp::filter().map_err(|e| fail("seccomp", e))?;
    seccompiler::apply_filter(&program).map_err(|e| fail("seccomp", e))
}

/// `struct sigaction` as the kernel takes it. The system call itself,
/// not libc's wrapper: libc refuses the signals it keeps for its own use
/// (32 and 33), which would then stay as they are.
#[repr(C)]
struct KernelSigaction {
    handler: usize,
    flags: u64,
    restorer: usize,
    mask: u64,
}

impl KernelSigaction {
    const DEFAULT: Self = Self {
        handler: libc::SIG_DFL,
        flags: 0,
        restorer: 0,
        mask: 0,
    };
}

/// `rt_sigaction(signal, new, old)`.
unsafe fn sigaction(
    signal: i32,
    new: Option<&KernelSigaction>,
    old: Option<&mut KernelSigaction>,
) -> i64 {
    libc::syscall(
        libc::SYS_rt_sigaction,
        signal,
        new.map_or(std::ptr::null(), |n| n as *const KernelSigaction),
        old.map_or(std::ptr::null_mut(), |o| o as *mut KernelSigaction),
        8,
    )
}

/// The signals this process ignores: found once by the zygote, whose forks
/// the helpers are, so that the program's start resets only those.
pub fn ignored_signals() -> Vec<i32> {
    (1..=64)
        .filter(|signal| {
            let mut old = KernelSigaction::DEFAULT;
            unsafe { sigaction(*signal, None, Some(&mut old)) == 0 && old.handler == libc::SIG_IGN }
        })
        .collect()
}

/// In the program's process (in `/work`, the init's directory): limits
/// and identity, then the program.
fn exec_program(spec: &Spec, argv: &[CString], env: &[CString], ignored: &[i32]) -> String {
    // The rest were set on the init, before the run was known.
    let limits = [
        (Resource::RLIMIT_FSIZE, spec.file_size_bytes),
        (Resource::RLIMIT_NOFILE, spec.open_files),
        (Resource::RLIMIT_CPU, spec.cpu_seconds),
    ];
    for (resource, value) in limits {
        if let Err(err) = setrlimit(resource, value, value) {
            return fail(&format!("rlimit {resource:?}"), err);
        }
    }
    let (uid, gid) = (Uid::from_raw(spec.uid), Gid::from_raw(spec.gid));
    if let Err(err) = nix::unistd::setresgid(gid, gid, gid) {
        return fail("setresgid", err);
    }
    if let Err(err) = nix::unistd::setresuid(uid, uid, uid) {
        return fail("setresuid", err);
    }
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return fail("no_new_privs", std::io::Error::last_os_error());
    }
    // Every signal at its default and none blocked: an ignored signal
    // (the Rust runtime ignores SIGPIPE) would outlive the `execve`
    // (handled ones are reset by it).
    unsafe {
        for signal in ignored {
            sigaction(*signal, Some(&KernelSigaction::DEFAULT), None);
        }
        let mut none: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut none);
        libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
        if libc::close_range(3, u32::MAX, 0) != 0 {
            return fail("closing descriptors", std::io::Error::last_os_error());
        }
    }
    // Everything above overlapped the writing of the run's files; the go
    // byte says they are in place. The program's input follows it.
    let mut go = [0u8; 1];
    loop {
        let n = unsafe { libc::read(0, go.as_mut_ptr().cast(), 1) };
        if n == 1 && go[0] == GO {
            break;
        }
        if n < 0 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
            continue;
        }
        return "the run's files never came (stdin ended before the go byte)".into();
    }
    let err = exec_when_unwritten(&argv[0], argv, env);
    fail(&format!("exec {:?}", argv[0]), err)
}

/// Longest the program's start waits for its file to be closed by writers.
const TEXT_BUSY_WAIT: std::time::Duration = std::time::Duration::from_millis(500);

/// `execve`, waiting out `ETXTBSY`: the agent writes a cached binary into
/// `/work` while its other threads start processes, and a process it
/// starts holds a copy of that write descriptor for the moment until its
/// own `execve`. Returns only on failure.
fn exec_when_unwritten(path: &CString, argv: &[CString], env: &[CString]) -> nix::errno::Errno {
    let started = std::time::Instant::now();
    loop {
        match execve(path, argv, env) {
            Ok(never) => match never {},
            Err(nix::errno::Errno::ETXTBSY) if started.elapsed() < TEXT_BUSY_WAIT => {
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            Err(err) => return err,
        }
    }
}

/// Brings `lo` up in the calling thread's network namespace (a new one:
/// nothing else exists there).
pub(crate) fn loopback_up() {
    unsafe {
        let sock = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if sock < 0 {
            return;
        }
        let mut req: libc::ifreq = std::mem::zeroed();
        for (i, b) in b"lo\0".iter().enumerate() {
            req.ifr_name[i] = *b as libc::c_char;
        }
        if libc::ioctl(sock, libc::SIOCGIFFLAGS, &mut req) == 0 {
            req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
            libc::ioctl(sock, libc::SIOCSIFFLAGS, &req);
        }
        libc::close(sock);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::unistd::{fork, ForkResult};
    use std::os::{fd::AsRawFd, unix::ffi::OsStrExt};

    /// A long setup error, escapes and all, is cut to fit one report line.
    #[test]
    fn a_long_setup_error_fits_one_report_line() {
        use std::os::fd::AsFd;
        let (read, write) = nix::unistd::pipe().unwrap();
        // Control characters take six bytes each as JSON.
        let why = "\u{1}".repeat(3 * MAX_REPORT_BYTES);
        let report = Report {
            ending: Ending::SetupFailed(why),
            cpu_micros: 0,
            max_rss_bytes: 0,
        };
        write_report(write.as_fd(), &report).unwrap();
        drop(write);
        let mut line = Vec::new();
        std::fs::File::from(read).read_to_end(&mut line).unwrap();
        assert!(line.len() <= MAX_REPORT_BYTES, "{} bytes", line.len());
        assert_eq!(line.last(), Some(&b'\n'));
        let report: Report = serde_json::from_slice(&line[..line.len() - 1]).unwrap();
        assert!(matches!(report.ending, Ending::SetupFailed(why) if !why.is_empty()));
    }

    /// A program whose file a writer lets go of a moment later still starts.
    #[test]
    fn the_program_starts_once_a_writer_lets_go_of_its_file() {
        let dir = tempfile::tempdir().unwrap();
        let program = dir.path().join("true");
        std::fs::copy("/bin/true", &program).unwrap();
        let writer = std::fs::OpenOptions::new()
            .append(true)
            .open(&program)
            .unwrap();
        let path = CString::new(program.as_os_str().as_bytes()).unwrap();
        let argv = [path.clone()];
        let held = writer.as_raw_fd();
        match unsafe { fork() }.unwrap() {
            ForkResult::Child => {
                // Only the parent's descriptor keeps the file open for writing.
                unsafe { libc::close(held) };
                let _ = exec_when_unwritten(&path, &argv, &[]);
                unsafe { libc::_exit(99) }
            }
            ForkResult::Parent { child } => {
                std::thread::sleep(std::time::Duration::from_millis(50));
                drop(writer);
                let status = waitpid(child, None).unwrap();
                assert_eq!(status, WaitStatus::Exited(child, 0));
            }
        }
    }
}
