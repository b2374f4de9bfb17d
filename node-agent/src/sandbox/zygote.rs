//! The zygote: one long-lived `berth-sandbox` process per sandbox that
//! forks every helper, so a run's helper costs a `fork` of a small,
//! single-threaded process instead of an `execve` of the helper binary and
//! its dynamic loading (under `berth up` the helper is the whole `berth`
//! program).
//!
//! At its start the zygote builds the sandbox's root in a mount namespace
//! of its own and moves into it ([`super::helper::build_root`]), so each
//! helper's mount namespace is a copy of that small tree, not of the
//! host's.
//!
//! The agent and its zygote share a `SOCK_SEQPACKET` socket pair (the
//! zygote's stdin). The agent sends one [`Request`] per helper with the
//! helper's stdin, stdout and stderr, the write end of its report pipe,
//! the run's network namespace, its scratch tmpfs and its cgroup files
//! attached (`SCM_RIGHTS`); the zygote forks the child into a new pid
//! namespace (as that namespace's init), and the child puts those at fds
//! 0 and up and becomes the helper ([`super::helper::helper`]), and the
//! zygote answers with a pidfd of the child, through which the agent sees
//! it end and kills it. The zygote ignores `SIGCHLD`, so the kernel reaps
//! its children.
//!
//! The zygote ends when the agent's end of the socket closes (the agent
//! exited or let the sandbox go); a zygote that died is started again at
//! the next helper.

use super::helper::Layout;
use nix::sys::socket::{
    recvmsg, sendmsg, socketpair, AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags,
    SockFlag, SockType,
};
use serde::{Deserialize, Serialize};
use std::{
    io::{self, IoSlice, IoSliceMut},
    os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::{Arc, Mutex},
};
use tokio::net::unix::pipe;

/// What one helper is made of besides the [`Layout`]: descriptors, sent
/// with the request.
pub struct Request<'a> {
    /// The network namespace leased to the run.
    pub netns: BorrowedFd<'a>,
    /// The run's scratch tmpfs, mounted nowhere ([`super::helper::WORK_FD`]).
    pub work: BorrowedFd<'a>,
    /// The cgroup files the helper writes itself into, open for writing.
    pub procs: &'a [std::fs::File],
}

/// The request's message: how many of its descriptors are cgroup files.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct Header {
    procs: usize,
}

/// The largest request or answer on the socket.
const MAX_MESSAGE_BYTES: usize = 64 * 1024;

/// How long the zygote may take to answer (a fork takes well under a
/// millisecond).
const ANSWER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The agent's side: starts the zygote when first needed (and again if it
/// died) and asks it for helpers.
pub struct Zygote {
    program: PathBuf,
    args: Vec<String>,
    running: Mutex<Option<Arc<Running>>>,
}

struct Running {
    process: std::process::Child,
    socket: OwnedFd,
}

