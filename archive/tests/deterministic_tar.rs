//! `write_tar`: the same tree gives the same bytes, whatever the disk says
//! about times, owners or listing order.

mod common;

use berth_archive::{extract_checked, write_tar, ArchiveError, Limits};
use common::{tree, Sandbox};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// Writes the test tree under `root`, in the given order of files.
fn make_tree(root: &Path, reversed: bool, private_mode: u32) {
    let mut files = vec![
        ("Dockerfile", &b"FROM python:3.12\nCOPY . /app\n"[..], 0o644),
        ("app/main.py", b"print('hi')\n", private_mode),
        ("app/lib/__init__.py", b"", 0o644),
        ("bin/start", b"#!/bin/sh\n", 0o700),
    ];
    if reversed {
        files.reverse();
    }
    for (path, content, mode) in files {
        let path = root.join(path);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, content).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
    }
}

fn tar_of_tree(root: &Path, prefix: &str) -> Vec<u8> {
    let mut out = Vec::new();
    write_tar(root, prefix, &mut out).unwrap();
    out
}

#[test]
fn the_same_tree_gives_byte_identical_tars() {
    let first = tempfile::tempdir().unwrap();
    let second = tempfile::tempdir().unwrap();
    make_tree(first.path(), false, 0o644);
    // Made in the other order, later, and with a different non-executable mode.
    make_tree(second.path(), true, 0o600);

    let tar = tar_of_tree(first.path(), "");
    assert_eq!(tar, tar_of_tree(first.path(), ""));
    assert_eq!(tar, tar_of_tree(second.path(), ""));
}

#[test]
fn a_changed_file_changes_the_tar() {
    let dir = tempfile::tempdir().unwrap();
    make_tree(dir.path(), false, 0o644);
    let before = tar_of_tree(dir.path(), "");

    fs::write(dir.path().join("app/main.py"), "print('bye')\n").unwrap();
    let edited = tar_of_tree(dir.path(), "");
    assert_ne!(before, edited);

    fs::set_permissions(
        dir.path().join("app/main.py"),
        fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    assert_ne!(
        edited,
        tar_of_tree(dir.path(), ""),
        "becoming executable changes the tar"
    );
}

#[test]
fn entries_are_sorted_prefixed_and_carry_fixed_modes_and_no_owner_or_time() {
    let dir = tempfile::tempdir().unwrap();
    make_tree(dir.path(), false, 0o600);
    let mut out = Vec::new();
    let content_bytes = write_tar(dir.path(), "code/", &mut out).unwrap();
    assert_eq!(content_bytes, 29 + 12 + 10);

    let mut archive = tar::Archive::new(&out[..]);
    let mut seen = Vec::new();
    for entry in archive.entries().unwrap() {
        let entry = entry.unwrap();
        let header = entry.header();
        assert_eq!(header.mtime().unwrap(), 0);
        assert_eq!(header.uid().unwrap(), 0);
        assert_eq!(header.gid().unwrap(), 0);
        let path = entry.path().unwrap().to_string_lossy().into_owned();
        seen.push((
            path,
            header.entry_type(),
            header.mode().unwrap(),
            header.size().unwrap(),
        ));
    }
    use tar::EntryType::{Directory, Regular};
    assert_eq!(
        seen,
        [
            ("code/Dockerfile".to_owned(), Regular, 0o644, 29),
            ("code/app/".to_owned(), Directory, 0o755, 0),
            ("code/app/lib/".to_owned(), Directory, 0o755, 0),
            ("code/app/lib/__init__.py".to_owned(), Regular, 0o644, 0),
            ("code/app/main.py".to_owned(), Regular, 0o644, 12),
            ("code/bin/".to_owned(), Directory, 0o755, 0),
            ("code/bin/start".to_owned(), Regular, 0o755, 10),
        ]
    );
}

#[test]
fn a_written_tar_extracts_back_to_the_same_tree() {
    let dir = tempfile::tempdir().unwrap();
    make_tree(dir.path(), false, 0o644);
    let sandbox = Sandbox::new();
    let archive = sandbox.upload("context.tar", &tar_of_tree(dir.path(), ""));

    let extracted = extract_checked(&archive, &sandbox.staging(), &Limits::default()).unwrap();

    assert_eq!(extracted.unpacked_bytes, 29 + 12 + 10);
    let mut original = tree(dir.path());
    for (_, _, mode) in &mut original {
        *mode = if *mode & 0o111 != 0 { 0o755 } else { 0o644 };
    }
    assert_eq!(tree(&sandbox.staging()), original);
}

#[test]
fn a_symlink_in_the_tree_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    make_tree(dir.path(), false, 0o644);
    std::os::unix::fs::symlink("/etc/passwd", dir.path().join("app/passwd")).unwrap();
    let error = write_tar(dir.path(), "", Vec::new()).unwrap_err();
    assert!(
        matches!(error, ArchiveError::NotRegular { .. }),
        "{error:?}"
    );
    assert!(error.to_string().ends_with(
        "app/passwd is neither a regular file nor a directory; it cannot go into a tar"
    ));
}
