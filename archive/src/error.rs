//! The crate's one error type, and the reasons an entry is refused.

use std::fmt;
use std::io;
use std::path::PathBuf;

/// Entry names longer than this are shortened in error messages.
const SHOWN_NAME_BYTES: usize = 200;

/// Why extracting an archive or writing a build context failed.
///
/// [`ArchiveError::is_user_error`] separates what was wrong with the upload
/// (say so to the user) from failures on our side (log them, answer briefly).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ArchiveError {
    /// The archive file could not be opened or read from the start.
    #[error("could not open archive {}: {source}", path.display())]
    OpenArchive { path: PathBuf, source: io::Error },
    /// The upload starts with no zip, tar or gzip magic bytes.
    #[error("the upload is not a zip, tar or tar.gz archive")]
    NotAnArchive,
    /// The zip structure could not be parsed.
    #[error("the zip archive is corrupt: {source}")]
    CorruptZip { source: zip::result::ZipError },
    /// The tar (or its gzip stream) could not be parsed.
    #[error("the tar archive is corrupt: {reason}")]
    CorruptTar { reason: String },
    /// More entries than [`crate::Limits::max_entries`].
    #[error("archive has more than {limit} entries")]
    TooManyEntries { limit: usize },
    /// More directories, named or implied by deeper paths, than
    /// [`crate::Limits::max_entries`].
    #[error("archive has more than {limit} directories")]
    TooManyDirectories { limit: usize },
    /// More file content than [`crate::Limits::max_unpacked_bytes`].
    #[error("archive unpacks to more than {limit} bytes")]
    TooLarge { limit: u64 },
    /// Unpacked bytes grew past [`crate::Limits::max_ratio`] times the archive size.
    #[error("archive entry {entry:?}: compression ratio above {limit}:1")]
    RatioTooHigh { entry: String, limit: u64 },
    /// The decompressed tar stream (headers and skipped data included) ran
    /// past what the limits allow for content plus per-entry overhead.
    #[error("archive's tar stream is longer than {limit} bytes")]
    TarStreamTooLong { limit: u64 },
    /// One entry is not allowed; see [`Refusal`].
    #[error("archive entry {entry:?}: {reason}")]
    Refused { entry: String, reason: Refusal },
    /// One entry's data could not be read (bad checksum, truncated data, ...).
    #[error("archive entry {entry:?} could not be read: {source}")]
    ReadEntry { entry: String, source: io::Error },
    /// The staging directory is missing or not a directory.
    #[error("staging directory {} is not a directory", path.display())]
    StagingNotADirectory { path: PathBuf },
    /// The staging directory already holds something; it is left as it is.
    #[error("staging directory {} is not empty", path.display())]
    StagingNotEmpty { path: PathBuf },
    /// Writing into the staging directory failed.
    #[error("writing {} in the staging directory: {source}", path.display())]
    Staging { path: PathBuf, source: io::Error },
    /// Reading the tree handed to [`crate::write_tar`] failed.
    #[error("reading {} for a tar: {source}", path.display())]
    ReadTree { path: PathBuf, source: io::Error },
    /// The tree handed to [`crate::write_tar`] holds a symlink, device, etc.
    #[error("{} is neither a regular file nor a directory; it cannot go into a tar", path.display())]
    NotRegular { path: PathBuf },
    /// A file in the tree changed size while [`crate::write_tar`] read it.
    #[error("{} changed while it was written into a tar", path.display())]
    ChangedWhileWriting { path: PathBuf },
    /// Writing the tar to its output failed.
    #[error("writing a tar: {source}")]
    WriteTar { source: io::Error },
}

impl ArchiveError {
    /// Whether the upload itself is at fault: its message is for the user.
    /// The rest are failures on our side, to log in full.
    pub fn is_user_error(&self) -> bool {
        match self {
            Self::NotAnArchive
            | Self::CorruptZip { .. }
            | Self::CorruptTar { .. }
            | Self::TooManyEntries { .. }
            | Self::TooManyDirectories { .. }
            | Self::TooLarge { .. }
            | Self::RatioTooHigh { .. }
            | Self::TarStreamTooLong { .. }
            | Self::Refused { .. }
            | Self::ReadEntry { .. } => true,
            Self::OpenArchive { .. }
            | Self::StagingNotADirectory { .. }
            | Self::StagingNotEmpty { .. }
            | Self::Staging { .. }
            | Self::ReadTree { .. }
            | Self::NotRegular { .. }
            | Self::ChangedWhileWriting { .. }
            | Self::WriteTar { .. } => false,
        }
    }

    /// `entry` is refused for `reason`; overlong names are shortened.
    pub(crate) fn refused(entry: &str, reason: Refusal) -> Self {
        Self::Refused {
            entry: shown_name(entry),
            reason,
        }
    }

    /// Same as [`ArchiveError::refused`] for a name that is not UTF-8.
    pub(crate) fn refused_bytes(entry: &[u8], reason: Refusal) -> Self {
        Self::refused(&String::from_utf8_lossy(entry), reason)
    }

    /// Reading `entry`'s data failed; a tar stream cap shows as its own error.
    pub(crate) fn reading(entry: &str, source: io::Error) -> Self {
        match stream_cap_of(&source) {
            Some(limit) => Self::TarStreamTooLong { limit },
            None => Self::ReadEntry {
                entry: shown_name(entry),
                source,
            },
        }
    }

