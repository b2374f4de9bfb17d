//! The request path: route, authenticate, rate-limit, pick an instance,
//! forward with the body streaming both ways, retry where that is safe.

use crate::{
    body::{full, reclaimable, BoxError, ProxyBody, Reclaim, Reclaimable},
    error::ApiError,
    headers::{self, Fields, X_BERTH_KEY, X_REQUEST_ID},
    link::{Link, WakeError},
    metrics::{Metrics, TenantLabel},
    routes::{Admission, App, Backend, BreakerPolicy, Key, KeyMemo, Routes, Table},
};
use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Uri, Version};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use std::{
    net::SocketAddr,
    pin::Pin,
    sync::{atomic::Ordering, Arc},
    task::{Context, Poll},
    time::{Duration, Instant},
};

/// Attempts per request, each on a different instance.
pub(crate) const MAX_ATTEMPTS: usize = 3;

/// The instances one request was sent to, in order: at most
/// [`MAX_ATTEMPTS`], kept on the stack.
#[derive(Default)]
pub(crate) struct Tried {
    indexes: [usize; MAX_ATTEMPTS],
    len: usize,
}

impl Tried {
    pub(crate) fn as_slice(&self) -> &[usize] {
        &self.indexes[..self.len]
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn push(&mut self, index: usize) {
        self.indexes[self.len] = index;
        self.len += 1;
    }

    pub(crate) fn pop(&mut self) {
        self.len = self.len.saturating_sub(1);
    }
}

/// Everything the request path needs, shared by all connections.
pub struct Gateway {
    pub routes: Routes,
    pub link: Option<Link>,
    pub metrics: Metrics,
    pub policy: BreakerPolicy,
    pub eject_for: Duration,
    pub wake_timeout: Duration,
    pub max_header_bytes: usize,
    pub https: bool,
    /// `/execute` and friends need no API key.
    /// Who runs code without an API key, when `/execute` and friends need none.
    pub open_executions: Option<Arc<Key>>,
    upstreams: crate::upstream::Upstreams,
    /// The fast path's idle connections to instances.
    pub(crate) idle: crate::fast::IdleUpstreams,
}

impl Gateway {
    pub fn new(
        routes: Routes,
        link: Option<Link>,
        metrics: Metrics,
        anonymous: Option<Arc<Key>>,
        config: &crate::Config,
    ) -> Self {
        Self {
            routes,
            link,
            metrics,
            policy: BreakerPolicy {
                failures: config.breaker_failures,
                cooldown: Duration::from_secs(1),
                max_cooldown: Duration::from_secs(30),
            },
            eject_for: config.eject_for,
            wake_timeout: config.wake_timeout,
            max_header_bytes: config.max_header_bytes,
            https: config.https.is_some(),
            open_executions: anonymous,
            upstreams: crate::upstream::Upstreams::default(),
            idle: crate::fast::IdleUpstreams::default(),
        }
    }

    /// Answers one request; never fails (errors are JSON responses).
    /// `own`: the upstream connections of the client's connection, for an
    /// HTTP/1 client.
    pub async fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
        peer: SocketAddr,
        own: Option<crate::upstream::ConnUpstreams>,
    ) -> Response<ProxyBody> {
        let started = Instant::now();
        let request_id = headers::request_id(req.headers());
        let method = req.method().clone();
        let path = req.uri().path().to_owned();
        let mut log = AccessLog {
            request_id: request_id.clone(),
            method,
            path,
            app: None,
            app_metrics: None,
            status: 0,
            started,
            bytes: 0,
            peer,
        };
        let result = self
            .route_and_forward(req, peer, own, &request_id, &mut log)
            .await;
        let mut response = result.unwrap_or_else(ApiError::into_response);
        response
            .headers_mut()
            .insert(X_REQUEST_ID.clone(), request_id);
        log.status = response.status().as_u16();
        match log.app_metrics.take() {
            Some(app) => {
                app.count(log.status);
                app.latency.observe(started.elapsed().as_secs_f64());
            }
            None => self.metrics.count_unrouted(log.status),
        }
        let (parts, body) = response.into_parts();
        Response::from_parts(
            parts,
            Logged {
                inner: body,
                log: Some(log),
            }
            .boxed_unsync(),
        )
    }

