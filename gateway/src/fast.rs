//! The HTTP/1.1 fast path.
//!
//! Most of a gateway's traffic is small proxied requests over kept-alive
//! plain-text connections. For those, one loop per client connection parses
//! each request head with `httparse`, decides as the request path does (the
//! route, the key, its rate, the body's size, a ready instance; the same
//! functions), writes the request to an idle connection to the instance
//! (the thread's most recently used one) and copies the answer back: no
//! `Request` or `HeaderMap` is built, and no other task is woken in between.
//!
//! Everything else goes, with the bytes read so far, to hyper, which serves
//! the rest of the connection as before: a head that does not parse, is
//! larger than the limit or has more than [`MAX_HEADERS`] fields; HTTP/1.0;
//! `Transfer-Encoding`, `Expect` or `Upgrade`; more than one `Host` or
//! `Content-Length`; a body over [`FAST_BODY`]; a request target that is not
//! a path of plain URI characters (RFC 3986's path and query characters:
//! no fragment, nothing to decode first); a `Host` that is not a plain name
//! or address with an optional port; the gateway's own paths (health,
//! metrics, the management API); the h2c preface.

use crate::{
    error::ApiError,
    headers::{self, Fields},
    proxy::{error_chain, no_instance, proxied_target, AccessLog, Gateway, Tried, MAX_ATTEMPTS},
    routes::{App, Backend, KeyMemo},
    server::ConnLimits,
    upstream::{UpstreamError, CONNECT_TIMEOUT},
};
use bytes::{Buf, BytesMut};
use http::{HeaderValue, Method};
use std::{
    io,
    mem::MaybeUninit,
    net::SocketAddr,
    pin::Pin,
    sync::{atomic::Ordering, Arc},
    time::Instant,
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    time::{timeout_at, Instant as Deadline, Sleep},
};
use tokio_util::sync::CancellationToken;

/// The most header fields a head on this path may have (hyper's limit).
pub const MAX_HEADERS: usize = 100;
/// The largest request body this path takes; a larger one streams through hyper.
pub const FAST_BODY: usize = 64 * 1024;
/// How much is read from a socket at a time.
const READ_SIZE: usize = 16 * 1024;
/// Idle connections kept per instance on one gateway thread.
const MAX_IDLE: usize = 64;
/// How long a connection is kept idle.
const MAX_IDLE_FOR: std::time::Duration = std::time::Duration::from_secs(60);
/// A reused buffer larger than this is given back after its request.
const MAX_SPARE: usize = 16 * 1024;

/// How a connection left the fast path.
pub enum Ended {
    /// Closed (by either side, a timeout, or shutdown).
    Closed,
    /// Hyper serves the rest; these bytes were read from the client already.
    ToHyper(BytesMut),
}

/// Serves `client`'s requests while they fit the fast path.
pub async fn serve(
    client: &mut TcpStream,
    peer: SocketAddr,
    gateway: &Gateway,
    limits: &ConnLimits,
    shutdown: &CancellationToken,
) -> Ended {
    let mut conn = Conn {
        peer,
        peer_ip: peer.ip().to_string(),
        gateway,
        limits,
        table: None,
        buf: BytesMut::with_capacity(READ_SIZE),
        head_by: Box::pin(tokio::time::sleep(limits.header_read_timeout)),
        answer_by: Box::pin(tokio::time::sleep(limits.header_read_timeout)),
        key: KeyMemo::default(),
        spare_out: Vec::new(),
        spare_head: Vec::new(),
    };
    let mut first = true;
    // Made once: registering with the token on every wait would take its lock.
    let cancelled = shutdown.cancelled();
    tokio::pin!(cancelled);
    loop {
        // The next head: at first within the header read timeout, on a kept
        // connection within the idle timeout, then whole within the header
        // read timeout of its first byte.
        let wait = if first {
            limits.header_read_timeout
        } else {
            limits.idle_timeout
        };
        first = false;
        if conn.buf.is_empty() {
            conn.head_by.as_mut().reset(Deadline::now() + wait);
            let read = tokio::select! {
                biased;
                read = read_more(client, &mut conn.buf) => read,
                _ = &mut cancelled => return Ended::Closed,
                _ = conn.head_by.as_mut() => return Ended::Closed,
            };
            match read {
                Ok(n) if n > 0 => {}
                _ => return Ended::Closed,
            }
        }
        let mut head_deadline_set = false;
        let request = loop {
            match conn.prepare() {
                Parsed::Request(request) => break request,
                Parsed::Hyper => return Ended::ToHyper(conn.buf),
                Parsed::Partial => {
                    if !head_deadline_set {
                        conn.head_by
                            .as_mut()
                            .reset(Deadline::now() + limits.header_read_timeout);
                        head_deadline_set = true;
                    }
                    let read = tokio::select! {
                        biased;
                        read = read_more(client, &mut conn.buf) => read,
                        _ = conn.head_by.as_mut() => return Ended::Closed,
                    };
                    match read {
                        Ok(n) if n > 0 => {}
                        _ => return Ended::Closed,
                    }
                }
            }
        };
        match conn.answer(client, request).await {
            Some(true) if !shutdown.is_cancelled() => {}
            Some(_) => {
                let _ = client.shutdown().await;
                return Ended::Closed;
            }
            None => return Ended::Closed,
        }
    }
}

/// Writes what the socket takes now, without waiting: usually all of it.
fn try_write(stream: &TcpStream, bytes: &[u8]) -> io::Result<usize> {
    match stream.try_write(bytes) {
        Ok(n) => Ok(n),
        Err(err) if err.kind() == io::ErrorKind::WouldBlock => Ok(0),
        Err(err) => Err(err),
    }
}

async fn read_more(stream: &mut TcpStream, buf: &mut BytesMut) -> io::Result<usize> {
    buf.reserve(READ_SIZE);
    stream.read_buf(buf).await
}

