//! An app's code on this node: unpacked from its build context into
//! `code/{build_id}`, mounted read-only into its containers.

use std::path::{Component, Path, PathBuf};

/// Code prefix of a runtime app's context.
const CODE_PREFIX: &str = "code";

/// Unpacks the code of a build context into `dest` (created; replaced
/// atomically). Runtime apps' code is under `code/`; a Dockerfile app's
/// code is its whole context.
pub fn unpack(context_tar: &[u8], dest: &Path, whole_context: bool) -> std::io::Result<()> {
    let parent = dest
        .parent()
        .ok_or_else(|| std::io::Error::other("code dir has no parent"))?;
    std::fs::create_dir_all(parent)?;
    let partial = tempfile::Builder::new()
        .prefix(".partial-")
        .tempdir_in(parent)?;
    let mut archive = tar::Archive::new(context_tar);
    for entry in archive.entries()? {
        let mut entry = entry?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let path = entry.path()?.into_owned();
        let relative: PathBuf = if whole_context {
            path
        } else {
            match path.strip_prefix(CODE_PREFIX) {
                Ok(rest) => rest.to_owned(),
                Err(_) => continue,
            }
        };
        if relative.as_os_str().is_empty()
            || relative
                .components()
                .any(|c| !matches!(c, Component::Normal(_)))
        {
            return Err(std::io::Error::other(format!(
                "unsafe path {} in a build context",
                relative.display()
            )));
        }
        let target = partial.path().join(&relative);
        if let Some(dir) = target.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let mut file = std::fs::File::create(&target)?;
        std::io::copy(&mut entry, &mut file)?;
    }
    // Readable by the unprivileged user the app runs as.
    set_modes(partial.path())?;
    let kept = partial.keep();
    if dest.exists() {
        std::fs::remove_dir_all(dest)?;
    }
    std::fs::rename(&kept, dest)
}

fn set_modes(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))?;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            set_modes(&entry.path())?;
        } else {
            std::fs::set_permissions(entry.path(), std::fs::Permissions::from_mode(0o644))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_of(files: &[(&str, &str)]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for (path, body) in files {
            let mut header = tar::Header::new_gnu();
            header.set_size(body.len() as u64);
            header.set_mode(0o600);
            header.set_cksum();
            builder
                .append_data(&mut header, path, body.as_bytes())
                .unwrap();
        }
        builder.into_inner().unwrap()
    }

    #[test]
    fn runtime_code_comes_from_the_code_folder() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("code/b1");
        let tar = tar_of(&[
            ("Dockerfile", "FROM x"),
            ("code/main.py", "print(1)"),
            ("code/lib/a.py", ""),
        ]);
        unpack(&tar, &dest, false).unwrap();
        assert_eq!(
            std::fs::read_to_string(dest.join("main.py")).unwrap(),
            "print(1)"
        );
        assert!(dest.join("lib/a.py").exists());
        assert!(!dest.join("Dockerfile").exists());
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(dest.join("main.py"))
                .unwrap()
                .permissions()
                .mode()
                & 0o777,
            0o644
        );
        // Unpacking again replaces it.
        unpack(&tar_of(&[("code/main.py", "print(2)")]), &dest, false).unwrap();
        assert_eq!(
            std::fs::read_to_string(dest.join("main.py")).unwrap(),
            "print(2)"
        );
        assert!(!dest.join("lib").exists());
    }

    #[test]
    fn a_dockerfile_app_keeps_its_whole_context() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("b2");
        unpack(
            &tar_of(&[("Dockerfile", "FROM x"), ("app/server.js", "")]),
            &dest,
            true,
        )
        .unwrap();
        assert!(dest.join("Dockerfile").exists() && dest.join("app/server.js").exists());
    }
}
