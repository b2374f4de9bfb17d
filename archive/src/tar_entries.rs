//! Tar archives, plain or gzipped: entries are read in order, checked, and
//! written through [`Staging`].
//!
//! The `tar` crate runs in raw mode, so GNU long names and PAX headers are
//! read here with a size bound instead of into memory whole. The
//! decompressed stream is capped at the content the limits allow plus a
//! per-entry overhead, so data that is skipped rather than written (a
//! directory's, a link target's) cannot keep the decompressor busy for ever.

use crate::entry_name::{checked_path, names_directory, MAX_NAME_BYTES};
use crate::error::{ArchiveError, Refusal, StreamCapReached};
use crate::staging::Staging;
use std::io::{self, Read};
use tar::{Entry, EntryType};

/// Largest PAX extended header read, in bytes.
const MAX_PAX_BYTES: usize = 64 * 1024;
/// Stream bytes allowed per entry beyond its content: header, padding,
/// a long name and a small PAX header.
const STREAM_OVERHEAD_PER_ENTRY: u64 = 16 * 1024;
const SPECIAL_BITS: u32 = 0o7000;
const EXECUTABLE_BITS: u32 = 0o111;

/// Extension headers seen since the last entry, describing the next one.
#[derive(Default)]
struct Extensions {
    long_name: Option<Vec<u8>>,
    long_link: bool,
    pax: Option<Pax>,
}

impl Extensions {
    fn is_empty(&self) -> bool {
        self.long_name.is_none() && !self.long_link && self.pax.is_none()
    }
}

/// The PAX records this crate uses; the rest (times, owners) are dropped.
#[derive(Default)]
struct Pax {
    path: Option<Vec<u8>>,
    size: Option<u64>,
}

/// Extracts the tar read from `stream` (already decompressed) into `staging`.
pub(crate) fn extract(stream: impl Read, staging: &mut Staging<'_>) -> Result<(), ArchiveError> {
    let entry_overhead = (staging.max_entries() as u64)
        .saturating_add(1)
        .saturating_mul(STREAM_OVERHEAD_PER_ENTRY);
    let cap = staging.unpacked_cap().saturating_add(entry_overhead);
    let mut archive = tar::Archive::new(CappedReader {
        inner: stream,
        left: cap,
        limit: cap,
    });
    let entries = archive
        .entries()
        .map_err(ArchiveError::corrupt_tar)?
        .raw(true);
    let mut pending = Extensions::default();
    for entry in entries {
        let mut entry = entry.map_err(ArchiveError::corrupt_tar)?;
        let entry_type = entry.header().entry_type();
        if entry_type.is_gnu_longname() {
            if pending.long_name.is_some() {
                return Err(corrupt("two GNU long names for one entry"));
            }
            pending.long_name = Some(read_long_name(&mut entry)?);
            continue;
        }
        if entry_type.is_gnu_longlink() {
            if pending.long_link {
                return Err(corrupt("two GNU long link names for one entry"));
            }
            // Only links have link names, and links are refused: never read.
            pending.long_link = true;
            continue;
        }
        if entry_type.is_pax_local_extensions() {
            if pending.pax.is_some() {
                return Err(corrupt("two PAX headers for one entry"));
            }
            pending.pax = Some(read_pax(&mut entry)?);
            continue;
        }
        staging.count_entry()?;
        let extensions = std::mem::take(&mut pending);
        if entry_type.is_pax_global_extensions() {
            if !extensions.is_empty() {
                return Err(corrupt("extension headers before a global PAX header"));
            }
            continue;
        }
        extract_entry(&mut entry, extensions, staging)?;
    }
    if !pending.is_empty() {
        return Err(corrupt("extension headers at the end describe no entry"));
    }
    Ok(())
}

