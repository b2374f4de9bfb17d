//! Every archive the gate must refuse: each test checks the error text and
//! that nothing was left in or next to the staging directory.

mod common;

use berth_archive::{extract_checked, ArchiveError, Limits};
use common::{gzip, raw_header, tar_link, tar_of, zip_of, Sandbox, ZipEntry, DEFAULTS};
use std::fs;
use std::io;
use tar::EntryType;

#[test]
fn zip_entry_climbing_out_with_dot_dot_is_refused() {
    let sandbox = Sandbox::new();
    let archive = sandbox.upload(
        "slip.zip",
        &zip_of(&[ZipEntry::File {
            name: "../x",
            mode: 0o644,
            data: b"owned",
        }]),
    );
    sandbox.assert_refused(
        &archive,
        &DEFAULTS,
        r#"archive entry "../x": path escapes the archive root"#,
    );
}

#[test]
fn tar_entry_climbing_out_with_dot_dot_is_refused() {
    let sandbox = Sandbox::new();
    let tar = tar_of(&[
        ("ok.txt", EntryType::Regular, 0o644, b"fine"),
        ("../x", EntryType::Regular, 0o644, b"owned"),
    ]);
    let archive = sandbox.upload("slip.tar", &tar);
    sandbox.assert_refused(
        &archive,
        &DEFAULTS,
        r#"archive entry "../x": path escapes the archive root"#,
    );
}

#[test]
fn absolute_tar_path_is_refused() {
    let sandbox = Sandbox::new();
    let target = sandbox.root().join("evil.txt");
    let name = target.to_str().unwrap();
    let archive = sandbox.upload(
        "abs.tar",
        &tar_of(&[(name, EntryType::Regular, 0o644, b"owned")]),
    );
    sandbox.assert_refused(
        &archive,
        &DEFAULTS,
        &format!("archive entry {name:?}: path is absolute"),
    );
    assert!(!target.exists());
}

#[test]
fn windows_style_absolute_zip_paths_are_refused() {
    for name in [r"C:\evil.txt", r"\evil.txt"] {
        let sandbox = Sandbox::new();
        let archive = sandbox.upload(
            "abs.zip",
            &zip_of(&[ZipEntry::File {
                name,
                mode: 0o644,
                data: b"owned",
            }]),
        );
        sandbox.assert_refused(
            &archive,
            &DEFAULTS,
            &format!("archive entry {name:?}: path is absolute"),
        );
    }
}

#[test]
fn tar_symlink_is_refused() {
    let sandbox = Sandbox::new();
    let archive = sandbox.upload(
        "link.tar",
        &tar_link("link", EntryType::Symlink, "/etc/passwd"),
    );
    sandbox.assert_refused(
        &archive,
        &DEFAULTS,
        r#"archive entry "link": symbolic links are not allowed"#,
    );
}

#[test]
fn zip_symlink_is_refused() {
    let sandbox = Sandbox::new();
    let zip = zip_of(&[ZipEntry::Symlink {
        name: "link",
        target: "/etc/passwd",
    }]);
    let archive = sandbox.upload("link.zip", &zip);
    sandbox.assert_refused(
        &archive,
        &DEFAULTS,
        r#"archive entry "link": symbolic links are not allowed"#,
    );
}

#[test]
fn hardlink_is_refused() {
    let sandbox = Sandbox::new();
    let archive = sandbox.upload(
        "hard.tar",
        &tar_link("passwd", EntryType::Link, "/etc/passwd"),
    );
    sandbox.assert_refused(
        &archive,
        &DEFAULTS,
        r#"archive entry "passwd": hard links are not allowed"#,
    );
}

#[test]
fn character_device_is_refused() {
    let sandbox = Sandbox::new();
    let mut header = raw_header(b"null", EntryType::Char, 0o666, 0);
    header.set_device_major(1).unwrap();
    header.set_device_minor(3).unwrap();
    header.set_cksum();
    let mut builder = tar::Builder::new(Vec::new());
    builder.append(&header, io::empty()).unwrap();
    let archive = sandbox.upload("dev.tar", &builder.into_inner().unwrap());
    sandbox.assert_refused(
        &archive,
        &DEFAULTS,
        r#"archive entry "null": device nodes are not allowed"#,
    );
}

#[test]
fn zip_block_device_is_refused() {
    let sandbox = Sandbox::new();
    let zip = zip_of(&[ZipEntry::WithMode {
        name: "sda",
        unix_mode: 0o060_660,
        data: b"",
    }]);
    let archive = sandbox.upload("dev.zip", &zip);
    sandbox.assert_refused(
        &archive,
        &DEFAULTS,
        r#"archive entry "sda": device nodes are not allowed"#,
    );
}

