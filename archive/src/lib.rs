//! Checked extraction of users' uploads, and deterministic tars for build contexts.
//!
//! This crate is the safety gate for uploaded archives: [`extract_checked`]
//! writes nothing outside the staging directory it is given, refuses
//! anything that could reach outside it (absolute paths, `..`, links,
//! devices, FIFOs, setuid bits) and stops as soon as an archive goes over
//! its [`Limits`] (entries, unpacked bytes as actually written, ratio of
//! unpacked bytes to archive size). On any error the staging directory is
//! emptied again. [`write_tar`] turns a tree into a byte-for-byte
//! reproducible tar, so a build context's digest depends only on its files.
//!
//! Modules:
//! - `format`: [`Format`] and [`detect`], by magic bytes.
//! - `entry_name`: entry names to checked relative paths.
//! - `staging`: the staging directory, with the limits and on-disk checks.
//! - `zip_entries`, `tar_entries`: read one format each, entry by entry.
//! - `deterministic_tar`: [`write_tar`].
//! - `error`: [`ArchiveError`] and the [`Refusal`] reasons.

mod deterministic_tar;
mod entry_name;
mod error;
mod format;
mod staging;
mod tar_entries;
mod zip_entries;

pub use deterministic_tar::write_tar;
pub use error::{ArchiveError, Refusal};
pub use format::{detect, Format, DETECT_BYTES};

use staging::Staging;
use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

/// How much an archive may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Entries of any kind (files, directories, ...); also the most
    /// directories extraction creates, named or implied by deeper paths.
    pub max_entries: usize,
    /// Bytes of file content, counted as written.
    pub max_unpacked_bytes: u64,
    /// Unpacked bytes per byte of archive file.
    pub max_ratio: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_entries: 10_000,
            max_unpacked_bytes: 1 << 30,
            max_ratio: 100,
        }
    }
}

/// What [`extract_checked`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Extracted {
    /// Regular files, sorted by path.
    pub files: Vec<ExtractedFile>,
    /// Sum of the files' sizes.
    pub unpacked_bytes: u64,
}

/// One regular file written into the staging directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtractedFile {
    /// Relative to the staging directory.
    pub path: PathBuf,
    pub size: u64,
    /// Written with mode 0755 rather than 0644.
    pub executable: bool,
}

/// Extracts `archive` (a file) into `staging` (an existing empty dir), checking every entry.
///
/// The format comes from the file's magic bytes ([`detect`]). Directories
/// are created with mode 0755, files with 0644, or 0755 if the archive gave
/// them any executable bit; owners and times are not kept. On error,
/// whatever was written is removed and `staging` is left empty; a staging
/// directory that was not empty to begin with is refused and left alone.
pub fn extract_checked(
    archive: &Path,
    staging: &Path,
    limits: &Limits,
) -> Result<Extracted, ArchiveError> {
    let open_error = |source| ArchiveError::OpenArchive {
        path: archive.to_path_buf(),
        source,
    };
    let mut file = File::open(archive).map_err(open_error)?;
    let archive_bytes = file.metadata().map_err(open_error)?.len();
    let format =
        detect(&read_start(&mut file).map_err(open_error)?).ok_or(ArchiveError::NotAnArchive)?;
    file.seek(SeekFrom::Start(0)).map_err(open_error)?;

    let mut stage = Staging::new(staging, limits, archive_bytes)?;
    let extracted = match format {
        Format::Zip => zip_entries::extract(file, &mut stage),
        Format::Tar => tar_entries::extract(BufReader::new(file), &mut stage),
        Format::TarGz => tar_entries::extract(
            flate2::read::MultiGzDecoder::new(BufReader::new(file)),
            &mut stage,
        ),
    };
    match extracted {
        Ok(()) => Ok(stage.finish()),
        Err(error) => {
            stage.clean();
            Err(error)
        }
    }
}

/// The first [`DETECT_BYTES`] of `file`, or fewer if it is shorter.
fn read_start(file: &mut File) -> std::io::Result<Vec<u8>> {
    let mut start = Vec::with_capacity(DETECT_BYTES);
    file.by_ref()
        .take(DETECT_BYTES as u64)
        .read_to_end(&mut start)?;
    Ok(start)
}
