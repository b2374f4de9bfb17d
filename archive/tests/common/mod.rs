//! Archives built for the tests with the tar, zip and flate2 crates, and a
//! sandbox that checks a refused archive left no trace.

#![allow(dead_code)]

use berth_archive::{extract_checked, ArchiveError, Extracted, Limits};
use std::fs;
use std::io::{Cursor, Write};
use std::path::{Path, PathBuf};
use tar::{EntryType, Header};
use zip::write::SimpleFileOptions;
use zip::{CompressionMethod, System, ZipWriter};

/// The limits `Limits::default()` is documented to give.
pub const DEFAULTS: Limits = Limits {
    max_entries: 10_000,
    max_unpacked_bytes: 1 << 30,
    max_ratio: 100,
};

/// A temporary directory holding an empty `staging/` and the archives under test.
pub struct Sandbox {
    root: tempfile::TempDir,
}

impl Sandbox {
    pub fn new() -> Self {
        let root = tempfile::tempdir().unwrap();
        fs::create_dir(root.path().join("staging")).unwrap();
        Self { root }
    }

    pub fn root(&self) -> &Path {
        self.root.path()
    }

    pub fn staging(&self) -> PathBuf {
        self.root().join("staging")
    }

    /// Writes `bytes` as the upload `name` next to the staging directory.
    pub fn upload(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let path = self.root().join(name);
        fs::write(&path, bytes).unwrap();
        path
    }

    pub fn extract(&self, archive: &Path) -> Result<Extracted, ArchiveError> {
        extract_checked(archive, &self.staging(), &Limits::default())
    }

    /// Asserts that extracting `archive` fails with `message`, as the
    /// upload's fault, and that nothing is left in or next to staging.
    pub fn assert_refused(&self, archive: &Path, limits: &Limits, message: &str) {
        let error = extract_checked(archive, &self.staging(), limits)
            .expect_err("the archive must be refused");
        assert_eq!(error.to_string(), message);
        assert!(error.is_user_error(), "{error:?}");
        self.assert_untouched(archive);
    }

    /// Staging is empty and the sandbox holds only staging and `archive`.
    pub fn assert_untouched(&self, archive: &Path) {
        let staged: Vec<_> = fs::read_dir(self.staging())
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        assert!(staged.is_empty(), "staging still holds {staged:?}");
        let mut outside: Vec<_> = fs::read_dir(self.root())
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        outside.sort();
        let mut expected = vec![self.staging(), archive.to_path_buf()];
        expected.sort();
        assert_eq!(outside, expected, "something was written outside staging");
    }
}

/// A GNU tar header for `name` written byte for byte, bypassing the checks
/// the tar crate makes on paths (it refuses `..` and absolute paths).
pub fn raw_header(name: &[u8], entry_type: EntryType, mode: u32, size: u64) -> Header {
    let mut header = Header::new_gnu();
    header.as_old_mut().name[..name.len()].copy_from_slice(name);
    header.set_entry_type(entry_type);
    header.set_mode(mode);
    header.set_size(size);
    header.set_mtime(0);
    header.set_uid(0);
    header.set_gid(0);
    header.set_cksum();
    header
}

/// One tar entry: name, type, mode, content.
pub type TarEntry<'a> = (&'a str, EntryType, u32, &'a [u8]);

/// A tar of `entries`, each written with [`raw_header`].
pub fn tar_of(entries: &[TarEntry<'_>]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for (name, entry_type, mode, data) in entries {
        let header = raw_header(name.as_bytes(), *entry_type, *mode, data.len() as u64);
        builder.append(&header, *data).unwrap();
    }
    builder.into_inner().unwrap()
}

/// A one-entry tar of a link (`Symlink` or `Link`) named `name` pointing at `target`.
pub fn tar_link(name: &str, entry_type: EntryType, target: &str) -> Vec<u8> {
    let mut header = raw_header(name.as_bytes(), entry_type, 0o777, 0);
    header.set_link_name(target).unwrap();
    header.set_cksum();
    let mut builder = tar::Builder::new(Vec::new());
    builder.append(&header, std::io::empty()).unwrap();
    builder.into_inner().unwrap()
}

pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

/// One zip entry to write.
pub enum ZipEntry<'a> {
    File {
        name: &'a str,
        mode: u32,
        data: &'a [u8],
    },
    Directory {
        name: &'a str,
    },
    Symlink {
        name: &'a str,
        target: &'a str,
    },
    /// A file whose external attributes carry `unix_mode` as given, special bits included.
    WithMode {
        name: &'a str,
        unix_mode: u32,
        data: &'a [u8],
    },
}

pub fn zip_of(entries: &[ZipEntry<'_>]) -> Vec<u8> {
    let mut writer = ZipWriter::new(Cursor::new(Vec::new()));
    let options = SimpleFileOptions::default().compression_method(CompressionMethod::Deflated);
    for entry in entries {
        match entry {
            ZipEntry::File { name, mode, data } => {
                writer
                    .start_file(*name, options.unix_permissions(*mode))
                    .unwrap();
                writer.write_all(data).unwrap();
            }
            ZipEntry::Directory { name } => writer.add_directory(*name, options).unwrap(),
            ZipEntry::Symlink { name, target } => {
                writer.add_symlink(*name, *target, options).unwrap()
            }
            ZipEntry::WithMode {
                name,
                unix_mode,
                data,
            } => {
                let options = options
                    .system(System::Unix)
                    .external_attributes(unix_mode << 16);
                writer.start_file(*name, options).unwrap();
                writer.write_all(data).unwrap();
            }
        }
    }
    writer.finish().unwrap().into_inner()
}

/// Every file under `root` with its content and mode, sorted by path.
pub fn tree(root: &Path) -> Vec<(String, Vec<u8>, u32)> {
    use std::os::unix::fs::PermissionsExt;
    let mut found = Vec::new();
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in fs::read_dir(&dir).unwrap() {
            let entry = entry.unwrap();
            let metadata = fs::symlink_metadata(entry.path()).unwrap();
            let relative = entry
                .path()
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            let mode = metadata.permissions().mode() & 0o7777;
            if metadata.is_dir() {
                pending.push(entry.path());
                found.push((format!("{relative}/"), Vec::new(), mode));
            } else {
                assert!(
                    metadata.is_file(),
                    "{relative} is neither file nor directory"
                );
                found.push((relative, fs::read(entry.path()).unwrap(), mode));
            }
        }
    }
    found.sort();
    found
}
