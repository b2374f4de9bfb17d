//! The limits: entry count, unpacked bytes and compression ratio, each
//! enforced while extracting, stopping at the first entry or byte over.

mod common;

use berth_archive::{extract_checked, Limits};
use common::{raw_header, tar_of, Sandbox, DEFAULTS};
use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use tar::EntryType;
use zip::write::SimpleFileOptions;
use zip::{CompressionMethod, ZipWriter};

#[test]
fn default_limits_are_the_documented_ones() {
    assert_eq!(Limits::default(), DEFAULTS);
}

#[test]
fn tar_with_100_000_entries_stops_at_the_entry_limit() {
    let sandbox = Sandbox::new();
    let path = sandbox.root().join("many.tar");
    let mut out = BufWriter::new(File::create(&path).unwrap());
    for index in 0..100_000 {
        let header = raw_header(format!("f{index}").as_bytes(), EntryType::Regular, 0o644, 0);
        out.write_all(header.as_bytes()).unwrap();
    }
    // A block that is no tar header: reading to the end (to count the
    // entries first, say) would fail on it instead of at the limit.
    out.write_all(&[0xff; 512]).unwrap();
    out.into_inner().unwrap().sync_all().unwrap();
    sandbox.assert_refused(&path, &DEFAULTS, "archive has more than 10000 entries");
}

#[test]
fn zip_with_100_000_entries_is_refused_before_anything_is_written() {
    let sandbox = Sandbox::new();
    let path = sandbox.root().join("many.zip");
    let mut writer = ZipWriter::new(BufWriter::new(File::create(&path).unwrap()));
    let options = SimpleFileOptions::default().compression_method(CompressionMethod::Stored);
    for index in 0..100_000 {
        writer.start_file(format!("f{index}"), options).unwrap();
    }
    writer
        .finish()
        .unwrap()
        .into_inner()
        .unwrap()
        .sync_all()
        .unwrap();
    sandbox.assert_refused(&path, &DEFAULTS, "archive has more than 10000 entries");
}

#[test]
fn zip_bomb_is_refused_by_its_compression_ratio() {
    let sandbox = Sandbox::new();
    let path = sandbox.root().join("bomb.zip");
    let mut writer = ZipWriter::new(BufWriter::new(File::create(&path).unwrap()));
    let options = SimpleFileOptions::default()
        .compression_method(CompressionMethod::Deflated)
        .compression_level(Some(9));
    writer.start_file("big.bin", options).unwrap();
    // 200 MB of zeros, streamed in 1 MiB chunks.
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..200 {
        writer.write_all(&zeros).unwrap();
    }
    writer
        .finish()
        .unwrap()
        .into_inner()
        .unwrap()
        .sync_all()
        .unwrap();
    assert!(
        fs::metadata(&path).unwrap().len() < 1 << 20,
        "the bomb should be small"
    );
    sandbox.assert_refused(
        &path,
        &DEFAULTS,
        r#"archive entry "big.bin": compression ratio above 100:1"#,
    );
}

#[test]
fn tar_gz_bomb_is_refused_by_its_compression_ratio() {
    let sandbox = Sandbox::new();
    let size = 20 << 20;
    let mut builder = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::best(),
    ));
    let header = raw_header(b"zeros.bin", EntryType::Regular, 0o644, size);
    builder.append(&header, io::repeat(0).take(size)).unwrap();
    let archive = sandbox.upload(
        "bomb.tar.gz",
        &builder.into_inner().unwrap().finish().unwrap(),
    );
    sandbox.assert_refused(
        &archive,
        &DEFAULTS,
        r#"archive entry "zeros.bin": compression ratio above 100:1"#,
    );
}

#[test]
fn unpacked_size_over_the_limit_is_refused() {
    let sandbox = Sandbox::new();
    let data = [7u8; 600];
    let tar = tar_of(&[
        ("one.bin", EntryType::Regular, 0o644, &data),
        ("two.bin", EntryType::Regular, 0o644, &data),
    ]);
    let archive = sandbox.upload("big.tar", &tar);
    let limits = Limits {
        max_unpacked_bytes: 1000,
        ..Limits::default()
    };
    sandbox.assert_refused(&archive, &limits, "archive unpacks to more than 1000 bytes");
}

#[test]
fn an_archive_right_at_the_limits_is_accepted() {
    let sandbox = Sandbox::new();
    let data = [1u8; 500];
    let tar = tar_of(&[
        ("a.bin", EntryType::Regular, 0o644, &data),
        ("b.bin", EntryType::Regular, 0o644, &data),
    ]);
    let archive = sandbox.upload("exact.tar", &tar);
    let limits = Limits {
        max_entries: 2,
        max_unpacked_bytes: 1000,
        ..Limits::default()
    };
    let extracted = extract_checked(&archive, &sandbox.staging(), &limits).unwrap();
    assert_eq!(extracted.unpacked_bytes, 1000);
}

#[test]
fn deep_paths_are_capped_by_the_directory_limit() {
    let sandbox = Sandbox::new();
    let mut builder = tar::Builder::new(Vec::new());
    // Ten short-named entries, each implying about 2 000 new directories.
    for index in 0..10 {
        let name = format!("x{index}/{}f", "d/".repeat(1995));
        let mut header = tar::Header::new_gnu();
        header.set_size(0);
        header.set_mode(0o644);
        builder.append_data(&mut header, name, io::empty()).unwrap();
    }
    let archive = sandbox.upload("deep.tar", &builder.into_inner().unwrap());
    sandbox.assert_refused(
        &archive,
        &DEFAULTS,
        "archive has more than 10000 directories",
    );
}