impl Running {
    /// Whether the zygote has ended (it is left for `Drop` to reap).
    fn has_exited(&self) -> bool {
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        let flags = libc::WEXITED | libc::WNOHANG | libc::WNOWAIT;
        let waited = unsafe { libc::waitid(libc::P_PID, self.process.id(), &mut info, flags) };
        // With nothing to report, `WNOHANG` leaves the pid at 0.
        waited != 0 || unsafe { info.si_pid() } != 0
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

/// A helper the zygote forked; killed when dropped.
pub struct Helper {
    pidfd: OwnedFd,
    /// The zygote that forked it lives (its helpers die with it) until
    /// its last helper is done, even once another has taken its place.
    zygote: Arc<Running>,
    pub stdin: Option<pipe::Sender>,
    pub stdout: Option<pipe::Receiver>,
    pub stderr: Option<pipe::Receiver>,
    /// The helper's [`super::helper::Report`], one line of JSON.
    pub report: Option<pipe::Receiver>,
}

impl Helper {
    /// Whether the helper is still there: its pidfd not yet readable, and
    /// its zygote alive (a helper whose zygote died is being killed, and
    /// the kill takes a while to show: its namespaces are torn down first).
    pub fn is_running(&self) -> bool {
        let mut poll = libc::pollfd {
            fd: self.pidfd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        (unsafe { libc::poll(&mut poll, 1, 0) }) == 0 && !self.zygote.has_exited()
    }

    /// Waits up to `timeout` for the helper to have ended: its pidfd
    /// readable, which for the init of a pid namespace comes once every
    /// other process of the namespace is gone as well. Whether it ended.
    pub fn wait_ended(&self, timeout: std::time::Duration) -> bool {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let mut poll = libc::pollfd {
                fd: self.pidfd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            let millis = left.as_millis().min(i32::MAX as u128) as i32;
            match unsafe { libc::poll(&mut poll, 1, millis) } {
                1 => return true,
                -1 if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted => {}
                _ => return false,
            }
        }
    }

    /// SIGKILL, by pidfd: never another process that took the pid over.
    pub fn kill(&self) {
        unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.pidfd.as_raw_fd(),
                libc::SIGKILL,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        };
    }
}

impl Drop for Helper {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Why asking the zygote failed.
enum Failure {
    /// The zygote is gone or talks nonsense: start a new one.
    Zygote(io::Error),
    /// Likewise, but after it was sent the request: it may still fork a
    /// helper with the request's descriptors (its cgroup, tmpfs, network
    /// namespace), so they serve no second attempt.
    Lost(io::Error),
    /// The zygote could not fork this helper.
    Refused(io::Error),
}

impl Zygote {
    /// `program args… LAYOUT_FILE` is the zygote's command line.
    pub fn new(program: PathBuf, mut args: Vec<String>, layout: &Path) -> Self {
        args.push(layout.to_string_lossy().into_owned());
        Self {
            program,
            args,
            running: Mutex::new(None),
        }
    }

    fn spawn(&self) -> io::Result<Running> {
        let (ours, theirs) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )?;
        use std::os::unix::process::CommandExt;
        let process = Command::new(&self.program)
            .args(&self.args)
            // Out of the terminal's process group: a Ctrl-C reaches the
            // agent, which drains its runs, not the zygote and its helpers.
            .process_group(0)
            .env_clear()
            .current_dir("/")
            .stdin(Stdio::from(theirs))
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("starting {}: {e}", self.program.display()),
                )
            })?;
        // Killed and reaped if the rest fails.
        let running = Running {
            process,
            socket: ours,
        };
        // A zygote that does not answer is treated as gone.
        let timeout = nix::sys::time::TimeVal::new(ANSWER_TIMEOUT.as_secs() as i64, 0);
        let socket = &running.socket;
        nix::sys::socket::setsockopt(socket, nix::sys::socket::sockopt::ReceiveTimeout, &timeout)?;
        nix::sys::socket::setsockopt(socket, nix::sys::socket::sockopt::SendTimeout, &timeout)?;
        Ok(running)
    }

    /// A new helper for `request`, its stdin, stdout, stderr and report
    /// piped to this process (call within a tokio runtime). An error of
    /// kind `ConnectionAborted`: the zygote took the request and was lost
    /// (it is replaced at the next call); a helper it may still fork uses
    /// the request's descriptors, so a new attempt needs new ones.
    pub fn helper(&self, request: &Request<'_>) -> io::Result<Helper> {
        let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        let mut last = None;
        for _ in 0..2 {
            if running.is_none() {
                *running = Some(Arc::new(self.spawn()?));
            }
            let zygote = running.as_ref().expect("started above");
            match ask(zygote, request) {
                Ok(helper) => return Ok(helper),
                Err(Failure::Refused(err)) => return Err(err),
                Err(Failure::Lost(err)) => {
                    tracing::warn!(%err, "the sandbox zygote did not answer; starting another");
                    *running = None;
                    return Err(io::Error::new(io::ErrorKind::ConnectionAborted, err));
                }
                Err(Failure::Zygote(err)) => {
                    // Killed once its last helper is done.
                    tracing::warn!(%err, "the sandbox zygote is gone; starting another");
                    *running = None;
                    last = Some(err);
                }
            }
        }
        Err(last.expect("two attempts failed"))
    }
}

fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    Ok(nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?)
}

/// One request and its answer.
fn ask(zygote: &Arc<Running>, request: &Request<'_>) -> Result<Helper, Failure> {
    let socket = &zygote.socket;
    let refused = Failure::Refused;
    let (stdin_theirs, stdin_ours) = pipe().map_err(refused)?;
    let (stdout_ours, stdout_theirs) = pipe().map_err(refused)?;
    let (stderr_ours, stderr_theirs) = pipe().map_err(refused)?;
    let (report_ours, report_theirs) = pipe().map_err(refused)?;
    if request.procs.len() > MAX_FDS - FIXED_FDS {
        return Err(refused(io::Error::other("too many cgroup files")));
    }
    let header = Header {
        procs: request.procs.len(),
    };
    let body = serde_json::to_vec(&header).expect("a request serializes");
    let mut fds = vec![
        stdin_theirs.as_raw_fd(),
        stdout_theirs.as_raw_fd(),
        stderr_theirs.as_raw_fd(),
        report_theirs.as_raw_fd(),
        request.netns.as_raw_fd(),
        request.work.as_raw_fd(),
    ];
    fds.extend(request.procs.iter().map(|f| f.as_raw_fd()));
    let gone = |e: nix::errno::Errno| Failure::Zygote(e.into());
    send(socket.as_raw_fd(), &body, &fds).map_err(gone)?;
    // Only the helper holds these ends now.
    drop((stdin_theirs, stdout_theirs, stderr_theirs, report_theirs));
    let mut answer = vec![0u8; MAX_MESSAGE_BYTES];
    let lost = |e: nix::errno::Errno| Failure::Lost(e.into());
    let received = receive(socket.as_raw_fd(), &mut answer).map_err(lost)?;
    let (len, pidfd) = (received.len, received.fds.into_iter().next());
    if len == 0 {
        return Err(Failure::Lost(io::Error::other(
            "the zygote closed its socket",
        )));
    }
    let answer = String::from_utf8_lossy(&answer[..len]);
    match (answer.strip_prefix("ok"), pidfd) {
        (Some(_), Some(pidfd)) => {
            // Killed (dropped) should its pipes fail to register.
            let mut helper = Helper {
                pidfd,
                zygote: zygote.clone(),
                stdin: None,
                stdout: None,
                stderr: None,
                report: None,
            };
            helper.stdin = Some(pipe::Sender::from_owned_fd(stdin_ours).map_err(refused)?);
            helper.stdout = Some(pipe::Receiver::from_owned_fd(stdout_ours).map_err(refused)?);
            helper.stderr = Some(pipe::Receiver::from_owned_fd(stderr_ours).map_err(refused)?);
            helper.report = Some(pipe::Receiver::from_owned_fd(report_ours).map_err(refused)?);
            Ok(helper)
        }
        (Some(_), None) => Err(Failure::Lost(io::Error::other(
            "the zygote answered without a pidfd",
        ))),
        (None, _) => Err(refused(io::Error::other(format!("zygote: {answer}")))),
    }
}

/// The descriptors every request carries: the helper's stdin, stdout,
/// stderr and report pipe, the network namespace and the scratch tmpfs
/// (the cgroup files follow).
const FIXED_FDS: usize = 6;

/// The most descriptors a message carries.
const MAX_FDS: usize = 16;

/// One message with up to [`MAX_FDS`] descriptors.
struct Received {
    len: usize,
    fds: Vec<OwnedFd>,
    /// The message or its descriptors did not fit.
    truncated: bool,
}

