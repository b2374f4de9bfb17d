//! One cgroup per sandboxed run, on cgroup v2 (unified) or v1 hosts: memory
//! (swap included), pids and CPU limits, usage read back, every process
//! killed at the end, and the group removed.
//!
//! The cgroup file system is the kernel's interface here; reading and
//! writing its files is all there is to it. (`cgroups-rs` would bring a
//! second, older `nix` and D-Bus with it.)

use std::{
    io,
    path::{Path, PathBuf},
    time::Duration,
};

const ROOT: &str = "/sys/fs/cgroup";
const PARENT: &str = "berth-sandbox";

/// Which hierarchy the host has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hierarchy {
    /// `/sys/fs/cgroup` is the unified hierarchy.
    V2,
    /// One mount per controller under `/sys/fs/cgroup`.
    V1,
}

impl Hierarchy {
    pub fn detect() -> io::Result<Self> {
        if Path::new(ROOT).join("cgroup.controllers").exists() {
            Ok(Hierarchy::V2)
        } else if Path::new(ROOT)
            .join("memory")
            .join("memory.limit_in_bytes")
            .exists()
        {
            Ok(Hierarchy::V1)
        } else {
            Err(io::Error::other(
                "no usable cgroup hierarchy at /sys/fs/cgroup (need cgroup v2, or v1 with the memory controller)",
            ))
        }
    }
}

/// Limits of one run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub memory_bytes: u64,
    pub pids: u32,
    /// Thousandths of a core.
    pub cpu_millis: u32,
}

/// What a run used.
#[derive(Debug, Clone, Copy, Default)]
pub struct Usage {
    pub cpu: Duration,
    pub peak_memory_bytes: u64,
    pub oom_killed: bool,
}

/// A run's cgroup (one directory per controller on v1).
#[derive(Debug)]
pub struct Cgroup {
    hierarchy: Hierarchy,
    /// The directories: one on v2; memory, pids, cpu, cpuacct on v1.
    dirs: Vec<PathBuf>,
    /// The memory limit as last written.
    memory: Option<u64>,
    /// The pids and CPU limits as last written.
    others: Option<(u32, u32)>,
    /// Where the pids, cpu and cpuacct groups go when the run is over (v1).
    spares: Option<Spares>,
    /// The files [`Cgroup::usage`] reads, opened as the group is made
    /// (opening a cgroup file costs more than reading it, and the reads
    /// come while the run is being answered).
    opened: Vec<(PathBuf, std::fs::File)>,
}

/// On cgroup v1: the pids, cpu and cpuacct groups of finished runs, empty,
/// kept for later runs (making and removing groups is the costly part of a
/// run's cgroups there). What they limit counts live processes only, and
/// cpuacct's counter is set back to zero; the memory group is always new,
/// since the page cache a run brings in stays charged to its group. The
/// kept groups are removed when the last holder lets go.
pub type Spares = std::sync::Arc<SparePool>;

#[derive(Debug, Default)]
pub struct SparePool(std::sync::Mutex<Vec<Spare>>);

impl SparePool {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Spare>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Removes the kept groups (empty: nothing runs in them).
    pub fn release(&self) {
        let kept = std::mem::take(&mut *self.lock());
        for spare in kept {
            remove_dirs(&spare.dirs);
        }
    }
}

impl Drop for SparePool {
    fn drop(&mut self) {
        self.release();
    }
}

/// Kept pids, cpu and cpuacct groups.
#[derive(Debug)]
pub struct Spare {
    dirs: [PathBuf; 3],
    /// The pids and CPU limits as last written.
    others: Option<(u32, u32)>,
}

fn remove_dirs(dirs: &[PathBuf]) {
    for dir in dirs {
        for _ in 0..100 {
            match std::fs::remove_dir(dir) {
                Ok(()) => break,
                Err(e) if e.kind() == io::ErrorKind::NotFound => break,
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
    }
}

fn write(path: &Path, value: &str) -> io::Result<()> {
    std::fs::write(path, value).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("writing {value:?} to {}: {e}", path.display()),
        )
    })
}

fn read_u64(path: &Path) -> Option<u64> {
    parse_u64(&std::fs::read_to_string(path).ok()?)
}

