//! The sandbox helper: a small, single-threaded process (`berth-sandbox`)
//! the agent starts for every run. It joins the run's cgroup, makes a new
//! pid namespace and forks its init; the init makes new mount, network,
//! IPC and UTS namespaces, builds a root of read-only binds, a scratch
//! `/work`, a size-limited `/tmp`, a minimal `/dev` and a fresh `/proc`,
//! pivots into it and forks the program, which drops to an unprivileged
//! uid with no_new_privs, rlimits and a seccomp filter before `execve`.
//! When the program exits, the init exits and the kernel kills whatever is
//! left in the namespace. The helper writes the outcome to a result file.
//!
//! Runs from `main` of a fresh process: plain blocking calls, no threads.

use super::seccomp;
use nix::{
    mount::{mount, umount2, MntFlags, MsFlags},
    sched::{unshare, CloneFlags},
    sys::{
        resource::{setrlimit, Resource},
        wait::{waitpid, WaitPidFlag, WaitStatus},
    },
    unistd::{chdir, execve, fork, pivot_root, sethostname, ForkResult, Gid, Pid, Uid},
};
use serde::{Deserialize, Serialize};
use std::{
    ffi::CString,
    io::{Read, Write},
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    path::{Path, PathBuf},
};

/// What the agent asks of one run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Spec {
    /// An empty directory the new root is built on.
    pub root: PathBuf,
    /// The run's scratch directory (a size-limited tmpfs the agent mounted).
    pub work: PathBuf,
    /// `(host path, path in the new root)` bound read-only.
    pub binds: Vec<(PathBuf, PathBuf)>,
    /// `(link, target)` symlinks made in the new root.
    pub symlinks: Vec<(PathBuf, PathBuf)>,
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    pub uid: u32,
    pub gid: u32,
    pub tmp_bytes: u64,
    pub file_size_bytes: u64,
    pub open_files: u64,
    pub cpu_seconds: u64,
    /// Where the helper writes the [`Report`].
    pub result: PathBuf,
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

/// The helper's `main`: `berth-sandbox CGROUP_PROCS_FILE...`. It joins
/// the cgroup (the slow part on cgroup v1, done before it is needed: the
/// agent keeps helpers waiting here), then reads the spec file's path as
/// one line from stdin, whose remainder is the program's stdin. Returns
/// the exit code.
pub fn main(args: &[String]) -> i32 {
    let pid = std::process::id().to_string();
    for procs in &args[1..] {
        if let Err(err) = std::fs::write(procs, &pid) {
            eprintln!("berth-sandbox: joining {procs}: {err}");
            return 2;
        }
    }
    let Some(spec_path) = read_line_unbuffered() else {
        // The agent let this waiting helper go.
        return 0;
    };
    let spec: Spec = match std::fs::read(&spec_path)
        .map_err(|e| e.to_string())
        .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
    {
        Ok(spec) => spec,
        Err(err) => {
            eprintln!("berth-sandbox: spec {spec_path}: {err}");
            return 2;
        }
    };
    let ending = match outer(&spec) {
        Ok(report) => report,
        Err(err) => Report {
            ending: Ending::SetupFailed(err),
            cpu_micros: 0,
            max_rss_bytes: 0,
        },
    };
    match serde_json::to_vec(&ending).map(|json| std::fs::write(&spec.result, json)) {
        Ok(Ok(())) => 0,
        _ => 3,
    }
}

/// One line from fd 0, a byte at a time so that nothing after it is taken
/// from the program's stdin.
fn read_line_unbuffered() -> Option<String> {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        match nix::unistd::read(std::io::stdin(), &mut byte) {
            Ok(0) => return None,
            Ok(_) if byte[0] == b'\n' => break,
            Ok(_) if line.len() < 4096 => line.push(byte[0]),
            Ok(_) => return None,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => return None,
        }
    }
    String::from_utf8(line).ok()
}