/// One client connection on the fast path.
struct Conn<'a> {
    peer: SocketAddr,
    /// `X-Forwarded-For`.
    peer_ip: String,
    gateway: &'a Gateway,
    limits: &'a ConnLimits,
    /// The route table as of this connection's last request.
    table: Option<(u64, Arc<crate::routes::Table>)>,
    /// What was read from the client and not yet used.
    buf: BytesMut,
    /// When the next head must have come (reset per request: moving a
    /// registered timer later costs no timer-wheel work).
    head_by: Pin<Box<Sleep>>,
    /// When the app must have answered, likewise.
    answer_by: Pin<Box<Sleep>>,
    /// The key this connection presented last.
    key: KeyMemo,
    /// The buffers of the last request as the app got it and of the last
    /// answer head, kept for the next ones (no allocation per request).
    spare_out: Vec<u8>,
    spare_head: Vec<u8>,
}

/// Idle connections to instances, shared by the fast path's client
/// connections on one gateway thread (each thread has a gateway of its
/// own, so the lock is never contended). The most recently used is taken
/// first: a light load keeps reusing the same few connections, warm in
/// every cache, and a heavy load has as many as it has requests in flight,
/// up to [`MAX_IDLE`] idle per instance.
#[derive(Default)]
pub(crate) struct IdleUpstreams {
    state: std::sync::Mutex<Idle>,
}

#[derive(Default)]
struct Idle {
    by_instance: crate::routes::Map<String, Vec<Upstream>>,
}

impl IdleUpstreams {
    fn lock(&self) -> std::sync::MutexGuard<'_, Idle> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The most recently returned open connection to `backend`, at its
    /// present address.
    fn take(&self, backend: &Backend) -> Option<Upstream> {
        let mut idle = self.lock();
        let kept = idle.by_instance.get_mut(backend.instance_id.as_str())?;
        while let Some(upstream) = kept.pop() {
            if upstream.authority == backend.authority && !upstream.closed() {
                return Some(upstream);
            }
        }
        None
    }

    /// Lets go of every idle connection to `instance`.
    fn forget(&self, instance: &str) {
        self.lock().by_instance.remove(instance);
    }

    /// Lets go of idle connections the instances closed and of those idle
    /// for longer than [`MAX_IDLE_FOR`] (an instance gone without a word,
    /// or one no longer routed to); called every second by the thread's
    /// tick (a closed one is also dropped when next taken).
    pub(crate) fn sweep(&self) {
        let now = Instant::now();
        self.lock().by_instance.retain(|_, kept| {
            kept.retain(|u| now.duration_since(u.idle_since) < MAX_IDLE_FOR && !u.closed());
            !kept.is_empty()
        });
    }

    fn put(&self, mut upstream: Upstream) {
        upstream.idle_since = Instant::now();
        let mut idle = self.lock();
        let kept = match idle.by_instance.get_mut(&upstream.instance) {
            Some(kept) => kept,
            None => idle
                .by_instance
                .entry(upstream.instance.clone())
                .or_default(),
        };
        if kept.len() >= MAX_IDLE {
            kept.remove(0);
        }
        kept.push(upstream);
    }
}

pub(crate) struct Upstream {
    instance: String,
    /// The address it was made to (an instance's address may change).
    authority: String,
    /// When it was last given back, for [`IdleUpstreams::sweep`].
    idle_since: Instant,
    stream: TcpStream,
    buf: BytesMut,
}

impl Upstream {
    /// The instance closed this kept connection (or sent something unasked):
    /// known without a system call unless the socket became readable.
    fn closed(&self) -> bool {
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        match self.stream.poll_read_ready(&mut cx) {
            std::task::Poll::Pending => false,
            std::task::Poll::Ready(Err(_)) => true,
            std::task::Poll::Ready(Ok(())) => {
                let mut byte = [0u8; 1];
                !matches!(self.stream.try_read(&mut byte), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
            }
        }
    }
}

// A `Prepared` lives on the stack for one request; boxing it would cost an
// allocation per request.
#[allow(clippy::large_enum_variant)]
enum Parsed {
    Partial,
    Hyper,
    Request(Prepared),
}

/// A request read whole (head and body) and decided on.
struct Prepared {
    log: AccessLog,
    /// The app the request is for (its metrics), if any.
    app: Option<Arc<App>>,
    /// The client asked to close after this answer.
    close: bool,
    head: bool,
    /// The request may be sent again after a kept connection turned out
    /// closed (whether it had reached the instance cannot be told).
    repeatable: bool,
    idempotent: bool,
    /// The request as the app's instance gets it; or the answer.
    step: Result<Vec<u8>, ApiError>,
}

/// Header fields that describe one connection, never forwarded, and those
/// the gateway sets itself.
const NOT_FORWARDED: [&str; 14] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-request-id",
];

fn is_named(name: &str, list: &[&str]) -> bool {
    list.iter().any(|n| n.eq_ignore_ascii_case(name))
}

/// An origin-form request target of plain URI characters (RFC 3986's
/// `pchar`, `/` and `?`) as its path and query; `None` for anything else
/// (a fragment, spaces or other bytes, an absolute form), which hyper judges.
fn split_target(target: &str) -> Option<(&str, Option<&str>)> {
    let bytes = target.as_bytes();
    // Longer ones are refused by hyper (`414`), as the request path does.
    if bytes.len() >= usize::from(u16::MAX)
        || bytes.first() != Some(&b'/')
        || !bytes.iter().all(|&b| URI_CHAR[usize::from(b)])
    {
        return None;
    }
    Some(match bytes.iter().position(|&b| b == b'?') {
        Some(at) => (&target[..at], Some(&target[at + 1..])),
        None => (target, None),
    })
}

/// The host of a `Host` field that is a plain name or IPv4 address with an
/// optional port (empty for an empty field); `None` for anything else (an
/// IPv6 literal, user info, other bytes), which hyper judges.
fn host_name(value: &[u8]) -> Option<&str> {
    let (host, port) = match value.iter().position(|&b| b == b':') {
        Some(at) => (&value[..at], Some(&value[at + 1..])),
        None => (value, None),
    };
    let name = |b: &u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_');
    let port_ok = port.is_none_or(|p| p.len() <= 5 && p.iter().all(u8::is_ascii_digit));
    let plain = host.iter().all(name) && port_ok && !(host.is_empty() && port.is_some());
    // ASCII only, checked just above.
    plain.then(|| std::str::from_utf8(host).ok()).flatten()
}

