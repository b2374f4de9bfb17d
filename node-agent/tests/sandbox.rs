//! The sandbox driver with real toolchains and real hostile programs: every
//! test checks what the program could not do, and that nothing it made is
//! left behind (processes, cgroups, mounts, files).

use berth_node_agent::sandbox::{Outcome, Run, Sandbox, SandboxConfig, Status};
use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

struct Fixture {
    sandbox: Arc<Sandbox>,
    dir: tempfile::TempDir,
}

/// A sandbox of its own, with its own uid so that tests running at the
/// same time can tell their processes apart.
fn fixture(uid: u32) -> Fixture {
    fixture_with(
        uid,
        SandboxConfig::new(PathBuf::new(), PathBuf::new()).warm_helpers,
    )
}

/// [`fixture`] with `warm_helpers` helpers started ahead (0: every run
/// starts its own).
fn fixture_with(uid: u32, warm_helpers: usize) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let mut config = SandboxConfig::new(
        env!("CARGO_BIN_EXE_berth-sandbox").into(),
        dir.path().join("sandbox"),
    );
    config.uid = uid;
    config.gid = uid;
    config.warm_helpers = warm_helpers;
    Fixture {
        sandbox: Arc::new(Sandbox::new(config).expect("the sandbox can be set up on this host")),
        dir,
    }
}

/// A run with the control plane's defaults for its language.
fn run(language: &str, code: &str) -> Run {
    Run {
        language: language.into(),
        code: code.into(),
        stdin: Vec::new(),
        timeout: Duration::from_secs(10),
        memory_bytes: berth_proto::domain::Language::from_alias(language)
            .map_or(128 << 20, |l| l.default_memory_bytes()),
        validate: false,
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

impl Fixture {
    async fn go(&self, run: Run) -> Outcome {
        let outcome = self.sandbox.run(run).await;
        self.assert_clean().await;
        outcome
    }

    /// Once the sandbox has settled (its clean-ups done, its waiting
    /// helpers let go), nothing of any run is left: no run dir, no mount,
    /// no cgroup.
    async fn assert_clean(&self) {
        self.sandbox.settle().await;
        self.no_mounts_on_the_host();
        let groups = self.groups();
        assert!(groups.is_empty(), "cgroups left behind: {groups:?}");
        let memory = self.memory_groups();
        assert!(memory.is_empty(), "memory cgroups left behind: {memory:?}");
    }

    /// The host's mount table has nothing of this sandbox's (its root and
    /// its runs' tmpfs are mounted in their own namespaces only), and its
    /// directory nothing but what it was made with.
    fn no_mounts_on_the_host(&self) {
        let dir = self.dir.path().join("sandbox");
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        assert!(
            !mounts.contains(dir.to_str().unwrap()),
            "mounts under {} on the host: {mounts}",
            dir.display()
        );
        let mut left: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(
            left,
            ["cache", "etc", "layout.json", "root"],
            "in {}",
            dir.display()
        );
        let root: Vec<_> = std::fs::read_dir(dir.join("root")).unwrap().collect();
        assert!(
            root.is_empty(),
            "the root's mount point on the host: {root:?}"
        );
    }

    /// On cgroup v1, this sandbox's memory groups (the memory controller
    /// has a hierarchy of its own there); none on v2.
    fn memory_groups(&self) -> Vec<String> {
        if std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
            return Vec::new();
        }
        self.groups_in(std::path::Path::new("/sys/fs/cgroup/memory/berth-sandbox"))
    }

    /// This sandbox's cgroups on the host now.
    fn groups(&self) -> Vec<String> {
        self.groups_in(&self.sandbox.cgroup_parent())
    }

    /// The groups in `parent` named with this sandbox's prefix.
    fn groups_in(&self, parent: &std::path::Path) -> Vec<String> {
        std::fs::read_dir(parent)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|name| name.starts_with(self.sandbox.cgroup_prefix()))
            .collect()
    }

    /// Runs `code` and expects it to succeed, returning stdout.
    async fn ok(&self, language: &str, code: &str) -> String {
        let outcome = self.go(run(language, code)).await;
        assert_eq!(
            outcome.status,
            Status::Succeeded,
            "{language}: {} / stderr {} / {}",
            outcome.error,
            text(&outcome.stderr),
            text(&outcome.stdout)
        );
        text(&outcome.stdout)
    }
}

/// No process of the sandbox uid is left on the host.
fn no_sandbox_processes(uid: u32) {
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let status = std::fs::read_to_string(entry.path().join("status")).unwrap_or_default();
        let owner = status
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<u32>().ok());
        assert_ne!(
            owner,
            Some(uid),
            "a sandbox process survived: {}",
            entry.path().display()
        );
    }
}

