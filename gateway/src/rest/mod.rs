//! The gateway's management HTTP API: `/v1/…` JSON endpoints and the
//! endpoints of the systems Berth replaces (seeds 000, 001 and 003), each a
//! thin translation to the control plane's gRPC. Management needs a
//! deployer or admin API key; the gateway passes the key on with every call
//! (`x-berth-key` metadata) and the control plane decides from it what the
//! caller sees — one tenant's things, or the whole cluster's.

mod executions;
mod forms;
mod seeds;
mod v1;

use crate::{
    body::{full, BoxError, ProxyBody},
    error::ApiError,
    routes::{Key, Table},
};
use berth_proto::ErrorCode;
use bytes::Bytes;
use futures::{Stream, StreamExt};
use http::{header, HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited, StreamBody};
use hyper::body::Incoming;
use serde::{de::DeserializeOwned, Serialize};
use std::sync::Arc;
use tonic::{metadata::AsciiMetadataValue, service::interceptor::InterceptedService};

/// A channel to the control plane that passes the caller's key on.
pub type Channel = InterceptedService<tonic::transport::Channel, PassKey>;

/// Puts the caller's API key on every control-plane call, for the control
/// plane to check and scope the call itself.
#[derive(Clone)]
pub struct PassKey(Option<AsciiMetadataValue>);

impl tonic::service::Interceptor for PassKey {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(key) = &self.0 {
            request.metadata_mut().insert(KEY_METADATA, key.clone());
        }
        Ok(request)
    }
}

/// Largest JSON request body read into memory.
const MAX_JSON_BYTES: usize = 16 << 20;
/// Longest any single management call to the control plane may take.
const RPC_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// Whether `path` belongs to the management API rather than to an app.
pub fn is_management(path: &str) -> bool {
    path == "/v1"
        || path.starts_with("/v1/")
        || seeds::is_seed_path(path)
        || executions::is_execution_path(path)
}

/// What a handler gets: the request's parts and body, and a channel.
pub struct Call {
    pub method: Method,
    pub segments: Vec<String>,
    pub query: Vec<(String, String)>,
    pub headers: HeaderMap,
    /// Taken by the handler that reads it.
    pub body: Option<Incoming>,
    pub channel: Channel,
}

/// The gRPC metadata a management call carries the caller's API key in.
pub const KEY_METADATA: &str = "x-berth-key";

impl Call {
    pub fn query(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn query_flag(&self, name: &str) -> bool {
        matches!(self.query(name), Some("1" | "true" | "yes" | ""))
    }

    pub fn content_type(&self) -> &str {
        self.headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    /// The body as JSON of type `T` (an empty body reads as `{}`).
    pub fn take_body(&mut self) -> Result<Incoming, ApiError> {
        self.body
            .take()
            .ok_or_else(|| ApiError::bad_request("the request body was already read"))
    }

    pub async fn json<T: DeserializeOwned>(&mut self) -> Result<T, ApiError> {
        let bytes = Limited::new(self.take_body()?, MAX_JSON_BYTES)
            .collect()
            .await
            .map_err(|e| {
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "body_too_large",
                    format!("request body: {e} (limit {MAX_JSON_BYTES} bytes)"),
                )
            })?
            .to_bytes();
        let bytes = if bytes.iter().all(u8::is_ascii_whitespace) {
            Bytes::from_static(b"{}")
        } else {
            bytes
        };
        serde_json::from_slice(&bytes).map_err(|e| {
            ApiError::bad_request(format!("request body is not the JSON expected: {e}"))
        })
    }
}

/// Answers a management request.
pub async fn handle(
    req: Request<Incoming>,
    table: &Table,
    channel: Option<tonic::transport::Channel>,
    metrics: &crate::metrics::Metrics,
    anonymous: Option<&crate::routes::Key>,
) -> Result<Response<ProxyBody>, ApiError> {
    let path = req.uri().path().to_owned();
    if path == "/v1/openapi.json" {
        return Ok(raw_json(StatusCode::OK, OPENAPI));
    }
    if path == "/health" {
        return Ok(json(
            StatusCode::OK,
            &serde_json::json!({ "status": "healthy", "service": "executor" }),
        ));
    }
    let execution = executions::is_execution_path(&path);
    // Running code needs any valid key (or none, when opened up: but a key
    // that is presented must be valid); the rest of the management API a
    // deployer or admin key.
    let presented = req.headers().contains_key("x-berth-key")
        || req.headers().contains_key(http::header::AUTHORIZATION);
    let key = match (execution, anonymous) {
        (true, Some(anonymous)) if !presented => {
            crate::proxy::admit(anonymous, metrics)?;
            caller_of(anonymous)
        }
        (true, _) => {
            let key = crate::proxy::authenticate(table, req.headers())?;
            crate::proxy::admit(&key, metrics)?;
            caller_of(&key)
        }
        (false, _) => {
            let key = manager_key(table, req.headers())?;
            crate::proxy::admit(&key, metrics)?;
            caller_of(&key)
        }
    };
    let channel = channel.ok_or_else(|| {
        ApiError::unavailable(
            "control_plane_unreachable",
            "the gateway is not connected to the control plane",
        )
    })?;
    let passed = crate::proxy::presented_key(req.headers())
        .ok()
        .and_then(|key| AsciiMetadataValue::try_from(key).ok());
    let channel = InterceptedService::new(channel, PassKey(passed));
    let query = req
        .uri()
        .query()
        .map(|q| {
            q.split('&')
                .filter(|p| !p.is_empty())
                .map(|pair| {
                    let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                    (percent_decode(k), percent_decode(v))
                })
                .collect()
        })
        .unwrap_or_default();
    let (parts, body) = req.into_parts();
    let segments = path
        .split('/')
        .filter(|s| !s.is_empty())
        .map(percent_decode)
        .collect();
    let call = Call {
        method: parts.method,
        segments,
        query,
        headers: parts.headers,
        body: Some(body),
        channel,
    };
    if execution {
        executions::route(call, key).await
    } else if path == "/v1" || path.starts_with("/v1/") {
        v1::route(call).await
    } else {
        seeds::route(call).await
    }
}

/// Who a request comes from, as the routes below need it.
#[derive(Debug, Clone)]
pub struct Caller {
    pub tenant: String,
    /// Sees every tenant's executions.
    pub admin: bool,
}

fn caller_of(key: &crate::routes::Key) -> Caller {
    Caller {
        tenant: key.tenant.clone(),
        admin: key.admin(),
    }
}

/// The deployer or admin key a management request carries. What it may
/// see (its tenant, or every one) the control plane decides.
fn manager_key(table: &Table, headers: &HeaderMap) -> Result<Arc<Key>, ApiError> {
    let key = crate::proxy::authenticate(table, headers)?;
    if !key.role.manages() {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "deployer_required",
            "management endpoints need a deployer or admin key; this key may call apps and run code only",
        ));
    }
    Ok(key)
}

