//! Routes from a JSON file instead of the control plane: for a gateway in
//! front of fixed upstreams (benchmarks, tests, a single host without
//! Berth's scheduler).
//!
//! ```json
//! {
//!   "apps": [{ "id": "echo", "tenant": "default", "hostname": "echo.local",
//!              "backends": ["127.0.0.1:9000"], "request_timeout_ms": 30000,
//!              "max_body_bytes": 104857600 }],
//!   "keys": [{ "id": "k1", "tenant": "default", "key": "berth_…",
//!              "rate_per_second": 100, "burst": 200 }]
//! }
//! ```
//! A key is given as `key` (hashed on load) or as `key_sha256` plus `prefix`.

use berth_proto::{domain::API_KEY_SHOWN_LEN, pb};
use serde::Deserialize;
use std::{net::SocketAddr, path::Path};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    apps: Vec<StaticApp>,
    #[serde(default)]
    keys: Vec<StaticKey>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StaticApp {
    id: String,
    #[serde(default = "default_tenant")]
    tenant: String,
    #[serde(default)]
    hostname: String,
    backends: Vec<SocketAddr>,
    #[serde(default = "default_timeout")]
    request_timeout_ms: u32,
    #[serde(default = "default_max_body")]
    max_body_bytes: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StaticKey {
    id: String,
    #[serde(default = "default_tenant")]
    tenant: String,
    key: Option<String>,
    key_sha256: Option<String>,
    prefix: Option<String>,
    #[serde(default)]
    admin: bool,
    #[serde(default = "default_rate")]
    rate_per_second: f64,
    #[serde(default = "default_burst")]
    burst: u32,
}

fn default_tenant() -> String {
    "default".into()
}
fn default_timeout() -> u32 {
    30_000
}
fn default_max_body() -> u64 {
    100 << 20
}
fn default_rate() -> f64 {
    100.0
}
fn default_burst() -> u32 {
    200
}

/// Reads `path` into one snapshot update.
pub fn load(path: &Path) -> anyhow::Result<pb::RouteUpdate> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))?;
    let file: File =
        serde_json::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let apps = file
        .apps
        .into_iter()
        .map(|a| pb::AppRoute {
            backends: a
                .backends
                .iter()
                .enumerate()
                .map(|(i, addr)| pb::Backend {
                    instance_id: format!("{}-{i}", a.id),
                    node_name: "static".into(),
                    address: addr.ip().to_string(),
                    host_port: u32::from(addr.port()),
                })
                .collect(),
            name: a.id.clone(),
            app_id: a.id,
            tenant: a.tenant,
            app_hostname: a.hostname,
            state: pb::AppState::Running as i32,
            min_instances: 1,
            request_timeout_ms: a.request_timeout_ms.max(1),
            max_body_bytes: a.max_body_bytes,
            stopped: false,
        })
        .collect();
    let keys = file
        .keys
        .into_iter()
        .map(|k| {
            let (prefix, key_hash) = match (k.key, k.key_sha256, k.prefix) {
                (Some(key), None, None) => {
                    anyhow::ensure!(
                        key.len() > API_KEY_SHOWN_LEN,
                        "key {}: longer than {API_KEY_SHOWN_LEN} characters expected",
                        k.id
                    );
                    let hash: String = crate::routes::hash_key(&key)
                        .iter()
                        .map(|b| format!("{b:02x}"))
                        .collect();
                    (key[..API_KEY_SHOWN_LEN].to_owned(), hash)
                }
                (None, Some(hash), Some(prefix)) => (prefix, hash),
                _ => anyhow::bail!("key {}: give either key, or key_sha256 and prefix", k.id),
            };
            Ok(pb::GatewayKey {
                id: k.id,
                tenant: k.tenant,
                prefix,
                key_hash,
                admin: k.admin,
                role: pb::KeyRole::Unspecified.into(),
                rate_per_second: k.rate_per_second,
                burst: k.burst,
            })
        })
        .collect::<anyhow::Result<_>>()?;
    Ok(pb::RouteUpdate {
        snapshot: true,
        apps,
        keys,
        ..Default::default()
    })
}
