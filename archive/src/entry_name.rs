//! Entry names: from what an archive claims to a checked relative path.
//!
//! Both `/` and `\` separate components (zips made on Windows use `\`), so
//! `..\x` escapes just like `../x`, and a leading `\` or `C:\` is absolute.

use crate::error::Refusal;
use std::path::PathBuf;

/// Longest entry name accepted, in bytes.
pub(crate) const MAX_NAME_BYTES: usize = 4096;
/// Longest path component accepted, in bytes: Linux file systems' NAME_MAX.
pub(crate) const MAX_COMPONENT_BYTES: usize = 255;

/// The relative path `name` stands for, or `None` for the archive root
/// itself (`./`, which tars made with `tar -C dir .` start with).
pub(crate) fn checked_path(name: &str) -> Result<Option<PathBuf>, Refusal> {
    if name.is_empty() {
        return Err(Refusal::EmptyName);
    }
    if name.contains('\0') {
        return Err(Refusal::NulInName);
    }
    if name.len() > MAX_NAME_BYTES {
        return Err(Refusal::NameTooLong {
            bytes: name.len() as u64,
            limit: MAX_NAME_BYTES,
        });
    }
    if is_absolute(name.as_bytes()) {
        return Err(Refusal::Absolute);
    }
    let mut path = PathBuf::new();
    for component in name.split(is_separator) {
        match component {
            "" | "." => {}
            ".." => return Err(Refusal::EscapesRoot),
            long if long.len() > MAX_COMPONENT_BYTES => {
                return Err(Refusal::ComponentTooLong {
                    bytes: long.len(),
                    limit: MAX_COMPONENT_BYTES,
                })
            }
            normal => path.push(normal),
        }
    }
    Ok((!path.as_os_str().is_empty()).then_some(path))
}

/// Whether `name` ends with a separator, which marks a directory.
pub(crate) fn names_directory(name: &str) -> bool {
    name.ends_with(is_separator)
}

fn is_separator(c: char) -> bool {
    c == '/' || c == '\\'
}

fn is_absolute(name: &[u8]) -> bool {
    match name {
        [b'/' | b'\\', ..] => true,
        [drive, b':', b'/' | b'\\', ..] => drive.is_ascii_alphabetic(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn path(name: &str) -> Option<PathBuf> {
        checked_path(name).unwrap()
    }

    #[test]
    fn plain_names_become_relative_paths() {
        assert_eq!(path("a/b.txt"), Some(Path::new("a/b.txt").to_path_buf()));
        assert_eq!(path("./a//b/./c/"), Some(Path::new("a/b/c").to_path_buf()));
        assert_eq!(
            path("dir\\file.py"),
            Some(Path::new("dir/file.py").to_path_buf())
        );
        assert_eq!(path("a:b.txt"), Some(Path::new("a:b.txt").to_path_buf()));
    }

    #[test]
    fn the_root_itself_has_no_path() {
        assert_eq!(path("./"), None);
        assert_eq!(path("."), None);
    }

    #[test]
    fn parent_components_are_refused_anywhere() {
        for name in ["../x", "a/../b", "a/..", "..\\x", "a\\..\\..\\x", ".."] {
            assert_eq!(checked_path(name), Err(Refusal::EscapesRoot), "{name}");
        }
        assert_eq!(
            path("a/..b/c.."),
            Some(Path::new("a/..b/c..").to_path_buf())
        );
    }

    #[test]
    fn absolute_names_are_refused_in_unix_and_windows_spelling() {
        for name in [
            "/etc/passwd",
            "\\evil.txt",
            "C:\\evil.txt",
            "c:/evil.txt",
            "//server/share",
        ] {
            assert_eq!(checked_path(name), Err(Refusal::Absolute), "{name}");
        }
    }

    #[test]
    fn empty_nul_and_overlong_names_are_refused() {
        assert_eq!(checked_path(""), Err(Refusal::EmptyName));
        assert_eq!(checked_path("a\0b"), Err(Refusal::NulInName));
        let long = "a/".repeat(2049);
        assert_eq!(
            checked_path(&long),
            Err(Refusal::NameTooLong {
                bytes: 4098,
                limit: 4096
            })
        );
        assert!(checked_path(&"a/".repeat(2048)).is_ok());
    }

    #[test]
    fn components_longer_than_the_file_system_allows_are_refused() {
        let name = format!("dir/{}", "a".repeat(256));
        let refusal = Refusal::ComponentTooLong {
            bytes: 256,
            limit: 255,
        };
        assert_eq!(checked_path(&name), Err(refusal));
        assert!(checked_path(&"a".repeat(255)).is_ok());
    }

    #[test]
    fn a_trailing_separator_names_a_directory() {
        assert!(names_directory("a/"));
        assert!(names_directory("a\\"));
        assert!(!names_directory("a"));
    }
}
