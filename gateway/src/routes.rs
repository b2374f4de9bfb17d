//! The gateway's route table: apps, their backends with balancing and
//! breaker state, and API keys with their rate limiters.
//!
//! The table is replaced whole on every update from the control plane
//! (readers clone an `Arc`), but the per-instance and per-key state is
//! carried over by id, so an update never resets in-flight counts, breakers
//! or token buckets.

use berth_proto::{
    domain::{KeyRole, ANONYMOUS_TENANT},
    pb,
};
use governor::{clock::DefaultClock, state::InMemoryState, state::NotKeyed, Quota, RateLimiter};
use std::{
    collections::HashMap,
    net::SocketAddr,
    num::NonZeroU32,
    sync::{
        atomic::{AtomicU64, AtomicUsize, Ordering},
        Arc, Mutex, RwLock,
    },
    time::{Duration, Instant},
};
use subtle::ConstantTimeEq;
use tokio::sync::watch;
use zeroize::{Zeroize, Zeroizing};

/// Breaker of one instance.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Breaker {
    Closed {
        failures: u32,
    },
    /// No traffic until `until`; then one probe. `refused`: opened because
    /// the instance refused a connection (it is likely gone).
    Open {
        until: Instant,
        cooldown: Duration,
        refused: bool,
    },
    /// One probe is in flight; its outcome closes or reopens the breaker.
    HalfOpen {
        cooldown: Duration,
    },
}

/// Breaker tuning.
#[derive(Debug, Clone, Copy)]
pub struct BreakerPolicy {
    /// Failures in a row that open the breaker.
    pub failures: u32,
    /// First open period; doubles on each failed probe up to `max_cooldown`.
    pub cooldown: Duration,
    pub max_cooldown: Duration,
}

/// One running instance as the gateway sees it.
#[derive(Debug)]
pub struct Backend {
    pub instance_id: String,
    pub node_name: String,
    /// `address:port` to dial.
    pub authority: String,
    pub uri_authority: http::uri::Authority,
    pub in_flight: AtomicUsize,
    breaker: Mutex<Breaker>,
}

/// What [`Backend::admit`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Yes,
    /// This request is the half-open probe.
    Probe,
    No,
}

