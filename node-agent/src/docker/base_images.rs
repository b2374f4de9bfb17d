//! Runtime base images made from Debian packages: `debootstrap` a minimal
//! Debian into a scratch folder, trust the host's CA bundle, and import the
//! folder as an image. Used where no image registry can be reached; hosts
//! that reach one map the runtimes to upstream images instead.

use super::DockerError;
use bollard::{query_parameters::CreateImageOptionsBuilder, Docker};
use futures::StreamExt;
use std::{path::Path, time::Duration};
use tokio::process::Command;
use tokio_util::io::ReaderStream;

/// A base image Berth can make for itself.
#[derive(Debug, Clone, Copy)]
pub struct BaseImage {
    pub runtime: &'static str,
    /// `repository:tag` of the imported image.
    pub image: &'static str,
    /// Debian packages on top of minbase.
    pub packages: &'static [&'static str],
    /// Packages installed with apt inside the new root after debootstrap
    /// (debootstrap's own resolver does not follow virtual packages).
    pub apt_packages: &'static [&'static str],
    /// Extra apt sources (sources.list lines) and the release to install
    /// `apt_packages` from (`-t`), when not the suite's own.
    pub apt_sources: &'static [&'static str],
    pub apt_release: Option<&'static str>,
    /// A shell script run inside the new root once packages are in.
    pub setup_script: Option<&'static str>,
    /// Symlinks made in the root: (link, target).
    pub links: &'static [(&'static str, &'static str)],
    /// Dockerfile instructions applied at import (`ENV`, `LABEL`, `CMD`).
    pub changes: &'static [&'static str],
}

pub const PYTHON: BaseImage = BaseImage {
    runtime: "python",
    image: "berth/python:3.11-bookworm",
    packages: &["python3", "python3-pip", "python3-venv", "ca-certificates"],
    apt_packages: &[],
    apt_sources: &[],
    apt_release: None,
    setup_script: None,
    links: &[],
    changes: &[
        "ENV LANG=C.UTF-8",
        "ENV PYTHONUNBUFFERED=1",
        "ENV PIP_BREAK_SYSTEM_PACKAGES=1",
        "ENV PIP_DISABLE_PIP_VERSION_CHECK=1",
        "LABEL berth.base=python",
        "CMD [\"python3\"]",
    ],
};

/// Node.js 18 with Express from Debian (no npm registry is needed: an app's
/// dependencies are the Node packages Debian ships).
pub const NODE: BaseImage = BaseImage {
    runtime: "node",
    image: "berth/node:18-bookworm",
    packages: &["nodejs", "ca-certificates"],
    apt_packages: &["node-express"],
    apt_sources: &[],
    apt_release: None,
    setup_script: None,
    // ES modules ignore NODE_PATH; a root node_modules serves both kinds.
    links: &[("node_modules", "usr/share/nodejs")],
    changes: &[
        "ENV LANG=C.UTF-8",
        "ENV NODE_PATH=/usr/share/nodejs:/usr/lib/x86_64-linux-gnu/nodejs",
        "LABEL berth.base=node",
        "CMD [\"node\"]",
    ],
};

/// Go 1.23 (from bookworm-backports) with Go module sources from Debian
/// (gorilla/mux, google/uuid, …), indexed so that builds resolve them with
/// no module proxy.
pub const GO: BaseImage = BaseImage {
    runtime: "go",
    image: "berth/go:1.23-bookworm",
    packages: &["ca-certificates", "golang-github-gorilla-mux-dev", "golang-github-google-uuid-dev"],
    apt_packages: &["golang-1.23-go"],
    apt_sources: &["deb http://deb.debian.org/debian bookworm-backports main"],
    apt_release: Some("bookworm-backports"),
    setup_script: Some(include_str!("go-index.sh")),
    links: &[],
    changes: &[
        "ENV LANG=C.UTF-8",
        "ENV PATH=/usr/lib/go-1.23/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "ENV GOTOOLCHAIN=local",
        "ENV GOPROXY=off",
        "ENV GOSUMDB=off",
        "ENV GOFLAGS=-mod=mod",
        "ENV CGO_ENABLED=0",
        "LABEL berth.base=go",
        "CMD [\"go\", \"version\"]",
    ],
};