fn parse_u64(text: &str) -> Option<u64> {
    text.trim().parse().ok()
}

/// `key value` lines (memory.events, cpu.stat, memory.oom_control).
fn find_key(text: &str, key: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(' ')?.trim().parse().ok())
}

impl Cgroup {
    /// Makes the cgroup `name` with `limits` (on v1 with kept groups from
    /// `spares` where there are some).
    pub fn create(
        hierarchy: &Hierarchy,
        name: &str,
        limits: Limits,
        spares: &Spares,
    ) -> io::Result<Self> {
        let mut cgroup = match hierarchy {
            Hierarchy::V2 => {
                let parent = Path::new(ROOT).join(PARENT);
                std::fs::create_dir_all(&parent)?;
                // Delegate the controllers a run needs to the parent's children.
                let _ = write(
                    &Path::new(ROOT).join("cgroup.subtree_control"),
                    "+memory +pids +cpu",
                );
                write(&parent.join("cgroup.subtree_control"), "+memory +pids +cpu")?;
                let dir = parent.join(name);
                std::fs::create_dir(&dir)?;
                Cgroup {
                    hierarchy: Hierarchy::V2,
                    dirs: vec![dir],
                    memory: None,
                    others: None,
                    spares: None,
                    opened: Vec::new(),
                }
            }
            Hierarchy::V1 => {
                let memory = Path::new(ROOT).join("memory").join(PARENT).join(name);
                std::fs::create_dir_all(&memory)?;
                let kept = spares.lock().pop();
                let spare = match kept {
                    Some(spare) => spare,
                    None => {
                        let dirs = ["pids", "cpu", "cpuacct"]
                            .map(|c| Path::new(ROOT).join(c).join(PARENT).join(name));
                        let made = dirs.iter().try_for_each(std::fs::create_dir_all);
                        if let Err(err) = made {
                            remove_dirs(&dirs);
                            remove_dirs(&[memory]);
                            return Err(err);
                        }
                        Spare { dirs, others: None }
                    }
                };
                let mut dirs = vec![memory];
                dirs.extend(spare.dirs);
                Cgroup {
                    hierarchy: Hierarchy::V1,
                    dirs,
                    memory: None,
                    others: spare.others,
                    spares: Some(spares.clone()),
                    opened: Vec::new(),
                }
            }
        };
        // On an error the group is removed as it drops.
        cgroup.set_limits(limits)?;
        cgroup.opened = cgroup
            .usage_files()
            .into_iter()
            .filter_map(|path| Some((path.clone(), std::fs::File::open(path).ok()?)))
            .collect();
        Ok(cgroup)
    }

    /// The files every [`Cgroup::usage`] reads.
    fn usage_files(&self) -> Vec<PathBuf> {
        match self.hierarchy {
            Hierarchy::V2 => ["cpu.stat", "memory.peak", "memory.events"]
                .iter()
                .map(|f| self.dirs[0].join(f))
                .collect(),
            Hierarchy::V1 => {
                let memory = self.dir("memory");
                vec![
                    memory.join("memory.oom_control"),
                    memory.join("memory.memsw.failcnt"),
                    memory.join("memory.max_usage_in_bytes"),
                    self.dir("cpuacct").join("cpuacct.usage"),
                ]
            }
        }
    }

    /// A file of the group as it is now: from the start of the one opened
    /// ahead where there is one (a cgroup file reads afresh from offset 0).
    fn read(&self, path: &Path) -> Option<String> {
        let Some((_, file)) = self.opened.iter().find(|(p, _)| p == path) else {
            return std::fs::read_to_string(path).ok();
        };
        use std::os::unix::fs::FileExt;
        let mut buf = vec![0u8; 4096];
        let mut len = 0;
        while len < buf.len() {
            match file.read_at(&mut buf[len..], len as u64) {
                Ok(0) => break,
                Ok(n) => len += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return None,
            }
        }
        buf.truncate(len);
        String::from_utf8(buf).ok()
    }

    fn read_u64(&self, path: &Path) -> Option<u64> {
        parse_u64(&self.read(path)?)
    }

    fn read_key(&self, path: &Path, key: &str) -> Option<u64> {
        find_key(&self.read(path)?, key)
    }