impl Backend {
    fn new(b: &pb::Backend) -> Self {
        let authority = match b.address.parse::<std::net::IpAddr>() {
            Ok(ip) => SocketAddr::new(ip, b.host_port as u16).to_string(),
            Err(_) => format!("{}:{}", b.address, b.host_port),
        };
        let uri_authority = authority
            .parse()
            .unwrap_or_else(|_| http::uri::Authority::from_static("invalid.invalid:1"));
        Self {
            instance_id: b.instance_id.clone(),
            node_name: b.node_name.clone(),
            uri_authority,
            authority,
            in_flight: AtomicUsize::new(0),
            breaker: Mutex::new(Breaker::Closed { failures: 0 }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Breaker> {
        self.breaker.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether the breaker lets a request through now (without taking it).
    pub fn available(&self, now: Instant) -> bool {
        match *self.lock() {
            Breaker::Closed { .. } => true,
            Breaker::Open { until, .. } => now >= until,
            Breaker::HalfOpen { .. } => false,
        }
    }

    /// Takes a slot: an open breaker past its period lets one probe through.
    pub fn admit(&self, now: Instant) -> Admission {
        let mut breaker = self.lock();
        match *breaker {
            Breaker::Closed { .. } => Admission::Yes,
            Breaker::Open {
                until, cooldown, ..
            } if now >= until => {
                *breaker = Breaker::HalfOpen { cooldown };
                Admission::Probe
            }
            _ => Admission::No,
        }
    }

    /// A response came back (any status): the instance is alive.
    pub fn succeeded(&self) {
        *self.lock() = Breaker::Closed { failures: 0 };
    }

    /// A transport failure or timeout. Returns whether the breaker opened.
    pub fn failed(&self, policy: &BreakerPolicy, now: Instant) -> bool {
        let mut breaker = self.lock();
        let next = match *breaker {
            Breaker::Closed { failures } if failures + 1 < policy.failures => Breaker::Closed {
                failures: failures + 1,
            },
            Breaker::Closed { .. } => Breaker::Open {
                until: now + policy.cooldown,
                cooldown: policy.cooldown,
                refused: false,
            },
            Breaker::HalfOpen { cooldown } | Breaker::Open { cooldown, .. } => {
                let cooldown = (cooldown * 2).min(policy.max_cooldown);
                Breaker::Open {
                    until: now + cooldown,
                    cooldown,
                    refused: false,
                }
            }
        };
        *breaker = next;
        matches!(next, Breaker::Open { .. })
    }

    /// The instance refused a connection: no traffic for `period`.
    pub fn eject(&self, period: Duration, now: Instant) {
        *self.lock() = Breaker::Open {
            until: now + period,
            cooldown: period,
            refused: true,
        };
    }

    /// Ejected for refusing a connection, and still out.
    pub fn refusing(&self, now: Instant) -> bool {
        matches!(*self.lock(), Breaker::Open { until, refused: true, .. } if now < until)
    }

    /// `closed`, `open` or `half_open`, for tests and diagnostics.
    pub fn breaker_state(&self) -> &'static str {
        match *self.lock() {
            Breaker::Closed { .. } => "closed",
            Breaker::Open { .. } => "open",
            Breaker::HalfOpen { .. } => "half_open",
        }
    }
}

/// An app and where it runs.
pub struct App {
    pub route: pb::AppRoute,
    pub backends: Vec<Arc<Backend>>,
    metrics: std::sync::OnceLock<crate::metrics::AppMetrics>,
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App")
            .field("route", &self.route)
            .field("backends", &self.backends)
            .finish_non_exhaustive()
    }
}

impl App {
    /// This app's metric handles, made on first use.
    pub fn metrics(&self, metrics: &crate::metrics::Metrics) -> &crate::metrics::AppMetrics {
        self.metrics
            .get_or_init(|| metrics.for_app(&self.route.app_id))
    }

    /// Every instance refused connections lately (or there is none): the
    /// app is likely scaling or moving, and a fresh route is worth waiting for.
    pub fn unreachable(&self, now: Instant) -> bool {
        self.backends.iter().all(|b| b.refusing(now))
    }

    pub fn timeout(&self) -> Duration {
        Duration::from_millis(u64::from(self.route.request_timeout_ms.max(1)))
    }

    /// Power of two choices on in-flight requests among the backends whose
    /// breaker admits traffic, skipping `tried`.
    pub fn pick(&self, tried: &[usize], now: Instant) -> Option<(usize, Admission)> {
        // Two of the candidates drawn evenly in one pass (a reservoir of
        // two), nothing allocated; the less loaded one is taken.
        let mut drawn = [usize::MAX; 2];
        let mut seen = 0;
        for i in 0..self.backends.len() {
            if tried.contains(&i) || !self.backends[i].available(now) {
                continue;
            }
            if seen < 2 {
                drawn[seen] = i;
            } else if fastrand::usize(..=seen) < 2 {
                drawn[fastrand::usize(..2)] = i;
            }
            seen += 1;
        }
        let chosen = match seen {
            0 => return None,
            1 => drawn[0],
            _ => {
                // The pair in random order, so that a tie goes either way.
                if fastrand::bool() {
                    drawn.swap(0, 1);
                }
                let load = |i: usize| self.backends[i].in_flight.load(Ordering::Relaxed);
                if load(drawn[1]) < load(drawn[0]) {
                    drawn[1]
                } else {
                    drawn[0]
                }
            }
        };
        match self.backends[chosen].admit(now) {
            Admission::No => None,
            admission => Some((chosen, admission)),
        }
    }
}

type Limiter = RateLimiter<NotKeyed, InMemoryState, DefaultClock>;

/// An API key as checked here: the hash, and its token bucket.
pub struct Key {
    pub id: String,
    pub tenant: String,
    pub prefix: String,
    pub role: KeyRole,
    hash: [u8; 32],
    rate: (u64, u32),
    limiter: Limiter,
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Key")
            .field("id", &self.id)
            .field("tenant", &self.tenant)
            .field("prefix", &self.prefix)
            .field("role", &self.role)
            .finish_non_exhaustive()
    }
}

fn quota(rate_per_second: f64, burst: u32) -> Quota {
    let rate = if rate_per_second.is_finite() && rate_per_second > 0.0 {
        rate_per_second
    } else {
        1.0
    };
    let period = Duration::from_secs_f64(1.0 / rate).max(Duration::from_nanos(1));
    let burst = NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN);
    Quota::with_period(period)
        .expect("period is above zero")
        .allow_burst(burst)
}