/// Every base image, by runtime.
pub const ALL: &[BaseImage] = &[PYTHON, NODE, GO];

pub fn by_runtime(runtime: &str) -> Option<&'static BaseImage> {
    ALL.iter().find(|b| b.runtime == runtime)
}

/// How to make base images.
#[derive(Debug, Clone)]
pub struct BootstrapOptions {
    pub suite: String,
    pub mirror: String,
    /// CA bundle copied into the image so TLS to package registries works
    /// wherever the host's works.
    pub ca_bundle: std::path::PathBuf,
    /// Scratch space for the root filesystem (removed afterwards).
    pub work_dir: std::path::PathBuf,
    /// Rebuild even if the image exists.
    pub force: bool,
    pub timeout: Duration,
}

impl Default for BootstrapOptions {
    fn default() -> Self {
        Self {
            suite: "bookworm".into(),
            mirror: "http://deb.debian.org/debian".into(),
            ca_bundle: "/etc/ssl/certs/ca-certificates.crt".into(),
            work_dir: std::env::temp_dir(),
            force: false,
            timeout: Duration::from_secs(20 * 60),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    AlreadyPresent,
    Made,
}

/// Makes `base` unless the engine already has it (or `force`).
pub async fn ensure(
    docker: &Docker,
    base: &BaseImage,
    options: &BootstrapOptions,
) -> Result<Outcome, DockerError> {
    if !options.force && docker.inspect_image(base.image).await.is_ok() {
        return Ok(Outcome::AlreadyPresent);
    }
    let scratch = tempfile::Builder::new()
        .prefix(&format!("berth-base-{}-", base.runtime))
        .tempdir_in(&options.work_dir)
        .map_err(|source| DockerError::Io {
            context: format!("scratch dir in {}", options.work_dir.display()),
            source,
        })?;
    let rootfs = scratch.path().join("rootfs");
    tokio::time::timeout(options.timeout, async {
        debootstrap(base, options, &rootfs).await?;
        apt_install(base, &rootfs).await?;
        prepare_rootfs(base, &rootfs, options).await?;
        import(docker, base, &rootfs).await
    })
    .await
    .map_err(|_| {
        DockerError::Failed(format!(
            "making {} took longer than {:?}",
            base.image, options.timeout
        ))
    })??;
    Ok(Outcome::Made)
}

async fn debootstrap(
    base: &BaseImage,
    options: &BootstrapOptions,
    rootfs: &Path,
) -> Result<(), DockerError> {
    tracing::info!(image = base.image, suite = %options.suite, "debootstrap of a base image");
    let output = Command::new("debootstrap")
        .arg("--variant=minbase")
        .arg(format!("--include={}", base.packages.join(",")))
        .arg(&options.suite)
        .arg(rootfs)
        .arg(&options.mirror)
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|source| DockerError::Io {
            context: "running debootstrap (install Debian's debootstrap package)".into(),
            source,
        })?;
    if !output.status.success() {
        let log = String::from_utf8_lossy(&output.stdout);
        let err = String::from_utf8_lossy(&output.stderr);
        let tail: Vec<&str> = log.lines().chain(err.lines()).rev().take(15).collect();
        return Err(DockerError::Failed(format!(
            "debootstrap for {} failed ({}):\n{}",
            base.image,
            output.status,
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        )));
    }
    Ok(())
}

/// Runs `args` inside the new root, failing with its last output lines.
async fn in_root(
    base: &BaseImage,
    rootfs: &Path,
    args: &[&str],
    what: &str,
) -> Result<(), DockerError> {
    let output = Command::new("chroot")
        .arg(rootfs)
        .args(args)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        )
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|source| DockerError::Io {
            context: format!("{what} in the new root"),
            source,
        })?;
    if output.status.success() {
        return Ok(());
    }
    let err = String::from_utf8_lossy(&output.stderr);
    let out = String::from_utf8_lossy(&output.stdout);
    let tail: Vec<&str> = out.lines().chain(err.lines()).rev().take(12).collect();
    Err(DockerError::Failed(format!(
        "{what} for {} failed ({}):\n{}",
        base.image,
        output.status,
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    )))
}

