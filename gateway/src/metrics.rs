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

/// One app's request counters by status class and its latency histogram,
/// looked up once per route version instead of once per request.
#[derive(Clone)]
pub struct AppMetrics {
    /// 1xx … 5xx.
    classes: [Counter; 5],
    pub latency: Histogram,
}

impl AppMetrics {
    pub fn count(&self, status: u16) {
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        self.classes[class].inc();
    }
}

const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

impl Metrics {
    pub fn for_app(&self, app: &str) -> AppMetrics {
        AppMetrics {
            classes: CLASSES.map(|class| {
                self.requests
                    .get_or_create(&RequestLabels {
                        app: app.to_owned(),
                        class: class.to_owned(),
                    })
                    .clone()
            }),
            latency: self
                .latency
                .get_or_create(&AppLabel {
                    app: app.to_owned(),
                })
                .clone(),
        }
    }

    /// A request that matched no app.
    pub fn count_unrouted(&self, status: u16) {
        let class = CLASSES[usize::from(status / 100).clamp(1, 5) - 1];
        self.requests
            .get_or_create(&RequestLabels {
                app: "-".to_owned(),
                class: class.to_owned(),
            })
            .inc();
    }

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
