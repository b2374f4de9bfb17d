//! Deterministic tars of a directory tree, for build contexts: the same tree
//! always gives the same bytes, so the same digest.

use crate::error::ArchiveError;
use std::ffi::OsString;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use tar::{EntryType, Header};

const DIR_MODE: u32 = 0o755;
const FILE_MODE: u32 = 0o644;
const EXECUTABLE_MODE: u32 = 0o755;
const EXECUTABLE_BITS: u32 = 0o111;

/// One thing under the tree's root, by its relative path.
struct Item {
    path: PathBuf,
    directory: bool,
    executable: bool,
}

/// Writes a deterministic tar of the tree under `dir` to `out` and returns
/// the bytes of file content in it.
///
/// Entries are in sorted path order (component by component, so a directory
/// comes right before what it holds), directories included, each named
/// `prefix` followed by its path under `dir` (`prefix` is used as given, so
/// `"code/"` puts everything under `code/`). Every header has mtime 0,
/// uid/gid 0 and mode 0644, or 0755 for directories and for files with any
/// executable bit. A symlink or other special file in the tree is an error.
pub fn write_tar(dir: &Path, prefix: &str, out: impl Write) -> Result<u64, ArchiveError> {
    let items = walk(dir)?;
    let mut builder = tar::Builder::new(out);
    let mut content_bytes = 0u64;
    for item in &items {
        let mut name = OsString::from(prefix);
        name.push(item.path.as_os_str());
        let mut header = Header::new_gnu();
        header.set_mtime(0);
        header.set_uid(0);
        header.set_gid(0);
        if item.directory {
            name.push("/");
            header.set_entry_type(EntryType::Directory);
            header.set_mode(DIR_MODE);
            header.set_size(0);
            builder
                .append_data(&mut header, Path::new(&name), io::empty())
                .map_err(write_error)?;
            continue;
        }
        let full = dir.join(&item.path);
        let read_error = |source| ArchiveError::ReadTree {
            path: full.clone(),
            source,
        };
        let file = File::open(&full).map_err(read_error)?;
        let size = file.metadata().map_err(read_error)?.len();
        header.set_entry_type(EntryType::Regular);
        header.set_mode(if item.executable {
            EXECUTABLE_MODE
        } else {
            FILE_MODE
        });
        header.set_size(size);
        let mut data = CountingReader {
            inner: file.take(size),
            count: 0,
        };
        builder
            .append_data(&mut header, Path::new(&name), &mut data)
            .map_err(write_error)?;
        if data.count != size {
            return Err(ArchiveError::ChangedWhileWriting { path: full });
        }
        content_bytes += size;
    }
    builder
        .into_inner()
        .map_err(write_error)?
        .flush()
        .map_err(write_error)?;
    Ok(content_bytes)
}

/// Everything under `root`, sorted by path; symlinks and special files are errors.
fn walk(root: &Path) -> Result<Vec<Item>, ArchiveError> {
    let mut items = Vec::new();
    let mut pending = vec![PathBuf::new()];
    while let Some(relative) = pending.pop() {
        let full = root.join(&relative);
        let read_error = |source| ArchiveError::ReadTree {
            path: full.clone(),
            source,
        };
        for child in fs::read_dir(&full).map_err(read_error)? {
            let child = child.map_err(read_error)?;
            let path = relative.join(child.file_name());
            // symlink_metadata, so a symlink is seen as one and never followed.
            let metadata =
                fs::symlink_metadata(child.path()).map_err(|source| ArchiveError::ReadTree {
                    path: child.path(),
                    source,
                })?;
            if metadata.is_dir() {
                pending.push(path.clone());
                items.push(Item {
                    path,
                    directory: true,
                    executable: false,
                });
            } else if metadata.is_file() {
                let executable = metadata.permissions().mode() & EXECUTABLE_BITS != 0;
                items.push(Item {
                    path,
                    directory: false,
                    executable,
                });
            } else {
                return Err(ArchiveError::NotRegular { path: child.path() });
            }
        }
    }
    items.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(items)
}

fn write_error(source: io::Error) -> ArchiveError {
    ArchiveError::WriteTar { source }
}

/// Counts what passes through, to notice a file that shrank while read.
struct CountingReader<R> {
    inner: R,
    count: u64,
}

impl<R: Read> Read for CountingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let read = self.inner.read(buf)?;
        self.count += read as u64;
        Ok(read)
    }
}