#[tokio::test]
async fn hello_world_stdin_and_compile_errors_in_each_language() {
    let f = fixture(61001);
    assert_eq!(
        f.ok("python", "print('hello from python')").await,
        "hello from python\n"
    );
    assert_eq!(
        f.ok("javascript", "console.log('hello from js')").await,
        "hello from js\n"
    );
    assert_eq!(
        f.ok(
            "cpp",
            "#include <iostream>\nint main(){std::cout<<\"hello from cpp\\n\";}"
        )
        .await,
        "hello from cpp\n"
    );
    assert_eq!(
        f.ok("java", "public class Main { public static void main(String[] a) { System.out.println(\"hello from java\"); } }").await,
        "hello from java\n"
    );

    assert_eq!(
        f.ok(
            "typescript",
            "const greeting: string = 'hello from ts';\nconsole.log(greeting);"
        )
        .await,
        "hello from ts\n"
    );
    assert_eq!(
        f.ok(
            "go",
            "package main\nimport \"fmt\"\nfunc main() { fmt.Println(\"hello from go\") }"
        )
        .await,
        "hello from go\n"
    );
    assert_eq!(
        f.ok("rust", "fn main() { println!(\"hello from rust\"); }")
            .await,
        "hello from rust\n"
    );

    // stdin reaches the program.
    let mut echo = run(
        "python",
        "import sys\nprint(sys.stdin.read().upper(), end='')",
    );
    echo.stdin = b"echo me\n".to_vec();
    let outcome = f.go(echo).await;
    assert_eq!(text(&outcome.stdout), "ECHO ME\n");
    let mut echo = run(
        "javascript",
        "process.stdin.on('data', d => process.stdout.write(d.toString().toUpperCase()))",
    );
    echo.stdin = b"from node\n".to_vec();
    assert_eq!(text(&f.go(echo).await.stdout), "FROM NODE\n");

    // Compile errors fail with the compiler's message.
    let outcome = f
        .go(run("cpp", "int main() { return undefined_name; }"))
        .await;
    assert_eq!(outcome.status, Status::Failed);
    assert!(
        text(&outcome.stderr).contains("undefined_name"),
        "{}",
        text(&outcome.stderr)
    );
    assert_eq!(outcome.error, "compilation failed");
    let outcome = f
        .go(run(
            "java",
            "public class Main { void x() { int y = \"no\"; } }",
        ))
        .await;
    assert_eq!(outcome.status, Status::Failed);
    assert!(
        text(&outcome.stderr).contains("incompatible types"),
        "{}",
        text(&outcome.stderr)
    );
    let outcome = f.go(run("typescript", "const x: number = 'text';")).await;
    assert_eq!(outcome.status, Status::Failed);
    assert!(text(&outcome.stdout).contains("TS2322"), "{outcome:?}");
    let outcome = f
        .go(run("go", "package main\nfunc main() { undefinedThing() }"))
        .await;
    assert_eq!(outcome.status, Status::Failed);
    assert!(
        text(&outcome.stderr).contains("undefined: undefinedThing"),
        "{outcome:?}"
    );
    let outcome = f
        .go(run("rust", "fn main() { let x: u32 = \"no\"; }"))
        .await;
    assert_eq!(outcome.status, Status::Failed);
    assert!(
        text(&outcome.stderr).contains("mismatched types"),
        "{outcome:?}"
    );
    // Compiling cannot read the host either.
    let outcome = f
        .go(run("cpp", "#include \"/etc/shadow\"\nint main(){}"))
        .await;
    assert_eq!(outcome.status, Status::Failed);
    assert!(
        text(&outcome.stderr).contains("No such file"),
        "{outcome:?}"
    );
    let outcome = f
        .go(run(
            "rust",
            "const S: &str = include_str!(\"/etc/shadow\");\nfn main() { print!(\"{}\", S); }",
        ))
        .await;
    assert_eq!(outcome.status, Status::Failed);
    // A runtime error is a failure with the exit code.
    let outcome = f.go(run("python", "raise SystemExit(3)")).await;
    assert_eq!(
        (outcome.status, outcome.exit_code),
        (Status::Failed, Some(3))
    );

    // A compiled program is cached: the second run of the same code compiles nothing.
    let code = "#include <cstdio>\nint main(){puts(\"cached\");}";
    let started = std::time::Instant::now();
    f.go(run("cpp", code)).await;
    let first = started.elapsed();
    let started = std::time::Instant::now();
    let second = f.go(run("cpp", code)).await;
    let cached = started.elapsed();
    assert_eq!(text(&second.stdout), "cached\n");
    assert!(
        cached * 3 < first,
        "cached {cached:?} vs first {first:?}: nothing is compiled the second time"
    );
    no_sandbox_processes(f.sandbox.config().uid);
}