/// A gRPC status as an HTTP error, code and message kept.
pub fn grpc_error(status: tonic::Status) -> ApiError {
    let code = ErrorCode::from_grpc(status.code());
    ApiError::new(code.http(), code.as_str(), status.message().to_owned())
}

/// Awaits a control-plane call with the management timeout.
pub async fn rpc<T>(
    call: impl std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> Result<T, ApiError> {
    match tokio::time::timeout(RPC_TIMEOUT, call).await {
        Ok(Ok(response)) => Ok(response.into_inner()),
        Ok(Err(status)) => Err(grpc_error(status)),
        Err(_) => Err(ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            "deadline_exceeded",
            "the control plane did not answer in time",
        )),
    }
}

pub fn json<T: Serialize>(status: StatusCode, value: &T) -> Response<ProxyBody> {
    raw_json(
        status,
        serde_json::to_string(value).expect("API views serialize"),
    )
}

fn raw_json(status: StatusCode, text: impl Into<Bytes>) -> Response<ProxyBody> {
    let mut response = Response::new(full(text.into()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// A streamed response: one line per item, flushed as it comes.
pub fn lines<S>(content_type: &'static str, stream: S) -> Response<ProxyBody>
where
    S: Stream<Item = Result<Bytes, BoxError>> + Send + 'static,
{
    let body = StreamBody::new(stream.map(|r| r.map(http_body::Frame::data)));
    let mut response = Response::new(BodyExt::boxed_unsync(body));
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

pub fn not_found(call: &Call) -> ApiError {
    ApiError::not_found(format!(
        "no endpoint {} /{}",
        call.method,
        call.segments.join("/")
    ))
}

/// `%XX` and `+` decoded; bytes that do not make UTF-8 are replaced.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = |b: u8| (b as char).to_digit(16);
                match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                    (Some(hi), Some(lo)) => {
                        out.push((hi * 16 + lo) as u8);
                        i += 3;
                        continue;
                    }
                    _ => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The OpenAPI 3 document of the `/v1` API.
pub const OPENAPI: &str = include_str!("openapi.json");

#[cfg(test)]
mod tests {
    #[test]
    fn percent_decoding() {
        assert_eq!(super::percent_decode("a%20b+c"), "a b c");
        assert_eq!(super::percent_decode("100%"), "100%");
        assert_eq!(super::percent_decode("%zz"), "%zz");
        assert_eq!(super::percent_decode("é%C3%A9"), "éé");
    }

    #[test]
    fn the_openapi_document_is_json() {
        let doc: serde_json::Value = serde_json::from_str(super::OPENAPI).unwrap();
        assert_eq!(doc["openapi"], "3.0.3");
        assert!(doc["paths"]["/v1/apps"]["post"].is_object());
    }
}