    fn dir(&self, controller: &str) -> &Path {
        match self.hierarchy {
            Hierarchy::V2 => &self.dirs[0],
            Hierarchy::V1 => {
                let index = ["memory", "pids", "cpu", "cpuacct"]
                    .iter()
                    .position(|c| *c == controller)
                    .expect("a known controller");
                &self.dirs[index]
            }
        }
    }

    /// Sets (or resets) the group's limits; writes nothing when they are
    /// already these.
    pub fn set_limits(&mut self, limits: Limits) -> io::Result<()> {
        let others = (limits.pids, limits.cpu_millis);
        if self.memory == Some(limits.memory_bytes) && self.others == Some(others) {
            return Ok(());
        }
        let period: u64 = 100_000;
        let quota = u64::from(limits.cpu_millis.max(10)) * period / 1000;
        match self.hierarchy {
            Hierarchy::V2 => {
                self.memory = None;
                self.others = None;
                let dir = &self.dirs[0];
                write(&dir.join("memory.max"), &limits.memory_bytes.to_string())?;
                // No swap: memory beyond the limit is an OOM kill, not a slow run.
                let _ = write(&dir.join("memory.swap.max"), "0");
                write(&dir.join("pids.max"), &limits.pids.to_string())?;
                write(&dir.join("cpu.max"), &format!("{quota} {period}"))?;
            }
            Hierarchy::V1 => {
                if self.memory != Some(limits.memory_bytes) {
                    self.memory = None;
                    self.set_memory_v1(limits.memory_bytes)?;
                }
                if self.others != Some(others) {
                    self.others = None;
                    write(&self.dir("pids").join("pids.max"), &limits.pids.to_string())?;
                    let cpu = self.dir("cpu");
                    write(&cpu.join("cpu.cfs_period_us"), &period.to_string())?;
                    write(&cpu.join("cpu.cfs_quota_us"), &quota.to_string())?;
                }
            }
        }
        self.memory = Some(limits.memory_bytes);
        self.others = Some(others);
        Ok(())
    }

    /// The memory limit on v1 (and memory + swap where swap accounting is on).
    fn set_memory_v1(&self, bytes: u64) -> io::Result<()> {
        let memory = self.dir("memory");
        let value = bytes.to_string();
        // memsw (memory + swap) exists when swap accounting is on;
        // it may never be below the memory limit, so the order of
        // the two writes depends on whether the limit grows.
        let memsw = memory.join("memory.memsw.limit_in_bytes");
        let grows =
            read_u64(&memory.join("memory.limit_in_bytes")).is_some_and(|current| bytes > current);
        if memsw.exists() && grows {
            write(&memsw, &value)?;
            write(&memory.join("memory.limit_in_bytes"), &value)?;
        } else {
            write(&memory.join("memory.limit_in_bytes"), &value)?;
            if memsw.exists() {
                write(&memsw, &value)?;
            }
        }
        if !memsw.exists() {
            // No swap accounting: no memory + swap limit to set. A group
            // with swappiness 0 has none of its memory swapped out when it
            // reaches its limit (it is OOM-killed instead), so swap stays
            // bounded all the same.
            write(&memory.join("memory.swappiness"), "0")?;
        }
        Ok(())
    }

