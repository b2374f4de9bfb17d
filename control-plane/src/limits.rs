//! Oversized requests are bad input like any other: this layer turns the
//! transport's decode-limit refusal (`OutOfRange`) into `InvalidArgument`
//! with the size and the limit, so every client error looks the same.

use std::task::{Context, Poll};
use tower_layer::Layer;
use tower_service::Service;

/// What the gRPC codec says when a request exceeds the decode limit.
const DECODE_LIMIT_PREFIX: &str = "Error, decoded message length too large: found ";

#[derive(Debug, Clone, Default)]
pub struct MessageLimitLayer;

impl<S> Layer<S> for MessageLimitLayer {
    type Service = MessageLimit<S>;
    fn layer(&self, inner: S) -> Self::Service {
        MessageLimit { inner }
    }
}

#[derive(Debug, Clone)]
pub struct MessageLimit<S> {
    inner: S,
}

/// "found 102411 bytes, the limit is: 65536 bytes" → (102411, 65536).
fn sizes(message: &str) -> Option<(u64, u64)> {
    let rest = message.strip_prefix(DECODE_LIMIT_PREFIX)?;
    let (found, rest) = rest.split_once(" bytes, the limit is: ")?;
    let limit = rest.strip_suffix(" bytes")?;
    Some((found.parse().ok()?, limit.parse().ok()?))
}

impl<S, B, R> Service<http::Request<B>> for MessageLimit<S>
where
    S: Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = futures::future::BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let future = self.inner.call(req);
        Box::pin(async move {
            let mut response = future.await?;
            let Some(status) = tonic::Status::from_header_map(response.headers()) else {
                return Ok(response);
            };
            if status.code() == tonic::Code::OutOfRange {
                if let Some((found, limit)) = sizes(status.message()) {
                    let status = tonic::Status::invalid_argument(format!(
                        "request: message is {found} bytes; the limit is {limit}"
                    ));
                    if status.add_header(response.headers_mut()).is_err() {
                        tracing::warn!("could not rewrite an oversized-request status");
                    }
                }
            }
            Ok(response)
        })
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_the_sizes_from_the_codec_message() {
        let message = "Error, decoded message length too large: found 102411 bytes, the limit is: 65536 bytes";
        assert_eq!(super::sizes(message), Some((102411, 65536)));
        assert_eq!(super::sizes("something else"), None);
    }
}