#[tokio::test]
async fn limits_are_checked_before_anything_runs() {
    let f = fixture(61002);
    let big = "#".repeat(50 * 1024 + 1);
    let outcome = f.go(run("python", &big)).await;
    assert_eq!(outcome.status, Status::Rejected);
    assert!(
        outcome.error.contains("51201 bytes") && outcome.error.contains("51200"),
        "{}",
        outcome.error
    );
    let mut slow = run("python", "print(1)");
    slow.timeout = Duration::from_secs(61);
    let outcome = f.go(slow).await;
    assert_eq!(outcome.status, Status::Rejected);
    assert!(outcome.error.contains("61s"), "{}", outcome.error);
    let outcome = f.go(run("cobol", "DISPLAY 'HI'")).await;
    assert_eq!(outcome.status, Status::Rejected);
    assert!(outcome.error.contains("cobol"), "{}", outcome.error);
}

#[tokio::test]
async fn a_hundred_runs_in_parallel_leave_nothing_behind() {
    let f = fixture(61006);
    let runs = (0..100).map(|i| {
        let sandbox = f.sandbox.clone();
        tokio::spawn(async move { sandbox.run(run("python", &format!("print({i} * 2)"))).await })
    });
    let outcomes = futures::future::join_all(runs).await;
    for (i, outcome) in outcomes.into_iter().enumerate() {
        let outcome = outcome.unwrap();
        assert_eq!(outcome.status, Status::Succeeded, "run {i}: {outcome:?}");
        assert_eq!(text(&outcome.stdout), format!("{}\n", i * 2));
    }
    f.assert_clean().await;
    no_sandbox_processes(f.sandbox.config().uid);
}

/// On cgroup v1 a finished run's pids, cpu and cpuacct groups serve the
/// next run, whose CPU time is counted there from zero again.
#[tokio::test]
async fn a_kept_cgroup_counts_the_next_run_from_zero() {
    let f = fixture_with(61009, 0);
    let busy = f
        .sandbox
        .run(run(
            "python",
            "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.5: pass\n",
        ))
        .await;
    assert_eq!(busy.status, Status::Succeeded, "{busy:?}");
    assert!(busy.cpu >= Duration::from_millis(500), "{busy:?}");
    f.sandbox.quiet().await;
    let kept = f.groups();
    let v1 = !std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
    assert_eq!(kept.len(), usize::from(v1), "kept: {kept:?}");
    let hello = f.sandbox.run(run("python", "print('hi')")).await;
    assert_eq!(hello.status, Status::Succeeded, "{hello:?}");
    assert!(
        hello.cpu < Duration::from_millis(400),
        "the last run's CPU time counted again: {hello:?}"
    );
    f.sandbox.quiet().await;
    assert_eq!(f.groups(), kept, "the same groups served the second run");
    f.assert_clean().await;
}

/// Network namespaces are made once and leased to one run at a time: what
/// one run did on loopback is gone for the next run in the same namespace.
#[tokio::test]
async fn the_next_run_in_a_network_namespace_finds_nothing_of_the_last() {
    // No helper waiting ahead: each run leases the namespace the last gave back.
    let f = fixture_with(61008, 0);
    let first = f
        .ok(
            "python",
            "import os, socket, time\n\
             s = socket.socket(); s.bind(('127.0.0.1', 7777)); s.listen()\n\
             c = socket.create_connection(('127.0.0.1', 7777)); a, _ = s.accept()\n\
             a.close(); c.close(); s.close()\n\
             if os.fork() == 0:\n    os.setsid()\n    l = socket.socket(); l.bind(('127.0.0.1', 7778)); l.listen(); time.sleep(60)\n\
             time.sleep(0.3)\n\
             print(os.readlink('/proc/self/ns/net'))\n",
        )
        .await;
    let second = f
        .ok(
            "python",
            "import os, socket\n\
             print(os.readlink('/proc/self/ns/net'))\n\
             try:\n    socket.create_connection(('127.0.0.1', 7778), timeout=2); print('REACHED')\n\
             except OSError as e:\n    print('refused')\n\
             s = socket.socket(); s.bind(('127.0.0.1', 7777)); print('bound')\n",
        )
        .await;
    let mut lines = second.lines();
    assert_eq!(
        lines.next(),
        Some(first.trim()),
        "the same namespace, leased again"
    );
    assert_eq!(
        lines.next(),
        Some("refused"),
        "the last run's listener is gone"
    );
    assert_eq!(
        lines.next(),
        Some("bound"),
        "the port the last run closed is free"
    );
    no_sandbox_processes(61008);
}