fn extract_entry<R: Read>(
    entry: &mut Entry<'_, R>,
    extensions: Extensions,
    staging: &mut Staging<'_>,
) -> Result<(), ArchiveError> {
    let pax = extensions.pax.unwrap_or_default();
    let name_bytes = match (pax.path, extensions.long_name) {
        (Some(path), _) | (None, Some(path)) => path,
        (None, None) => entry.path_bytes().into_owned(),
    };
    let Ok(name) = std::str::from_utf8(&name_bytes) else {
        return Err(ArchiveError::refused_bytes(
            &name_bytes,
            Refusal::NameNotUtf8,
        ));
    };
    let refuse = |reason| ArchiveError::refused(name, reason);
    if pax.size.is_some_and(|size| size != entry.size()) {
        return Err(refuse(Refusal::SizeMismatch));
    }
    let entry_type = entry.header().entry_type();
    match entry_type {
        EntryType::Regular | EntryType::Continuous | EntryType::Directory => {}
        EntryType::Symlink => return Err(refuse(Refusal::Symlink)),
        EntryType::Link => return Err(refuse(Refusal::Hardlink)),
        EntryType::Char | EntryType::Block => return Err(refuse(Refusal::Device)),
        EntryType::Fifo => return Err(refuse(Refusal::Fifo)),
        other => {
            return Err(refuse(Refusal::UnsupportedType {
                type_flag: other.as_byte(),
            }))
        }
    }
    let mode = entry.header().mode().map_err(ArchiveError::corrupt_tar)?;
    if mode & SPECIAL_BITS != 0 {
        return Err(refuse(Refusal::SpecialBits {
            mode: mode & 0o7777,
        }));
    }
    let path = checked_path(name).map_err(refuse)?;
    if entry_type == EntryType::Directory {
        return match path {
            Some(path) => staging.add_directory(name, &path),
            None => Ok(()),
        };
    }
    if names_directory(name) {
        return Err(refuse(Refusal::FileNamedAsDirectory));
    }
    let path = path.ok_or_else(|| refuse(Refusal::NoPath))?;
    let written = staging.add_file(name, &path, mode & EXECUTABLE_BITS != 0, entry)?;
    // The data runs short only when the archive ends early.
    if written != entry.size() {
        return Err(ArchiveError::CorruptTar {
            reason: format!("entry {name:?} is cut short"),
        });
    }
    Ok(())
}

/// A GNU long name (`L`) entry's name, if it is not over the name limit.
fn read_long_name<R: Read>(entry: &mut Entry<'_, R>) -> Result<Vec<u8>, ArchiveError> {
    let size = entry.size();
    // GNU tar stores the name with a trailing NUL.
    if size > MAX_NAME_BYTES as u64 + 1 {
        let mut start = Vec::new();
        entry
            .take(MAX_NAME_BYTES as u64)
            .read_to_end(&mut start)
            .map_err(ArchiveError::corrupt_tar)?;
        let reason = Refusal::NameTooLong {
            bytes: size - 1,
            limit: MAX_NAME_BYTES,
        };
        return Err(ArchiveError::refused_bytes(&start, reason));
    }
    let mut name = Vec::with_capacity(MAX_NAME_BYTES + 1);
    entry
        .read_to_end(&mut name)
        .map_err(ArchiveError::corrupt_tar)?;
    while name.last() == Some(&0) {
        name.pop();
    }
    Ok(name)
}

/// The PAX records of a local extended header (`x`), if it is not over the size limit.
fn read_pax<R: Read>(entry: &mut Entry<'_, R>) -> Result<Pax, ArchiveError> {
    let size = entry.size();
    if size > MAX_PAX_BYTES as u64 {
        let header_name = entry.path_bytes().into_owned();
        let reason = Refusal::ExtendedHeaderTooLarge {
            bytes: size,
            limit: MAX_PAX_BYTES,
        };
        return Err(ArchiveError::refused_bytes(&header_name, reason));
    }
    let mut records = Vec::with_capacity(MAX_PAX_BYTES.min(size as usize));
    entry
        .read_to_end(&mut records)
        .map_err(ArchiveError::corrupt_tar)?;
    let mut pax = Pax::default();
    for record in tar::PaxExtensions::new(&records) {
        let record = record.map_err(ArchiveError::corrupt_tar)?;
        match record.key_bytes() {
            b"path" => pax.path = Some(record.value_bytes().to_vec()),
            b"size" => {
                let size = record.value().ok().and_then(|value| value.parse().ok());
                pax.size = Some(size.ok_or_else(|| corrupt("a PAX size is not a number"))?);
            }
            _ => {}
        }
    }
    Ok(pax)
}

fn corrupt(reason: &str) -> ArchiveError {
    ArchiveError::CorruptTar {
        reason: reason.to_owned(),
    }
}

/// Reads at most `limit` bytes from `inner`, then fails with
/// [`StreamCapReached`] instead of reading on.
struct CappedReader<R> {
    inner: R,
    left: u64,
    limit: u64,
}

impl<R: Read> Read for CappedReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        if self.left == 0 {
            return Err(io::Error::other(StreamCapReached { limit: self.limit }));
        }
        let wanted = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let read = self.inner.read(&mut buf[..wanted])?;
        self.left -= read as u64;
        Ok(read)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_capped_reader_fails_past_its_cap() {
        let mut reader = CappedReader {
            inner: &[7u8; 10][..],
            left: 4,
            limit: 4,
        };
        let mut buf = [0u8; 8];
        assert_eq!(reader.read(&mut buf).unwrap(), 4);
        let error = reader.read(&mut buf).unwrap_err();
        assert_eq!(error.to_string(), "tar stream is longer than 4 bytes");
    }
}