#[test]
fn fifo_is_refused() {
    let sandbox = Sandbox::new();
    let archive = sandbox.upload(
        "fifo.tar",
        &tar_of(&[("pipe", EntryType::Fifo, 0o644, b"")]),
    );
    sandbox.assert_refused(
        &archive,
        &DEFAULTS,
        r#"archive entry "pipe": FIFOs are not allowed"#,
    );
}

#[test]
fn setuid_bit_is_refused() {
    let sandbox = Sandbox::new();
    let archive = sandbox.upload(
        "suid.tar",
        &tar_of(&[("run.sh", EntryType::Regular, 0o4755, b"#!/bin/sh\n")]),
    );
    sandbox.assert_refused(
        &archive,
        &DEFAULTS,
        r#"archive entry "run.sh": mode 4755 has setuid, setgid or sticky bits, which are not allowed"#,
    );
}

#[test]
fn zip_setgid_and_sticky_bits_are_refused() {
    for (unix_mode, shown) in [(0o102_755, "2755"), (0o041_777, "1777")] {
        let sandbox = Sandbox::new();
        let archive = sandbox.upload(
            "sgid.zip",
            &zip_of(&[ZipEntry::WithMode {
                name: "bin/tool",
                unix_mode,
                data: b"x",
            }]),
        );
        let message = format!(
            r#"archive entry "bin/tool": mode {shown} has setuid, setgid or sticky bits, which are not allowed"#
        );
        sandbox.assert_refused(&archive, &DEFAULTS, &message);
    }
}

#[test]
fn duplicate_tar_entry_is_refused() {
    let sandbox = Sandbox::new();
    let tar = tar_of(&[
        ("a.txt", EntryType::Regular, 0o644, b"first"),
        ("./a.txt", EntryType::Regular, 0o644, b"second"),
    ]);
    let archive = sandbox.upload("dup.tar", &tar);
    sandbox.assert_refused(
        &archive,
        &DEFAULTS,
        r#"archive entry "./a.txt": path appears twice in the archive"#,
    );
}

#[test]
fn duplicate_zip_entry_is_refused() {
    let sandbox = Sandbox::new();
    let zip = zip_of(&[
        ZipEntry::File {
            name: "a.txt",
            mode: 0o644,
            data: b"same",
        },
        ZipEntry::File {
            name: "b.txt",
            mode: 0o644,
            data: b"same",
        },
    ]);
    // The zip writer refuses duplicate names, so rename b.txt in place
    // (names are not covered by the checksums).
    let zip = replace_all(&zip, b"b.txt", b"a.txt");
    let archive = sandbox.upload("dup.zip", &zip);
    sandbox.assert_refused(
        &archive,
        &DEFAULTS,
        r#"archive entry "a.txt": path appears twice in the archive"#,
    );
}

#[test]
fn path_used_as_both_file_and_directory_is_refused() {
    let sandbox = Sandbox::new();
    let tar = tar_of(&[
        ("src", EntryType::Regular, 0o644, b"file"),
        ("src/main.py", EntryType::Regular, 0o644, b"x"),
    ]);
    let archive = sandbox.upload("clash.tar", &tar);
    sandbox.assert_refused(
        &archive,
        &DEFAULTS,
        r#"archive entry "src/main.py": path is both a file and a directory"#,
    );

    let sandbox = Sandbox::new();
    let zip = zip_of(&[
        ZipEntry::Directory { name: "lib/" },
        ZipEntry::File {
            name: "lib",
            mode: 0o644,
            data: b"x",
        },
    ]);
    let archive = sandbox.upload("clash.zip", &zip);
    sandbox.assert_refused(
        &archive,
        &DEFAULTS,
        r#"archive entry "lib": path is both a file and a directory"#,
    );
}

#[test]
fn upload_that_is_no_archive_is_refused() {
    let sandbox = Sandbox::new();
    let archive = sandbox.upload("app.zip", b"print('hello')\n");
    sandbox.assert_refused(
        &archive,
        &DEFAULTS,
        "the upload is not a zip, tar or tar.gz archive",
    );

    let sandbox = Sandbox::new();
    let archive = sandbox.upload("empty.tar", b"");
    sandbox.assert_refused(
        &archive,
        &DEFAULTS,
        "the upload is not a zip, tar or tar.gz archive",
    );
}

#[test]
fn gzip_holding_no_tar_is_refused_as_corrupt() {
    let sandbox = Sandbox::new();
    let archive = sandbox.upload("app.tar.gz", &gzip(&b"print('hello')\n".repeat(100)));
    let error = sandbox.extract(&archive).unwrap_err();
    assert!(
        error
            .to_string()
            .starts_with("the tar archive is corrupt: "),
        "{error}"
    );
    assert!(error.is_user_error());
    sandbox.assert_untouched(&archive);
}