fn parse_hash(hex: &str) -> Option<[u8; 32]> {
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(i * 2..i * 2 + 2)?, 16).ok()?;
    }
    Some(out)
}

impl Key {
    fn new(k: &pb::GatewayKey) -> Option<Self> {
        Some(Self {
            id: k.id.clone(),
            tenant: k.tenant.clone(),
            prefix: k.prefix.clone(),
            // A role this build does not know: the key is not taken.
            role: KeyRole::from_wire(k.role, k.admin).ok()?,
            hash: parse_hash(&k.key_hash)?,
            rate: (k.rate_per_second.to_bits(), k.burst),
            limiter: RateLimiter::direct(quota(k.rate_per_second, k.burst)),
        })
    }

    /// Who runs code without a key (`--open-executions`): tenant
    /// [`ANONYMOUS_TENANT`] (which no key belongs to), with a rate limit of
    /// its own shared by every anonymous caller.
    pub fn anonymous(rate_per_second: f64, burst: u32) -> Self {
        Self {
            id: "anonymous".into(),
            tenant: ANONYMOUS_TENANT.into(),
            prefix: String::new(),
            role: KeyRole::Invoker,
            // No presented key hashes to this: it is never looked up.
            hash: [0; 32],
            rate: (rate_per_second.to_bits(), burst),
            limiter: RateLimiter::direct(quota(rate_per_second, burst)),
        }
    }

    /// Whether the key reaches every tenant (its apps and executions).
    pub fn admin(&self) -> bool {
        self.role == KeyRole::Admin
    }

    /// Takes a token; on refusal, how long until one is available.
    pub fn check_rate(&self) -> Result<(), Duration> {
        use governor::clock::Clock;
        self.limiter
            .check()
            .map_err(|not_until| not_until.wait_time_from(DefaultClock::default().now()))
    }
}

/// SHA-256 of a presented key.
pub fn hash_key(key: &str) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(key.as_bytes()).into()
}

/// The maps looked up on every request: a fast hash with a seed of the
/// process's own (std's SipHash costs several times as much for names this
/// short).
pub type Map<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// One version of the table.
#[derive(Debug, Default)]
pub struct Table {
    pub apps: Map<String, Arc<App>>,
    /// Host name (lowercase) → app id.
    pub hosts: Map<String, String>,
    /// Shown prefix → keys with it.
    pub keys_by_prefix: Map<String, Vec<Arc<Key>>>,
    pub keys: HashMap<String, Arc<Key>>,
}

impl Table {
    /// The key `presented` is, if any: found by its prefix, then its hash
    /// compared in constant time with every key of that prefix.
    pub fn key(&self, presented: &str) -> Option<Arc<Key>> {
        let prefix = presented.get(..berth_proto::domain::API_KEY_SHOWN_LEN)?;
        let candidates = self.keys_by_prefix.get(prefix)?;
        let hash = hash_key(presented);
        let mut found = None;
        for key in candidates {
            if bool::from(key.hash.ct_eq(&hash)) {
                found = Some(key.clone());
            }
        }
        found
    }

    /// [`Table::key`] through `memo`: the key a kept connection presented
    /// last is not hashed again while the table is the same version.
    pub fn key_memo(&self, version: u64, presented: &str, memo: &mut KeyMemo) -> Option<Arc<Key>> {
        if let Some((seen, bytes, key)) = &memo.last {
            if *seen == version
                && bytes.len() == presented.len()
                && bool::from(bytes.as_slice().ct_eq(presented.as_bytes()))
            {
                return Some(key.clone());
            }
        }
        let key = self.key(presented)?;
        let mut bytes = memo.last.take().map(|(_, b, _)| b).unwrap_or_default();
        bytes.zeroize();
        bytes.extend_from_slice(presented.as_bytes());
        memo.last = Some((version, bytes, key.clone()));
        Some(key)
    }