#[tokio::test]
async fn what_a_dead_agent_left_is_swept_when_it_starts_again() {
    let f = fixture(61007);
    let sandbox = f.sandbox.clone();
    let running = tokio::spawn(async move {
        sandbox
            .run(run(
                "python",
                "import os, time\nif os.fork() == 0:\n    os.setsid()\ntime.sleep(60)",
            ))
            .await
    });
    // Wait until the program runs, then drop everything as a crash would.
    let uid = f.sandbox.config().uid;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !sandbox_processes(uid) {
        assert!(
            std::time::Instant::now() < deadline,
            "the program never started"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    running.abort();
    let _ = running.await;
    // A new sandbox on the same directory cleans up.
    let config = f.sandbox.config().clone();
    let again = Sandbox::new(config).unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    no_sandbox_processes(uid);
    f.no_mounts_on_the_host();
    let outcome = again.run(run("python", "print('after')")).await;
    assert_eq!(text(&outcome.stdout), "after\n");
}

fn sandbox_processes(uid: u32) -> bool {
    std::fs::read_dir("/proc").unwrap().flatten().any(|entry| {
        std::fs::read_to_string(entry.path().join("status"))
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<u32>().ok())
            == Some(uid)
    })
}

/// One hostile program per test: `check` sees its outcome; afterwards the
/// sandbox still works and no process of its uid is left.
macro_rules! hostile {
    ($name:ident, $uid:expr, $lang:expr, $timeout:expr, $memory:expr, $code:expr, |$o:ident, $f:ident| $check:block) => {
        #[tokio::test]
        async fn $name() {
            let $f = fixture($uid);
            let mut r = run($lang, $code);
            r.timeout = Duration::from_secs($timeout);
            r.memory_bytes = $memory << 20;
            let $o = $f.go(r).await;
            $check
            assert_eq!($f.ok("python", "print('next')").await, "next\n", "the next run works");
            tokio::time::sleep(Duration::from_millis(100)).await;
            no_sandbox_processes($uid);
        }
    };
}

/// The write ran into the size of its file system (ENOSPC) or of one file (EFBIG).
fn full(o: &Outcome) {
    let out = text(&o.stdout);
    assert!(out == "full 28\n" || out == "full 27\n", "{o:?}");
}

/// A python probe: prints `denied` when `attempt` raises, `ALLOWED` otherwise.
fn probe(attempt: &str) -> String {
    format!("import os, socket, ctypes, sys\ntry:\n    {attempt}\n    print('ALLOWED')\nexcept BaseException as e:\n    print('denied', type(e).__name__, e)\n")
}

fn denied(o: &Outcome) {
    assert_eq!(o.status, Status::Succeeded, "{o:?}");
    let out = text(&o.stdout);
    assert!(out.starts_with("denied"), "{out} {}", text(&o.stderr));
}

hostile!(
    fork_bomb,
    61100,
    "python",
    2,
    128,
    "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass",
    |o, _f| {
        assert_eq!(o.status, Status::Timeout, "{o:?}");
    }
);
hostile!(thread_bomb, 61101, "python", 5, 128,
    "import threading, time\nn = 0\ntry:\n    while True:\n        threading.Thread(target=time.sleep, args=(30,), daemon=True).start()\n        n += 1\nexcept RuntimeError:\n    print('threads stopped at', n)\n    raise SystemExit(0)",
    |o, _f| { assert!(text(&o.stdout).starts_with("threads stopped at"), "{o:?}"); });
hostile!(
    memory_bomb,
    61102,
    "python",
    10,
    128,
    "x = bytearray(512 * 1024 * 1024)\nprint('allocated')",
    |o, _f| {
        assert_eq!(o.status, Status::MemoryExceeded, "{o:?}");
    }
);
hostile!(tmp_fill, 61103, "python", 10, 256,
    "try:\n    f = open('/tmp/fill', 'wb')\n    while True: f.write(b'x' * (1 << 20))\nexcept OSError as e:\n    print('full', e.errno)",
    |o, _f| { full(&o); });
hostile!(dev_shm_fill, 61104, "python", 10, 256,
    "try:\n    f = open('/dev/shm/fill', 'wb')\n    while True: f.write(b'x' * (1 << 20))\nexcept OSError as e:\n    print('full', e.errno)",
    |o, _f| { full(&o); });
hostile!(disk_fill, 61105, "python", 10, 256,
    "try:\n    f = open('/work/fill', 'wb')\n    while True: f.write(b'x' * (1 << 20))\nexcept OSError as e:\n    print('full', e.errno)",
    |o, _f| { full(&o); });
hostile!(a_million_files, 61106, "python", 20, 256,
    "i = 0\ntry:\n    for i in range(1000000):\n        open('/tmp/f%d' % i, 'w').close()\nexcept OSError as e:\n    print('stopped', e.errno)",
    |o, _f| { assert_eq!(text(&o.stdout), "stopped 28\n", "{o:?}"); });
hostile!(
    endless_output,
    61107,
    "python",
    2,
    128,
    "import sys\nwhile True: sys.stdout.write('x' * 65536)",
    |o, _f| {
        assert!(o.stdout_truncated);
        assert_eq!(o.stdout.len(), 1 << 20);
    }
);
hostile!(
    busy_loop,
    61108,
    "python",
    2,
    128,
    "while True: pass",
    |o, _f| {
        assert_eq!(o.status, Status::Timeout, "{o:?}");
        assert!(o.cpu >= Duration::from_millis(1500), "{o:?}");
    }
);
hostile!(
    sleep_past_the_wall_clock,
    61109,
    "python",
    1,
    128,
    "import time\ntime.sleep(30)",
    |o, _f| {
        assert_eq!(o.status, Status::Timeout);
        assert!(o.wall < Duration::from_secs(5), "{o:?}");
    }
);
hostile!(double_fork_setsid_survivor, 61110, "python", 10, 128,
    "import os, time\nif os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n        time.sleep(1000)\n    os._exit(0)\nprint('parent done')",
    |o, _f| {
        assert_eq!(text(&o.stdout), "parent done\n");
        // Ended with the program, not at the time limit: the survivors,
        // holding stdout, were killed once the program was done.
        assert_eq!(o.status, Status::Succeeded, "{o:?}");
        assert!(o.wall < Duration::from_secs(5), "{o:?}");
    });
hostile!(sigterm_ignoring_child, 61111, "python", 10, 128,
    "import os, signal, time\nif os.fork() == 0:\n    signal.signal(signal.SIGTERM, signal.SIG_IGN)\n    time.sleep(1000)\nprint('left a child')",
    |o, _f| {
        assert_eq!(text(&o.stdout), "left a child\n");
        assert_eq!(o.status, Status::Succeeded, "{o:?}");
        assert!(o.wall < Duration::from_secs(5), "{o:?}");
    });
hostile!(
    egress_to_the_hosts_loopback,
    61112,
    "python",
    10,
    128,
    &{
        // A service that answers on the host's loopback.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::mem::forget(listener);
        probe(&format!(
            "socket.create_connection(('127.0.0.1', {port}), timeout=1)"
        ))
    },
    |o, _f| {
        denied(&o);
    }
);
hostile!(
    egress_to_the_outside,
    61113,
    "python",
    10,
    128,
    &probe("socket.create_connection(('1.1.1.1', 53), timeout=1)"),
    |o, _f| {
        denied(&o);
    }
);
hostile!(
    reading_the_agents_key,
    61114,
    "python",
    10,
    128,
    &{
        let secret = f.dir.path().join("agent-key.pem");
        std::fs::write(&secret, "PRIVATE KEY").unwrap();
        probe(&format!("open({:?}).read()", secret.to_str().unwrap()))
    },
    |o, f| {
        denied(&o);
        assert!(f.dir.path().join("agent-key.pem").exists());
    }
);
hostile!(
    reading_etc_shadow,
    61115,
    "python",
    10,
    128,
    &probe("open('/etc/shadow').read()"),
    |o, _f| {
        denied(&o);
    }
);
hostile!(
    reading_init_environ,
    61116,
    "python",
    10,
    128,
    &probe("assert open('/proc/1/environ').read() == ''; raise PermissionError('empty')"),
    |o, _f| {
        denied(&o);
    }
);
hostile!(
    the_environment_is_an_allow_list,
    61117,
    "python",
    10,
    128,
    "import os\nprint(sorted(os.environ))",
    |o, _f| {
        assert_eq!(text(&o.stdout), "['HOME', 'LANG', 'PATH', 'TMPDIR']\n");
    }
);
hostile!(writing_system_dirs, 61118, "python", 10, 128,
    &probe("\n    for p in ['/usr/evil', '/etc/evil', '/evil', '/proc/sys/kernel/hostname']:\n        try:\n            open(p, 'w').write('x')\n            raise SystemExit('wrote ' + p)\n        except OSError:\n            pass\n    raise PermissionError('all refused')"),
    |o, _f| { denied(&o); assert!(!Path::new("/etc/evil").exists() && !Path::new("/usr/evil").exists()); });
hostile!(killing_every_process, 61119, "python", 10, 128,
    "import os\ntry:\n    os.kill(-1, 9)\nexcept OSError as e:\n    print('denied', e)\nprint('still here')",
    |o, _f| { assert!(o.status == Status::Succeeded || o.signal == Some(9), "{o:?}"); });
hostile!(ptrace_of_init, 61120, "python", 10, 128,
    &probe("libc = ctypes.CDLL(None, use_errno=True)\n    assert libc.ptrace(16, 1, 0, 0) == 0, 'ptrace refused'"),
    |o, _f| { denied(&o); });
hostile!(
    setuid_root,
    61121,
    "python",
    10,
    128,
    &probe("os.setuid(0)"),
    |o, _f| {
        denied(&o);
    }
);
hostile!(
    a_planted_symlink,
    61122,
    "python",
    10,
    128,
    &probe("os.symlink('/etc/shadow', '/work/planted'); open('/work/planted').read()"),
    |o, _f| {
        denied(&o);
    }
);
hostile!(inherited_descriptors, 61123, "python", 10, 128,
    "import os\nprint(sorted(int(x) for x in os.listdir('/proc/self/fd'))[:3], len(os.listdir('/proc/self/fd')))",
    |o, _f| { assert_eq!(text(&o.stdout), "[0, 1, 2] 4\n", "stdio and the listing's own descriptor"); });
hostile!(
    a_file_left_for_the_next_run,
    61124,
    "python",
    10,
    128,
    "open('/work/left', 'w').write('x'); open('/tmp/left', 'w').write('x')",
    |o, f| {
        assert_eq!(o.status, Status::Succeeded);
        let out = f
            .ok(
                "python",
                "import os\nprint(sorted(os.listdir('/work')), os.listdir('/tmp'))",
            )
            .await;
        assert_eq!(out, "['main.py'] []\n");
    }
);
hostile!(mounting, 61125, "python", 10, 128,
    &probe("libc = ctypes.CDLL(None, use_errno=True)\n    assert libc.mount(b'none', b'/tmp', b'tmpfs', 0, None) == 0, 'mount refused'"),
    |o, _f| { denied(&o); });
hostile!(a_user_namespace, 61126, "python", 10, 128,
    &probe("libc = ctypes.CDLL(None, use_errno=True)\n    assert libc.unshare(0x10000000) == 0, 'unshare refused'"),
    |o, _f| { denied(&o); });
hostile!(
    raw_sockets,
    61127,
    "python",
    10,
    128,
    &probe("socket.socket(socket.AF_PACKET, socket.SOCK_RAW)"),
    |o, _f| {
        denied(&o);
    }
);
hostile!(
    sockets_of_other_families,
    61130,
    "python",
    10,
    128,
    // Netlink's socket diagnostics (any user may open it on the host), and
    // the kernel crypto API.
    "import socket\nfor family, kind, proto in [(16, socket.SOCK_RAW, 4), (38, socket.SOCK_SEQPACKET, 0)]:\n    try:\n        socket.socket(family, kind, proto).close()\n        print('ALLOWED', family)\n    except OSError as e:\n        print('denied', family, e.errno)\nsocket.socket(socket.AF_INET, socket.SOCK_DGRAM).close()\nsocket.socket(socket.AF_UNIX, socket.SOCK_STREAM).close()\nsocket.socket(16, socket.SOCK_RAW, 0).close()\nprint('unix, inet and route netlink open')",
    |o, _f| {
        assert_eq!(
            text(&o.stdout),
            "denied 16 97\ndenied 38 97\nunix, inet and route netlink open\n",
            "{o:?}"
        );
    }
);
hostile!(a_local_descriptor_table, 61131, "python", 10, 128,
    &probe("libc = ctypes.CDLL(None, use_errno=True)\n    assert libc.syscall(154, 0, ctypes.create_string_buffer(64), 64) >= 0, 'modify_ldt refused'"),
    |o, _f| { denied(&o); });
hostile!(
    seeing_the_hosts_cgroups,
    61132,
    "python",
    10,
    128,
    "print(open('/proc/self/cgroup').read(), end='')",
    |o, _f| {
        let out = text(&o.stdout);
        assert!(!out.is_empty(), "{o:?}");
        assert!(
            out.lines().all(|l| l.ends_with(":/")),
            "its own cgroup namespace: {out}"
        );
    }
);
hostile!(
    a_compile_within_the_callers_memory,
    61133,
    "cpp",
    20,
    16,
    // Different code from every other test's: not in the compile cache.
    "#include <iostream>\n#include <map>\n#include <string>\nint main(){ std::map<std::string,int> m{{\"small\",16}}; std::cout << m.size() << std::endl; }",
    |o, _f| {
        // The compiler gets the 16 MiB asked for, not a larger floor.
        assert_eq!(o.status, Status::MemoryExceeded, "{o:?}");
    }
);
hostile!(
    seeing_other_processes,
    61128,
    "python",
    10,
    128,
    "import os\nprint(sorted(int(p) for p in os.listdir('/proc') if p.isdigit()))",
    |o, _f| {
        assert_eq!(text(&o.stdout), "[1, 2]\n", "its own pid namespace");
    }
);
hostile!(
    a_c_program_forking_forever,
    61129,
    "cpp",
    3,
    128,
    "#include <unistd.h>\nint main(){ for(;;) fork(); }",
    |o, _f| {
        assert_eq!(o.status, Status::Timeout, "{o:?}");
    }
);

/// Runs side by side, cancelled while they run, all end at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_runs_side_by_side_end_at_once() {
    let f = fixture(61009);
    let token = tokio_util::sync::CancellationToken::new();
    let runs: Vec<_> = (0..4)
        .map(|_| {
            let (sandbox, token) = (f.sandbox.clone(), token.clone());
            tokio::spawn(async move {
                let mut r = run("python", "import time\ntime.sleep(30)");
                r.timeout = Duration::from_secs(30);
                sandbox.run_until(r, &token).await
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let cancelled = std::time::Instant::now();
    token.cancel();
    for outcome in futures::future::join_all(runs).await {
        let outcome = outcome.unwrap();
        assert_eq!(outcome.status, Status::Cancelled, "{outcome:?}");
    }
    assert!(
        cancelled.elapsed() < Duration::from_secs(10),
        "the runs went on for {:?} after their cancel",
        cancelled.elapsed()
    );
    f.assert_clean().await;
    no_sandbox_processes(61009);
}

/// A run cancelled while its helper is still starting (joining its cgroup)
/// ends at once too: the helper itself is killed, not only its cgroup.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_cancelled_while_its_helper_starts_ends_at_once() {
    // Every run starts its own helper.
    let f = fixture_with(61010, 0);
    for delay_ms in [0, 1, 2, 4, 8, 16] {
        let token = tokio_util::sync::CancellationToken::new();
        let (sandbox, run_token) = (f.sandbox.clone(), token.clone());
        let running = tokio::spawn(async move {
            let mut r = run("python", "import time\ntime.sleep(30)");
            r.timeout = Duration::from_secs(30);
            sandbox.run_until(r, &run_token).await
        });
        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
        let cancelled = std::time::Instant::now();
        token.cancel();
        let outcome = running.await.unwrap();
        assert_eq!(outcome.status, Status::Cancelled, "{outcome:?}");
        assert!(
            cancelled.elapsed() < Duration::from_secs(10),
            "cancelled {delay_ms} ms in, the run went on for {:?}",
            cancelled.elapsed()
        );
    }
    f.assert_clean().await;
    no_sandbox_processes(61010);
}

/// A cancel that reaches the agent before its run (the control plane may
/// send one while the run is on its way) is applied when the run arrives.
#[tokio::test]
async fn a_cancel_that_comes_before_its_run_cancels_it() {
    use berth_node_agent::driver::{executions::Executor, Links};
    use berth_proto::pb;
    let f = fixture(61011);
    let (outbox, mut results) = tokio::sync::mpsc::channel(16);
    let links = Links {
        desired: tokio::sync::watch::channel(None).0,
        report: tokio::sync::watch::channel(Default::default()).0,
        channel: tokio::sync::watch::channel(None).0,
        outbox,
    };
    let executor = Executor::new(f.sandbox.clone(), links);
    let request = |id: &str| pb::ExecutionRequest {
        execution_id: id.into(),
        language: pb::Language::Python as i32,
        code: "import time\ntime.sleep(30)".into(),
        stdin: Vec::new(),
        timeout_ms: 30_000,
        memory_bytes: 128 << 20,
        validate_only: false,
    };
    executor.cancel("early");
    executor.start(request("early"));
    let message = tokio::time::timeout(Duration::from_secs(10), results.recv())
        .await
        .expect("a result at once")
        .expect("the outbox is open");
    let Some(pb::agent_message::Message::ExecutionResult(result)) = message.message else {
        panic!("not a result: {message:?}");
    };
    assert_eq!(result.execution_id, "early");
    assert_eq!(
        result.state,
        pb::ExecutionState::Cancelled as i32,
        "{result:?}"
    );
    assert_eq!(executor.running(), 0);
    f.assert_clean().await;
    no_sandbox_processes(61011);
}

/// The sandbox's directory and helper given relative to the agent's
/// working directory (`berth up`'s default data dir is `./.berth`): the
/// helpers, which start in `/`, still find everything, and runs work.
#[tokio::test]
async fn relative_paths_work() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let cwd = std::env::current_dir().unwrap();
    let relative = |p: &Path| -> PathBuf {
        let common = cwd.ancestors().find(|a| p.starts_with(a)).unwrap();
        let ups = cwd.strip_prefix(common).unwrap().components().count();
        let mut path: PathBuf = std::iter::repeat_n("..", ups).collect();
        path.push(p.strip_prefix(common).unwrap());
        path
    };
    let mut config = SandboxConfig::new(
        relative(Path::new(env!("CARGO_BIN_EXE_berth-sandbox"))),
        relative(&dir.path().join("sandbox")),
    );
    // Not the same place from `/`.
    assert!(!Path::new("/").join(&config.dir).exists());
    assert!(!Path::new("/").join(&config.helper).exists());
    config.uid = 61012;
    config.gid = 61012;
    let f = Fixture {
        sandbox: Arc::new(Sandbox::new(config).unwrap()),
        dir,
    };
    assert_eq!(f.ok("python", "print('relative')").await, "relative\n");
    assert_eq!(
        f.ok("cpp", "#include <cstdio>\nint main(){puts(\"c\");}")
            .await,
        "c\n"
    );
}

/// Pids of the processes whose command line names `needle`.
fn processes_naming(needle: &Path) -> Vec<i32> {
    let needle = needle.to_string_lossy().into_owned();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|entry| {
            let pid = entry.file_name().to_str()?.parse::<i32>().ok()?;
            let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
            String::from_utf8_lossy(&cmdline)
                .split('\0')
                .any(|arg| arg == needle)
                .then_some(pid)
        })
        .collect()
}

/// Waits (up to 10 s) until no process names `needle`.
async fn none_naming(needle: &Path) -> bool {
    for _ in 0..1000 {
        if processes_naming(needle).is_empty() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    false
}

/// The helpers come from one long-lived zygote; killed, it takes its
/// waiting helpers along, and another takes its place at the next run.
#[tokio::test]
async fn a_killed_zygote_is_started_again() {
    let f = fixture(61013);
    let layout = f.dir.path().join("sandbox/layout.json");
    let first = f.sandbox.run(run("python", "print('first')")).await;
    assert_eq!(text(&first.stdout), "first\n", "{first:?}");
    // The next helpers forked and waiting (they carry the zygote's
    // command line).
    f.sandbox.quiet().await;
    let before = processes_naming(&layout);
    assert!(before.len() >= 3, "a zygote and its helpers: {before:?}");
    // The zygote is this process's child; the helpers are the zygote's.
    let parent = |pid: i32| -> Option<u32> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        stat.rsplit_once(") ")?.1.split(' ').nth(1)?.parse().ok()
    };
    let zygote = *before
        .iter()
        .find(|pid| parent(**pid) == Some(std::process::id()))
        .expect("the zygote among them");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(zygote),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    assert!(
        none_naming(&layout).await,
        "helpers outlived their zygote: {:?}",
        processes_naming(&layout)
    );
    assert_eq!(f.ok("python", "print('second')").await, "second\n");
    let again = processes_naming(&layout);
    assert_eq!(again.len(), 1, "one zygote again: {again:?}");
    assert!(!before.contains(&again[0]), "a new zygote");
    no_sandbox_processes(61013);
}

/// A zygote that stops answering (here: stopped) is replaced once its
/// answer is overdue, and the run goes on.
#[tokio::test]
async fn a_stuck_zygote_is_replaced() {
    // Every run asks the zygote for its helper.
    let f = fixture_with(61015, 0);
    let layout = f.dir.path().join("sandbox/layout.json");
    assert_eq!(f.ok("python", "print('first')").await, "first\n");
    let stuck = processes_naming(&layout);
    assert_eq!(stuck.len(), 1, "one zygote: {stuck:?}");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(stuck[0]),
        nix::sys::signal::Signal::SIGSTOP,
    )
    .unwrap();
    // Should the sandbox wait on it for ever, the test still ends.
    struct KillOnDrop(i32);
    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            let pid = nix::unistd::Pid::from_raw(self.0);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
        }
    }
    let _stuck = KillOnDrop(stuck[0]);
    let second = tokio::time::timeout(Duration::from_secs(30), f.ok("python", "print('second')"))
        .await
        .expect("the run went on with a new zygote");
    assert_eq!(second, "second\n");
    let again = processes_naming(&layout);
    assert_eq!(again.len(), 1, "one zygote again: {again:?}");
    assert_ne!(again, stuck, "a new zygote");
    no_sandbox_processes(61015);
}