/// Installs `apt_packages` inside the new root, then runs its set-up script.
async fn apt_install(base: &BaseImage, rootfs: &Path) -> Result<(), DockerError> {
    if !base.apt_sources.is_empty() {
        let list = rootfs.join("etc/apt/sources.list.d/berth.list");
        tokio::fs::write(&list, base.apt_sources.join("\n") + "\n")
            .await
            .map_err(|source| DockerError::Io {
                context: "writing apt sources".into(),
                source,
            })?;
        in_root(base, rootfs, &["apt-get", "update", "-q"], "apt-get update").await?;
    }
    if !base.apt_packages.is_empty() {
        let mut args = vec!["apt-get", "install", "-y", "-q", "--no-install-recommends"];
        if let Some(release) = base.apt_release {
            args.extend(["-t", release]);
        }
        args.extend(base.apt_packages);
        in_root(base, rootfs, &args, "apt-get install").await?;
    }
    if let Some(script) = base.setup_script {
        let path = rootfs.join("tmp/berth-setup.sh");
        tokio::fs::write(&path, script)
            .await
            .map_err(|source| DockerError::Io {
                context: "writing the set-up script".into(),
                source,
            })?;
        in_root(
            base,
            rootfs,
            &["sh", "/tmp/berth-setup.sh"],
            "the set-up script",
        )
        .await?;
        let _ = tokio::fs::remove_file(&path).await;
    }
    Ok(())
}

/// Trusts the host's CA bundle, makes the links, and drops package caches.
async fn prepare_rootfs(
    base: &BaseImage,
    rootfs: &Path,
    options: &BootstrapOptions,
) -> Result<(), DockerError> {
    let io = |context: String| move |source| DockerError::Io { context, source };
    for (link, target) in base.links {
        let path = rootfs.join(link);
        if tokio::fs::symlink_metadata(&path).await.is_err() {
            tokio::fs::symlink(target, &path)
                .await
                .map_err(io(format!("linking {link}")))?;
        }
    }
    if options.ca_bundle.exists() {
        let target = rootfs.join("etc/ssl/certs/ca-certificates.crt");
        tokio::fs::create_dir_all(target.parent().expect("has a parent"))
            .await
            .map_err(io("creating etc/ssl/certs".into()))?;
        tokio::fs::copy(&options.ca_bundle, &target)
            .await
            .map_err(io(format!("copying {}", options.ca_bundle.display())))?;
    }
    for dir in ["var/cache/apt/archives", "var/lib/apt/lists"] {
        let dir = rootfs.join(dir);
        if let Ok(mut entries) = tokio::fs::read_dir(&dir).await {
            while let Ok(Some(entry)) = entries.next_entry().await {
                let path = entry.path();
                if path.is_file() {
                    let _ = tokio::fs::remove_file(path).await;
                }
            }
        }
    }
    Ok(())
}

/// Streams `tar -C rootfs -c .` into the engine's image import.
async fn import(docker: &Docker, base: &BaseImage, rootfs: &Path) -> Result<(), DockerError> {
    let (repo, tag) = base
        .image
        .rsplit_once(':')
        .unwrap_or((base.image, "latest"));
    let mut tar = Command::new("tar")
        .arg("-C")
        .arg(rootfs)
        .args(["--numeric-owner", "-c", "."])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| DockerError::Io {
            context: "running tar".into(),
            source,
        })?;
    let stdout = tar.stdout.take().expect("piped stdout");
    let body = ReaderStream::new(stdout);
    let mut options = CreateImageOptionsBuilder::default()
        .from_src("-")
        .repo(repo)
        .tag(tag);
    options = options.changes(base.changes.iter().map(|c| c.to_string()).collect());
    let mut progress = docker.create_image(
        Some(options.build()),
        Some(bollard::body_try_stream(body)),
        None,
    );
    while let Some(item) = progress.next().await {
        item?;
    }
    let status = tar.wait().await.map_err(|source| DockerError::Io {
        context: "waiting for tar".into(),
        source,
    })?;
    if !status.success() {
        return Err(DockerError::Failed(format!(
            "tar of the root filesystem failed ({status})"
        )));
    }
    tracing::info!(image = base.image, "base image imported");
    Ok(())
}