#[test]
fn tar_cut_short_is_refused_as_corrupt() {
    let sandbox = Sandbox::new();
    let tar = tar_of(&[("app.py", EntryType::Regular, 0o644, &[b'x'; 2000])]);
    let archive = sandbox.upload("cut.tar", &tar[..1024]);
    sandbox.assert_refused(
        &archive,
        &DEFAULTS,
        r#"the tar archive is corrupt: entry "app.py" is cut short"#,
    );

    let sandbox = Sandbox::new();
    let tar_gz = gzip(&tar);
    let archive = sandbox.upload("cut.tar.gz", &tar_gz[..tar_gz.len() / 2]);
    let error = sandbox.extract(&archive).unwrap_err();
    assert!(
        error.to_string().starts_with("the tar archive is corrupt"),
        "{error}"
    );
    sandbox.assert_untouched(&archive);
}

#[test]
fn overlong_name_is_refused() {
    let sandbox = Sandbox::new();
    let name = "a".repeat(5000);
    let mut builder = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_size(1);
    header.set_mode(0o644);
    // The tar crate writes the long name as a GNU long name entry.
    builder.append_data(&mut header, &name, &b"x"[..]).unwrap();
    let archive = sandbox.upload("long.tar", &builder.into_inner().unwrap());
    let shown = "a".repeat(200);
    sandbox.assert_refused(
        &archive,
        &DEFAULTS,
        &format!(r#"archive entry "{shown}...": name is 5000 bytes; the limit is 4096"#),
    );
}

#[test]
fn name_too_long_to_fit_under_staging_is_refused() {
    let sandbox = Sandbox::new();
    let name = format!("{}end.txt", "dir/".repeat(1020));
    assert!(
        name.len() <= 4096,
        "within the name limit, beyond what fits"
    );
    let mut builder = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_size(1);
    header.set_mode(0o644);
    builder.append_data(&mut header, &name, &b"x"[..]).unwrap();
    let archive = sandbox.upload("long.tar", &builder.into_inner().unwrap());
    let room = 4096 - sandbox.staging().as_os_str().len() - 2;
    let shown = &name[..200];
    let message = format!(
        r#"archive entry "{shown}...": name is {} bytes; the limit is {room}"#,
        name.len()
    );
    sandbox.assert_refused(&archive, &DEFAULTS, &message);
}

#[test]
fn empty_and_nul_containing_names_are_refused() {
    let sandbox = Sandbox::new();
    let archive = sandbox.upload(
        "empty-name.tar",
        &tar_of(&[("", EntryType::Regular, 0o644, b"x")]),
    );
    sandbox.assert_refused(&archive, &DEFAULTS, r#"archive entry "": name is empty"#);

    let sandbox = Sandbox::new();
    let long_name = b"a\0b.txt\0";
    let mut tar = raw_header(
        b"././@LongLink",
        EntryType::GNULongName,
        0o644,
        long_name.len() as u64,
    )
    .as_bytes()
    .to_vec();
    tar.extend_from_slice(long_name);
    tar.resize(1024, 0);
    tar.extend_from_slice(&tar_of(&[("placeholder", EntryType::Regular, 0o644, b"x")]));
    let archive = sandbox.upload("nul.tar", &tar);
    sandbox.assert_refused(
        &archive,
        &DEFAULTS,
        r#"archive entry "a\0b.txt": name contains a NUL byte"#,
    );
}

#[test]
fn staging_that_is_not_empty_is_refused_and_left_alone() {
    let sandbox = Sandbox::new();
    let archive = sandbox.upload(
        "ok.tar",
        &tar_of(&[("a.txt", EntryType::Regular, 0o644, b"x")]),
    );
    let keep = sandbox.staging().join("keep.txt");
    fs::write(&keep, "mine").unwrap();
    let error = extract_checked(&archive, &sandbox.staging(), &Limits::default()).unwrap_err();
    assert!(
        matches!(error, ArchiveError::StagingNotEmpty { .. }),
        "{error:?}"
    );
    assert!(!error.is_user_error());
    assert_eq!(fs::read_to_string(&keep).unwrap(), "mine");
}

fn replace_all(haystack: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let mut out = haystack.to_vec();
    let mut at = 0;
    while let Some(found) = out[at..]
        .windows(from.len())
        .position(|window| window == from)
    {
        out[at + found..at + found + from.len()].copy_from_slice(to);
        at += found + from.len();
    }
    out
}