/// The helper itself: joins the cgroup, makes the pid namespace, forks
/// the init and waits for it.
fn outer(spec: &Spec) -> Result<Report, String> {
    // Nothing of the agent's beyond stdin, stdout and stderr.
    unsafe { libc::close_range(3, u32::MAX, 0) };
    unshare(CloneFlags::CLONE_NEWPID).map_err(|e| fail("pid namespace", e))?;
    let (status_read, status_write) = nix::unistd::pipe().map_err(|e| fail("pipe", e))?;
    match unsafe { fork() }.map_err(|e| fail("fork", e))? {
        ForkResult::Child => {
            drop(status_read);
            let code = match init(spec, status_write.as_raw_fd()) {
                Ok(()) => 0,
                Err(err) => {
                    let mut pipe = std::fs::File::from(status_write);
                    let _ = write!(pipe, "setup {err}");
                    1
                }
            };
            unsafe { libc::_exit(code) }
        }
        ForkResult::Parent { child } => {
            drop(status_write);
            while let Err(nix::errno::Errno::EINTR) = waitpid(child, None) {}
            let mut text = String::new();
            let _ = std::fs::File::from(status_read).read_to_string(&mut text);
            let ending = parse_status(&text);
            let usage =
                nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_CHILDREN)
                    .map_err(|e| fail("rusage", e))?;
            let micros =
                |t: nix::sys::time::TimeVal| t.tv_sec() as u64 * 1_000_000 + t.tv_usec() as u64;
            Ok(Report {
                ending,
                cpu_micros: micros(usage.user_time()) + micros(usage.system_time()),
                max_rss_bytes: usage.max_rss() as u64 * 1024,
            })
        }
    }
}

fn parse_status(text: &str) -> Ending {
    let mut words = text.splitn(2, ' ');
    match (words.next(), words.next()) {
        (Some("exit"), Some(n)) => Ending::Exited(n.trim().parse().unwrap_or(-1)),
        (Some("signal"), Some(n)) => Ending::Signaled(n.trim().parse().unwrap_or(0)),
        (Some("setup"), Some(err)) => Ending::SetupFailed(err.to_owned()),
        // Killed before it could say (a timeout or the agent's kill).
        _ => Ending::Signaled(libc::SIGKILL),
    }
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

/// Init of the new pid namespace (pid 1): builds the root, starts the
/// program, reports how it ended.
fn init(spec: &Spec, status_fd: i32) -> Result<(), String> {
    unshare(
        CloneFlags::CLONE_NEWNS
            | CloneFlags::CLONE_NEWNET
            | CloneFlags::CLONE_NEWIPC
            | CloneFlags::CLONE_NEWUTS,
    )
    .map_err(|e| fail("namespaces", e))?;
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(|e| fail("private mounts", e))?;
    let root = &spec.root;
    mount(
        Some("tmpfs"),
        root,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("size=1m,mode=0755"),
    )
    .map_err(|e| fail("root tmpfs", e))?;
    let inside = |p: &Path| root.join(p.strip_prefix("/").unwrap_or(p));
    for (source, target) in &spec.binds {
        if source.exists() {
            bind_ro(source, &inside(target))?;
        }
    }
    for (link, target) in &spec.symlinks {
        std::os::unix::fs::symlink(target, inside(link))
            .map_err(|e| fail(&format!("symlink {}", link.display()), e))?;
    }
    // The run's scratch space, writable.
    let work = root.join("work");
    mkdir_p(&work)?;
    mount(
        Some(&spec.work),
        &work,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(|e| fail("bind /work", e))?;
    let tmp = root.join("tmp");
    mkdir_p(&tmp)?;
    mount(
        Some("tmpfs"),
        &tmp,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some(format!("size={},nr_inodes=4096,mode=1777", spec.tmp_bytes).as_str()),
    )
    .map_err(|e| fail("/tmp", e))?;
    // /dev: the harmless devices only.
    let dev = root.join("dev");
    mkdir_p(&dev)?;
    mount(
        Some("tmpfs"),
        &dev,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("size=64k,mode=0755"),
    )
    .map_err(|e| fail("/dev", e))?;
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
    let shm = dev.join("shm");
    mkdir_p(&shm)?;
    mount(
        Some("tmpfs"),
        &shm,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some(
            format!(
                "size={},nr_inodes=1024,mode=1777",
                spec.tmp_bytes.min(8 << 20)
            )
            .as_str(),
        ),
    )
    .map_err(|e| fail("/dev/shm", e))?;
    for (name, target) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        std::os::unix::fs::symlink(target, dev.join(name)).map_err(|e| fail("/dev link", e))?;
    }
    let proc_dir = root.join("proc");
    mkdir_p(&proc_dir)?;
    mount(
        Some("proc"),
        &proc_dir,
        Some("proc"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        None::<&str>,
    )
    .map_err(|e| fail("/proc", e))?;
    let old = root.join(".old");
    mkdir_p(&old)?;
    pivot_root(root, &old).map_err(|e| fail("pivot_root", e))?;
    chdir("/").map_err(|e| fail("chdir /", e))?;
    umount2("/.old", MntFlags::MNT_DETACH).map_err(|e| fail("detach the old root", e))?;
    let _ = std::fs::remove_dir("/.old");
    // The root itself read-only now that it is built.
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        None::<&str>,
    )
    .map_err(|e| fail("read-only root", e))?;
    let _ = sethostname("sandbox");
    loopback_up();

    // Everything the program needs, made before the fork.
    let argv: Vec<CString> = spec.argv.iter().map(|a| c(a)).collect::<Result<_, _>>()?;
    let env: Vec<CString> = spec
        .env
        .iter()
        .map(|(k, v)| c(&format!("{k}={v}")))
        .collect::<Result<_, _>>()?;
    let filter = seccomp::filter().map_err(|e| fail("seccomp filter", e))?;
    let program = match unsafe { fork() }.map_err(|e| fail("fork", e))? {
        ForkResult::Child => {
            let err = exec_program(spec, &argv, &env, &filter);
            let _ = writeln!(std::io::stderr(), "sandbox: {err}");
            unsafe { libc::_exit(127) }
        }
        ForkResult::Parent { child } => child,
    };
    // Reap everything; report when the program itself ends.
    let status = loop {
        match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::__WALL)) {
            Ok(WaitStatus::Exited(pid, code)) if pid == program => break format!("exit {code}"),
            Ok(WaitStatus::Signaled(pid, signal, _)) if pid == program => {
                break format!("signal {}", signal as i32)
            }
            Ok(_) | Err(nix::errno::Errno::EINTR) => continue,
            Err(err) => break format!("setup waiting for the program: {err}"),
        }
    };
    let mut pipe = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(status_fd) });
    let _ = pipe.write_all(status.as_bytes());
    Ok(())
}