    async fn route_and_forward(
        &self,
        mut req: Request<Incoming>,
        peer: SocketAddr,
        own: Option<crate::upstream::ConnUpstreams>,
        request_id: &HeaderValue,
        log: &mut AccessLog,
    ) -> Result<Response<ProxyBody>, ApiError> {
        let head_bytes: usize = req
            .headers()
            .iter()
            .map(|(n, v)| n.as_str().len() + v.len() + 4)
            .sum::<usize>()
            + req.uri().path_and_query().map_or(0, |pq| pq.as_str().len());
        if head_bytes > self.max_header_bytes {
            return Err(ApiError::new(
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "headers_too_large",
                format!(
                    "the request head is larger than {} bytes",
                    self.max_header_bytes
                ),
            ));
        }
        let host = request_host(&req);
        let forwarded_host = req
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .map(str::to_owned)
            .or_else(|| req.uri().authority().map(|a| a.to_string()));
        let table = self.routes.current();
        let target = proxied_target(&table, host.as_deref(), req.uri().path(), req.uri().query());
        let (app, upstream_path) = match target {
            Some(target) => target?,
            None => match req.uri().path() {
                "/healthz" => return Ok(self.health()),
                path if crate::rest::is_management(path) => {
                    let channel = self.link.as_ref().and_then(Link::channel);
                    return crate::rest::handle(
                        req,
                        &table,
                        channel,
                        &self.metrics,
                        self.open_executions.as_deref(),
                    )
                    .await;
                }
                path => {
                    return Err(ApiError::not_found(format!(
                        "no route for {path}: use /run/{{app_id}}/… or an app's hostname"
                    )))
                }
            },
        };
        log.app = Some(app.route.app_id.clone());
        log.app_metrics = Some(app.metrics(&self.metrics).clone());
        let key_from_header = self.admit_call(&table, &app, req.headers(), None)?;
        let limit = app.route.max_body_bytes;
        let app = self.ready_app(app).await?;

        // The request as the instance gets it.
        let upgrade = headers::wants_upgrade(req.headers());
        let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
        // Upgrades and HTTP/2 clients go through the shared pool.
        let own = own.filter(|_| !upgrade && req.version() <= Version::HTTP_11);
        let (parts, body) = req.into_parts();
        let mut headers = parts.headers;
        if key_from_header {
            headers.remove(&X_BERTH_KEY);
        } else {
            headers.remove(header::AUTHORIZATION);
        }
        headers::strip_hop_by_hop(&mut headers, upgrade);
        headers::set_forwarded(
            &mut headers,
            peer.ip(),
            self.https,
            forwarded_host.as_deref(),
        );
        headers.insert(X_REQUEST_ID.clone(), request_id.clone());
        if !headers.contains_key(header::HOST) {
            if let Some(authority) = parts.uri.authority() {
                if let Ok(value) = HeaderValue::from_str(authority.as_str()) {
                    headers.insert(header::HOST, value);
                }
            }
        }
        let (body, reclaim) = reclaimable(body, limit);
        let unsent = Unsent { body, reclaim };
        let first = self
            .forward(
                &app,
                &parts.method,
                &upstream_path,
                &headers,
                own.as_ref(),
                unsent,
            )
            .await;
        let mut response = match first {
            Ok(response) => response,
            Err(Failure::Unreached(error, unsent)) if self.link.is_some() => {
                // Its instances went away (scaled down, moved): wait for a
                // route with a live one, as for a cold start, and send once more.
                tracing::info!(app = %app.route.app_id, error = %error.message, "every instance refused; waiting for fresh routes");
                let app = self.ready_app(app).await?;
                self.forward(
                    &app,
                    &parts.method,
                    &upstream_path,
                    &headers,
                    own.as_ref(),
                    unsent,
                )
                .await
                .map_err(Failure::into_error)?
            }
            Err(failure) => return Err(failure.into_error()),
        };

        if response.status() == StatusCode::SWITCHING_PROTOCOLS {
            if let Some(client_upgrade) = client_upgrade {
                let upstream_upgrade = hyper::upgrade::on(&mut response);
                tokio::spawn(async move {
                    match tokio::try_join!(client_upgrade, upstream_upgrade) {
                        Ok((client, upstream)) => {
                            let _ = tokio::io::copy_bidirectional(
                                &mut TokioIo::new(client),
                                &mut TokioIo::new(upstream),
                            )
                            .await;
                        }
                        Err(err) => tracing::debug!(%err, "upgrade failed"),
                    }
                });
            }
        }
        let keep_upgrade = response.status() == StatusCode::SWITCHING_PROTOCOLS;
        headers::strip_hop_by_hop(response.headers_mut(), keep_upgrade);
        let (parts, body) = response.into_parts();
        Ok(Response::from_parts(
            parts,
            body.map_err(|e| Box::new(e) as BoxError).boxed_unsync(),
        ))
    }