/// Receives one message on `socket` (retried when a signal interrupts);
/// the descriptors close on exec.
fn receive(socket: RawFd, buf: &mut [u8]) -> Result<Received, nix::errno::Errno> {
    let mut space = nix::cmsg_space!([RawFd; MAX_FDS]);
    let mut iov = [IoSliceMut::new(buf)];
    let message = loop {
        match recvmsg::<()>(
            socket,
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        ) {
            Err(nix::errno::Errno::EINTR) => continue,
            received => break received?,
        }
    };
    let mut fds = Vec::new();
    if let Ok(cmsgs) = message.cmsgs() {
        for cmsg in cmsgs {
            if let ControlMessageOwned::ScmRights(received) = cmsg {
                fds.extend(
                    received
                        .into_iter()
                        .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
                );
            }
        }
    }
    Ok(Received {
        len: message.bytes,
        fds,
        truncated: message
            .flags
            .intersects(MsgFlags::MSG_TRUNC | MsgFlags::MSG_CTRUNC),
    })
}

/// Sends one message with `fds` on `socket` (retried when a signal
/// interrupts: nothing was sent then).
fn send(socket: RawFd, body: &[u8], fds: &[RawFd]) -> Result<(), nix::errno::Errno> {
    let rights = [ControlMessage::ScmRights(fds)];
    let control: &[ControlMessage] = if fds.is_empty() { &[] } else { &rights };
    loop {
        match sendmsg::<()>(
            socket,
            &[IoSlice::new(body)],
            control,
            MsgFlags::MSG_NOSIGNAL,
            None,
        ) {
            Err(nix::errno::Errno::EINTR) => continue,
            sent => return sent.map(|_| ()),
        }
    }
}