/// The bytes [`split_target`] takes: letters, digits, `-._~!$&'()*+,;=:@/?%`.
static URI_CHAR: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        table[b] = (b as u8).is_ascii_alphanumeric();
        b += 1;
    }
    let more = b"-._~!$&'()*+,;=:@/?%";
    let mut i = 0;
    while i < more.len() {
        table[more[i] as usize] = true;
        i += 1;
    }
    table
};

/// The comma-separated tokens of every `Connection` field.
fn connection_tokens<'h>(fields: &'h [httparse::Header<'_>]) -> Vec<&'h str> {
    fields
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("connection"))
        .filter_map(|h| std::str::from_utf8(h.value).ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .collect()
}

impl Conn<'_> {
    /// Parses the head at the start of the buffer and decides what to do
    /// with the request; takes the request's bytes off the buffer.
    fn prepare(&mut self) -> Parsed {
        let mut fields = [const { MaybeUninit::uninit() }; MAX_HEADERS];
        let mut req = httparse::Request::new(&mut []);
        let head_len = match req.parse_with_uninit_headers(&self.buf, &mut fields) {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) if self.buf.len() <= self.limits.max_header_bytes => {
                return Parsed::Partial
            }
            _ => return Parsed::Hyper,
        };
        let (Some(method), Some(target), Some(1)) = (req.method, req.path, req.version) else {
            return Parsed::Hyper;
        };
        if head_len > self.limits.max_header_bytes || !target.starts_with('/') {
            return Parsed::Hyper;
        }
        let fields: &[httparse::Header<'_>] = req.headers;
        let (mut hosts, mut lengths) = (0, 0);
        for field in fields {
            let name = field.name;
            if name.eq_ignore_ascii_case("host") {
                hosts += 1;
            } else if name.eq_ignore_ascii_case("content-length") {
                lengths += 1;
            } else if name.eq_ignore_ascii_case("transfer-encoding")
                || name.eq_ignore_ascii_case("expect")
                || name.eq_ignore_ascii_case("upgrade")
                || name.eq_ignore_ascii_case("http2-settings")
            {
                return Parsed::Hyper;
            }
        }
        if hosts != 1 || lengths > 1 {
            return Parsed::Hyper;
        }
        let body_len = match fields.field("content-length") {
            None => 0,
            Some(v) if !v.is_empty() && v.len() <= 10 && v.iter().all(u8::is_ascii_digit) => {
                match std::str::from_utf8(v)
                    .ok()
                    .and_then(|v| v.parse::<usize>().ok())
                {
                    Some(n) if n <= FAST_BODY => n,
                    _ => return Parsed::Hyper,
                }
            }
            Some(_) => return Parsed::Hyper,
        };
        let Ok(method) = Method::from_bytes(method.as_bytes()) else {
            return Parsed::Hyper;
        };
        if method == Method::CONNECT {
            return Parsed::Hyper;
        }
        let Some((path, query)) = split_target(target) else {
            return Parsed::Hyper;
        };
        let host_value = fields.field("host").unwrap_or_default();
        let Some(host) = host_name(host_value) else {
            return Parsed::Hyper;
        };
        let host = (!host.is_empty()).then(|| {
            if host.bytes().any(|b| b.is_ascii_uppercase()) {
                std::borrow::Cow::Owned(host.to_ascii_lowercase())
            } else {
                std::borrow::Cow::Borrowed(host)
            }
        });
        let (version, table) = self.gateway.routes.cached(&mut self.table);
        let Some(target) = proxied_target(table, host.as_deref(), path, query) else {
            return Parsed::Hyper;
        };
        // The body too, before anything is decided (it goes on in one write).
        if self.buf.len() < head_len + body_len {
            return Parsed::Partial;
        }
        let tokens = connection_tokens(fields);
        if tokens.iter().any(|t| t.eq_ignore_ascii_case("upgrade")) {
            return Parsed::Hyper;
        }
        // From here on the request is this path's to answer.
        let close = tokens.iter().any(|t| t.eq_ignore_ascii_case("close"));
        let mut log = AccessLog {
            request_id: headers::request_id(fields),
            method: method.clone(),
            path: path.to_owned(),
            app: None,
            app_metrics: None,
            status: 0,
            started: Instant::now(),
            bytes: 0,
            peer: self.peer,
        };
        let mut routed = None;
        let step = target.and_then(|(app, path)| {
            log.app = Some(app.route.app_id.clone());
            let app = routed.insert(app);
            let key_from_header =
                self.gateway
                    .admit_call(table, app, fields, Some((version, &mut self.key)))?;
            let mut out = std::mem::take(&mut self.spare_out);
            out.clear();
            out.reserve(head_len + body_len + 256);
            out.extend_from_slice(method.as_str().as_bytes());
            out.push(b' ');
            out.extend_from_slice(path.as_bytes());
            out.extend_from_slice(b" HTTP/1.1\r\n");
            let key_field = if key_from_header {
                "x-berth-key"
            } else {
                "authorization"
            };
            for field in fields {
                let name = field.name;
                if is_named(name, &NOT_FORWARDED)
                    || name.eq_ignore_ascii_case("content-length")
                    || name.eq_ignore_ascii_case(key_field)
                    || headers::named_by_connection(name, &tokens)
                {
                    continue;
                }
                push_field(&mut out, name.as_bytes(), field.value);
            }
            // The framing of what goes on: the body below, whole.
            if lengths == 1 {
                let mut digits = itoa_buf();
                push_field(
                    &mut out,
                    b"content-length",
                    itoa(&mut digits, body_len as u64),
                );
            }
            push_field(&mut out, b"x-forwarded-for", self.peer_ip.as_bytes());
            let proto: &[u8] = if self.gateway.https {
                b"https"
            } else {
                b"http"
            };
            push_field(&mut out, b"x-forwarded-proto", proto);
            push_field(&mut out, b"x-forwarded-host", host_value);
            push_field(&mut out, b"x-request-id", log.request_id.as_bytes());
            out.extend_from_slice(b"\r\n");
            out.extend_from_slice(&self.buf[head_len..head_len + body_len]);
            Ok(out)
        });
        let idempotent = matches!(
            method,
            Method::GET
                | Method::HEAD
                | Method::OPTIONS
                | Method::PUT
                | Method::DELETE
                | Method::TRACE
        );
        let prepared = Prepared {
            log,
            app: routed,
            close,
            head: method == Method::HEAD,
            repeatable: idempotent || body_len == 0,
            idempotent,
            step,
        };
        self.buf.advance(head_len + body_len);
        Parsed::Request(prepared)
    }

    /// Answers one request. `Some(true)`: the connection stays open.
    async fn answer(&mut self, client: &mut TcpStream, request: Prepared) -> Option<bool> {
        let Prepared {
            mut log,
            app,
            close,
            head,
            repeatable,
            idempotent,
            step,
        } = request;
        let how = How {
            head,
            close,
            repeatable,
            idempotent,
        };
        let result = match (step, &app) {
            (Ok(out), Some(app)) => {
                let result = self
                    .ready_and_forward(client, app.clone(), &out, how, &mut log)
                    .await;
                if out.capacity() <= MAX_SPARE {
                    self.spare_out = out;
                }
                result
            }
            (Err(err), _) => Err(err),
            (Ok(_), None) => unreachable!("a request is forwarded only to an app"),
        };
        let keep = match result {
            Ok(keep) => keep,
            Err(err) => {
                log.status = err.status.as_u16();
                let bytes = error_response(&err, &log.request_id, close);
                log.bytes = bytes.len() as u64;
                let written = self.write_client(client, &bytes).await.is_ok();
                written.then_some(!close)
            }
        };
        match app {
            Some(app) if log.status != 0 => {
                let metrics = app.metrics(&self.gateway.metrics);
                metrics.count(log.status);
                metrics.latency.observe(log.started.elapsed().as_secs_f64());
            }
            Some(_) => {}
            None => self.gateway.metrics.count_unrouted(log.status),
        }
        keep
    }

    async fn write_client(&self, client: &mut TcpStream, bytes: &[u8]) -> io::Result<()> {
        let written = try_write(client, bytes)?;
        if written == bytes.len() {
            return Ok(());
        }
        let rest = client.write_all(&bytes[written..]);
        match tokio::time::timeout(self.limits.idle_timeout, rest).await {
            Ok(written) => written,
            Err(_) => Err(io::ErrorKind::TimedOut.into()),
        }
    }

    /// Waits for the app to have an instance (a scale-to-zero app is
    /// woken), forwards, and when every instance refused the connection and
    /// a control plane is there, waits for fresh routes and sends once more.
    async fn ready_and_forward(
        &mut self,
        client: &mut TcpStream,
        app: Arc<App>,
        out: &[u8],
        how: How,
        log: &mut AccessLog,
    ) -> Result<Option<bool>, ApiError> {
        let app = self.gateway.ready_app(app).await?;
        match self.forward(client, &app, out, how, log).await {
            Ok(keep) => Ok(keep),
            Err((error, true)) if self.gateway.link.is_some() => {
                tracing::info!(app = %app.route.app_id, error = %error.message, "every instance refused; waiting for fresh routes");
                let app = self.gateway.ready_app(app).await?;
                self.forward(client, &app, out, how, log)
                    .await
                    .map_err(|(error, _)| error)
            }
            Err((error, _)) => Err(error),
        }
    }

    /// Sends `out` to one instance after another until one answers (the
    /// request path's rules: another instance after a refused connection,
    /// or after any failure when the method may be repeated; once more on a
    /// fresh connection when a kept one turns out closed), and copies the
    /// answer to the client. `Ok(keep)`: the answer went out (or started
    /// to); `Err((error, unreached))`: `unreached` when nothing reached the
    /// app and every instance is refusing.
    async fn forward(
        &mut self,
        client: &mut TcpStream,
        app: &App,
        out: &[u8],
        how: How,
        log: &mut AccessLog,
    ) -> Result<Option<bool>, (ApiError, bool)> {
        let gateway = self.gateway;
        let app_id = app.route.app_id.as_str();
        let mut tried = Tried::default();
        let mut last_error = None;
        let mut stale_retried = false;
        let mut all_refused = true;
        while tried.len() < MAX_ATTEMPTS {
            let Some((index, admission)) = app.pick(tried.as_slice(), Instant::now()) else {
                break;
            };
            tried.push(index);
            let backend = &app.backends[index];
            backend.in_flight.fetch_add(1, Ordering::Relaxed);
            gateway.metrics.in_flight.inc();
            let deadline = Deadline::now() + app.timeout();
            let exchanged = self
                .exchange(backend, out, how, &log.request_id, deadline, stale_retried)
                .await;
            backend.in_flight.fetch_sub(1, Ordering::Relaxed);
            gateway.metrics.in_flight.dec();
            let error = match exchanged {
                Ok((upstream, answer)) => {
                    backend.succeeded();
                    return Ok(self.relay(client, upstream, answer, app, log).await);
                }
                Err(Exchange::TimedOut) => {
                    backend.failed(&gateway.policy, Instant::now());
                    gateway.metrics.upstream_error(app_id, "timeout");
                    let error = ApiError::new(
                        http::StatusCode::GATEWAY_TIMEOUT,
                        "upstream_timeout",
                        format!(
                            "app {} did not answer within {:?}",
                            app.route.name,
                            app.timeout()
                        ),
                    );
                    return Err((error, false));
                }
                Err(Exchange::Failed(error)) => error,
            };
            if error.is_stale() && !stale_retried && how.repeatable {
                stale_retried = true;
                tried.pop();
                continue;
            }
            let connect = error.is_connect();
            all_refused &= connect;
            gateway.note_failure(app_id, backend, admission, connect, &error);
            last_error = Some(ApiError::new(
                http::StatusCode::BAD_GATEWAY,
                "upstream_failed",
                format!(
                    "instance {} of app {} failed: {}",
                    backend.instance_id,
                    app.route.name,
                    error_chain(&error)
                ),
            ));
            if !(connect || how.idempotent) {
                break;
            }
        }
        let unreached = all_refused && app.unreachable(Instant::now());
        let error = last_error.unwrap_or_else(|| {
            if unreached {
                no_instance(app)
            } else {
                ApiError::unavailable(
                    "no_healthy_instance",
                    format!(
                        "every instance of app {} is failing; retry in a moment",
                        app.route.name
                    ),
                )
            }
        });
        Err((error, unreached))
    }

    /// Writes the request to `backend` (on a new connection when `fresh`)
    /// and reads the answer's head.
    async fn exchange(
        &mut self,
        backend: &Backend,
        out: &[u8],
        how: How,
        request_id: &HeaderValue,
        deadline: Deadline,
        fresh: bool,
    ) -> Result<(Upstream, Answer), Exchange> {
        // After a kept connection turned out closed, a new one: the others
        // to that instance may have been closed with it (a restart).
        let kept = if fresh {
            self.gateway.idle.forget(&backend.instance_id);
            None
        } else {
            self.gateway.idle.take(backend)
        };
        let reused = kept.is_some();
        let mut upstream = match kept {
            Some(upstream) => upstream,
            None => {
                let connect = timeout_at(
                    deadline.min(Deadline::now() + CONNECT_TIMEOUT),
                    TcpStream::connect(&backend.authority),
                );
                let stream = match connect.await {
                    Ok(Ok(stream)) => stream,
                    Ok(Err(err)) => {
                        return Err(Exchange::Failed(UpstreamError::Connect(err.to_string())))
                    }
                    Err(_) => {
                        return Err(Exchange::Failed(UpstreamError::Connect(format!(
                            "no connection within {CONNECT_TIMEOUT:?}"
                        ))))
                    }
                };
                let _ = stream.set_nodelay(true);
                Upstream {
                    instance: backend.instance_id.clone(),
                    authority: backend.authority.clone(),
                    idle_since: Instant::now(),
                    stream,
                    buf: BytesMut::with_capacity(READ_SIZE),
                }
            }
        };
        let mut head = std::mem::take(&mut self.spare_head);
        let read = async {
            let written = try_write(&upstream.stream, out)?;
            if written < out.len() {
                upstream.stream.write_all(&out[written..]).await?;
            }
            loop {
                if let Some(answer) = Answer::parse(&upstream.buf, how, request_id, &mut head)? {
                    if answer.status >= 200 || answer.status == 101 {
                        return Ok(answer);
                    }
                    // 100 Continue and other interim answers are not passed on.
                    upstream.buf.advance(answer.head_len);
                    head = answer.head;
                    continue;
                }
                if read_more(&mut upstream.stream, &mut upstream.buf).await? == 0 {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the instance closed the connection before answering",
                    ));
                }
            }
        };
        self.answer_by.as_mut().reset(deadline);
        let read = tokio::select! {
            biased;
            read = read => Ok(read),
            _ = self.answer_by.as_mut() => Err(()),
        };
        // What no answer took (an answer takes it to the client and gives
        // it back), kept for the next one.
        self.spare_head = head;
        match read {
            Err(()) => Err(Exchange::TimedOut),
            Ok(Ok(answer)) if answer.status == 101 => Err(Exchange::Failed(UpstreamError::Io(
                io::Error::other("the instance switched protocols unasked"),
            ))),
            Ok(Ok(answer)) => Ok((upstream, answer)),
            Ok(Err(err)) => {
                // Nothing came back on a connection kept from before: the
                // instance had let it go.
                let closed = matches!(
                    err.kind(),
                    io::ErrorKind::UnexpectedEof
                        | io::ErrorKind::ConnectionReset
                        | io::ErrorKind::BrokenPipe
                );
                if reused && closed && upstream.buf.is_empty() {
                    Err(Exchange::Failed(UpstreamError::StaleIo(err)))
                } else {
                    Err(Exchange::Failed(UpstreamError::Io(err)))
                }
            }
        }
    }

    /// Copies the answer (its head rewritten, its body as it comes) to the
    /// client and keeps the upstream connection when it may be reused.
    #[allow(clippy::too_many_arguments)]
    async fn relay(
        &mut self,
        client: &mut TcpStream,
        mut upstream: Upstream,
        answer: Answer,
        app: &App,
        log: &mut AccessLog,
    ) -> Option<bool> {
        let Answer {
            head_len,
            status,
            framing,
            reusable,
            close,
            head: mut out,
        } = answer;
        log.status = status;
        upstream.buf.advance(head_len);
        // The body: what came with the head goes out with it, the rest as it
        // arrives, each read within the app's timeout of the one before.
        let timeout = app.timeout();
        let mut body = BodyCursor::new(framing);
        loop {
            let take = body.take(&upstream.buf);
            if body.broken() {
                // What the client has of the answer cannot be framed: its
                // connection ends, and the app's with it.
                self.gateway
                    .metrics
                    .upstream_error(&app.route.app_id, "framing");
                return None;
            }
            out.extend_from_slice(&upstream.buf[..take]);
            upstream.buf.advance(take);
            log.bytes += take as u64;
            if !out.is_empty() {
                if self.write_client(client, &out).await.is_err() {
                    return None;
                }
                out.clear();
            }
            if body.done() {
                break;
            }
            upstream.buf.clear();
            match tokio::time::timeout(timeout, read_more(&mut upstream.stream, &mut upstream.buf))
                .await
            {
                Ok(Ok(n)) if n > 0 => {}
                Ok(Ok(_)) if matches!(framing, Framing::UntilClose) => return Some(false),
                _ => {
                    self.gateway
                        .metrics
                        .upstream_error(&app.route.app_id, "reset");
                    return None;
                }
            }
        }
        if reusable && upstream.buf.is_empty() {
            self.gateway.idle.put(upstream);
        }
        if out.capacity() <= MAX_SPARE {
            self.spare_head = out;
        }
        Some(!close)
    }
}

