//! Build contexts on the control plane's disk, one file per build, written
//! atomically, read back in chunks for the agents.

use std::path::{Path, PathBuf};
use tokio::io::AsyncReadExt;

/// Chunk size of contexts streamed to agents.
pub const CHUNK: usize = 1 << 20;

#[derive(Debug, Clone)]
pub struct ContextStore {
    dir: PathBuf,
}

impl ContextStore {
    pub fn new(data_dir: &Path) -> std::io::Result<Self> {
        let dir = data_dir.join("contexts");
        std::fs::create_dir_all(&dir)?;
        Ok(Self { dir })
    }

    fn path(&self, build_id: &str) -> Option<PathBuf> {
        // Build ids are UUIDs; anything else never names a file.
        uuid::Uuid::parse_str(build_id)
            .ok()
            .map(|id| self.dir.join(format!("{id}.tar")))
    }

    /// Stores `tar` as the context of `build_id`.
    pub async fn write(&self, build_id: &str, tar: &[u8]) -> std::io::Result<()> {
        let path = self
            .path(build_id)
            .ok_or_else(|| std::io::Error::other("build id is not a UUID"))?;
        let partial = path.with_extension("partial");
        tokio::fs::write(&partial, tar).await?;
        tokio::fs::rename(&partial, &path).await
    }

    /// Copies the context of `from` as the context of `to` (a rebuild).
    pub async fn copy(&self, from: &str, to: &str) -> std::io::Result<u64> {
        let (Some(from), Some(to)) = (self.path(from), self.path(to)) else {
            return Err(std::io::Error::other("build id is not a UUID"));
        };
        tokio::fs::copy(from, to).await
    }

    /// The context of `build_id` in chunks; `None` when there is none.
    pub async fn read_chunks(
        &self,
        build_id: &str,
    ) -> std::io::Result<Option<tokio::sync::mpsc::Receiver<std::io::Result<Vec<u8>>>>> {
        let Some(path) = self.path(build_id) else {
            return Ok(None);
        };
        let mut file = match tokio::fs::File::open(&path).await {
            Ok(file) => file,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(err) => return Err(err),
        };
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tokio::spawn(async move {
            loop {
                let mut chunk = vec![0u8; CHUNK];
                match file.read(&mut chunk).await {
                    Ok(0) => return,
                    Ok(n) => {
                        chunk.truncate(n);
                        if tx.send(Ok(chunk)).await.is_err() {
                            return;
                        }
                    }
                    Err(err) => {
                        let _ = tx.send(Err(err)).await;
                        return;
                    }
                }
            }
        });
        Ok(Some(rx))
    }

    pub async fn remove(&self, build_id: &str) {
        if let Some(path) = self.path(build_id) {
            let _ = tokio::fs::remove_file(path).await;
        }
    }
}