    /// Whether the caller may reach `app` now: its key (401), the app's
    /// tenant (403), the key's rate (429), the declared body size (413).
    /// Returns whether the key came in `X-Berth-Key` (else `Authorization`).
    pub(crate) fn admit_call(
        &self,
        table: &Table,
        app: &App,
        headers: &(impl Fields + ?Sized),
        memo: Option<(u64, &mut KeyMemo)>,
    ) -> Result<bool, ApiError> {
        let key_from_header = headers.field("x-berth-key").is_some();
        let key = match memo {
            Some((version, memo)) => {
                authenticate_with(headers, |key| table.key_memo(version, key, memo))
            }
            None => authenticate(table, headers),
        }?;
        if !key.admin() && key.tenant != app.route.tenant {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!("this key may not reach app {}", app.route.app_id),
            ));
        }
        admit(&key, &self.metrics)?;
        let limit = app.route.max_body_bytes;
        if let Some(length) = content_length(headers) {
            if length > limit {
                return Err(too_large(limit));
            }
        }
        if let Some(link) = &self.link {
            link.record_traffic(&app.route.app_id);
        }
        Ok(key_from_header)
    }

    /// The app, once it has an instance to take traffic: a scale-to-zero
    /// app is woken and the request held until an instance is ready.
    pub(crate) async fn ready_app(&self, app: Arc<App>) -> Result<Arc<App>, ApiError> {
        if !app.unreachable(Instant::now()) {
            return Ok(app);
        }
        let id = app.route.app_id.clone();
        if app.route.stopped {
            return Err(ApiError::unavailable(
                "app_stopped",
                format!("app {} is stopped", app.route.name),
            ));
        }
        let Some(link) = &self.link else {
            return Err(no_instance(&app));
        };
        let mut changes = self.routes.subscribe();
        link.wake(&id).await.map_err(|err| match err {
            WakeError::Refused(message) => ApiError::unavailable("app_unavailable", message),
            WakeError::Unreachable(message) => ApiError::unavailable(
                "control_plane_unreachable",
                format!("app {} has no running instance and the control plane cannot start one: {message}", app.route.name),
            ),
        })?;
        let deadline = tokio::time::Instant::now() + self.wake_timeout;
        loop {
            let current = self.routes.current().apps.get(&id).cloned();
            match current {
                None => return Err(ApiError::not_found(format!("app {id} was deleted"))),
                Some(app) if !app.unreachable(Instant::now()) => return Ok(app),
                Some(_) => {}
            }
            match tokio::time::timeout_at(deadline, changes.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) | Err(_) => {
                    return Err(ApiError::unavailable(
                        "no_instance",
                        format!(
                            "app {} did not get a running instance within {:?}",
                            app.route.name, self.wake_timeout
                        ),
                    ))
                }
            }
        }
    }

    /// Sends the request to one instance after another until one answers
    /// or retrying is no longer safe.
    async fn forward(
        &self,
        app: &App,
        method: &Method,
        path_and_query: &str,
        headers: &HeaderMap,
        own: Option<&crate::upstream::ConnUpstreams>,
        unsent: Unsent,
    ) -> Result<Response<Incoming>, Failure> {
        let Unsent { body, mut reclaim } = unsent;
        let app_id = app.route.app_id.as_str();
        let idempotent = matches!(
            *method,
            Method::GET
                | Method::HEAD
                | Method::OPTIONS
                | Method::PUT
                | Method::DELETE
                | Method::TRACE
        );
        let mut tried = Tried::default();
        let mut body = Some(body);
        let mut last_error: Option<ApiError> = None;
        let mut all_refused = true;
        let mut stale_retried = false;
        while tried.len() < MAX_ATTEMPTS {
            let now = Instant::now();
            let Some((index, admission)) = app.pick(tried.as_slice(), now) else {
                break;
            };
            tried.push(index);
            let backend = &app.backends[index];
            let Some(this_body) = body.take() else {
                break;
            };
            let uri = Uri::builder()
                .scheme(http::uri::Scheme::HTTP)
                .authority(backend.uri_authority.clone())
                .path_and_query(path_and_query)
                .build()
                .map_err(|_| {
                    Failure::Final(ApiError::bad_request(
                        "the request path cannot be forwarded",
                    ))
                })?;
            let mut request = Request::new(this_body);
            *request.method_mut() = method.clone();
            *request.uri_mut() = uri;
            *request.version_mut() = Version::HTTP_11;
            *request.headers_mut() = headers.clone();

            backend.in_flight.fetch_add(1, Ordering::Relaxed);
            self.metrics.in_flight.inc();
            let outcome =
                tokio::time::timeout(app.timeout(), self.upstreams.send(own, backend, request))
                    .await;
            backend.in_flight.fetch_sub(1, Ordering::Relaxed);
            self.metrics.in_flight.dec();

            let error = match outcome {
                Ok(Ok(response)) => {
                    backend.succeeded();
                    return Ok(response);
                }
                Err(_) => {
                    backend.failed(&self.policy, Instant::now());
                    self.metrics.upstream_error(app_id, "timeout");
                    return Err(Failure::Final(ApiError::new(
                        StatusCode::GATEWAY_TIMEOUT,
                        "upstream_timeout",
                        format!(
                            "app {} did not answer within {:?}",
                            app.route.name,
                            app.timeout()
                        ),
                    )));
                }
                Ok(Err(error)) => error,
            };
            if reclaim.overflowed() {
                return Err(Failure::Final(too_large(app.route.max_body_bytes)));
            }
            // A kept connection the instance had closed: not the instance's
            // fault; once per request, a fresh connection to the same one.
            if error.is_stale() && !stale_retried {
                if let Some(again) = reclaim.take() {
                    stale_retried = true;
                    tried.pop();
                    let (fresh, fresh_reclaim) = reclaimable(again, app.route.max_body_bytes);
                    body = Some(fresh);
                    reclaim = fresh_reclaim;
                    continue;
                }
            }
            let connect = error.is_connect();
            all_refused &= connect;
            self.note_failure(app_id, backend, admission, connect, &error);
            last_error = Some(ApiError::new(
                StatusCode::BAD_GATEWAY,
                "upstream_failed",
                format!(
                    "instance {} of app {} failed: {}",
                    backend.instance_id,
                    app.route.name,
                    error_chain(&error)
                ),
            ));
            // Safe to send again only if the body never left, and the
            // request either never reached the app or may be repeated.
            if connect || idempotent {
                if let Some(again) = reclaim.take() {
                    let (fresh, fresh_reclaim) = reclaimable(again, app.route.max_body_bytes);
                    body = Some(fresh);
                    reclaim = fresh_reclaim;
                    continue;
                }
            }
            break;
        }
        // Nothing reached the app and every instance is gone: the caller
        // may wait for fresh routes and send the untouched body then.
        if let Some(body) = body {
            if all_refused && app.unreachable(Instant::now()) {
                let error = last_error.unwrap_or_else(|| no_instance(app));
                return Err(Failure::Unreached(error, Unsent { body, reclaim }));
            }
        }
        Err(Failure::Final(last_error.unwrap_or_else(|| {
            ApiError::unavailable(
                "no_healthy_instance",
                format!(
                    "every instance of app {} is failing; retry in a moment",
                    app.route.name
                ),
            )
        })))
    }

    pub(crate) fn note_failure(
        &self,
        app_id: &str,
        backend: &Backend,
        admission: Admission,
        connect: bool,
        error: &crate::upstream::UpstreamError,
    ) {
        let now = Instant::now();
        if connect {
            backend.eject(self.eject_for, now);
            self.metrics.upstream_error(app_id, "connect");
            tracing::warn!(instance = %backend.instance_id, app = app_id, error = %error_chain(error), "instance refused a connection: ejected");
        } else {
            let opened = backend.failed(&self.policy, now);
            self.metrics.upstream_error(app_id, "reset");
            if opened || admission == Admission::Probe {
                tracing::warn!(instance = %backend.instance_id, app = app_id, "circuit breaker open");
            }
        }
    }

    fn health(&self) -> Response<ProxyBody> {
        let synced = self.routes.is_synced();
        let body = serde_json::json!({
            "status": if synced { "ok" } else { "starting" },
            "routes_synced": synced,
            "apps": self.routes.current().apps.len(),
        });
        let mut response = Response::new(full(body.to_string()));
        if !synced {
            *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
        }
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        response
    }
}