    pub fn app_by_host(&self, host: &str) -> Option<Arc<App>> {
        let id = self.hosts.get(host)?;
        self.apps.get(id).cloned()
    }
}

/// The key one client connection presented last, with the version of the
/// table it was found in (versions only grow: a revoked or changed key is
/// in no later version as it was). The key's bytes are wiped when replaced
/// or dropped.
#[derive(Default)]
pub struct KeyMemo {
    last: Option<(u64, Zeroizing<Vec<u8>>, Arc<Key>)>,
}

/// The shared, updatable table plus a version that waiters watch.
#[derive(Clone)]
pub struct Routes {
    table: Arc<RwLock<Arc<Table>>>,
    version: Arc<watch::Sender<u64>>,
    /// The version again, readable without a lock (after the table it counts).
    changes: Arc<AtomicU64>,
    /// False until the first snapshot arrived.
    synced: Arc<watch::Sender<bool>>,
}

impl Default for Routes {
    fn default() -> Self {
        Self {
            table: Arc::default(),
            version: Arc::new(watch::channel(0).0),
            changes: Arc::default(),
            synced: Arc::new(watch::channel(false).0),
        }
    }
}

impl Routes {
    pub fn current(&self) -> Arc<Table> {
        self.table.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The current table and its version, kept in `cache` (one per
    /// connection) until the table changes: no lock taken and no count
    /// shared between threads touched per request.
    pub fn cached<'c>(&self, cache: &'c mut Option<(u64, Arc<Table>)>) -> (u64, &'c Table) {
        let version = self.changes.load(Ordering::Acquire);
        if cache.as_ref().is_none_or(|(seen, _)| *seen != version) {
            *cache = Some((version, self.current()));
        }
        let (version, table) = cache.as_ref().expect("just set");
        (*version, table)
    }

    /// Notified after every change.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.version.subscribe()
    }

    pub fn is_synced(&self) -> bool {
        *self.synced.borrow()
    }

    /// Waits until the first snapshot was applied.
    pub async fn synced(&self) {
        let mut rx = self.synced.subscribe();
        let _ = rx.wait_for(|s| *s).await;
    }