/// Room for a `u64` in decimal.
fn itoa_buf() -> [u8; 20] {
    [0; 20]
}

/// `n` in decimal, written at the end of `buf`.
fn itoa(buf: &mut [u8; 20], mut n: u64) -> &[u8] {
    let mut at = buf.len();
    loop {
        at -= 1;
        buf[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &buf[at..];
        }
    }
}

fn push_field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// What the forwarding of one request depends on.
#[derive(Clone, Copy)]
struct How {
    /// A `HEAD` request: the answer has no body.
    head: bool,
    /// The client asked to close after this answer.
    close: bool,
    /// See [`Prepared::repeatable`].
    repeatable: bool,
    idempotent: bool,
}

/// Why an exchange with an instance gave no answer head.
enum Exchange {
    TimedOut,
    Failed(UpstreamError),
}

/// How an answer's body ends.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Framing {
    Length(u64),
    Chunked,
    UntilClose,
}

/// An instance's answer head, parsed, and the head the client gets.
#[derive(Debug)]
struct Answer {
    head_len: usize,
    status: u16,
    /// How the body that follows ends (nothing for `HEAD`, 204 and 304).
    framing: Framing,
    /// The instance keeps the connection open after this answer.
    reusable: bool,
    /// The client's connection ends after this answer.
    close: bool,
    /// The head as the client gets it (empty for an interim answer):
    /// hop-by-hop fields and those the `Connection` field names left out,
    /// the gateway's request id and, when the connection ends after this
    /// answer, `Connection: close`.
    head: Vec<u8>,
}

