//! Archive formats, told apart by their magic bytes, never by file name.

/// How many leading bytes [`detect`] needs to recognise every format
/// (a tar's `ustar` magic sits at offset 257).
pub const DETECT_BYTES: usize = 262;

/// An archive format this crate extracts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    Zip,
    TarGz,
    Tar,
}

/// The format whose magic bytes `first_bytes` starts with, if any.
///
/// Zip: a local file header (`PK\3\4`) or the end record of an empty zip
/// (`PK\5\6`). Gzip (`1f 8b`) is taken to hold a tar. Tar: POSIX or GNU
/// `ustar` magic; pre-POSIX tars have none and are not recognised.
pub fn detect(first_bytes: &[u8]) -> Option<Format> {
    if first_bytes.starts_with(b"PK\x03\x04") || first_bytes.starts_with(b"PK\x05\x06") {
        Some(Format::Zip)
    } else if first_bytes.starts_with(&[0x1f, 0x8b]) {
        Some(Format::TarGz)
    } else if first_bytes.get(257..262) == Some(b"ustar".as_slice()) {
        Some(Format::Tar)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_header(magic: &[u8]) -> Vec<u8> {
        let mut header = vec![0u8; 512];
        header[..6].copy_from_slice(b"a.txt\0");
        header[257..257 + magic.len()].copy_from_slice(magic);
        header
    }

    #[test]
    fn formats_are_told_apart_by_magic_bytes() {
        assert_eq!(detect(b"PK\x03\x04rest"), Some(Format::Zip));
        assert_eq!(detect(b"PK\x05\x06\0\0"), Some(Format::Zip));
        assert_eq!(detect(&[0x1f, 0x8b, 8, 0]), Some(Format::TarGz));
        assert_eq!(detect(&tar_header(b"ustar\0")), Some(Format::Tar));
        assert_eq!(detect(&tar_header(b"ustar  \0")), Some(Format::Tar));
    }

    #[test]
    fn other_bytes_are_no_archive() {
        assert_eq!(detect(b""), None);
        assert_eq!(detect(b"PK"), None);
        assert_eq!(detect(b"print('hello')\n"), None);
        assert_eq!(detect(&tar_header(b"")), None);
        assert_eq!(detect(&tar_header(b"ustar")[..261]), None);
    }
}
