//! Header rules of a proxy (RFC 9110 §7.6): hop-by-hop fields removed in
//! both directions, including those the `Connection` field names; the
//! `X-Forwarded-*` fields set by the gateway alone; a request id on every
//! request and response.

use http::{header, HeaderMap, HeaderName, HeaderValue};
use std::net::IpAddr;

pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
pub static X_BERTH_KEY: HeaderName = HeaderName::from_static("x-berth-key");
static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// Fields that describe one connection, never forwarded.
fn hop_by_hop() -> [&'static HeaderName; 8] {
    [
        &header::CONNECTION,
        &KEEP_ALIVE,
        &PROXY_CONNECTION,
        &header::PROXY_AUTHENTICATE,
        &header::PROXY_AUTHORIZATION,
        &header::TE,
        &header::TRAILER,
        &header::TRANSFER_ENCODING,
    ]
}

/// Fields that frame or route a message. A `Connection` token never removes
/// them: RFC 9110 §7.6.1 lets a sender name only hop-by-hop fields there, and
/// a proxy that obeyed `Connection: content-length` would forward a body it
/// no longer frames — the rest of the bytes read as a request nobody checked.
/// The gateway writes a message's framing itself from what it sends.
const NEVER_NAMED: [&str; 3] = ["content-length", "transfer-encoding", "host"];

/// Whether a `Connection` token naming `name` removes that field.
pub fn connection_may_remove(name: &str) -> bool {
    !NEVER_NAMED.iter().any(|n| n.eq_ignore_ascii_case(name))
}

/// Whether the field `name` goes because one of the `Connection` field's
/// `tokens` names it (never a framing or routing field).
pub fn named_by_connection(name: &str, tokens: &[&str]) -> bool {
    connection_may_remove(name) && tokens.iter().any(|t| t.eq_ignore_ascii_case(name))
}

/// Whether the request asks to switch protocols (WebSocket and friends).
pub fn wants_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
        && headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
}

/// Removes hop-by-hop fields and every field `Connection` names. When
/// `keep_upgrade`, `Connection: upgrade` and `Upgrade` stay (the handshake
/// must reach the other side).
pub fn strip_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter(|t| connection_may_remove(t.trim()))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .collect();
    for name in named {
        if keep_upgrade && name == header::UPGRADE {
            continue;
        }
        headers.remove(&name);
    }
    for name in hop_by_hop() {
        headers.remove(name);
    }
    if keep_upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    } else {
        headers.remove(header::UPGRADE);
    }
}

/// Sets `X-Forwarded-For/-Proto/-Host` from what the gateway saw, dropping
/// whatever the client sent in them (and in `Forwarded`).
pub fn set_forwarded(headers: &mut HeaderMap, client: IpAddr, https: bool, host: Option<&str>) {
    headers.remove(header::FORWARDED);
    headers.insert(
        X_FORWARDED_FOR.clone(),
        HeaderValue::from_str(&client.to_string()).expect("an IP address is a valid header"),
    );
    headers.insert(
        X_FORWARDED_PROTO.clone(),
        HeaderValue::from_static(if https { "https" } else { "http" }),
    );
    headers.remove(&X_FORWARDED_HOST);
    if let Some(value) = host.and_then(|h| HeaderValue::from_str(h).ok()) {
        headers.insert(X_FORWARDED_HOST.clone(), value);
    }
}

/// A request's header fields as the request path reads them: hyper's
/// [`HeaderMap`], or the fields of a head parsed by the HTTP/1 fast path.
pub trait Fields {
    /// The first value of the field `name` (lowercase).
    fn field(&self, name: &str) -> Option<&[u8]>;
}

impl Fields for HeaderMap {
    fn field(&self, name: &str) -> Option<&[u8]> {
        self.get(name).map(HeaderValue::as_bytes)
    }
}

impl Fields for [httparse::Header<'_>] {
    fn field(&self, name: &str) -> Option<&[u8]> {
        self.iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value)
    }
}

/// The client's request id when it is sane (at most 128 visible ASCII
/// characters), else a new one.
pub fn request_id(headers: &(impl Fields + ?Sized)) -> HeaderValue {
    headers
        .field("x-request-id")
        .filter(|b| !b.is_empty() && b.len() <= 128 && b.iter().all(|c| c.is_ascii_graphic()))
        .and_then(|b| HeaderValue::from_bytes(b).ok())
        .unwrap_or_else(|| {
            // A random (v4) UUID from a fast user-space generator: no
            // system call per request.
            let id = uuid::Builder::from_random_bytes(fastrand::u128(..).to_le_bytes()).into_uuid();
            let mut text = [0u8; uuid::fmt::Hyphenated::LENGTH];
            HeaderValue::from_bytes(id.hyphenated().encode_lower(&mut text).as_bytes())
                .expect("a UUID is a valid header")
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_and_named_fields_go() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, "keep-alive, X-Secret".parse().unwrap());
        h.insert("x-secret", "1".parse().unwrap());
        h.insert("keep-alive", "timeout=5".parse().unwrap());
        h.insert(header::TRANSFER_ENCODING, "chunked".parse().unwrap());
        h.insert(header::UPGRADE, "websocket".parse().unwrap());
        h.insert("x-kept", "1".parse().unwrap());
        strip_hop_by_hop(&mut h, false);
        assert_eq!(h.len(), 1, "{h:?}");
        assert!(h.contains_key("x-kept"));
    }

    #[test]
    fn connection_tokens_never_remove_framing_or_routing_fields() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            "Content-Length, HOST, keep-alive".parse().unwrap(),
        );
        h.insert(header::CONTENT_LENGTH, "5".parse().unwrap());
        h.insert(header::HOST, "app.example".parse().unwrap());
        strip_hop_by_hop(&mut h, false);
        assert_eq!(h[header::CONTENT_LENGTH], "5");
        assert_eq!(h[header::HOST], "app.example");
        assert!(named_by_connection("x-secret", &["X-Secret"]));
        assert!(!named_by_connection("Content-Length", &["content-length"]));
        assert!(!named_by_connection(
            "transfer-encoding",
            &["Transfer-Encoding"]
        ));
    }

    #[test]
    fn upgrade_survives_when_asked() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, "Upgrade".parse().unwrap());
        h.insert(header::UPGRADE, "websocket".parse().unwrap());
        assert!(wants_upgrade(&h));
        strip_hop_by_hop(&mut h, true);
        assert_eq!(h[header::UPGRADE], "websocket");
        assert_eq!(h[header::CONNECTION], "upgrade");
    }

    #[test]
    fn forwarded_fields_are_replaced() {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", "6.6.6.6".parse().unwrap());
        h.insert("x-forwarded-host", "evil".parse().unwrap());
        h.insert(header::FORWARDED, "for=6.6.6.6".parse().unwrap());
        set_forwarded(
            &mut h,
            "10.0.0.1".parse().unwrap(),
            false,
            Some("app.example"),
        );
        assert_eq!(h["x-forwarded-for"], "10.0.0.1");
        assert_eq!(h["x-forwarded-host"], "app.example");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert!(!h.contains_key(header::FORWARDED));
    }

    #[test]
    fn request_ids_are_kept_when_sane() {
        let mut h = HeaderMap::new();
        h.insert("x-request-id", "abc-123".parse().unwrap());
        assert_eq!(request_id(&h), "abc-123");
        h.insert("x-request-id", "a b".parse().unwrap());
        assert_ne!(request_id(&h), "a b");
    }
}