/// A request body not yet sent, with the means to take it back.
struct Unsent {
    body: Reclaimable<Incoming>,
    reclaim: Reclaim<Incoming>,
}

/// Why forwarding stopped.
enum Failure {
    Final(ApiError),
    /// Every instance refused the connection; the body is still here.
    Unreached(ApiError, Unsent),
}

impl Failure {
    fn into_error(self) -> ApiError {
        match self {
            Failure::Final(error) | Failure::Unreached(error, _) => error,
        }
    }
}

pub(crate) fn no_instance(app: &App) -> ApiError {
    ApiError::unavailable(
        "no_instance",
        format!("app {} has no running instance", app.route.name),
    )
}

fn too_large(limit: u64) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "body_too_large",
        format!("the request body is larger than this app's limit of {limit} bytes"),
    )
}

/// `error: cause: cause` of a client error.
pub(crate) fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// The host the client asked for, lowercase and without port: the URI's
/// authority (absolute form) or else the `Host` field.
fn request_host<B>(req: &Request<B>) -> Option<String> {
    if let Some(authority) = req.uri().authority() {
        return Some(authority.host().to_ascii_lowercase());
    }
    let value = req.headers().get(header::HOST)?.to_str().ok()?;
    let authority: http::uri::Authority = value.parse().ok()?;
    Some(authority.host().to_ascii_lowercase())
}

