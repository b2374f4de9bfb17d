//! What this host offers: capacity read from the kernel, Docker and the
//! language toolchains found on it.

use berth_proto::pb;
use std::time::Duration;
use tokio::process::Command;

/// CPU cores (as millicores) usable by this process, and total memory.
pub fn capacity() -> pb::Capacity {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    pb::Capacity {
        cpu_millis: (cores * 1000) as u32,
        memory_bytes: mem_total().unwrap_or(0),
    }
}

fn mem_total() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// Docker and every sandbox language, probed concurrently, each within a
/// timeout. A language counts only where the sandbox works (`sandbox`):
/// its toolchain alone runs nothing.
pub async fn runtimes(sandbox: bool) -> Vec<pb::RuntimeInfo> {
    let languages = crate::sandbox::languages::LANGUAGES
        .iter()
        .map(|l| async move {
            if sandbox {
                probe(l.name, l.version[0], &l.version[1..]).await
            } else {
                unavailable(l.name, "this node has no working sandbox".into())
            }
        });
    let (docker, mut found) = tokio::join!(docker(), futures::future::join_all(languages));
    found.insert(0, docker);
    found
}

async fn docker() -> pb::RuntimeInfo {
    let probe = async {
        let docker = bollard::Docker::connect_with_local_defaults()?
            .negotiate_version()
            .await?;
        let version = docker.version().await?;
        Ok::<_, bollard::errors::Error>(format!(
            "{} (API {})",
            version.version.unwrap_or_default(),
            version.api_version.unwrap_or_default()
        ))
    };
    match tokio::time::timeout(PROBE_TIMEOUT, probe).await {
        Ok(Ok(version)) => available("docker", version),
        Ok(Err(err)) => unavailable("docker", format!("engine unreachable: {err}")),
        Err(_) => unavailable("docker", "engine did not answer within 5 s".into()),
    }
}

async fn probe(name: &str, program: &str, args: &[&str]) -> pb::RuntimeInfo {
    let run = Command::new(program).args(args).kill_on_drop(true).output();
    match tokio::time::timeout(PROBE_TIMEOUT, run).await {
        Ok(Ok(output)) if output.status.success() => {
            // Some tools (javac) print their version on stderr.
            let text = if output.stdout.is_empty() {
                output.stderr
            } else {
                output.stdout
            };
            let first = String::from_utf8_lossy(&text)
                .lines()
                .next()
                .unwrap_or("")
                .trim()
                .to_owned();
            available(name, first.chars().take(128).collect())
        }
        Ok(Ok(output)) => unavailable(name, format!("{program} exited with {}", output.status)),
        Ok(Err(err)) => unavailable(name, format!("{program}: {err}")),
        Err(_) => unavailable(name, format!("{program} did not answer within 5 s")),
    }
}

fn available(name: &str, version: String) -> pb::RuntimeInfo {
    pb::RuntimeInfo {
        name: name.into(),
        available: true,
        version,
        detail: String::new(),
    }
}

fn unavailable(name: &str, detail: String) -> pb::RuntimeInfo {
    pb::RuntimeInfo {
        name: name.into(),
        available: false,
        version: String::new(),
        detail: detail.chars().take(512).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capacity_is_read_from_the_host() {
        let capacity = capacity();
        assert!(capacity.cpu_millis >= 1000);
        assert!(capacity.memory_bytes > 64 * 1024 * 1024);
    }

    #[tokio::test]
    async fn every_runtime_is_reported_found_or_not() {
        let runtimes = runtimes(true).await;
        let names: Vec<_> = runtimes.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "docker",
                "python",
                "javascript",
                "typescript",
                "cpp",
                "java",
                "go",
                "rust"
            ]
        );
        for runtime in &runtimes {
            if runtime.available {
                assert!(!runtime.version.is_empty(), "{runtime:?}");
            } else {
                assert!(!runtime.detail.is_empty(), "{runtime:?}");
            }
        }
        // This machine has python3 (the test suite's set-up needs it).
        assert!(runtimes
            .iter()
            .any(|r| r.name == "python" && r.available && r.version.contains("Python")));
    }
}
