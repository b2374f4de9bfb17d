//! Build contexts: one deterministic tar per build, and its digest.
//!
//! Runtime apps: `Dockerfile`, `.dockerignore`, the launcher and dependency
//! file at the root, the user's code under `code/`. Python and Node images
//! only take the dependencies (code is mounted read-only at `/app/code`), so
//! their digest covers everything but `code/`: new code with the same
//! dependencies reuses the image. Go compiles the code into the image, so
//! its digest covers the code too. Dockerfile apps: the checked archive as
//! it is, digest over all of it.

use super::runtimes;
use berth_proto::{
    domain::{dockerfile, AppSpec, Runtime},
    pb,
};
use sha2::{Digest, Sha256};
use std::path::Path;

/// Directory of the user's code inside a runtime app's context.
pub const CODE_PREFIX: &str = "code/";

#[derive(Debug, thiserror::Error)]
pub enum ContextError {
    #[error(
        "runtime {0} cannot be built from code files here; upload an archive with a Dockerfile"
    )]
    Unsupported(Runtime),
    #[error("the archive has no Dockerfile at its root")]
    NoDockerfile,
    #[error(transparent)]
    Dockerfile(#[from] dockerfile::DockerfileError),
    #[error("{0}")]
    Archive(#[from] berth_archive::ArchiveError),
    #[error("writing the build context: {0}")]
    Io(#[from] std::io::Error),
}

/// A build context ready to store and send.
#[derive(Debug, Clone)]
pub struct BuildContext {
    /// Hex SHA-256 of what the image is made from.
    pub digest: String,
    pub tar: Vec<u8>,
}

impl BuildContext {
    /// `apps.berth.invalid/{tenant}/{app}:{digest12}`.
    pub fn image_tag(&self, spec: &AppSpec) -> String {
        format!(
            "{}:{}",
            dockerfile::app_repository(&spec.tenant, &spec.name),
            &self.digest[..12]
        )
    }
}

fn append(builder: &mut tar::Builder<Vec<u8>>, path: &str, contents: &[u8]) -> std::io::Result<()> {
    let mut header = tar::Header::new_gnu();
    header.set_size(contents.len() as u64);
    header.set_mode(0o644);
    header.set_mtime(0);
    header.set_uid(0);
    header.set_gid(0);
    header.set_entry_type(tar::EntryType::Regular);
    builder.append_data(&mut header, path, contents)
}

/// The context of a runtime app from its uploaded files.
pub fn for_runtime(
    spec: &AppSpec,
    files: &[pb::SourceFile],
    base_image: &str,
) -> Result<BuildContext, ContextError> {
    let dependency = |name: &str| {
        files
            .iter()
            .find(|f| f.path == name)
            .map(|f| String::from_utf8_lossy(&f.content).into_owned())
    };
    let generated = runtimes::files_for(spec, base_image, dependency)
        .ok_or(ContextError::Unsupported(spec.runtime))?;

    let mut hasher = Sha256::new();
    let mut hashed = |path: &str, contents: &[u8]| {
        hasher.update((path.len() as u64).to_le_bytes());
        hasher.update(path.as_bytes());
        hasher.update((contents.len() as u64).to_le_bytes());
        hasher.update(contents);
    };
    let mut builder = tar::Builder::new(Vec::new());
    // Code the image does not take stays out of what Docker is sent.
    let ignore: &[u8] = if generated.code_in_image {
        b""
    } else {
        b"code\n"
    };
    let mut root: Vec<(&str, &[u8])> = vec![
        ("Dockerfile", generated.dockerfile.as_bytes()),
        (".dockerignore", ignore),
    ];
    root.extend(
        generated
            .extra
            .iter()
            .map(|(path, contents)| (*path, contents.as_slice())),
    );
    root.sort_by_key(|(path, _)| *path);
    for (path, contents) in &root {
        hashed(path, contents);
        append(&mut builder, path, contents)?;
    }
    let mut code: Vec<&pb::SourceFile> = files.iter().collect();
    code.sort_by(|a, b| a.path.cmp(&b.path));
    for file in code {
        let path = format!("{CODE_PREFIX}{}", file.path);
        if generated.code_in_image {
            hashed(&path, &file.content);
        }
        append(&mut builder, &path, &file.content)?;
    }
    let tar = builder.into_inner()?;
    Ok(BuildContext {
        digest: hex(&hasher.finalize()),
        tar,
    })
}

/// The context of a Dockerfile app from its checked, extracted archive.
pub fn for_dockerfile(extracted: &Path, tenant: &str) -> Result<BuildContext, ContextError> {
    let dockerfile = extracted.join("Dockerfile");
    if !dockerfile.is_file() {
        return Err(ContextError::NoDockerfile);
    }
    // Checked before anything is kept.
    if std::fs::metadata(&dockerfile)?.len() > dockerfile::MAX_DOCKERFILE_BYTES as u64 {
        return Err(dockerfile::DockerfileError::TooLarge.into());
    }
    let text = std::fs::read(&dockerfile)?;
    dockerfile::check(&String::from_utf8_lossy(&text), tenant)?;
    let mut tar = Vec::new();
    berth_archive::write_tar(extracted, "", &mut tar)?;
    Ok(BuildContext {
        digest: hex(&Sha256::digest(&tar)),
        tar,
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> AppSpec {
        AppSpec::from_proto(&pb::AppSettings {
            name: "hello".into(),
            runtime: pb::Runtime::Python as i32,
            ..Default::default()
        })
        .unwrap()
    }

    fn file(path: &str, content: &str) -> pb::SourceFile {
        pb::SourceFile {
            path: path.into(),
            content: content.as_bytes().to_vec(),
        }
    }

    fn entries(tar: &[u8]) -> Vec<String> {
        let mut archive = tar::Archive::new(tar);
        archive
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().display().to_string())
            .collect()
    }

    #[test]
    fn new_code_with_the_same_dependencies_reuses_the_image() {
        let a = for_runtime(
            &spec(),
            &[
                file("main.py", "print(1)"),
                file("requirements.txt", "six\n"),
            ],
            "base",
        )
        .unwrap();
        let b = for_runtime(
            &spec(),
            &[
                file("main.py", "print(2)"),
                file("requirements.txt", "six\n"),
            ],
            "base",
        )
        .unwrap();
        let c = for_runtime(
            &spec(),
            &[
                file("main.py", "print(2)"),
                file("requirements.txt", "six==1.16.0\n"),
            ],
            "base",
        )
        .unwrap();
        let d = for_runtime(
            &spec(),
            &[
                file("main.py", "print(2)"),
                file("requirements.txt", "six\n"),
            ],
            "other-base",
        )
        .unwrap();
        assert_eq!(a.digest, b.digest);
        assert_ne!(a.tar, b.tar, "the code differs");
        assert_ne!(b.digest, c.digest, "dependencies changed");
        assert_ne!(b.digest, d.digest, "base image changed");
        assert_eq!(
            a.image_tag(&spec()),
            format!("apps.berth.invalid/default/hello:{}", &a.digest[..12])
        );
    }

    #[test]
    fn go_images_depend_on_the_code() {
        let go = AppSpec::from_proto(&pb::AppSettings {
            name: "svc".into(),
            runtime: pb::Runtime::Go as i32,
            ..Default::default()
        })
        .unwrap();
        let a = for_runtime(&go, &[file("main.go", "package main // 1")], "base").unwrap();
        let b = for_runtime(&go, &[file("main.go", "package main // 2")], "base").unwrap();
        assert_ne!(a.digest, b.digest);
    }

    #[test]
    fn the_context_is_deterministic_and_laid_out() {
        let files = [file("main.py", "app = None"), file("lib/util.py", "")];
        let a = for_runtime(&spec(), &files, "base").unwrap();
        let b = for_runtime(&spec(), &files, "base").unwrap();
        assert_eq!(a.tar, b.tar);
        assert_eq!(
            entries(&a.tar),
            [
                ".dockerignore",
                "Dockerfile",
                "berth/run.py",
                "code/lib/util.py",
                "code/main.py"
            ]
        );
    }

    #[test]
    fn a_dockerfile_archive_needs_its_dockerfile() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("app.py"), "x").unwrap();
        assert!(matches!(
            for_dockerfile(dir.path(), "default"),
            Err(ContextError::NoDockerfile)
        ));
        std::fs::write(dir.path().join("Dockerfile"), "FROM scratch\n").unwrap();
        let context = for_dockerfile(dir.path(), "default").unwrap();
        assert_eq!(
            context.digest,
            for_dockerfile(dir.path(), "default").unwrap().digest
        );
    }
}