impl Answer {
    /// The answer head at the start of `buf` (to the request `how`
    /// describes), if it is all there.
    /// The client's head is written into `spare`'s buffer, which the
    /// answer takes.
    fn parse(
        buf: &[u8],
        how: How,
        request_id: &HeaderValue,
        spare: &mut Vec<u8>,
    ) -> io::Result<Option<Answer>> {
        let mut fields = [const { MaybeUninit::uninit() }; MAX_HEADERS];
        let mut res = httparse::Response::new(&mut []);
        let bad = |why: &str| io::Error::new(io::ErrorKind::InvalidData, why.to_owned());
        let parsed = httparse::ParserConfig::default().parse_response_with_uninit_headers(
            &mut res,
            buf,
            &mut fields,
        );
        let head_len = match parsed {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) if buf.len() < 64 * 1024 => return Ok(None),
            Ok(httparse::Status::Partial) => return Err(bad("the answer's head is too large")),
            Err(err) => return Err(bad(&format!("the answer's head does not parse: {err}"))),
        };
        let status = res.code.unwrap_or(0);
        let fields: &[httparse::Header<'_>] = res.headers;
        let tokens = connection_tokens(fields);
        let mut reusable =
            res.version == Some(1) && !tokens.iter().any(|t| t.eq_ignore_ascii_case("close"));
        let coding = fields
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case("transfer-encoding"))
            .filter_map(|h| std::str::from_utf8(h.value).ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .next_back();
        let sent = match coding {
            Some(last) if last.eq_ignore_ascii_case("chunked") => Framing::Chunked,
            Some(_) => Framing::UntilClose,
            None => {
                let mut lengths = fields
                    .iter()
                    .filter(|h| h.name.eq_ignore_ascii_case("content-length"))
                    .map(|h| {
                        std::str::from_utf8(h.value)
                            .ok()
                            .filter(|v| !v.is_empty() && v.bytes().all(|c| c.is_ascii_digit()))
                            .and_then(|v| v.parse::<u64>().ok())
                    });
                match lengths.next() {
                    None => Framing::UntilClose,
                    Some(first) => {
                        let first = first.ok_or_else(|| bad("a bad Content-Length"))?;
                        if lengths.any(|n| n != Some(first)) {
                            return Err(bad("Content-Length fields that disagree"));
                        }
                        Framing::Length(first)
                    }
                }
            }
        };
        let framing = if how.head || status < 200 || status == 204 || status == 304 {
            Framing::Length(0)
        } else {
            sent
        };
        if matches!(framing, Framing::UntilClose) {
            reusable = false;
        }
        let close = how.close || matches!(framing, Framing::UntilClose);
        let mut head = std::mem::take(spare);
        head.clear();
        if status >= 200 {
            head.reserve(head_len + 64);
            let reason = match res.reason {
                Some(r) if !r.is_empty() => r,
                _ => http::StatusCode::from_u16(status)
                    .ok()
                    .and_then(|s| s.canonical_reason())
                    .unwrap_or(""),
            };
            head.extend_from_slice(b"HTTP/1.1 ");
            // Three digits (httparse takes no other status).
            head.extend_from_slice(&[
                b'0' + (status / 100 % 10) as u8,
                b'0' + (status / 10 % 10) as u8,
                b'0' + (status % 10) as u8,
            ]);
            head.push(b' ');
            head.extend_from_slice(reason.as_bytes());
            head.extend_from_slice(b"\r\n");
            for field in fields {
                let name = field.name;
                if is_named(name, &NOT_FORWARDED)
                    || name.eq_ignore_ascii_case("content-length")
                    || headers::named_by_connection(name, &tokens)
                {
                    continue;
                }
                push_field(&mut head, name.as_bytes(), field.value);
            }
            // The framing the client reads, written by the gateway from how
            // it follows the body (for `HEAD` and 304, the length the app
            // gave for the body it did not send).
            match sent {
                Framing::Chunked if framing == Framing::Chunked => {
                    push_field(&mut head, b"transfer-encoding", b"chunked");
                }
                Framing::Length(n) if status != 204 => {
                    let mut digits = itoa_buf();
                    push_field(&mut head, b"content-length", itoa(&mut digits, n));
                }
                _ => {}
            }
            push_field(&mut head, b"x-request-id", request_id.as_bytes());
            if close {
                push_field(&mut head, b"connection", b"close");
            }
            head.extend_from_slice(b"\r\n");
        }
        Ok(Some(Answer {
            head_len,
            status,
            framing,
            reusable,
            close,
            head,
        }))
    }
}

