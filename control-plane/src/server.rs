//! Wiring: database, store, background loops and the gRPC server.

use crate::{
    api::{
        agent::AgentApi,
        apps::AppApi,
        builds::BuildApi,
        events::EventApi,
        keys::KeyApi,
        nodes::NodeApi,
        routes::{RouteApi, RouteHub},
    },
    auth::AuthLayer,
    builds::{BuildLogs, ContextStore},
    config::Config,
    db,
    limits::MessageLimitLayer,
    metrics::{Metrics, RpcMetricsLayer},
    scheduler::Scheduler,
    sessions::Sessions,
    store::Store,
};
use berth_common::metrics_http;
use berth_pki::Role;
use berth_proto::pb::{
    agent_service_server::AgentServiceServer, api_key_service_server::ApiKeyServiceServer,
    app_service_server::AppServiceServer, build_service_server::BuildServiceServer,
    event_service_server::EventServiceServer, execution_service_server::ExecutionServiceServer,
    node_service_server::NodeServiceServer, route_service_server::RouteServiceServer,
    tenant_service_server::TenantServiceServer,
};
use chrono::Utc;
use prometheus_client::registry::Registry;
use std::{sync::Arc, time::Duration};
use tokio::{net::TcpListener, sync::RwLock};
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;

/// How long in-flight RPCs get to finish after shutdown begins.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Db(#[from] db::DbError),
    #[error("TLS: {0}")]
    Pki(#[from] berth_pki::PkiError),
    #[error("the certificate is for {0}; the control plane needs a control-plane certificate")]
    WrongRole(berth_pki::Identity),
    #[error("gRPC server: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error("data dir: {0}")]
    DataDir(std::io::Error),
    #[error("reading the route table: {0}")]
    Routes(#[from] crate::error::Error),
}

/// Runs the control plane on the given listeners until `shutdown` is cancelled.
pub async fn run(
    config: Config,
    grpc: TcpListener,
    metrics_listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), ServeError> {
    let tls = config.tls.load()?;
    let identity = tls.identity()?;
    if identity.role != Role::ControlPlane {
        return Err(ServeError::WrongRole(identity));
    }
    let db = db::connect(config.database_url.as_deref(), &config.data_dir).await?;
    let store = Store::new(db);
    let sessions = Sessions::default();
    let contexts = ContextStore::new(&config.data_dir).map_err(ServeError::DataDir)?;
    let logs = BuildLogs::default();
    let requests = crate::requests::Requests::default();
    let scheduler = Scheduler::new(
        store.clone(),
        sessions.clone(),
        config.build_timeout,
        config.tenant_defaults,
    );
    let scheduler_task = tokio::spawn(scheduler.clone().run(shutdown.clone()));
    let executions =
        crate::executions::Executions::new(store.clone(), sessions.clone(), config.tenant_defaults);
    let executions_task = tokio::spawn(executions.clone().run(shutdown.clone()));
    let config = Arc::new(config);

    let metrics = Metrics::default();
    let mut registry = Registry::default();
    metrics.register(&mut registry);
    let registry = Arc::new(RwLock::new(registry));
    let metrics_task = tokio::spawn(metrics_http::serve(
        metrics_listener,
        registry,
        shutdown.clone(),
    ));
    let sweeper = tokio::spawn(sweep_nodes(
        store.clone(),
        metrics.clone(),
        scheduler.clone(),
        executions.clone(),
        config.node_ttl,
        shutdown.clone(),
    ));

    let limit = config.max_message_bytes;
    let nodes = NodeServiceServer::new(NodeApi {
        store: store.clone(),
        sessions: sessions.clone(),
    })
    .max_decoding_message_size(limit);
    let agents = AgentServiceServer::new(AgentApi {
        store: store.clone(),
        sessions: sessions.clone(),
        metrics: metrics.clone(),
        heartbeat_interval: config.heartbeat_interval,
        node_ttl: config.node_ttl,
        shutdown: shutdown.clone(),
        scheduler: scheduler.clone(),
        logs: logs.clone(),
        contexts: contexts.clone(),
        requests: requests.clone(),
        executions: executions.clone(),
    })
    .max_decoding_message_size(limit);
    let execution_service = ExecutionServiceServer::new(crate::executions::ExecutionApi {
        executions: executions.clone(),
        store: store.clone(),
    })
    .max_decoding_message_size(limit);
    let apps = AppServiceServer::new(AppApi {
        store: store.clone(),
        sessions: sessions.clone(),
        requests: requests.clone(),
        scheduler: scheduler.clone(),
        contexts: contexts.clone(),
        logs: logs.clone(),
        config: config.clone(),
    })
    .max_decoding_message_size(limit);
    let builds = BuildServiceServer::new(BuildApi {
        store: store.clone(),
        logs: logs.clone(),
    })
    .max_decoding_message_size(limit);
    let keys = ApiKeyServiceServer::new(KeyApi {
        store: store.clone(),
    })
    .max_decoding_message_size(limit);
    let hub = RouteHub::start(store.clone(), shutdown.clone()).await?;
    let routes = RouteServiceServer::new(RouteApi {
        hub,
        store: store.clone(),
        scheduler: scheduler.clone(),
        shutdown: shutdown.clone(),
    })
    .max_decoding_message_size(limit);
    let events = EventServiceServer::new(EventApi {
        store: store.clone(),
        shutdown: shutdown.clone(),
    })
    .max_decoding_message_size(limit);
    let tenants = TenantServiceServer::new(crate::api::tenants::TenantApi {
        store: store.clone(),
        executions: executions.clone(),
    })
    .max_decoding_message_size(limit);

    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<NodeServiceServer<NodeApi>>().await;
    health.set_serving::<AgentServiceServer<AgentApi>>().await;
    health.set_serving::<EventServiceServer<EventApi>>().await;
    health.set_serving::<AppServiceServer<AppApi>>().await;
    health.set_serving::<BuildServiceServer<BuildApi>>().await;
    health.set_serving::<ApiKeyServiceServer<KeyApi>>().await;
    health.set_serving::<RouteServiceServer<RouteApi>>().await;
    health
        .set_serving::<TenantServiceServer<crate::api::tenants::TenantApi>>()
        .await;
    health
        .set_serving::<ExecutionServiceServer<crate::executions::ExecutionApi>>()
        .await;
    // Both reflection versions: grpcurl, grpcui and friends speak one or the other.
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(berth_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let (reflection_v1, reflection_v1alpha) =
        (reflection().build_v1()?, reflection().build_v1alpha()?);

    let addr = grpc.local_addr().ok();
    // Small messages (heartbeats, desired sets) must not wait on Nagle.
    let incoming = tokio_stream::StreamExt::map(TcpListenerStream::new(grpc), |stream| {
        if let Ok(stream) = &stream {
            let _ = stream.set_nodelay(true);
        }
        stream
    });
    tracing::info!(?addr, "control plane serving gRPC");
    let layers = tower::ServiceBuilder::new()
        .layer(RpcMetricsLayer(metrics.clone()))
        .layer(MessageLimitLayer)
        .layer(AuthLayer);
    let server = tonic::transport::Server::builder()
        .tls_config(tls.server_config())?
        .http2_keepalive_interval(Some(Duration::from_secs(10)))
        .http2_keepalive_timeout(Some(Duration::from_secs(20)))
        .layer(layers)
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(nodes)
        .add_service(agents)
        .add_service(events)
        .add_service(apps)
        .add_service(builds)
        .add_service(keys)
        .add_service(routes)
        .add_service(execution_service)
        .add_service(tenants)
        .serve_with_incoming_shutdown(incoming, shutdown.clone().cancelled_owned());

    let grace = async {
        shutdown.cancelled().await;
        tokio::time::sleep(SHUTDOWN_GRACE).await;
    };
    let result = tokio::select! {
        result = server => result.map_err(ServeError::from),
        _ = grace => {
            tracing::warn!("in-flight RPCs did not finish within the grace period");
            Ok(())
        }
    };
    shutdown.cancel();
    health.set_not_serving::<NodeServiceServer<NodeApi>>().await;
    let _ = sweeper.await;
    let _ = scheduler_task.await;
    let _ = executions_task.await;
    let _ = metrics_task.await;
    store.db().clone().close().await.ok();
    tracing::info!("control plane stopped");
    result
}

/// Marks nodes down once their heartbeat is older than the TTL, and keeps
/// the node gauges current.
async fn sweep_nodes(
    store: Store,
    metrics: Metrics,
    scheduler: Arc<Scheduler>,
    executions: Arc<crate::executions::Executions>,
    ttl: Duration,
    shutdown: CancellationToken,
) {
    let period = (ttl / 4).clamp(Duration::from_millis(100), Duration::from_secs(2));
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let ttl = chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::seconds(15));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticker.tick() => {}
        }
        match store.expire_nodes(Utc::now() - ttl).await {
            Ok(marked) => {
                for node in &marked {
                    tracing::warn!(node = %node, "node down: no heartbeat within the TTL");
                    executions.node_lost(node.as_str()).await;
                }
                if !marked.is_empty() {
                    // Its instances are lost and get replaced elsewhere.
                    scheduler.kick();
                }
            }
            Err(err) => tracing::error!(error = %err, "expiring nodes failed"),
        }
        match store.list_nodes(None).await {
            Ok(nodes) => {
                let mut counts = std::collections::HashMap::new();
                let mut without_firewall = 0;
                for node in nodes {
                    *counts.entry(node.state).or_insert(0) += 1;
                    let missing = node
                        .firewall_problem
                        .as_deref()
                        .is_some_and(|p| !p.is_empty());
                    if missing && node.state != berth_proto::domain::NodeState::Down {
                        without_firewall += 1;
                    }
                }
                metrics.set_node_counts(counts);
                metrics.nodes_without_firewall.set(without_firewall);
            }
            Err(err) => tracing::error!(error = %err, "counting nodes failed"),
        }
    }
}
