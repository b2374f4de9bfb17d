//! The staging directory: the only place extraction writes to.
//!
//! Every entry the format readers accept goes through [`Staging`], which
//! counts entries, charges each byte against the size and ratio limits
//! before writing it, caps the directories it creates, refuses paths seen
//! before or used as both file and directory, and creates files with `O_EXCL` under parents it made itself,
//! so nothing already in the directory (a symlink, say) is ever followed.

use crate::entry_name::MAX_NAME_BYTES;
use crate::error::{shown_name, ArchiveError, Refusal};
use crate::{Extracted, ExtractedFile, Limits};
use std::cmp::Reverse;
use std::collections::HashMap;
use std::fs::{self, DirBuilder, File, OpenOptions, Permissions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

const DIR_MODE: u32 = 0o755;
const FILE_MODE: u32 = 0o644;
const EXECUTABLE_MODE: u32 = 0o755;
const COPY_BUFFER_BYTES: usize = 64 * 1024;
/// Linux's PATH_MAX: the longest path a system call takes, NUL included.
const PATH_MAX_BYTES: usize = 4096;

/// What a path in the staging directory has been used for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Claim {
    File,
    /// `explicit` once an entry named the directory itself, not only a child.
    Directory {
        explicit: bool,
    },
}

/// Extraction in progress into one staging directory.
pub(crate) struct Staging<'a> {
    root: &'a Path,
    limits: &'a Limits,
    /// Unpacked bytes allowed by the ratio limit: archive size × ratio.
    ratio_cap: u64,
    entries: usize,
    /// Directories created, explicit or made as parents.
    directories: usize,
    unpacked: u64,
    claims: HashMap<PathBuf, Claim>,
    files: Vec<ExtractedFile>,
    buffer: Vec<u8>,
}

impl<'a> Staging<'a> {
    /// Starts on `root`, which must be an existing empty directory.
    /// `archive_bytes` is the size of the archive file, the base of the ratio.
    pub(crate) fn new(
        root: &'a Path,
        limits: &'a Limits,
        archive_bytes: u64,
    ) -> Result<Self, ArchiveError> {
        let not_a_directory = || ArchiveError::StagingNotADirectory {
            path: root.to_path_buf(),
        };
        let metadata = fs::metadata(root).map_err(|_| not_a_directory())?;
        if !metadata.is_dir() {
            return Err(not_a_directory());
        }
        let mut children = fs::read_dir(root).map_err(|source| staging_error(root, source))?;
        if children.next().is_some() {
            return Err(ArchiveError::StagingNotEmpty {
                path: root.to_path_buf(),
            });
        }
        Ok(Self {
            root,
            limits,
            ratio_cap: archive_bytes.saturating_mul(limits.max_ratio),
            entries: 0,
            directories: 0,
            unpacked: 0,
            claims: HashMap::new(),
            files: Vec::new(),
            buffer: vec![0; COPY_BUFFER_BYTES],
        })
    }

    /// The most unpacked bytes the limits allow for this archive.
    pub(crate) fn unpacked_cap(&self) -> u64 {
        self.limits.max_unpacked_bytes.min(self.ratio_cap)
    }

    /// The most entries an archive may have.
    pub(crate) fn max_entries(&self) -> usize {
        self.limits.max_entries
    }

    /// Refuses an archive that declares more entries than allowed, before
    /// any of them is looked at.
    pub(crate) fn check_declared_entries(&self, declared: usize) -> Result<(), ArchiveError> {
        if declared > self.limits.max_entries {
            return Err(ArchiveError::TooManyEntries {
                limit: self.limits.max_entries,
            });
        }
        Ok(())
    }

    /// Counts one more entry, whatever it turns out to be.
    pub(crate) fn count_entry(&mut self) -> Result<(), ArchiveError> {
        self.entries += 1;
        self.check_declared_entries(self.entries)
    }