    /// Parsing the tar stream failed; a tar stream cap shows as its own error.
    pub(crate) fn corrupt_tar(source: io::Error) -> Self {
        match stream_cap_of(&source) {
            Some(limit) => Self::TarStreamTooLong { limit },
            None => Self::CorruptTar {
                reason: source.to_string(),
            },
        }
    }
}

/// `entry` as error messages show it: overlong names are shortened.
pub(crate) fn shown_name(entry: &str) -> String {
    if entry.len() <= SHOWN_NAME_BYTES {
        return entry.to_owned();
    }
    let mut end = SHOWN_NAME_BYTES;
    while !entry.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &entry[..end])
}

/// Carried inside an [`io::Error`] when a tar stream passes its cap, so the
/// cap surfaces as [`ArchiveError::TarStreamTooLong`] wherever it is hit.
#[derive(Debug)]
pub(crate) struct StreamCapReached {
    pub(crate) limit: u64,
}

impl fmt::Display for StreamCapReached {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "tar stream is longer than {} bytes", self.limit)
    }
}

impl std::error::Error for StreamCapReached {}

fn stream_cap_of(error: &io::Error) -> Option<u64> {
    error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<StreamCapReached>())
        .map(|cap| cap.limit)
}

/// Why one archive entry is not extracted.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Refusal {
    EmptyName,
    NulInName,
    /// The name is longer than entries may have, or than fits under the
    /// staging directory (`limit` says which is less).
    NameTooLong {
        bytes: u64,
        limit: usize,
    },
    /// One path component is longer than file systems allow.
    ComponentTooLong {
        bytes: usize,
        limit: usize,
    },
    NameNotUtf8,
    /// The name only names the archive root (`.`), but the entry is a file.
    NoPath,
    Absolute,
    EscapesRoot,
    Symlink,
    Hardlink,
    Device,
    Fifo,
    Socket,
    /// setuid, setgid or sticky bits; `mode` holds the permission bits, without the file type.
    SpecialBits {
        mode: u32,
    },
    Duplicate,
    FileAndDirectory,
    /// A file entry whose name ends with a slash.
    FileNamedAsDirectory,
    /// A parent path component on disk is not a real directory.
    ParentNotDirectory,
    Encrypted,
    /// A tar entry type this crate does not extract (sparse files, ...).
    UnsupportedType {
        type_flag: u8,
    },
    /// A tar PAX extended header larger than the crate reads.
    ExtendedHeaderTooLarge {
        bytes: u64,
        limit: usize,
    },
    /// A tar PAX `size` that disagrees with the entry's header.
    SizeMismatch,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::EmptyName => f.write_str("name is empty"),
            Self::NulInName => f.write_str("name contains a NUL byte"),
            Self::NameTooLong { bytes, limit } => {
                write!(f, "name is {bytes} bytes; the limit is {limit}")
            }
            Self::ComponentTooLong { bytes, limit } => {
                write!(f, "a path component is {bytes} bytes; the limit is {limit}")
            }
            Self::NameNotUtf8 => f.write_str("name is not valid UTF-8"),
            Self::NoPath => f.write_str("a file entry names the archive root"),
            Self::Absolute => f.write_str("path is absolute"),
            Self::EscapesRoot => f.write_str("path escapes the archive root"),
            Self::Symlink => f.write_str("symbolic links are not allowed"),
            Self::Hardlink => f.write_str("hard links are not allowed"),
            Self::Device => f.write_str("device nodes are not allowed"),
            Self::Fifo => f.write_str("FIFOs are not allowed"),
            Self::Socket => f.write_str("sockets are not allowed"),
            Self::SpecialBits { mode } => {
                write!(
                    f,
                    "mode {mode:o} has setuid, setgid or sticky bits, which are not allowed"
                )
            }
            Self::Duplicate => f.write_str("path appears twice in the archive"),
            Self::FileAndDirectory => f.write_str("path is both a file and a directory"),
            Self::FileNamedAsDirectory => f.write_str("file name ends with a slash"),
            Self::ParentNotDirectory => f.write_str("a parent path component is not a directory"),
            Self::Encrypted => f.write_str("encrypted entries are not supported"),
            Self::UnsupportedType { type_flag } => {
                write!(
                    f,
                    "tar entry type {:?} is not supported",
                    char::from(*type_flag)
                )
            }
            Self::ExtendedHeaderTooLarge { bytes, limit } => {
                write!(f, "extended header is {bytes} bytes; the limit is {limit}")
            }
            Self::SizeMismatch => {
                f.write_str("extended header size disagrees with the entry header")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_names_are_shortened_in_messages() {
        let name = "é".repeat(300);
        let message = ArchiveError::refused(&name, Refusal::Absolute).to_string();
        assert!(message.len() < 300, "{message}");
        assert!(message.ends_with("...\": path is absolute"), "{message}");
    }

    #[test]
    fn a_stream_cap_inside_an_io_error_is_reported_as_the_cap() {
        let error = io::Error::other(StreamCapReached { limit: 42 });
        assert!(matches!(
            ArchiveError::reading("a", error),
            ArchiveError::TarStreamTooLong { limit: 42 }
        ));
        let error = io::Error::other("bad block");
        assert!(matches!(
            ArchiveError::corrupt_tar(error),
            ArchiveError::CorruptTar { .. }
        ));
    }
}