    /// Applies one update from the control plane.
    pub fn apply(&self, update: &pb::RouteUpdate) {
        let old = self.current();
        let mut routes: HashMap<String, pb::AppRoute> = if update.snapshot {
            HashMap::new()
        } else {
            old.apps
                .iter()
                .map(|(id, app)| (id.clone(), app.route.clone()))
                .collect()
        };
        let mut keys: HashMap<String, Arc<Key>> = if update.snapshot {
            HashMap::new()
        } else {
            old.keys.clone()
        };
        for id in &update.removed_apps {
            routes.remove(id);
        }
        for route in &update.apps {
            routes.insert(route.app_id.clone(), route.clone());
        }
        for id in &update.removed_keys {
            keys.remove(id);
        }
        for key in &update.keys {
            // Keep the bucket of an unchanged key.
            let same = old.keys.get(&key.id).filter(|k| {
                k.rate == (key.rate_per_second.to_bits(), key.burst)
                    && KeyRole::from_wire(key.role, key.admin).ok() == Some(k.role)
                    && k.tenant == key.tenant
            });
            match same {
                Some(existing) => {
                    keys.insert(key.id.clone(), existing.clone());
                }
                None => match Key::new(key) {
                    Some(new) => {
                        keys.insert(key.id.clone(), Arc::new(new));
                    }
                    None => {
                        tracing::warn!(id = %key.id, "ignoring a key with a malformed hash");
                        keys.remove(&key.id);
                    }
                },
            }
        }
        // Backend state is kept per instance id across versions.
        let old_backends: HashMap<&str, &Arc<Backend>> = old
            .apps
            .values()
            .flat_map(|a| a.backends.iter())
            .map(|b| (b.instance_id.as_str(), b))
            .collect();
        let mut table = Table::default();
        for (id, route) in routes {
            let backends = route
                .backends
                .iter()
                .map(|b| {
                    let fresh = Backend::new(b);
                    match old_backends.get(b.instance_id.as_str()) {
                        Some(existing) if existing.authority == fresh.authority => {
                            Arc::clone(existing)
                        }
                        _ => Arc::new(fresh),
                    }
                })
                .collect();
            if !route.app_hostname.is_empty() {
                table
                    .hosts
                    .insert(route.app_hostname.to_ascii_lowercase(), id.clone());
            }
            table.apps.insert(
                id,
                Arc::new(App {
                    route,
                    backends,
                    metrics: std::sync::OnceLock::new(),
                }),
            );
        }
        for key in keys.values() {
            table
                .keys_by_prefix
                .entry(key.prefix.clone())
                .or_default()
                .push(key.clone());
        }
        table.keys = keys;
        *self.table.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(table);
        self.changes.fetch_add(1, Ordering::Release);
        self.version.send_modify(|v| *v += 1);
        if update.snapshot {
            self.synced.send_replace(true);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backend(id: &str, port: u32) -> pb::Backend {
        pb::Backend {
            instance_id: id.into(),
            node_name: "n1".into(),
            address: "127.0.0.1".into(),
            host_port: port,
        }
    }

    fn route(id: &str, backends: Vec<pb::Backend>) -> pb::AppRoute {
        pb::AppRoute {
            app_id: id.into(),
            tenant: "default".into(),
            name: id.into(),
            app_hostname: format!("{id}.example"),
            backends,
            ..Default::default()
        }
    }

    #[test]
    fn updates_keep_backend_state_and_remove_what_is_gone() {
        let routes = Routes::default();
        routes.apply(&pb::RouteUpdate {
            snapshot: true,
            apps: vec![
                route("a", vec![backend("i1", 1000), backend("i2", 1001)]),
                route("b", vec![]),
            ],
            ..Default::default()
        });
        let before = routes.current().apps["a"].backends[0].clone();
        before.in_flight.store(7, Ordering::Relaxed);
        routes.apply(&pb::RouteUpdate {
            apps: vec![route("a", vec![backend("i1", 1000)])],
            removed_apps: vec!["b".into()],
            ..Default::default()
        });
        let table = routes.current();
        assert_eq!(table.apps["a"].backends.len(), 1);
        assert_eq!(
            table.apps["a"].backends[0]
                .in_flight
                .load(Ordering::Relaxed),
            7
        );
        assert!(!table.apps.contains_key("b"));
        assert_eq!(table.app_by_host("a.example").unwrap().route.app_id, "a");
        // A snapshot replaces everything.
        routes.apply(&pb::RouteUpdate {
            snapshot: true,
            ..Default::default()
        });
        assert!(routes.current().apps.is_empty());
    }

    #[test]
    fn breaker_opens_after_failures_and_half_opens_after_cooldown() {
        let b = Backend::new(&backend("i1", 1));
        let policy = BreakerPolicy {
            failures: 3,
            cooldown: Duration::from_secs(1),
            max_cooldown: Duration::from_secs(8),
        };
        let t0 = Instant::now();
        assert!(!b.failed(&policy, t0));
        assert!(!b.failed(&policy, t0));
        assert!(b.failed(&policy, t0), "third failure opens");
        assert_eq!(b.admit(t0), Admission::No);
        let later = t0 + Duration::from_secs(1);
        assert_eq!(b.admit(later), Admission::Probe);
        assert_eq!(b.admit(later), Admission::No, "one probe at a time");
        assert!(b.failed(&policy, later), "a failed probe reopens");
        assert_eq!(
            b.admit(later + Duration::from_secs(1)),
            Admission::No,
            "cooldown doubled"
        );
        assert_eq!(b.admit(later + Duration::from_secs(2)), Admission::Probe);
        b.succeeded();
        assert_eq!(b.breaker_state(), "closed");
    }

    #[test]
    fn keys_match_by_hash_only() {
        let key = "berth_0123456789abcdef";
        let hash: String = hash_key(key).iter().map(|b| format!("{b:02x}")).collect();
        let routes = Routes::default();
        routes.apply(&pb::RouteUpdate {
            snapshot: true,
            keys: vec![pb::GatewayKey {
                id: "k1".into(),
                tenant: "t".into(),
                prefix: key[..berth_proto::domain::API_KEY_SHOWN_LEN].into(),
                key_hash: hash,
                rate_per_second: 1.0,
                burst: 2,
                ..Default::default()
            }],
            ..Default::default()
        });
        let table = routes.current();
        let found = table.key(key).expect("the key is known");
        assert_eq!(found.tenant, "t");
        assert!(
            table.key("berth_0123456789abcdee").is_none(),
            "same prefix, other key"
        );
        assert!(table.key("short").is_none());
        assert!(found.check_rate().is_ok());
        assert!(found.check_rate().is_ok());
        let wait = found.check_rate().expect_err("burst of two spent");
        assert!(wait > Duration::ZERO && wait <= Duration::from_secs(1));
    }

    fn gateway_key(key: &str, id: &str) -> pb::GatewayKey {
        pb::GatewayKey {
            id: id.into(),
            tenant: "t".into(),
            prefix: key[..berth_proto::domain::API_KEY_SHOWN_LEN].into(),
            key_hash: hash_key(key).iter().map(|b| format!("{b:02x}")).collect(),
            rate_per_second: 100.0,
            burst: 100,
            ..Default::default()
        }
    }

    #[test]
    fn a_remembered_key_holds_for_its_table_version_only() {
        let (one, two) = ("berth_0123456789abcdef", "berth_0123456789abcdee");
        let routes = Routes::default();
        routes.apply(&pb::RouteUpdate {
            snapshot: true,
            keys: vec![gateway_key(one, "k1"), gateway_key(two, "k2")],
            ..Default::default()
        });
        let mut cache = None;
        let mut memo = KeyMemo::default();
        let (version, table) = routes.cached(&mut cache);
        assert_eq!(table.key_memo(version, one, &mut memo).unwrap().id, "k1");
        assert_eq!(table.key_memo(version, one, &mut memo).unwrap().id, "k1");
        // Another key on the same connection is looked up, not taken from
        // the memo.
        assert_eq!(table.key_memo(version, two, &mut memo).unwrap().id, "k2");
        assert!(table
            .key_memo(version, "berth_0123456789abcdeX", &mut memo)
            .is_none());
        assert_eq!(table.key_memo(version, two, &mut memo).unwrap().id, "k2");
        // Revoked: the next version of the table does not know it, whatever
        // the connection remembers.
        routes.apply(&pb::RouteUpdate {
            snapshot: true,
            keys: vec![gateway_key(one, "k1")],
            ..Default::default()
        });
        let (later, table) = routes.cached(&mut cache);
        assert!(later > version);
        assert!(table.key_memo(later, two, &mut memo).is_none());
        assert_eq!(table.key_memo(later, one, &mut memo).unwrap().id, "k1");
    }

    #[test]
    fn picks_spread_over_every_available_instance_and_skip_tried_ones() {
        let routes = Routes::default();
        let backends = (0..5)
            .map(|i| backend(&format!("i{i}"), 1000 + i))
            .collect();
        routes.apply(&pb::RouteUpdate {
            snapshot: true,
            apps: vec![route("a", backends)],
            ..Default::default()
        });
        let app = routes.current().apps["a"].clone();
        let now = Instant::now();
        let mut chosen = [0u32; 5];
        for _ in 0..2000 {
            let (i, _) = app.pick(&[1], now).expect("four to choose from");
            chosen[i] += 1;
        }
        assert_eq!(chosen[1], 0, "a tried instance is not chosen again");
        for (i, n) in chosen.iter().enumerate().filter(|(i, _)| *i != 1) {
            assert!(
                *n > 300,
                "instance {i} chosen {n} times of 2000: {chosen:?}"
            );
        }
        // The less loaded of the two drawn: a busy instance is chosen only
        // when drawn with another just as busy, never here.
        app.backends[0].in_flight.store(10, Ordering::Relaxed);
        for _ in 0..500 {
            assert_ne!(app.pick(&[], now).unwrap().0, 0);
        }
        assert!(app.pick(&[0, 1, 2, 3, 4], now).is_none());
        assert_eq!(app.pick(&[0, 1, 2, 4], now).unwrap().0, 3);
    }
}