/// Where an answer's body ends, followed through the bytes as they pass.
/// The client parses the same bytes, so anything the gateway would read
/// differently from a strict HTTP/1.1 reader (a chunk not followed by CRLF,
/// a bare LF, an over-long size line) breaks the body instead of being
/// passed on: the client's connection then ends rather than desyncing.
struct BodyCursor {
    state: Cursor,
}

enum Cursor {
    /// Bytes left of a sized body, or of a chunk's data.
    Remaining(u64, Then),
    /// After a chunk's data: how much of its CRLF has passed (0 or 1).
    ChunkEnd(u8),
    /// Reading a chunk-size line (its bytes so far, bounded).
    SizeLine(Vec<u8>),
    /// Reading trailer lines: the bytes of the current line so far.
    Trailers(Vec<u8>),
    UntilClose,
    Done,
    /// The app broke the framing it announced.
    Broken,
}

#[derive(Clone, Copy)]
enum Then {
    Done,
    ChunkEnd,
}

/// The longest chunk-size or trailer line followed.
const MAX_LINE: usize = 4096;

impl BodyCursor {
    fn new(framing: Framing) -> Self {
        let state = match framing {
            Framing::Length(0) => Cursor::Done,
            Framing::Length(n) => Cursor::Remaining(n, Then::Done),
            Framing::Chunked => Cursor::SizeLine(Vec::new()),
            Framing::UntilClose => Cursor::UntilClose,
        };
        Self { state }
    }