/// The zygote's loop (`berth-sandbox LAYOUT_FILE`, the socket on stdin):
/// the sandbox's root built, then a helper forked per request, until the
/// agent's end closes. Returns the exit code.
pub fn serve(layout: &Layout) -> i32 {
    use nix::sys::signal::{signal, SigHandler, Signal};
    // What the helpers ignore: this process's dispositions, as they are
    // before SIGCHLD is ignored here (each helper sets it back).
    let ignored = super::helper::ignored_signals();
    // The kernel reaps the helpers; their ends are seen through pidfds.
    if let Err(err) = unsafe { signal(Signal::SIGCHLD, SigHandler::SigIgn) } {
        eprintln!("berth-sandbox: ignoring SIGCHLD: {err}");
        return 2;
    }
    // This process's own pid namespace, to come back to after each helper's fork.
    let own = std::fs::File::open("/proc/self/ns/pid").and_then(|ns| {
        if ns.as_raw_fd() == PID_NS_FD {
            std::mem::forget(ns);
        } else if unsafe { libc::dup2(ns.as_raw_fd(), PID_NS_FD) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    });
    if let Err(err) = own {
        eprintln!("berth-sandbox: own pid namespace: {err}");
        return 2;
    }
    // From here on this process sees the sandbox's root alone. A root that
    // could not be built is every request's answer.
    let root = super::helper::build_root(layout).map_err(|e| format!("the sandbox's root: {e}"));
    if let Err(err) = &root {
        eprintln!("berth-sandbox: {err}");
    }
    let mut buf = vec![0u8; MAX_MESSAGE_BYTES];
    loop {
        // Nothing but the socket, /dev/null, stderr and the pid namespace
        // between requests (descriptors of a cut-off message would
        // otherwise stay).
        unsafe { libc::close_range(PID_NS_FD as u32 + 1, u32::MAX, 0) };
        let Received {
            len,
            fds,
            truncated,
        } = match receive(0, &mut buf) {
            Ok(received) => received,
            Err(err) => {
                eprintln!("berth-sandbox: zygote socket: {err}");
                return 2;
            }
        };
        if len == 0 && fds.is_empty() {
            // The agent let go.
            return 0;
        }
        let header = if truncated {
            Err("request too large".to_owned())
        } else {
            serde_json::from_slice::<Header>(&buf[..len]).map_err(|e| format!("request: {e}"))
        };
        let answer = match (&root, &header) {
            (Err(err), _) | (_, Err(err)) => Err(err.clone()),
            (Ok(()), Ok(header)) if fds.len() != FIXED_FDS + header.procs => Err(format!(
                "{} descriptors instead of {}",
                fds.len(),
                FIXED_FDS + header.procs
            )),
            (Ok(()), Ok(header)) => fork_helper(layout, header.procs, fds, &ignored),
        };
        let sent = match answer {
            Ok(pidfd) => send(0, b"ok", &[pidfd.as_raw_fd()]),
            Err(err) => send(0, err.as_bytes(), &[]),
        };
        if let Err(err) = sent {
            eprintln!("berth-sandbox: zygote socket: {err}");
            return 2;
        }
        // A root that could not be built may build the next time: the
        // agent starts another zygote at its next helper.
        if root.is_err() {
            return 2;
        }
    }
}

/// Where the zygote keeps its own pid namespace open.
const PID_NS_FD: RawFd = 3;

/// Forks one helper, the init of a new pid namespace, with `fds` as its
/// fds 0 and up (see [`super::helper::helper`]), `procs` of them cgroup
/// files; a pidfd of it.
fn fork_helper(
    layout: &Layout,
    procs: usize,
    fds: Vec<OwnedFd>,
    ignored: &[i32],
) -> Result<OwnedFd, String> {
    use nix::sched::{setns, unshare, CloneFlags};
    use nix::unistd::{fork, ForkResult};
    // The next child is the first process of a new pid namespace; this
    // process goes back to making children in its own right after it.
    unshare(CloneFlags::CLONE_NEWPID).map_err(|e| format!("pid namespace: {e}"))?;
    // This process is single-threaded: the child may go on as it likes.
    let forked = unsafe { fork() };
    if !matches!(forked, Ok(ForkResult::Child)) {
        let own = unsafe { std::os::fd::BorrowedFd::borrow_raw(PID_NS_FD) };
        if let Err(err) = setns(own, CloneFlags::CLONE_NEWPID) {
            // Every later helper would fail: the agent starts another
            // zygote (this one's helpers die with it).
            eprintln!("berth-sandbox: back to the own pid namespace: {err}");
            std::process::exit(2);
        }
    }
    match forked.map_err(|e| format!("fork: {e}"))? {
        ForkResult::Child => {
            use nix::sys::signal::{signal, SigHandler, Signal};
            let code = (|| {
                // A helper does not outlive the zygote (which ends with the
                // agent): it waits to be killed once its run is over. (Its
                // parent is outside its pid namespace, so there is no
                // `getppid` to check whether the zygote died first; a helper
                // the zygote never answered for finds its stdin closed.)
                if unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) } != 0 {
                    return 2;
                }
                if unsafe { signal(Signal::SIGCHLD, SigHandler::SigDfl) }.is_err() {
                    return 2;
                }
                // Copied out of the way first (above every target), so that
                // none is overwritten before it is in place; the copies
                // close on exec whatever happens to them.
                let mut high = Vec::with_capacity(fds.len());
                for fd in &fds {
                    let floor = fds.len() as libc::c_int;
                    let copy = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, floor) };
                    if copy < 0 {
                        return 2;
                    }
                    high.push(copy);
                }
                for (fd, target) in high.into_iter().zip(0..) {
                    if unsafe { libc::dup2(fd, target) } < 0 {
                        return 2;
                    }
                }
                super::helper::helper(layout, procs, ignored)
            })();
            unsafe { libc::_exit(code) }
        }
        ForkResult::Parent { child } => {
            drop(fds);
            let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, child.as_raw(), 0) };
            if pidfd < 0 {
                let err = io::Error::last_os_error();
                // Not gone (and so not reaped) but unwatchable: it must
                // not live on.
                if err.raw_os_error() != Some(libc::ESRCH) {
                    let _ = nix::sys::signal::kill(child, nix::sys::signal::Signal::SIGKILL);
                }
                return Err(format!("pidfd of the helper: {err}"));
            }
            Ok(unsafe { OwnedFd::from_raw_fd(pidfd as RawFd) })
        }
    }
}
