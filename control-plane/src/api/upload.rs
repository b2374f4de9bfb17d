//! Reading an app upload: a header message, then (Dockerfile apps) the
//! archive in chunks, written to a staging file with a size limit and a
//! time limit per chunk. The archive is checked and unpacked only inside
//! the staging dir.

use crate::builds::{context, BuildContext};
use berth_proto::pb;
use std::{path::Path, time::Duration};
use tokio::io::AsyncWriteExt;
use tonic::{Status, Streaming};

/// Longest wait for the next message of an upload.
const MESSAGE_TIMEOUT: Duration = Duration::from_secs(60);

pub enum Part<H> {
    Header(H),
    Chunk(Vec<u8>),
}

/// The two upload messages (`CreateAppRequest`, `UpdateAppRequest`) alike.
pub trait UploadMessage {
    type Header;
    fn into_part(self) -> Option<Part<Self::Header>>;
}

impl UploadMessage for pb::CreateAppRequest {
    type Header = pb::CreateAppHeader;
    fn into_part(self) -> Option<Part<Self::Header>> {
        Some(match self.part? {
            pb::create_app_request::Part::Header(h) => Part::Header(h),
            pb::create_app_request::Part::ArchiveChunk(c) => Part::Chunk(c),
        })
    }
}

impl UploadMessage for pb::UpdateAppRequest {
    type Header = pb::UpdateAppHeader;
    fn into_part(self) -> Option<Part<Self::Header>> {
        Some(match self.part? {
            pb::update_app_request::Part::Header(h) => Part::Header(h),
            pb::update_app_request::Part::ArchiveChunk(c) => Part::Chunk(c),
        })
    }
}

async fn next<T>(stream: &mut Streaming<T>) -> Result<Option<T>, Status> {
    tokio::time::timeout(MESSAGE_TIMEOUT, stream.message())
        .await
        .map_err(|_| Status::deadline_exceeded("upload stalled: no message for 60 s"))?
}

/// An upload read off the wire.
pub struct Upload<H> {
    pub header: H,
    /// Bytes of the archive written to `archive`, 0 when none came.
    pub archive_bytes: u64,
}

/// Reads the header, and any archive chunks into `archive` (at most `limit` bytes).
pub async fn read<T: UploadMessage>(
    stream: &mut Streaming<T>,
    archive: &Path,
    limit: u64,
) -> Result<Upload<T::Header>, Status> {
    let header = match next(stream).await?.and_then(UploadMessage::into_part) {
        Some(Part::Header(header)) => header,
        Some(Part::Chunk(_)) => {
            return Err(Status::invalid_argument(
                "header: the first message must be the header",
            ))
        }
        None => {
            return Err(Status::invalid_argument(
                "header: the upload ended before its header",
            ))
        }
    };
    let mut written = 0u64;
    let mut file: Option<tokio::fs::File> = None;
    while let Some(message) = next(stream).await? {
        match message.into_part() {
            Some(Part::Chunk(chunk)) => {
                written += chunk.len() as u64;
                if written > limit {
                    return Err(Status::invalid_argument(format!(
                        "archive_chunk: the archive is more than {limit} bytes; the limit is {limit}"
                    )));
                }
                let out = match &mut file {
                    Some(file) => file,
                    None => file.insert(tokio::fs::File::create(archive).await.map_err(internal)?),
                };
                out.write_all(&chunk).await.map_err(internal)?;
            }
            Some(Part::Header(_)) => return Err(Status::invalid_argument("header: sent twice")),
            None => return Err(Status::invalid_argument("part: empty message")),
        }
    }
    if let Some(mut file) = file {
        file.flush().await.map_err(internal)?;
    }
    Ok(Upload {
        header,
        archive_bytes: written,
    })
}

fn internal(err: std::io::Error) -> Status {
    tracing::error!(error = %err, "staging an upload");
    Status::internal("could not stage the upload; see the control plane's log")
}

/// Checks and unpacks `archive` in `staging`, and makes the build context of it.
pub async fn dockerfile_context(
    archive: std::path::PathBuf,
    staging: std::path::PathBuf,
    limits: berth_archive::Limits,
    tenant: String,
) -> Result<BuildContext, Status> {
    tokio::task::spawn_blocking(move || {
        let unpacked = staging.join("unpacked");
        std::fs::create_dir_all(&unpacked).map_err(internal)?;
        berth_archive::extract_checked(&archive, &unpacked, &limits).map_err(|e| {
            if e.is_user_error() {
                Status::invalid_argument(format!("archive: {e}"))
            } else {
                tracing::error!(error = %e, "unpacking an upload");
                Status::internal("could not unpack the upload; see the control plane's log")
            }
        })?;
        context::for_dockerfile(&unpacked, &tenant).map_err(|e| match e {
            context::ContextError::Io(io) => internal(io),
            other => Status::invalid_argument(format!("archive: {other}")),
        })
    })
    .await
    .map_err(|e| Status::internal(format!("unpacking task: {e}")))?
}
