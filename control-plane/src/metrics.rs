//! The control plane's Prometheus metrics: nodes by state, and RPCs by
//! method and status code (a tower layer that reads `grpc-status` from the
//! response headers or trailers).

use berth_proto::domain::NodeState;
use http_body::{Body, Frame};
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};
use std::{
    pin::Pin,
    task::{ready, Context, Poll},
};
use tower_layer::Layer;
use tower_service::Service;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabel {
    pub state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RpcLabels {
    pub method: String,
    pub code: String,
}

/// Metric handles; cheap to clone.
#[derive(Clone, Default)]
pub struct Metrics {
    pub nodes: Family<StateLabel, Gauge>,
    pub rpcs: Family<RpcLabels, Counter>,
    pub agent_sessions: Gauge,
    /// Live nodes whose container firewall is not in place.
    pub nodes_without_firewall: Gauge,
}

impl Metrics {
    pub fn register(&self, registry: &mut Registry) {
        registry.register("berth_nodes", "Nodes by state", self.nodes.clone());
        registry.register(
            "berth_grpc_requests",
            "gRPC requests by method and status code",
            self.rpcs.clone(),
        );
        registry.register(
            "berth_agent_sessions",
            "Agent streams connected now",
            self.agent_sessions.clone(),
        );
        registry.register(
            "berth_nodes_without_firewall",
            "Nodes not down whose container firewall is missing (see berth nodes)",
            self.nodes_without_firewall.clone(),
        );
    }

    pub fn set_node_counts(&self, counts: impl IntoIterator<Item = (NodeState, i64)>) {
        for &state in NodeState::ALL {
            self.nodes
                .get_or_create(&StateLabel {
                    state: state.to_string(),
                })
                .set(0);
        }
        for (state, count) in counts {
            self.nodes
                .get_or_create(&StateLabel {
                    state: state.to_string(),
                })
                .set(count);
        }
    }

    fn count_rpc(&self, method: &str, code: tonic::Code) {
        let code = format!("{code:?}");
        self.rpcs
            .get_or_create(&RpcLabels {
                method: method.to_owned(),
                code,
            })
            .inc();
    }
}

#[derive(Clone)]
pub struct RpcMetricsLayer(pub Metrics);

impl<S> Layer<S> for RpcMetricsLayer {
    type Service = RpcMetrics<S>;
    fn layer(&self, inner: S) -> Self::Service {
        RpcMetrics {
            inner,
            metrics: self.0.clone(),
        }
    }
}

#[derive(Clone)]
pub struct RpcMetrics<S> {
    inner: S,
    metrics: Metrics,
}

impl<S, B, R> Service<http::Request<B>> for RpcMetrics<S>
where
    S: Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    R: Body + Send + 'static,
{
    type Response = http::Response<CountedBody<R>>;
    type Error = S::Error;
    type Future = futures::future::BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let method = req.uri().path().to_owned();
        let metrics = self.metrics.clone();
        let future = self.inner.call(req);
        Box::pin(async move {
            let response = future.await?;
            // Trailers-only responses (most errors) carry the status in the headers.
            let pending = match tonic::Status::from_header_map(response.headers()) {
                Some(status) => {
                    metrics.count_rpc(&method, status.code());
                    None
                }
                None => Some((metrics, method)),
            };
            Ok(response.map(|inner| CountedBody { inner, pending }))
        })
    }
}

/// A response body that counts its RPC when the trailers (or the end) arrive.
pub struct CountedBody<B> {
    inner: B,
    pending: Option<(Metrics, String)>,
}

impl<B> CountedBody<B> {
    fn finish(&mut self, code: tonic::Code) {
        if let Some((metrics, method)) = self.pending.take() {
            metrics.count_rpc(&method, code);
        }
    }
}

impl<B: Body + Unpin> Body for CountedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let frame = ready!(Pin::new(&mut self.inner).poll_frame(cx));
        match &frame {
            Some(Ok(frame)) => {
                if let Some(trailers) = frame.trailers_ref() {
                    let code = tonic::Status::from_header_map(trailers)
                        .map_or(tonic::Code::Ok, |s| s.code());
                    self.finish(code);
                }
            }
            Some(Err(_)) => self.finish(tonic::Code::Unknown),
            None => self.finish(tonic::Code::Ok),
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