    fn done(&self) -> bool {
        matches!(self.state, Cursor::Done)
    }

    fn broken(&self) -> bool {
        matches!(self.state, Cursor::Broken)
    }

    /// How many bytes at the start of `buf` belong to the body (all of them
    /// up to its end, or up to where its framing broke).
    fn take(&mut self, buf: &[u8]) -> usize {
        let mut used = 0;
        while used < buf.len() {
            match &mut self.state {
                Cursor::Done | Cursor::Broken => break,
                Cursor::UntilClose => used = buf.len(),
                Cursor::Remaining(left, then) => {
                    let n = (*left).min((buf.len() - used) as u64);
                    *left -= n;
                    used += n as usize;
                    if *left == 0 {
                        self.state = match then {
                            Then::Done => Cursor::Done,
                            Then::ChunkEnd => Cursor::ChunkEnd(0),
                        };
                    }
                }
                Cursor::ChunkEnd(seen) => {
                    let want = if *seen == 0 { b'\r' } else { b'\n' };
                    if buf[used] != want {
                        self.state = Cursor::Broken;
                        break;
                    }
                    used += 1;
                    self.state = if *seen == 0 {
                        Cursor::ChunkEnd(1)
                    } else {
                        Cursor::SizeLine(Vec::new())
                    };
                }
                Cursor::SizeLine(line) | Cursor::Trailers(line) => {
                    let byte = buf[used];
                    line.push(byte);
                    if byte != b'\n' {
                        if line.len() > MAX_LINE {
                            self.state = Cursor::Broken;
                            break;
                        }
                        used += 1;
                        continue;
                    }
                    if !line.ends_with(b"\r\n") {
                        // A bare LF: readers disagree on it.
                        self.state = Cursor::Broken;
                        break;
                    }
                    used += 1;
                    let line = std::mem::take(line);
                    self.state = match &self.state {
                        // A size line without a digit (httparse reads it
                        // as 0, hyper refuses it): broken.
                        Cursor::SizeLine(_) if !line[0].is_ascii_hexdigit() => Cursor::Broken,
                        Cursor::SizeLine(_) => match httparse::parse_chunk_size(&line) {
                            Ok(httparse::Status::Complete((n, 0))) if n == line.len() => {
                                Cursor::Trailers(Vec::new())
                            }
                            Ok(httparse::Status::Complete((n, size))) if n == line.len() => {
                                Cursor::Remaining(size, Then::ChunkEnd)
                            }
                            _ => Cursor::Broken,
                        },
                        _ if line == b"\r\n" => Cursor::Done,
                        _ => Cursor::Trailers(Vec::new()),
                    };
                }
            }
        }
        used
    }
}

