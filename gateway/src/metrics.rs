//! The gateway's Prometheus metrics.

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// App id, or `-` for requests that matched none.
    pub app: String,
    /// `2xx`, `4xx`, …
    pub class: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AppLabel {
    pub app: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UpstreamErrorLabels {
    pub app: String,
    /// `connect`, `timeout`, `reset`, …
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TenantLabel {
    pub tenant: String,
}

fn latency_histogram() -> Histogram {
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        0.0005, 2.0, 16,
    ))
}

#[derive(Clone)]
pub struct Metrics {
    pub requests: Family<RequestLabels, Counter>,
    pub latency: Family<AppLabel, Histogram, fn() -> Histogram>,
    pub in_flight: Gauge,
    pub upstream_errors: Family<UpstreamErrorLabels, Counter>,
    pub rate_limited: Family<TenantLabel, Counter>,
    pub routes: Gauge,
    pub connections: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            requests: Family::default(),
            latency: Family::new_with_constructor(latency_histogram),
            in_flight: Gauge::default(),
            upstream_errors: Family::default(),
            rate_limited: Family::default(),
            routes: Gauge::default(),
            connections: Gauge::default(),
        }
    }
}

impl Metrics {
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "berth_gateway_requests",
            "Requests answered, by app and status class",
            self.requests.clone(),
        );
        registry.register(
            "berth_gateway_request_duration_seconds",
            "Time to the response head, by app",
            self.latency.clone(),
        );
        registry.register(
            "berth_gateway_in_flight_requests",
            "Requests being proxied now",
            self.in_flight.clone(),
        );
        registry.register(
            "berth_gateway_upstream_errors",
            "Failed attempts to reach an instance, by app and kind",
            self.upstream_errors.clone(),
        );
        registry.register(
            "berth_gateway_rate_limited",
            "Requests refused by a key's rate limit, by tenant",
            self.rate_limited.clone(),
        );
        registry.register(
            "berth_gateway_routed_apps",
            "Apps in the route table",
            self.routes.clone(),
        );
        registry.register(
            "berth_gateway_open_connections",
            "Client connections open now",
            self.connections.clone(),
        );
    }

    pub fn upstream_error(&self, app: &str, kind: &str) {
        self.upstream_errors
            .get_or_create(&UpstreamErrorLabels {
                app: app.to_owned(),
                kind: kind.to_owned(),
            })
            .inc();
    }
}
