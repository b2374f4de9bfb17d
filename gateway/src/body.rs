//! Bodies as they pass through: the one boxed type every response uses, a
//! request body with a size cap, and a wrapper that lets a request be sent
//! again when not a byte of its body left.

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::{combinators::UnsyncBoxBody, BodyExt, Full};
use std::{
    pin::Pin,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    task::{Context, Poll},
};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// The body type of every response the gateway sends.
pub type ProxyBody = UnsyncBoxBody<Bytes, BoxError>;

pub fn full(bytes: impl Into<Bytes>) -> ProxyBody {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

pub fn empty() -> ProxyBody {
    full(Bytes::new())
}

/// The request body was bigger than the app allows.
#[derive(Debug, thiserror::Error)]
#[error("the request body is larger than {limit} bytes")]
pub struct TooLarge {
    pub limit: u64,
}

/// A request body whose frames are pulled from a shared slot, so that the
/// slot can be taken back if the request failed before the first frame was
/// read; it also enforces the size cap and counts the bytes.
pub struct Reclaimable<B> {
    slot: Arc<Mutex<Option<B>>>,
    started: Arc<AtomicBool>,
    overflowed: Arc<AtomicBool>,
    limit: u64,
    seen: u64,
    hint: SizeHint,
}

/// The other end of a [`Reclaimable`].
pub struct Reclaim<B> {
    slot: Arc<Mutex<Option<B>>>,
    started: Arc<AtomicBool>,
    overflowed: Arc<AtomicBool>,
}

impl<B> Reclaim<B> {
    /// Whether any of the body was read (then it cannot be sent again).
    pub fn started(&self) -> bool {
        self.started.load(Ordering::Acquire)
    }

    /// Whether the body went over the size cap.
    pub fn overflowed(&self) -> bool {
        self.overflowed.load(Ordering::Acquire)
    }

    /// The untouched body, for another attempt.
    pub fn take(&self) -> Option<B> {
        if self.started() {
            return None;
        }
        self.slot.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

/// Wraps `body` with a cap of `limit` bytes.
pub fn reclaimable<B: Body>(body: B, limit: u64) -> (Reclaimable<B>, Reclaim<B>) {
    let hint = body.size_hint();
    let slot = Arc::new(Mutex::new(Some(body)));
    let started = Arc::new(AtomicBool::new(false));
    let overflowed = Arc::new(AtomicBool::new(false));
    (
        Reclaimable {
            slot: slot.clone(),
            started: started.clone(),
            overflowed: overflowed.clone(),
            limit,
            seen: 0,
            hint,
        },
        Reclaim {
            slot,
            started,
            overflowed,
        },
    )
}

impl<B> Body for Reclaimable<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let mut slot = this.slot.lock().unwrap_or_else(|p| p.into_inner());
        let Some(body) = slot.as_mut() else {
            return Poll::Ready(None);
        };
        this.started.store(true, Ordering::Release);
        match Pin::new(body).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.seen += data.len() as u64;
                    if this.seen > this.limit {
                        this.overflowed.store(true, Ordering::Release);
                        return Poll::Ready(Some(Err(TooLarge { limit: this.limit }.into())));
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(err))) => Poll::Ready(Some(Err(err.into()))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.hint.exact() == Some(0)
    }

    fn size_hint(&self) -> SizeHint {
        self.hint
    }
}