/// The app a request is for and the path and query it gets: by `host`
/// (an app's hostname: the path as it is), else by a `/run/{app_id}/{rest}`
/// path (the app gets `/{rest}`). `None`: the request is for the gateway
/// itself or for nothing.
pub(crate) fn proxied_target(
    table: &Table,
    host: Option<&str>,
    path: &str,
    query: Option<&str>,
) -> Option<Result<(Arc<App>, String), ApiError>> {
    // `prefix` + `path` + `?query`, in one allocation.
    let with_query = |prefix: &str, path: &str| {
        let mut out =
            String::with_capacity(prefix.len() + path.len() + query.map_or(0, |q| q.len() + 1));
        out.push_str(prefix);
        out.push_str(path);
        if let Some(q) = query {
            out.push('?');
            out.push_str(q);
        }
        out
    };
    if let Some(app) = host.and_then(|h| table.app_by_host(h)) {
        return Some(check_path(path).map(|()| (app, with_query("", path))));
    }
    let rest = path.strip_prefix("/run/")?;
    let (id, rest) = rest.split_once('/').unwrap_or((rest, ""));
    Some(check_path(rest).and_then(|()| {
        let app = table
            .apps
            .get(id)
            .cloned()
            .ok_or_else(|| ApiError::not_found(format!("no app {id:?}")))?;
        Ok((app, with_query("/", rest)))
    }))
}

/// Refuses dot segments, plain or percent-encoded (`..`, `%2e%2e`, `.%2E`).
fn check_path(path: &str) -> Result<(), ApiError> {
    if path.split('/').any(is_dot_segment) {
        return Err(ApiError::bad_request(
            "paths with . or .. segments are refused",
        ));
    }
    Ok(())
}

/// `.` or `..`, each dot plain or as `%2e`/`%2E`.
fn is_dot_segment(segment: &str) -> bool {
    let mut rest = segment.as_bytes();
    let mut dots = 0;
    while !rest.is_empty() {
        rest = match rest {
            [b'.', after @ ..] => after,
            [b'%', b'2', b'e' | b'E', after @ ..] => after,
            _ => return false,
        };
        dots += 1;
    }
    dots == 1 || dots == 2
}

/// The known key a request carries: `401` when it carries none or an unknown one.
pub(crate) fn authenticate(
    table: &Table,
    headers: &(impl Fields + ?Sized),
) -> Result<Arc<Key>, ApiError> {
    authenticate_with(headers, |key| table.key(key))
}