    /// The files a single-threaded process writes `0` (itself) to, to
    /// join the group. On v1 that is `tasks`: moving the calling thread
    /// alone spares the kernel the host-wide lock a whole process's move
    /// takes (and the RCU grace period that lock waits for), during which
    /// every fork and exit on the host would wait.
    pub fn procs_files(&self) -> io::Result<Vec<std::fs::File>> {
        let file = match self.hierarchy {
            Hierarchy::V2 => "cgroup.procs",
            Hierarchy::V1 => "tasks",
        };
        self.dirs
            .iter()
            .map(|d| {
                let path = d.join(file);
                std::fs::OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))
            })
            .collect()
    }

    /// Processes in the group now.
    pub fn pids(&self) -> Vec<i32> {
        // On v1 the pids controller sees every task, wherever it was put first.
        let dir = match self.hierarchy {
            Hierarchy::V2 => &self.dirs[0],
            Hierarchy::V1 => self.dir("pids"),
        };
        std::fs::read_to_string(dir.join("cgroup.procs"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    }

    pub fn usage(&self) -> Usage {
        match self.hierarchy {
            Hierarchy::V2 => {
                let dir = &self.dirs[0];
                Usage {
                    cpu: Duration::from_micros(
                        self.read_key(&dir.join("cpu.stat"), "usage_usec")
                            .unwrap_or(0),
                    ),
                    peak_memory_bytes: self.read_u64(&dir.join("memory.peak")).unwrap_or(0),
                    oom_killed: self
                        .read_key(&dir.join("memory.events"), "oom_kill")
                        .unwrap_or(0)
                        > 0,
                }
            }
            Hierarchy::V1 => {
                let memory = self.dir("memory");
                let oom = self
                    .read_key(&memory.join("memory.oom_control"), "oom_kill")
                    .unwrap_or(0)
                    > 0
                    || self
                        .read_u64(&memory.join("memory.memsw.failcnt"))
                        .unwrap_or(0)
                        > 0
                        && self.read_u64(&memory.join("memory.memsw.max_usage_in_bytes"))
                            >= self.read_u64(&memory.join("memory.memsw.limit_in_bytes"));
                Usage {
                    cpu: Duration::from_nanos(
                        self.read_u64(&self.dir("cpuacct").join("cpuacct.usage"))
                            .unwrap_or(0),
                    ),
                    peak_memory_bytes: self
                        .read_u64(&memory.join("memory.max_usage_in_bytes"))
                        .unwrap_or(0),
                    oom_killed: oom,
                }
            }
        }
    }

    /// SIGKILLs every process in the group until none is left (bounded).
    pub fn kill_all(&self) {
        if self.hierarchy == Hierarchy::V2 && write(&self.dirs[0].join("cgroup.kill"), "1").is_ok()
        {
            for _ in 0..200 {
                if self.pids().is_empty() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        // A fork bomb may add processes while we kill: go round until empty.
        for _ in 0..1000 {
            let pids = self.pids();
            if pids.is_empty() {
                return;
            }
            for pid in pids {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        tracing::warn!(cgroup = %self.dirs[0].display(), "processes remain in a sandbox cgroup after killing");
    }

    /// Kills what is left and removes the group; on v1 its pids, cpu
    /// and cpuacct groups are kept for another run once empty. Once, as
    /// the group drops.
    fn remove(&self) {
        self.kill_all();
        if let Some(spares) = &self.spares {
            let cpuacct = self.dir("cpuacct").join("cpuacct.usage");
            if self.pids().is_empty() && write(&cpuacct, "0").is_ok() {
                remove_dirs(&self.dirs[..1]);
                let [_, pids, cpu, cpuacct] = &self.dirs[..] else {
                    unreachable!("four groups on v1")
                };
                spares.lock().push(Spare {
                    dirs: [pids.clone(), cpu.clone(), cpuacct.clone()],
                    others: self.others,
                });
                return;
            }
        }
        remove_dirs(&self.dirs);
    }
}

/// Where groups are made: the unified hierarchy's parent on v2, the pids
/// controller's on v1.
pub fn parent(hierarchy: &Hierarchy) -> PathBuf {
    match hierarchy {
        Hierarchy::V2 => Path::new(ROOT).join(PARENT),
        Hierarchy::V1 => Path::new(ROOT).join("pids").join(PARENT),
    }
}

/// Removes the groups whose names start with `prefix`, killing what is in
/// them: runs an earlier agent left behind when it died.
pub fn sweep(hierarchy: &Hierarchy, prefix: &str) -> usize {
    let parents: Vec<PathBuf> = match hierarchy {
        Hierarchy::V2 => vec![Path::new(ROOT).join(PARENT)],
        Hierarchy::V1 => ["memory", "pids", "cpu", "cpuacct"]
            .iter()
            .map(|c| Path::new(ROOT).join(c).join(PARENT))
            .collect(),
    };
    let mut names: Vec<String> = Vec::new();
    for parent in &parents {
        for entry in std::fs::read_dir(parent).into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if entry.path().is_dir() && name.starts_with(prefix) && !names.contains(&name) {
                names.push(name);
            }
        }
    }
    for name in &names {
        let dirs = match hierarchy {
            Hierarchy::V2 => vec![Path::new(ROOT).join(PARENT).join(name)],
            Hierarchy::V1 => ["memory", "pids", "cpu", "cpuacct"]
                .iter()
                .map(|c| Path::new(ROOT).join(c).join(PARENT).join(name))
                .collect(),
        };
        // Its processes killed and its directories removed as it drops.
        drop(Cgroup {
            hierarchy: hierarchy.clone(),
            dirs,
            memory: None,
            others: None,
            spares: None,
            opened: Vec::new(),
        });
    }
    names.len()
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        self.opened.clear();
        self.remove();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// A v1 group over plain files in `dir`: memory, pids, cpu, cpuacct.
    fn v1_group_in(dir: &Path, memsw: bool) -> Cgroup {
        let dirs: Vec<PathBuf> = ["memory", "pids", "cpu", "cpuacct"]
            .iter()
            .map(|c| dir.join(c))
            .collect();
        for d in &dirs {
            std::fs::create_dir_all(d).unwrap();
        }
        std::fs::write(dirs[0].join("memory.limit_in_bytes"), "9223372036854771712").unwrap();
        std::fs::write(dirs[0].join("memory.swappiness"), "60").unwrap();
        if memsw {
            std::fs::write(
                dirs[0].join("memory.memsw.limit_in_bytes"),
                "9223372036854771712",
            )
            .unwrap();
        }
        Cgroup {
            hierarchy: Hierarchy::V1,
            dirs,
            memory: None,
            others: None,
            spares: None,
            opened: Vec::new(),
        }
    }

    /// Without swap accounting there is no memory + swap limit: the group
    /// is kept from swapping instead, so swap stays bounded either way.
    #[test]
    fn swap_is_bounded_on_v1_with_or_without_swap_accounting() {
        let dir = tempfile::tempdir().unwrap();
        let group = v1_group_in(&dir.path().join("plain"), false);
        group.set_memory_v1(128 << 20).unwrap();
        let memory = dir.path().join("plain/memory");
        let read = |f: &str| std::fs::read_to_string(memory.join(f)).unwrap();
        assert_eq!(read("memory.limit_in_bytes"), (128u64 << 20).to_string());
        assert_eq!(read("memory.swappiness"), "0");

        let group = v1_group_in(&dir.path().join("accounted"), true);
        group.set_memory_v1(128 << 20).unwrap();
        let memory = dir.path().join("accounted/memory");
        let read = |f: &str| std::fs::read_to_string(memory.join(f)).unwrap();
        assert_eq!(
            read("memory.memsw.limit_in_bytes"),
            (128u64 << 20).to_string()
        );
    }

    /// The usage files are opened as the group is made; a read when the
    /// run is over says what the group used by then.
    #[test]
    fn usage_read_through_files_opened_ahead_is_current() {
        let hierarchy = Hierarchy::detect().expect("a cgroup hierarchy");
        let spares = Spares::default();
        let name = format!("berth-test-usage-{}", std::process::id());
        let limits = Limits {
            memory_bytes: 512 << 20,
            pids: 64,
            cpu_millis: 2000,
        };
        let group = Cgroup::create(&hierarchy, &name, limits, &spares).expect("a cgroup");
        assert!(!group.opened.is_empty(), "no usage file opened ahead");
        let before = group.usage();
        // Joins the group, then takes 64 MiB and some CPU time once told to.
        let mut child = std::process::Command::new("python3")
            .args([
                "-c",
                "import sys\nsys.stdin.read(1)\nb = b'x' * (64 << 20)\nsum(range(3_000_000))\n",
            ])
            .stdin(std::process::Stdio::piped())
            .spawn()
            .expect("python3");
        for mut procs in group.procs_files().expect("the group's files") {
            procs
                .write_all(child.id().to_string().as_bytes())
                .expect("joining the group");
        }
        child.stdin.take().unwrap().write_all(b"go").unwrap();
        assert!(child.wait().unwrap().success());
        let after = group.usage();
        assert!(
            after.cpu >= before.cpu + Duration::from_millis(20),
            "before {before:?}, after {after:?}"
        );
        assert!(
            after.peak_memory_bytes >= 64 << 20,
            "before {before:?}, after {after:?}"
        );
        assert!(!after.oom_killed, "{after:?}");
    }
}
