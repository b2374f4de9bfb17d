//! The `berth apps` commands as an app author runs them, against `berth up`
//! and the real Docker engine.

use serde_json::Value;
use std::{
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

fn berth(data_dir: &Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_berth"))
        .arg("--data-dir")
        .arg(data_dir)
        .args(args)
        .output()
        .expect("running berth")
}

struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_for<T>(what: &str, limit: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn json(output: std::process::Output) -> Value {
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&output.stdout)))
}

#[test]
fn apps_create_get_logs_stats_and_delete_from_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("state");
    let made = berth(&data, &["images", "bootstrap", "--runtime", "python"]);
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let child = Command::new(env!("CARGO_BIN_EXE_berth"))
        .arg("--data-dir")
        .arg(&data)
        .args([
            "up",
            "--grpc-addr",
            "127.0.0.1:0",
            "--gateway-addr",
            "127.0.0.1:0",
            "--metrics-addr",
            "127.0.0.1:0",
            "--gateway-metrics-addr",
            "127.0.0.1:0",
        ])
        .args(["--node-name", "cli-node", "--no-bootstrap"])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let _guard = Guard(child);
    wait_for("a ready node", Duration::from_secs(60), || {
        let out = berth(&data, &["nodes", "-o", "json"]);
        let nodes: Vec<Value> = serde_json::from_slice(&out.stdout).ok()?;
        (nodes.len() == 1 && nodes[0]["state"] == "ready").then_some(())
    });

    // Code runs in the node's sandbox (`berth up` is its own sandbox helper).
    let script = dir.path().join("hi.py");
    std::fs::write(&script, "import sys\nprint(sys.stdin.read().upper(), end='')\nsys.exit(3 if 'FAIL' in sys.argv else 0)\n").unwrap();
    let input = dir.path().join("in.txt");
    std::fs::write(&input, "hello from stdin\n").unwrap();
    let ran = berth(
        &data,
        &[
            "exec",
            "--lang",
            "python",
            script.to_str().unwrap(),
            "--stdin",
            input.to_str().unwrap(),
        ],
    );
    assert!(
        ran.status.success(),
        "{}",
        String::from_utf8_lossy(&ran.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&ran.stdout), "HELLO FROM STDIN\n");
    let shown = json(berth(
        &data,
        &[
            "exec",
            "--lang",
            "python",
            script.to_str().unwrap(),
            "--stdin",
            input.to_str().unwrap(),
            "-o",
            "json",
        ],
    ));
    assert_eq!(shown["state"], "succeeded", "{shown}");
    assert_eq!(shown["language"], "python", "{shown}");
    assert_eq!(shown["stdout"], "HELLO FROM STDIN\n", "{shown}");
    assert_eq!(shown["exit_code"], 0, "{shown}");
    let failing = dir.path().join("fail.js");
    std::fs::write(&failing, "console.error('going down'); process.exit(3)").unwrap();
    let ran = berth(
        &data,
        &["exec", "--lang", "javascript", failing.to_str().unwrap()],
    );
    assert_eq!(ran.status.code(), Some(3), "the program's exit code");
    assert_eq!(String::from_utf8_lossy(&ran.stderr), "going down\n");
    let broken = dir.path().join("broken.py");
    std::fs::write(&broken, "def f(:\n    pass\n").unwrap();
    let checked = berth(
        &data,
        &[
            "exec",
            "validate",
            "--lang",
            "python",
            broken.to_str().unwrap(),
        ],
    );
    assert_eq!(checked.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&checked.stdout).contains("broken.py:1:"),
        "{}",
        String::from_utf8_lossy(&checked.stdout)
    );
    let info = berth(&data, &["exec", "info"]);
    assert!(
        String::from_utf8_lossy(&info.stdout).contains("python"),
        "{}",
        String::from_utf8_lossy(&info.stdout)
    );
    let key = json(berth(
        &data,
        &["keys", "create", "--tenant", "cli", "-o", "json"],
    ));
    assert!(key["key"].as_str().unwrap().starts_with("berth_"), "{key}");
    let keys = json(berth(
        &data,
        &["keys", "list", "--tenant", "cli", "-o", "json"],
    ));
    assert_eq!(keys[0]["id"], key["id"]);
    assert!(keys[0].get("key").is_none());

    let code = dir.path().join("app.py");
    std::fs::write(&code, "from flask import Flask\napp = Flask(__name__)\n\n@app.get('/')\ndef hi():\n    return 'hi from the cli\\n'\n").unwrap();
    let requirements = dir.path().join("requirements.txt");
    std::fs::write(&requirements, "flask\n").unwrap();
    let name = format!("cli-{}", std::process::id());
    let created = json(berth(
        &data,
        &[
            "apps",
            "create",
            "--name",
            &name,
            "--runtime",
            "python",
            "--code",
            code.to_str().unwrap(),
            "--requirements",
            requirements.to_str().unwrap(),
            "--memory",
            "128Mi",
            "-o",
            "json",
        ],
    ));
    let id = created["id"].as_str().unwrap().to_owned();
    assert_eq!(
        created["state"], "running",
        "create waits until the app runs: {created}"
    );
    assert_eq!(created["name"], name.as_str());

    let app = json(berth(&data, &["apps", "get", &id, "-o", "json"]));
    let instance = &app["instances"][0];
    assert_eq!(instance["state"], "running");
    assert_eq!(instance["address"], "127.0.0.1");
    assert!(instance["container_id"].as_str().unwrap().len() >= 12);
    let port = instance["host_port"].as_u64().unwrap();
    let body = {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", port as u16)).unwrap();
        stream
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut body = String::new();
        stream.read_to_string(&mut body).unwrap();
        body
    };
    assert!(body.ends_with("hi from the cli\n"), "{body}");

    let listed: Vec<Value> =
        serde_json::from_value(json(berth(&data, &["apps", "list", "-o", "json"]))).unwrap();
    assert!(listed.iter().any(|a| a["id"] == id.as_str()));
    let logs = berth(&data, &["apps", "logs", &id, "--tail", "20"]);
    assert!(logs.status.success());
    assert!(
        String::from_utf8_lossy(&logs.stdout).contains("GET / HTTP/1.1"),
        "{}",
        String::from_utf8_lossy(&logs.stdout)
    );
    let stats: Vec<Value> =
        serde_json::from_value(json(berth(&data, &["apps", "stats", &id, "-o", "json"]))).unwrap();
    assert_eq!(stats.len(), 1);
    let build_logs = berth(
        &data,
        &["builds", "logs", app["current_build_id"].as_str().unwrap()],
    );
    assert!(build_logs.status.success());
    let events = berth(&data, &["events", "--app", &id, "-o", "json"]);
    let kinds: Vec<String> = String::from_utf8_lossy(&events.stdout)
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["kind"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    for kind in [
        "app.created",
        "build.started",
        "build.succeeded",
        "instance.running",
    ] {
        assert!(
            kinds.iter().any(|k| k == kind),
            "{kind} missing from {kinds:?}"
        );
    }

    let deleted = json(berth(&data, &["apps", "delete", &id, "-o", "json"]));
    assert_eq!(deleted["deleted"], true);
    wait_for(
        "the app's containers to go",
        Duration::from_secs(30),
        || {
            let out = Command::new("docker")
                .args(["ps", "-aq", "--filter", &format!("label=berth.app={id}")])
                .output()
                .ok()?;
            out.stdout.iter().all(u8::is_ascii_whitespace).then_some(())
        },
    );
    let missing = berth(&data, &["apps", "get", &id]);
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("NotFound"));
}
