//! Zip archives: each central directory entry is checked, then written
//! through [`Staging`].
//!
//! The entry count comes from the central directory before anything is
//! read. The mode (and with it symlinks, devices and setuid bits) comes from
//! the upper half of the external attributes, read raw because the `zip`
//! crate's `unix_mode()` clears the setuid, setgid and sticky bits.

use crate::entry_name::{checked_path, names_directory, MAX_NAME_BYTES};
use crate::error::{ArchiveError, Refusal};
use crate::staging::Staging;
use std::collections::HashSet;
use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::path::PathBuf;
use zip::read::ZipFileEntry;
use zip::result::ZipError;
use zip::{System, ZipArchive};

const FILE_TYPE_MASK: u32 = 0o170_000;
const TYPE_DIRECTORY: u32 = 0o040_000;
const TYPE_SYMLINK: u32 = 0o120_000;
const TYPE_CHAR_DEVICE: u32 = 0o020_000;
const TYPE_BLOCK_DEVICE: u32 = 0o060_000;
const TYPE_FIFO: u32 = 0o010_000;
const TYPE_SOCKET: u32 = 0o140_000;
const SPECIAL_BITS: u32 = 0o7000;
const EXECUTABLE_BITS: u32 = 0o111;

const CENTRAL_HEADER_SIGNATURE: &[u8; 4] = b"PK\x01\x02";
const CENTRAL_HEADER_BYTES: usize = 46;

/// What to do with one zip entry, once checked.
enum Plan {
    /// The archive root itself (`./`).
    Skip,
    Directory {
        name: String,
        path: PathBuf,
    },
    File {
        name: String,
        path: PathBuf,
        executable: bool,
    },
}

/// Extracts the zip `file` into `staging`.
pub(crate) fn extract(file: File, staging: &mut Staging<'_>) -> Result<(), ArchiveError> {
    let mut archive = ZipArchive::new(BufReader::new(file))
        .map_err(|source| ArchiveError::CorruptZip { source })?;
    staging.check_declared_entries(archive.len())?;
    if archive.has_duplicate_names() {
        return Err(duplicate_names(archive, staging.max_entries()));
    }
    for index in 0..archive.len() {
        staging.count_entry()?;
        let entry = archive
            .by_index_data(index)
            .map_err(|source| ArchiveError::CorruptZip { source })?;
        match plan(&entry)? {
            Plan::Skip => {}
            Plan::Directory { name, path } => staging.add_directory(&name, &path)?,
            Plan::File {
                name,
                path,
                executable,
            } => {
                let mut data = archive
                    .by_index(index)
                    .map_err(|source| ArchiveError::reading(&name, io::Error::other(source)))?;
                staging.add_file(&name, &path, executable, &mut data)?;
            }
        }
    }
    Ok(())
}

fn plan(entry: &ZipFileEntry<'_>) -> Result<Plan, ArchiveError> {
    let name = match entry.name() {
        Ok(name) => name.into_owned(),
        Err(_) => {
            return Err(ArchiveError::refused_bytes(
                entry.name_raw(),
                Refusal::NameNotUtf8,
            ))
        }
    };
    let refuse = |reason| ArchiveError::refused(&name, reason);
    if entry.encrypted() {
        return Err(refuse(Refusal::Encrypted));
    }
    let mode = mode_of(entry);
    if let Some(mode) = mode {
        if mode & SPECIAL_BITS != 0 {
            return Err(refuse(Refusal::SpecialBits {
                mode: mode & 0o7777,
            }));
        }
        match mode & FILE_TYPE_MASK {
            TYPE_SYMLINK => return Err(refuse(Refusal::Symlink)),
            TYPE_CHAR_DEVICE | TYPE_BLOCK_DEVICE => return Err(refuse(Refusal::Device)),
            TYPE_FIFO => return Err(refuse(Refusal::Fifo)),
            TYPE_SOCKET => return Err(refuse(Refusal::Socket)),
            _ => {}
        }
    }
    let is_directory =
        names_directory(&name) || mode.is_some_and(|mode| mode & FILE_TYPE_MASK == TYPE_DIRECTORY);
    let path = checked_path(&name).map_err(refuse)?;
    Ok(match (path, is_directory) {
        (None, true) => Plan::Skip,
        (None, false) => return Err(refuse(Refusal::NoPath)),
        (Some(path), true) => Plan::Directory { name, path },
        (Some(path), false) => {
            let executable = mode.is_some_and(|mode| mode & EXECUTABLE_BITS != 0);
            Plan::File {
                name,
                path,
                executable,
            }
        }
    })
}

/// The entry's Unix mode with its special bits, if the archive records one.
fn mode_of(entry: &ZipFileEntry<'_>) -> Option<u32> {
    let raw = entry.external_attributes() >> 16;
    if entry.system() != System::Dos && raw != 0 {
        Some(raw)
    } else {
        // For MS-DOS the zip crate derives a mode from the DOS attributes.
        entry.unix_mode()
    }
}

/// The error for an archive in which the `zip` crate found duplicate names.
/// It keeps one entry per name, so the name is found by walking the central
/// directory's raw headers, at most `max_entries + 1` of them.
fn duplicate_names(archive: ZipArchive<BufReader<File>>, max_entries: usize) -> ArchiveError {
    let start = archive.central_directory_start();
    let mut reader = archive.into_inner();
    match first_duplicate(&mut reader, start, max_entries) {
        Ok(Scan::Duplicate(name)) => ArchiveError::refused_bytes(&name, Refusal::Duplicate),
        Ok(Scan::LongName(name, bytes)) => ArchiveError::refused_bytes(
            &name,
            Refusal::NameTooLong {
                bytes,
                limit: MAX_NAME_BYTES,
            },
        ),
        Ok(Scan::OverLimit) => ArchiveError::TooManyEntries { limit: max_entries },
        Ok(Scan::NotFound) | Err(_) => ArchiveError::CorruptZip {
            source: ZipError::InvalidArchive(
                "the central directory has duplicate names that could not be located".into(),
            ),
        },
    }
}

/// What walking the central directory found first.
enum Scan {
    Duplicate(Vec<u8>),
    /// A name longer than entries may have (its start, its length): refused anyway.
    LongName(Vec<u8>, u64),
    OverLimit,
    NotFound,
}

fn first_duplicate(
    reader: &mut (impl Read + Seek),
    start: u64,
    max_entries: usize,
) -> io::Result<Scan> {
    reader.seek(SeekFrom::Start(start))?;
    let mut seen = HashSet::new();
    for _ in 0..=max_entries {
        let mut header = [0u8; CENTRAL_HEADER_BYTES];
        reader.read_exact(&mut header)?;
        if &header[..4] != CENTRAL_HEADER_SIGNATURE {
            return Ok(Scan::NotFound);
        }
        let field = |at: usize| u16::from_le_bytes([header[at], header[at + 1]]);
        let (name_bytes, extra_bytes, comment_bytes) = (field(28), field(30), field(32));
        let mut name = vec![0; usize::from(name_bytes)];
        reader.read_exact(&mut name)?;
        if name.len() > MAX_NAME_BYTES {
            name.truncate(MAX_NAME_BYTES);
            return Ok(Scan::LongName(name, u64::from(name_bytes)));
        }
        reader.seek(SeekFrom::Current(
            i64::from(extra_bytes) + i64::from(comment_bytes),
        ))?;
        if let Some(name) = seen.replace(name) {
            return Ok(Scan::Duplicate(name));
        }
    }
    Ok(Scan::OverLimit)
}