/// [`authenticate`] with the key looked up by `find`.
fn authenticate_with(
    headers: &(impl Fields + ?Sized),
    find: impl FnOnce(&str) -> Option<Arc<Key>>,
) -> Result<Arc<Key>, ApiError> {
    let presented = presented_key(headers)?;
    find(presented).ok_or_else(|| {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "invalid_key",
            "the API key is not valid",
        )
    })
}

/// Takes a token from the key's bucket: `429` with `Retry-After` when spent.
pub(crate) fn admit(key: &Key, metrics: &Metrics) -> Result<(), ApiError> {
    key.check_rate().map_err(|wait| {
        metrics
            .rate_limited
            .get_or_create(&TenantLabel {
                tenant: key.tenant.clone(),
            })
            .inc();
        let mut err = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            "this key's rate limit is spent; retry later",
        );
        err.retry_after = Some(wait);
        err
    })
}

/// The API key from `X-Berth-Key` or `Authorization: Bearer`.
pub(crate) fn presented_key(headers: &(impl Fields + ?Sized)) -> Result<&str, ApiError> {
    let missing = || {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "missing_key",
            "an API key is required: Authorization: Bearer KEY, or X-Berth-Key: KEY",
        )
    };
    if let Some(value) = headers.field("x-berth-key") {
        return std::str::from_utf8(value)
            .map(str::trim)
            .map_err(|_| missing());
    }
    let value = headers.field("authorization").ok_or_else(missing)?;
    let value = std::str::from_utf8(value).map_err(|_| missing())?;
    let (scheme, key) = value.trim().split_once(' ').ok_or_else(missing)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(missing());
    }
    Ok(key.trim())
}

fn content_length(headers: &(impl Fields + ?Sized)) -> Option<u64> {
    std::str::from_utf8(headers.field("content-length")?)
        .ok()?
        .parse()
        .ok()
}

/// One line per request, written when its response body is done (or dropped).
pub(crate) struct AccessLog {
    pub(crate) request_id: HeaderValue,
    pub(crate) method: Method,
    pub(crate) path: String,
    pub(crate) app: Option<String>,
    pub(crate) app_metrics: Option<crate::metrics::AppMetrics>,
    pub(crate) status: u16,
    pub(crate) started: Instant,
    pub(crate) bytes: u64,
    pub(crate) peer: SocketAddr,
}

impl Drop for AccessLog {
    fn drop(&mut self) {
        tracing::info!(
            target: "berth_gateway::access",
            request_id = self.request_id.to_str().unwrap_or("-"),
            peer = %self.peer,
            method = %self.method,
            path = %self.path,
            app = self.app.as_deref().unwrap_or("-"),
            status = self.status,
            bytes = self.bytes,
            duration_ms = self.started.elapsed().as_secs_f64() * 1000.0,
            "request"
        );
    }
}

/// A response body that counts its bytes for the access log.
struct Logged {
    inner: ProxyBody,
    log: Option<AccessLog>,
}

impl Body for Logged {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                let n = frame.data_ref().map_or(0, |d| d.len() as u64);
                if let Some(log) = self.log.as_mut() {
                    log.bytes += n;
                }
            }
            Poll::Ready(None) | Poll::Ready(Some(Err(_))) => {
                // Done: write the line now rather than when hyper drops us.
                self.log.take();
            }
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_segments_are_refused_in_any_spelling() {
        for bad in ["..", "a/../b", "%2e%2e/x", "%2E%2e", ".%2e", "./x", "a/%2E"] {
            assert!(check_path(bad).is_err(), "{bad}");
        }
        for good in ["", "a/b", "a..b", "...", "%2e%2e%2e", "a//b"] {
            assert!(check_path(good).is_ok(), "{good}");
        }
    }

    #[test]
    fn keys_come_from_either_header() {
        let mut h = HeaderMap::new();
        assert_eq!(presented_key(&h).unwrap_err().code, "missing_key");
        h.insert(header::AUTHORIZATION, "Bearer berth_x".parse().unwrap());
        assert_eq!(presented_key(&h).unwrap(), "berth_x");
        h.insert(header::AUTHORIZATION, "Basic abc".parse().unwrap());
        assert_eq!(presented_key(&h).unwrap_err().code, "missing_key");
        h.insert("x-berth-key", "berth_y".parse().unwrap());
        assert_eq!(presented_key(&h).unwrap(), "berth_y");
    }
}
