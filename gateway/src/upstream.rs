//! Sending a request on to an instance.
//!
//! A client's HTTP/1 connection keeps its own upstream connection per
//! instance and sends its (sequential) requests over it, with no pool to
//! check out from and no hand-off to another task; HTTP/2 clients and
//! protocol upgrades use the shared pool.

use crate::{body::Reclaimable, routes::Backend};
use http::{Request, Response, Uri};
use hyper::{body::Incoming, client::conn::http1::SendRequest};
use hyper_util::{
    client::legacy::{connect::HttpConnector, Client},
    rt::{TokioExecutor, TokioIo},
};
use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

pub type UpstreamBody = Reclaimable<Incoming>;

/// Longest a connection to an instance may take to open.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a request did not get a response head from the instance.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("connecting: {0}")]
    Connect(String),
    #[error("{0}")]
    Http(#[source] hyper::Error),
    /// A kept connection turned out closed by the instance.
    #[error("a kept connection was closed: {0}")]
    Stale(#[source] hyper::Error),
    #[error("{0}")]
    Pool(#[source] hyper_util::client::legacy::Error),
    /// Over the HTTP/1 fast path: reading, writing or parsing.
    #[error("{0}")]
    Io(#[source] std::io::Error),
    /// Over the HTTP/1 fast path: a kept connection turned out closed.
    #[error("a kept connection was closed: {0}")]
    StaleIo(#[source] std::io::Error),
}

impl UpstreamError {
    /// The instance could not be reached at all: nothing was sent.
    pub fn is_connect(&self) -> bool {
        match self {
            UpstreamError::Connect(_) => true,
            UpstreamError::Pool(e) => e.is_connect(),
            UpstreamError::Http(_)
            | UpstreamError::Stale(_)
            | UpstreamError::Io(_)
            | UpstreamError::StaleIo(_) => false,
        }
    }

    /// Sending over a reused connection failed because it had been closed.
    pub fn is_stale(&self) -> bool {
        matches!(self, UpstreamError::Stale(_) | UpstreamError::StaleIo(_))
    }
}

/// Upstream connections that belong to one client connection.
#[derive(Clone, Default)]
pub struct ConnUpstreams(Arc<Mutex<HashMap<String, SendRequest<UpstreamBody>>>>);

impl ConnUpstreams {
    fn take(&self, instance: &str) -> Option<SendRequest<UpstreamBody>> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(instance)
    }

    fn put(&self, instance: &str, sender: SendRequest<UpstreamBody>) {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(instance.to_owned(), sender);
    }
}

/// The shared pool, for what a client connection cannot carry itself.
pub struct Upstreams {
    pool: Client<HttpConnector, UpstreamBody>,
}

impl Default for Upstreams {
    fn default() -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
        let pool = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(1024)
            .build(connector);
        Self { pool }
    }
}

impl Upstreams {
    /// Sends `req` (absolute URI) to `backend`, over `own` connections when given.
    pub async fn send(
        &self,
        own: Option<&ConnUpstreams>,
        backend: &Backend,
        req: Request<UpstreamBody>,
    ) -> Result<Response<Incoming>, UpstreamError> {
        match own {
            None => self.pool.request(req).await.map_err(UpstreamError::Pool),
            Some(own) => send_own(own, backend, req).await,
        }
    }
}

async fn connect(backend: &Backend) -> Result<SendRequest<UpstreamBody>, UpstreamError> {
    let tcp = tokio::time::timeout(
        CONNECT_TIMEOUT,
        tokio::net::TcpStream::connect(&backend.authority),
    )
    .await
    .map_err(|_| UpstreamError::Connect(format!("no connection within {CONNECT_TIMEOUT:?}")))?
    .map_err(|e| UpstreamError::Connect(e.to_string()))?;
    let _ = tcp.set_nodelay(true);
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .map_err(UpstreamError::Http)?;
    tokio::spawn(async move {
        if let Err(err) = conn.await {
            tracing::debug!(%err, "upstream connection ended");
        }
    });
    Ok(sender)
}

/// The peer had closed (or reset) the connection: what a kept connection
/// the instance let go of looks like.
fn closed_under_us(error: &hyper::Error) -> bool {
    if error.is_incomplete_message() || error.is_canceled() || error.is_closed() {
        return true;
    }
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            return matches!(
                io.kind(),
                std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
            );
        }
        source = cause.source();
    }
    false
}

async fn send_own(
    own: &ConnUpstreams,
    backend: &Backend,
    mut req: Request<UpstreamBody>,
) -> Result<Response<Incoming>, UpstreamError> {
    // A direct connection takes the origin form: path and query only.
    let origin: Uri = req
        .uri()
        .path_and_query()
        .map_or_else(|| Uri::from_static("/"), |pq| Uri::from(pq.clone()));
    *req.uri_mut() = origin;
    let kept = match own.take(&backend.instance_id) {
        Some(mut sender) => sender.ready().await.ok().map(|()| sender),
        None => None,
    };
    let reused = kept.is_some();
    let mut sender = match kept {
        Some(sender) => sender,
        None => connect(backend).await?,
    };
    match sender.try_send_request(req).await {
        Ok(response) => {
            own.put(&backend.instance_id, sender);
            Ok(response)
        }
        Err(mut err) => match err.take_message() {
            // A kept connection closed before the request left: once more
            // on a fresh one.
            Some(req) if reused => {
                let mut sender = connect(backend).await?;
                let response = sender
                    .send_request(req)
                    .await
                    .map_err(UpstreamError::Http)?;
                own.put(&backend.instance_id, sender);
                Ok(response)
            }
            _ => {
                let error = err.into_error();
                if reused && closed_under_us(&error) {
                    Err(UpstreamError::Stale(error))
                } else {
                    Err(UpstreamError::Http(error))
                }
            }
        },
    }
}