/// The gateway's own answer, as the request path writes it (JSON).
fn error_response(err: &ApiError, request_id: &HeaderValue, close: bool) -> Vec<u8> {
    let body = err.body();
    let mut out = Vec::with_capacity(body.len() + 256);
    let status = err.status;
    out.extend_from_slice(
        format!(
            "HTTP/1.1 {} {}\r\n",
            status.as_u16(),
            status.canonical_reason().unwrap_or("")
        )
        .as_bytes(),
    );
    push_field(&mut out, b"content-type", b"application/json");
    push_field(
        &mut out,
        b"content-length",
        body.len().to_string().as_bytes(),
    );
    if let Some(secs) = err.retry_after_secs() {
        push_field(&mut out, b"retry-after", secs.to_string().as_bytes());
    }
    push_field(&mut out, b"x-request-id", request_id.as_bytes());
    if close {
        push_field(&mut out, b"connection", b"close");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body.as_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_targets_and_hosts_are_taken_and_the_rest_left_to_hyper() {
        assert_eq!(
            split_target("/run/a/x?y=1&z"),
            Some(("/run/a/x", Some("y=1&z")))
        );
        assert_eq!(split_target("/a?b?c"), Some(("/a", Some("b?c"))));
        assert_eq!(split_target("/%2e%2e/x"), Some(("/%2e%2e/x", None)));
        // As long as hyper takes (`414` beyond), no longer.
        let long = format!("/{}", "a".repeat(65533));
        assert_eq!(split_target(&long).map(|(p, _)| p.len()), Some(65534));
        assert_eq!(split_target(&format!("{long}a")), None);
        for other in [
            "/a#frag",
            "*",
            "http://h/a",
            "/a b",
            "/a\"b",
            "/\u{e9}",
            "/a{b}",
            "",
        ] {
            assert_eq!(split_target(other), None, "{other:?}");
        }
        assert_eq!(host_name(b"app.example:8080"), Some("app.example"));
        assert_eq!(host_name(b"App.Example"), Some("App.Example"));
        assert_eq!(host_name(b"127.0.0.1"), Some("127.0.0.1"));
        assert_eq!(host_name(b""), Some(""));
        for other in [
            &b"[::1]:80"[..],
            b"user@host",
            b"host:port",
            b"h:123456",
            b":80",
            b"a b",
            b"\xff",
        ] {
            assert_eq!(host_name(other), None, "{other:?}");
        }
    }

    fn through(framing: Framing, pieces: &[&[u8]]) -> (usize, bool) {
        let mut cursor = BodyCursor::new(framing);
        let mut used = 0;
        for piece in pieces {
            used += cursor.take(piece);
        }
        (used, cursor.done())
    }

    #[test]
    fn chunked_bodies_end_where_their_last_chunk_does() {
        let body: &[u8] = b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nx-trailer: 1\r\n\r\n";
        assert_eq!(through(Framing::Chunked, &[body]), (body.len(), true));
        // The same, a byte at a time, with bytes after its end left alone.
        let mut cursor = BodyCursor::new(Framing::Chunked);
        let mut used = 0;
        let mut with_more = body.to_vec();
        with_more.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
        for byte in &with_more {
            used += cursor.take(std::slice::from_ref(byte));
        }
        assert_eq!(used, body.len());
        assert!(cursor.done());
        // Not done before the final empty line.
        assert_eq!(through(Framing::Chunked, &[b"0\r\n"]), (3, false));
    }

    #[test]
    fn chunked_bodies_that_break_their_framing_are_not_followed() {
        let broken = |body: &[u8]| {
            let mut cursor = BodyCursor::new(Framing::Chunked);
            let used = cursor.take(body);
            assert!(cursor.broken(), "{}", String::from_utf8_lossy(body));
            used
        };
        // Data running past its chunk's size: nothing after the size is taken.
        assert_eq!(broken(b"2\r\nokHTTP/1.1 200 OK\r\n\r\n"), 5);
        // Bare LF after a size, after data, after the last chunk.
        broken(b"2\nok\r\n0\r\n\r\n");
        broken(b"2\r\nok\n0\r\n\r\n");
        broken(b"2\r\nok\r\n0\r\n\n");
        // A size that is not hexadecimal, an endless size line.
        broken(b"zz\r\n");
        broken(&[b'1'; MAX_LINE + 2]);
        // A byte at a time breaks at the same place.
        let mut cursor = BodyCursor::new(Framing::Chunked);
        let used: usize = b"2\r\nokXY"
            .iter()
            .map(|b| cursor.take(std::slice::from_ref(b)))
            .sum();
        assert!(cursor.broken());
        assert_eq!(used, 5);
    }

    #[test]
    fn sized_bodies_end_at_their_length() {
        assert_eq!(through(Framing::Length(4), &[b"ab", b"cdef"]), (4, true));
        assert_eq!(through(Framing::Length(4), &[b"ab"]), (2, false));
        assert_eq!(through(Framing::UntilClose, &[b"ab", b"cd"]), (4, false));
    }

    fn how(head: bool, close: bool) -> How {
        How {
            head,
            close,
            repeatable: true,
            idempotent: true,
        }
    }

    #[test]
    fn answer_heads_are_framed_and_cleaned() {
        let id = HeaderValue::from_static("ours");
        let raw = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive, x-secret\r\nX-Secret: 1\r\nX-Request-Id: theirs\r\nX-Kept: 1\r\n\r\nok";
        let answer = Answer::parse(raw, how(false, true), &id, &mut Vec::new())
            .unwrap()
            .unwrap();
        assert_eq!(answer.framing, Framing::Length(2));
        assert!(answer.reusable && answer.close);
        assert_eq!(answer.head_len, raw.len() - 2);
        let text = String::from_utf8(answer.head).unwrap().to_ascii_lowercase();
        assert!(text.starts_with("http/1.1 200 ok\r\n"), "{text}");
        assert!(text.ends_with("\r\n\r\n"), "{text}");
        assert!(text.contains("content-length: 2\r\n"));
        assert!(text.contains("x-kept: 1\r\n"));
        assert!(text.contains("x-request-id: ours\r\n"));
        assert!(text.contains("connection: close\r\n"));
        assert!(!text.contains("x-secret"), "{text}");
        assert!(!text.contains("theirs"), "{text}");
        assert!(!text.contains("keep-alive"), "{text}");

        // A HEAD request's answer has no body, whatever its fields say.
        let answer = Answer::parse(raw, how(true, false), &id, &mut Vec::new())
            .unwrap()
            .unwrap();
        assert_eq!(answer.framing, Framing::Length(0));
        assert!(!answer.close);

        let chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 9\r\n\r\n";
        let answer = Answer::parse(chunked, how(false, false), &id, &mut Vec::new())
            .unwrap()
            .unwrap();
        assert_eq!(answer.framing, Framing::Chunked);
        let text = String::from_utf8(answer.head).unwrap();
        assert!(text.contains("transfer-encoding: chunked\r\n"));
        assert!(
            !text.to_ascii_lowercase().contains("content-length"),
            "{text}"
        );
        assert!(!text.contains("connection: close"), "{text}");

        // No length: the body runs to the end of the connection, which then
        // ends on the client's side too.
        let until_close = b"HTTP/1.0 200 OK\r\n\r\n";
        let answer = Answer::parse(until_close, how(false, false), &id, &mut Vec::new())
            .unwrap()
            .unwrap();
        assert_eq!(answer.framing, Framing::UntilClose);
        assert!(!answer.reusable && answer.close);

        let interim = b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n";
        let answer = Answer::parse(interim, how(false, false), &id, &mut Vec::new())
            .unwrap()
            .unwrap();
        assert_eq!((answer.status, answer.head_len), (103, interim.len()));
        assert!(answer.head.is_empty());

        let disagree = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n";
        assert!(Answer::parse(disagree, how(false, false), &id, &mut Vec::new()).is_err());
        // The app cannot have its length dropped: the gateway writes it.
        let unframed =
            b"HTTP/1.1 200 OK\r\nConnection: Content-Length\r\nContent-Length: 2\r\n\r\n";
        let answer = Answer::parse(unframed, how(false, false), &id, &mut Vec::new())
            .unwrap()
            .unwrap();
        assert_eq!(answer.framing, Framing::Length(2));
        let text = String::from_utf8(answer.head).unwrap();
        assert_eq!(text.matches("content-length: 2\r\n").count(), 1, "{text}");
        let partial = b"HTTP/1.1 200 OK\r\nContent-";
        assert!(
            Answer::parse(partial, how(false, false), &id, &mut Vec::new())
                .unwrap()
                .is_none()
        );
    }
}
