//! What the Docker tests share.

/// A tar with `files` (path, contents) at its root.
pub fn tar_of(files: &[(&str, &str)]) -> bytes::Bytes {
    let mut builder = tar::Builder::new(Vec::new());
    for (path, contents) in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(contents.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        builder
            .append_data(&mut header, path, contents.as_bytes())
            .unwrap();
    }
    builder.into_inner().unwrap().into()
}