    /// Creates the directory `path` for entry `name` (and its parents).
    pub(crate) fn add_directory(&mut self, name: &str, path: &Path) -> Result<(), ArchiveError> {
        self.check_fits(name, path)?;
        self.claim_parents(name, path)?;
        match self.claims.get(path) {
            Some(Claim::File) => Err(ArchiveError::refused(name, Refusal::FileAndDirectory)),
            Some(Claim::Directory { explicit: true }) => {
                Err(ArchiveError::refused(name, Refusal::Duplicate))
            }
            Some(Claim::Directory { explicit: false }) => {
                self.claims
                    .insert(path.to_path_buf(), Claim::Directory { explicit: true });
                Ok(())
            }
            None => self.create_directory(name, path, true),
        }
    }

    /// Writes the file `path` for entry `name` from `data`, counting the bytes
    /// as they are written and stopping at the first one over a limit.
    /// Returns how many bytes were written.
    pub(crate) fn add_file(
        &mut self,
        name: &str,
        path: &Path,
        executable: bool,
        data: &mut dyn Read,
    ) -> Result<u64, ArchiveError> {
        self.check_fits(name, path)?;
        self.claim_parents(name, path)?;
        match self.claims.get(path) {
            Some(Claim::File) => return Err(ArchiveError::refused(name, Refusal::Duplicate)),
            Some(Claim::Directory { .. }) => {
                return Err(ArchiveError::refused(name, Refusal::FileAndDirectory))
            }
            None => {}
        }
        self.claims.insert(path.to_path_buf(), Claim::File);

        let full = self.root.join(path);
        let mode = if executable {
            EXECUTABLE_MODE
        } else {
            FILE_MODE
        };
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&full)
            .map_err(|source| staging_error(&full, source))?;
        let size = self.copy(name, data, &mut file, &full)?;
        // The mode given to open() is cut by the umask; set it exactly.
        file.set_permissions(Permissions::from_mode(mode))
            .map_err(|source| staging_error(&full, source))?;
        self.files.push(ExtractedFile {
            path: path.to_path_buf(),
            size,
            executable,
        });
        Ok(size)
    }

    /// The files written, sorted by path.
    pub(crate) fn finish(self) -> Extracted {
        let mut files = self.files;
        files.sort_by(|a, b| a.path.cmp(&b.path));
        Extracted {
            files,
            unpacked_bytes: self.unpacked,
        }
    }

    /// Removes everything written so far, leaving `root` empty. Best effort:
    /// the error that led here is the one worth reporting.
    ///
    /// Removal goes path by path, deepest first, through what was claimed:
    /// `remove_dir_all` keeps a descriptor open per level and so fails on
    /// trees deeper than the process's descriptor limit.
    pub(crate) fn clean(self) {
        let mut claimed: Vec<(&PathBuf, &Claim)> = self.claims.iter().collect();
        claimed.sort_by_key(|(path, _)| Reverse(path.components().count()));
        for (path, claim) in claimed {
            let full = self.root.join(path);
            let _ = match claim {
                Claim::File => fs::remove_file(&full),
                Claim::Directory { .. } => fs::remove_dir(&full),
            };
        }
        // Nothing should be left; sweep in case something was.
        let Ok(children) = fs::read_dir(self.root) else {
            return;
        };
        for child in children.flatten() {
            let path = child.path();
            // file_type() does not follow symlinks.
            let _ = match child.file_type() {
                Ok(kind) if kind.is_dir() => fs::remove_dir_all(&path),
                _ => fs::remove_file(&path),
            };
        }
    }

    fn copy(
        &mut self,
        name: &str,
        data: &mut dyn Read,
        file: &mut File,
        full: &Path,
    ) -> Result<u64, ArchiveError> {
        let mut written = 0u64;
        loop {
            let read = match data.read(&mut self.buffer) {
                Ok(0) => return Ok(written),
                Ok(read) => read,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                Err(error) => return Err(ArchiveError::reading(name, error)),
            };
            self.charge(name, read as u64)?;
            file.write_all(&self.buffer[..read])
                .map_err(|source| staging_error(full, source))?;
            written += read as u64;
        }
    }

    /// Accounts for `bytes` more unpacked bytes of entry `name`, before they
    /// are written.
    fn charge(&mut self, name: &str, bytes: u64) -> Result<(), ArchiveError> {
        let total = self.unpacked.saturating_add(bytes);
        if total > self.limits.max_unpacked_bytes {
            return Err(ArchiveError::TooLarge {
                limit: self.limits.max_unpacked_bytes,
            });
        }
        if total > self.ratio_cap {
            return Err(ArchiveError::RatioTooHigh {
                entry: shown_name(name),
                limit: self.limits.max_ratio,
            });
        }
        self.unpacked = total;
        Ok(())
    }

    /// Refuses `path` if it would not fit in a system call once under the
    /// staging directory (its parents are shorter, so they fit too).
    fn check_fits(&self, name: &str, path: &Path) -> Result<(), ArchiveError> {
        let full_bytes = self.root.as_os_str().len() + 1 + path.as_os_str().len();
        if full_bytes < PATH_MAX_BYTES {
            return Ok(());
        }
        let room = PATH_MAX_BYTES.saturating_sub(self.root.as_os_str().len() + 2);
        let reason = Refusal::NameTooLong {
            bytes: name.len() as u64,
            limit: room.min(MAX_NAME_BYTES),
        };
        Err(ArchiveError::refused(name, reason))
    }

    /// Makes sure every parent of `path` is a directory, creating the
    /// missing ones. A claimed directory's parents are all claimed
    /// directories, so the walk up stops at the first one: each entry costs
    /// lookups for the directories it adds, not for its whole depth.
    fn claim_parents(&mut self, name: &str, path: &Path) -> Result<(), ArchiveError> {
        let mut missing = Vec::new();
        for parent in path.ancestors().skip(1) {
            if parent.as_os_str().is_empty() {
                break;
            }
            match self.claims.get(parent) {
                Some(Claim::Directory { .. }) => break,
                Some(Claim::File) => {
                    return Err(ArchiveError::refused(name, Refusal::FileAndDirectory))
                }
                None => missing.push(parent),
            }
        }
        for parent in missing.into_iter().rev() {
            self.create_directory(name, parent, false)?;
        }
        Ok(())
    }

    /// Creates one directory whose parent is a claimed directory, and claims
    /// it. Something already there is accepted only if it is a real directory.
    fn create_directory(
        &mut self,
        name: &str,
        path: &Path,
        explicit: bool,
    ) -> Result<(), ArchiveError> {
        // Directories made for deep paths are not entries, but cost as much.
        self.directories += 1;
        if self.directories > self.limits.max_entries {
            return Err(ArchiveError::TooManyDirectories {
                limit: self.limits.max_entries,
            });
        }
        let full = self.root.join(path);
        match DirBuilder::new().mode(DIR_MODE).create(&full) {
            Ok(()) => {}
            Err(error) if error.kind() == io::ErrorKind::AlreadyExists => {
                let is_real_directory =
                    fs::symlink_metadata(&full).is_ok_and(|m| m.file_type().is_dir());
                if !is_real_directory {
                    return Err(ArchiveError::refused(name, Refusal::ParentNotDirectory));
                }
            }
            Err(source) => return Err(staging_error(&full, source)),
        }
        self.claims
            .insert(path.to_path_buf(), Claim::Directory { explicit });
        // As for files, the umask must not decide the mode.
        fs::set_permissions(&full, Permissions::from_mode(DIR_MODE))
            .map_err(|source| staging_error(&full, source))
    }
}

fn staging_error(path: &Path, source: io::Error) -> ArchiveError {
    ArchiveError::Staging {
        path: path.to_path_buf(),
        source,
    }
}