/// In the program's process: limits, identity, filter, then the program.
fn exec_program(
    spec: &Spec,
    argv: &[CString],
    env: &[CString],
    filters: &[seccompiler::BpfProgram],
) -> String {
    let limits = [
        (Resource::RLIMIT_FSIZE, spec.file_size_bytes),
        (Resource::RLIMIT_NOFILE, spec.open_files),
        (Resource::RLIMIT_CORE, 0),
        (Resource::RLIMIT_STACK, 8 << 20),
        (Resource::RLIMIT_CPU, spec.cpu_seconds),
        (Resource::RLIMIT_MEMLOCK, 0),
        (Resource::RLIMIT_MSGQUEUE, 0),
    ];
    for (resource, value) in limits {
        if let Err(err) = setrlimit(resource, value, value) {
            return fail(&format!("rlimit {resource:?}"), err);
        }
    }
    if let Err(err) = nix::unistd::setgroups(&[]) {
        return fail("setgroups", err);
    }
    let (uid, gid) = (Uid::from_raw(spec.uid), Gid::from_raw(spec.gid));
    if let Err(err) = nix::unistd::setresgid(gid, gid, gid) {
        return fail("setresgid", err);
    }
    if let Err(err) = nix::unistd::setresuid(uid, uid, uid) {
        return fail("setresuid", err);
    }
    if let Err(err) = chdir("/work") {
        return fail("chdir /work", err);
    }
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return fail("no_new_privs", std::io::Error::last_os_error());
    }
    unsafe { libc::close_range(3, u32::MAX, 0) };
    for filter in filters {
        if let Err(err) = seccompiler::apply_filter(filter) {
            return fail("seccomp", err);
        }
    }
    match execve(&argv[0], argv, env) {
        Ok(never) => match never {},
        Err(err) => fail(&format!("exec {:?}", argv[0]), err),
    }
}

/// Brings `lo` up in the new network namespace (nothing else exists there).
fn loopback_up() {
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
