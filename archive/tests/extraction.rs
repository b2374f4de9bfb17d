//! Archives the gate lets through: the tree written and what `Extracted` says.

mod common;

use berth_archive::ExtractedFile;
use common::{gzip, raw_header, tar_of, tree, zip_of, Sandbox, ZipEntry};
use std::path::PathBuf;
use tar::EntryType;

fn file(path: &str, size: u64, executable: bool) -> ExtractedFile {
    ExtractedFile {
        path: PathBuf::from(path),
        size,
        executable,
    }
}

fn entry(path: &str, content: &[u8], mode: u32) -> (String, Vec<u8>, u32) {
    (path.to_owned(), content.to_vec(), mode)
}

#[test]
fn zip_extracts_nested_directories_and_executables() {
    let sandbox = Sandbox::new();
    let zip = zip_of(&[
        ZipEntry::Directory { name: "src/" },
        ZipEntry::File {
            name: "src/main.py",
            mode: 0o644,
            data: b"print('hi')\n",
        },
        ZipEntry::File {
            name: "src/pkg/util.py",
            mode: 0o600,
            data: b"X = 1\n",
        },
        ZipEntry::File {
            name: "bin/run.sh",
            mode: 0o750,
            data: b"#!/bin/sh\n",
        },
        ZipEntry::File {
            name: "README.md",
            mode: 0o644,
            data: b"# app\n",
        },
    ]);
    let archive = sandbox.upload("app.zip", &zip);
    let extracted = sandbox.extract(&archive).unwrap();

    assert_eq!(
        extracted.files,
        [
            file("README.md", 6, false),
            file("bin/run.sh", 10, true),
            file("src/main.py", 12, false),
            file("src/pkg/util.py", 6, false),
        ]
    );
    assert_eq!(extracted.unpacked_bytes, 34);
    assert_eq!(
        tree(&sandbox.staging()),
        [
            entry("README.md", b"# app\n", 0o644),
            entry("bin/", b"", 0o755),
            entry("bin/run.sh", b"#!/bin/sh\n", 0o755),
            entry("src/", b"", 0o755),
            entry("src/main.py", b"print('hi')\n", 0o644),
            entry("src/pkg/", b"", 0o755),
            entry("src/pkg/util.py", b"X = 1\n", 0o644),
        ]
    );
}

#[test]
fn tar_extracts_dot_slash_names_long_names_and_pax_paths() {
    let sandbox = Sandbox::new();
    let deep = format!("{}/leaf.txt", ["nested"; 20].join("/"));
    assert!(deep.len() > 100, "the name must need a GNU long name");

    let mut builder = tar::Builder::new(Vec::new());
    for (name, entry_type, mode, data) in [
        ("./", EntryType::Directory, 0o755, &b""[..]),
        ("./app/", EntryType::Directory, 0o700, b""),
        ("./app/main.py", EntryType::Regular, 0o644, b"import os\n"),
        (
            "./app/start",
            EntryType::Regular,
            0o700,
            b"#!/bin/sh\nexec python main.py\n",
        ),
    ] {
        builder
            .append(
                &raw_header(name.as_bytes(), entry_type, mode, data.len() as u64),
                data,
            )
            .unwrap();
    }
    let mut header = tar::Header::new_gnu();
    header.set_size(4);
    header.set_mode(0o644);
    builder
        .append_data(&mut header, &deep, &b"deep"[..])
        .unwrap();
    builder
        .append_pax_extensions([("path", "named by pax/ünïcode.txt".as_bytes())])
        .unwrap();
    builder
        .append(
            &raw_header(b"placeholder", EntryType::Regular, 0o644, 3),
            &b"pax"[..],
        )
        .unwrap();
    let archive = sandbox.upload("app.tar", &builder.into_inner().unwrap());

    let extracted = sandbox.extract(&archive).unwrap();

    assert_eq!(
        extracted.files,
        [
            file("app/main.py", 10, false),
            file("app/start", 30, true),
            file("named by pax/ünïcode.txt", 3, false),
            file(&deep, 4, false),
        ]
    );
    assert_eq!(extracted.unpacked_bytes, 47);
    let written = tree(&sandbox.staging());
    assert!(written.contains(&entry("app/", b"", 0o755)), "{written:?}");
    assert!(written.contains(&entry(
        "app/start",
        b"#!/bin/sh\nexec python main.py\n",
        0o755
    )));
    assert!(written.contains(&entry("named by pax/ünïcode.txt", b"pax", 0o644)));
    assert!(written.contains(&entry(&deep, b"deep", 0o644)));
    assert!(!written
        .iter()
        .any(|(path, ..)| path.contains("placeholder")));
}

#[test]
fn tar_gz_extracts_nested_directories_and_executables() {
    let sandbox = Sandbox::new();
    let tar = tar_of(&[
        ("site/", EntryType::Directory, 0o755, b""),
        (
            "site/static/css/app.css",
            EntryType::Regular,
            0o644,
            b"body {}\n",
        ),
        (
            "site/manage.py",
            EntryType::Regular,
            0o755,
            b"#!/usr/bin/env python\n",
        ),
        ("Dockerfile", EntryType::Regular, 0o644, b"FROM scratch\n"),
    ]);
    let archive = sandbox.upload("site.tgz", &gzip(&tar));

    let extracted = sandbox.extract(&archive).unwrap();

    assert_eq!(
        extracted.files,
        [
            file("Dockerfile", 13, false),
            file("site/manage.py", 22, true),
            file("site/static/css/app.css", 8, false)
        ]
    );
    assert_eq!(extracted.unpacked_bytes, 43);
    assert_eq!(
        tree(&sandbox.staging()),
        [
            entry("Dockerfile", b"FROM scratch\n", 0o644),
            entry("site/", b"", 0o755),
            entry("site/manage.py", b"#!/usr/bin/env python\n", 0o755),
            entry("site/static/", b"", 0o755),
            entry("site/static/css/", b"", 0o755),
            entry("site/static/css/app.css", b"body {}\n", 0o644),
        ]
    );
}

#[test]
fn a_directory_named_after_its_children_is_not_a_duplicate() {
    let sandbox = Sandbox::new();
    let tar = tar_of(&[
        ("lib/a.py", EntryType::Regular, 0o644, b"a"),
        ("lib/", EntryType::Directory, 0o755, b""),
    ]);
    let archive = sandbox.upload("late-dir.tar", &tar);
    let extracted = sandbox.extract(&archive).unwrap();
    assert_eq!(extracted.files, [file("lib/a.py", 1, false)]);
}

#[test]
fn empty_zip_extracts_to_nothing() {
    let sandbox = Sandbox::new();
    let archive = sandbox.upload("empty.zip", &zip_of(&[]));
    let extracted = sandbox.extract(&archive).unwrap();
    assert!(extracted.files.is_empty());
    assert_eq!(extracted.unpacked_bytes, 0);
    assert!(tree(&sandbox.staging()).is_empty());
}