/// The zygote ends with its sandbox.
#[tokio::test]
async fn the_zygote_ends_with_its_sandbox() {
    let f = fixture(61014);
    let layout = f.dir.path().join("sandbox/layout.json");
    assert_eq!(f.ok("python", "print('x')").await, "x\n");
    assert_eq!(processes_naming(&layout).len(), 1);
    let Fixture { sandbox, dir } = f;
    sandbox.settle().await;
    drop(sandbox);
    assert!(
        none_naming(&layout).await,
        "the zygote outlived its sandbox"
    );
    no_sandbox_processes(61014);
    drop(dir);
}

/// A program starts with every signal at its default and none blocked:
/// what the sandbox's own processes ignore (their runtime ignores SIGPIPE)
/// does not reach it.
#[tokio::test]
async fn programs_start_with_default_signals() {
    let f = fixture(61016);
    let out = f
        .ok(
            "cpp",
            "#include <cstdio>\n#include <cstring>\nint main() {\n  FILE* f = fopen(\"/proc/self/status\", \"r\");\n  char line[256];\n  while (fgets(line, sizeof line, f))\n    if (!strncmp(line, \"SigBlk:\", 7) || !strncmp(line, \"SigIgn:\", 7)) fputs(line, stdout);\n}\n",
        )
        .await;
    assert_eq!(
        out,
        "SigBlk:\t0000000000000000\nSigIgn:\t0000000000000000\n"
    );
}

/// A zygote that cannot build the sandbox's root answers every run with
/// why, and nothing of the run is left behind.
#[tokio::test]
async fn a_root_that_cannot_be_built_fails_runs_with_the_reason() {
    let f = fixture_with(61017, 0);
    // The zygote starts with the first run and reads the layout then.
    let layout = f.dir.path().join("sandbox/layout.json");
    let mut value: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&layout).unwrap()).unwrap();
    value["root"] = serde_json::json!(f.dir.path().join("no-such-root"));
    std::fs::write(&layout, serde_json::to_vec(&value).unwrap()).unwrap();
    let outcome = f.go(run("python", "print('never')")).await;
    assert_eq!(outcome.status, Status::Failed, "{outcome:?}");
    assert!(
        outcome.error.contains("the sandbox's root"),
        "{}",
        outcome.error
    );
    assert!(outcome.stdout.is_empty());
    no_sandbox_processes(61017);
}
