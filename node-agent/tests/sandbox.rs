//! The sandbox driver with real toolchains and real hostile programs: every
//! test checks what the program could not do, and that nothing it made is
//! left behind (processes, cgroups, mounts, files).

use berth_node_agent::sandbox::{Outcome, Run, Sandbox, SandboxConfig, Status};
use std::{path::Path, sync::Arc, time::Duration};

struct Fixture {
    sandbox: Arc<Sandbox>,
    dir: tempfile::TempDir,
}

/// A sandbox of its own, with its own uid so that tests running at the
/// same time can tell their processes apart.
fn fixture(uid: u32) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let mut config = SandboxConfig::new(
        env!("CARGO_BIN_EXE_berth-sandbox").into(),
        dir.path().join("sandbox"),
    );
    config.uid = uid;
    config.gid = uid;
    Fixture {
        sandbox: Arc::new(Sandbox::new(config).expect("the sandbox can be set up on this host")),
        dir,
    }
}

fn run(language: &str, code: &str) -> Run {
    Run {
        language: language.into(),
        code: code.into(),
        stdin: Vec::new(),
        timeout: Duration::from_secs(10),
        memory_bytes: 128 << 20,
        validate: false,
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

impl Fixture {
    async fn go(&self, run: Run) -> Outcome {
        let outcome = self.sandbox.run(run).await;
        self.assert_clean();
        outcome
    }

    /// Nothing of any run is left: no run dir, no mount, no cgroup.
    fn assert_clean(&self) {
        let runs = self.dir.path().join("sandbox/runs");
        let left: Vec<_> = std::fs::read_dir(&runs)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .collect();
        assert!(left.is_empty(), "run dirs left behind: {left:?}");
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        assert!(
            !mounts.contains(runs.to_str().unwrap()),
            "mounts left behind under {}",
            runs.display()
        );
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
    let first = f.go(run("cpp", code)).await;
    let second = f.go(run("cpp", code)).await;
    assert_eq!(text(&second.stdout), "cached\n");
    assert!(
        second.wall < first.wall,
        "cached {:?} vs first {:?}",
        second.wall,
        first.wall
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
async fn time_memory_and_process_limits_end_runs() {
    let f = fixture(61003);
    // Busy loop: CPU time.
    let mut busy = run("python", "while True: pass");
    busy.timeout = Duration::from_secs(2);
    let outcome = f.go(busy).await;
    assert_eq!(outcome.status, Status::Timeout, "{outcome:?}");
    // Sleep: wall time.
    let mut sleepy = run("python", "import time\ntime.sleep(30)");
    sleepy.timeout = Duration::from_secs(1);
    let outcome = f.go(sleepy).await;
    assert_eq!(outcome.status, Status::Timeout);
    assert!(outcome.wall < Duration::from_secs(5), "{:?}", outcome.wall);
    // Memory bomb.
    let outcome = f
        .go(run(
            "python",
            "x = bytearray(512 * 1024 * 1024)\nprint('allocated')",
        ))
        .await;
    assert_eq!(outcome.status, Status::MemoryExceeded, "{outcome:?}");
    // Fork bomb: the pids limit holds, the run ends, nothing survives.
    let mut bomb = run(
        "python",
        "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass",
    );
    bomb.timeout = Duration::from_secs(2);
    let outcome = f.go(bomb).await;
    assert_eq!(outcome.status, Status::Timeout, "{outcome:?}");
    // Endless output is capped, with the flag.
    let mut noisy = run(
        "python",
        "import sys\nwhile True: sys.stdout.write('x' * 65536)",
    );
    noisy.timeout = Duration::from_secs(2);
    let outcome = f.go(noisy).await;
    assert!(outcome.stdout_truncated);
    assert_eq!(outcome.stdout.len(), 1 << 20);
    // A double-forked, SIGTERM-ignoring survivor is killed with the run.
    let survivor = "import os, signal, time\nif os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n        signal.signal(signal.SIGTERM, signal.SIG_IGN)\n        time.sleep(1000)\n    os._exit(0)\nprint('parent done')";
    let outcome = f.go(run("python", survivor)).await;
    assert_eq!(outcome.status, Status::Succeeded, "{outcome:?}");
    tokio::time::sleep(Duration::from_millis(200)).await;
    no_sandbox_processes(f.sandbox.config().uid);
}

#[tokio::test]
async fn hostile_programs_cannot_reach_the_host() {
    let f = fixture(61004);
    // A secret of the agent's, and a service on the host's loopback.
    let secret = f.dir.path().join("agent-key.pem");
    std::fs::write(&secret, "PRIVATE KEY").unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();

    let probe = format!(
        r#"
import os, socket, ctypes
def attempt(name, fn):
    try:
        fn()
        print(name, "ALLOWED")
    except Exception as e:
        print(name, "denied", type(e).__name__)
attempt("secret", lambda: open({secret:?}).read())
attempt("shadow", lambda: open("/etc/shadow").read())
attempt("write-usr", lambda: open("/usr/evil", "w").write("x"))
attempt("write-etc", lambda: open("/etc/evil", "w").write("x"))
def connect_host():
    s = socket.create_connection(("127.0.0.1", {port}), timeout=1)
attempt("loopback", connect_host)
def connect_out():
    s = socket.create_connection(("1.1.1.1", 53), timeout=1)
attempt("egress", connect_out)
attempt("setuid", lambda: os.setuid(0))
attempt("kill-all", lambda: os.kill(-1, 9))
libc = ctypes.CDLL(None, use_errno=True)
def ptrace():
    if libc.ptrace(16, 1, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "ptrace")
attempt("ptrace", ptrace)
def mount():
    if libc.mount(b"none", b"/tmp", b"tmpfs", 0, None) != 0:
        raise OSError(ctypes.get_errno(), "mount")
attempt("mount", mount)
def unshare():
    if libc.unshare(0x10000000) != 0:
        raise OSError(ctypes.get_errno(), "unshare")
attempt("userns", unshare)
attempt("environ", lambda: open("/proc/1/environ").read())
print("env", sorted(os.environ))
print("fds", sorted(os.listdir("/proc/self/fd")))
print("uid", os.getuid())
print("pids", sorted(p for p in os.listdir("/proc") if p.isdigit()))
"#
    );
    let out = f.ok("python", &probe).await;
    for line in out.lines() {
        assert!(!line.contains("ALLOWED"), "{line}\n{out}");
    }
    for name in [
        "secret",
        "shadow",
        "write-usr",
        "write-etc",
        "loopback",
        "egress",
        "setuid",
        "ptrace",
        "mount",
        "userns",
        "environ",
    ] {
        assert!(out.contains(&format!("{name} denied")), "{name}: {out}");
    }
    assert!(
        out.contains("env ['HOME', 'LANG', 'PATH', 'TMPDIR']"),
        "{out}"
    );
    assert!(
        out.contains("fds ['0', '1', '2', '3']"),
        "only stdio (and the listing itself): {out}"
    );
    assert!(
        out.contains(&format!("uid {}", f.sandbox.config().uid)),
        "{out}"
    );
    assert!(
        out.contains("pids ['1', '2']"),
        "its own pid namespace: {out}"
    );
    assert_eq!(std::fs::read_to_string(&secret).unwrap(), "PRIVATE KEY");
    drop(listener);
}

#[tokio::test]
async fn scratch_space_is_bounded_and_gone_afterwards() {
    let f = fixture(61005);
    // Fill /work, /tmp and /dev/shm, and make many files: bounded, the run ends.
    let fill = r#"
import os
for d in ["/work", "/tmp", "/dev/shm"]:
    try:
        with open(d + "/fill", "wb") as f:
            while True:
                f.write(b"x" * (1 << 20))
    except OSError as e:
        print(d, "full", e.errno)
try:
    for i in range(1000000):
        open("/tmp/f%d" % i, "w").close()
except OSError as e:
    print("files stopped at", i)
os.symlink("/etc/shadow", "/work/planted")
open("/work/left-behind", "w").write("for the next run")
"#;
    let mut filling = run("python", fill);
    filling.memory_bytes = 256 << 20;
    let outcome = f.go(filling).await;
    assert_eq!(outcome.status, Status::Succeeded, "{outcome:?}");
    let out = text(&outcome.stdout);
    assert!(
        out.contains("/work full") && out.contains("/tmp full") && out.contains("/dev/shm full"),
        "{out}"
    );
    assert!(out.contains("files stopped at"), "{out}");
    // The next run sees none of it.
    let out = f
        .ok(
            "python",
            "import os\nprint(sorted(os.listdir('/work')), sorted(os.listdir('/tmp')))",
        )
        .await;
    assert_eq!(out, "['main.py'] []\n");
    assert!(!Path::new("/etc/evil").exists());
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
    f.assert_clean();
    no_sandbox_processes(f.sandbox.config().uid);
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
    let runs = f.dir.path().join("sandbox/runs");
    assert_eq!(std::fs::read_dir(&runs).unwrap().count(), 0);
    assert!(!std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .contains(runs.to_str().unwrap()));
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
