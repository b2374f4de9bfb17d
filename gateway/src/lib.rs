//! Berth's HTTP gateway: users' traffic to the right node and port.
//!
//! - [`config`]: flags and the validated [`Config`].
//! - [`routes`]: the route table, balancing and breaker state, API keys.
//! - [`link`]: the route watch, wake-ups and traffic reports to the control plane.
//! - [`proxy`]: the request path.
//! - [`rest`]: the management API (`/v1`, and the seeds' endpoints).
//! - [`server`]: connections, TLS, limits.
//! - [`static_routes`]: routes from a file instead of the control plane.

pub mod body;
pub mod config;
pub mod error;
pub mod fast;
pub mod headers;
pub mod link;
pub mod metrics;
pub mod proxy;
pub mod rest;
pub mod routes;
pub mod server;
pub mod static_routes;
pub mod upstream;

pub use config::{Config, GatewayArgs, LimitArgs};

/// The sockets the gateway serves on: users' traffic, and its Prometheus
/// metrics — never on the users' port, where they would tell anyone which
/// apps and tenants exist and how busy they are.
pub struct Listeners {
    pub users: TcpListener,
    pub metrics: TcpListener,
}

use berth_pki::Role;
use prometheus_client::registry::Registry;
use std::sync::Arc;
use tokio::{net::TcpListener, sync::RwLock};
use tokio_util::sync::CancellationToken;

/// Serves the gateway on `listeners` until `shutdown` is cancelled: routes
/// come from the control plane named in `config`.
pub async fn run(
    config: Config,
    listeners: Listeners,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let tls = config.tls.load()?;
    let identity = tls.identity()?;
    anyhow::ensure!(
        identity.role == Role::Gateway,
        "the certificate is for {identity}; the gateway needs a gateway certificate"
    );
    let routes = routes::Routes::default();
    let link = link::start(
        config.control_plane.clone(),
        tls,
        routes.clone(),
        config.traffic_report_every,
        config.reconnect_max,
        shutdown.clone(),
    );
    serve(config, listeners, routes, Some(link), shutdown).await
}

/// Serves with a given route table and link (tests give their own table).
pub async fn serve(
    config: Config,
    listeners: Listeners,
    routes: routes::Routes,
    link: Option<link::Link>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let acceptor = match &config.https {
        Some((cert, key)) => Some(server::tls_acceptor(cert, key)?),
        None => None,
    };
    let metrics = metrics::Metrics::default();
    let mut registry = Registry::default();
    metrics.register(&mut registry);
    let registry = Arc::new(RwLock::new(registry));
    let Listeners {
        users: listener,
        metrics: metrics_listener,
    } = listeners;
    tokio::spawn(berth_common::metrics_http::serve(
        metrics_listener,
        registry.clone(),
        shutdown.clone(),
    ));
    tokio::spawn(count_routes(
        routes.clone(),
        metrics.clone(),
        shutdown.clone(),
    ));
    let limits = server::ConnLimits {
        max_connections: config.max_connections,
        max_header_bytes: config.max_header_bytes,
        header_read_timeout: config.header_read_timeout,
        idle_timeout: config.idle_timeout,
    };
    let permits = Arc::new(tokio::sync::Semaphore::new(config.max_connections));
    let threads = match config.threads {
        0 => std::thread::available_parallelism().map_or(1, usize::from),
        n => n,
    };
    tracing::info!(
        addr = ?listener.local_addr().ok(),
        tls = acceptor.is_some(),
        threads,
        "gateway serving"
    );
    // Thread per core: each thread runs its own single-threaded runtime
    // with its own upstream pool and accepts from the shared socket, so a
    // request never hops between threads.
    let listener = listener.into_std()?;
    // One bucket for every caller without a key, shared by all threads.
    let anonymous = config.open_executions.then(|| {
        Arc::new(routes::Key::anonymous(
            config.open_executions_rate,
            config.open_executions_burst,
        ))
    });
    let mut done = Vec::with_capacity(threads);
    for i in 0..threads {
        let listener = listener.try_clone()?;
        let gateway = Arc::new(proxy::Gateway::new(
            routes.clone(),
            link.clone(),
            metrics.clone(),
            anonymous.clone(),
            &config,
        ));
        let (acceptor, limits, metrics, permits, shutdown) = (
            acceptor.clone(),
            limits.clone(),
            metrics.clone(),
            permits.clone(),
            shutdown.clone(),
        );
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        std::thread::Builder::new()
            .name(format!("gateway-{i}"))
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    // Sockets and timers only: no signal or child-process
                    // driver to look after on every turn of the loop.
                    .enable_io()
                    .enable_time()
                    .build()
                    .expect("a gateway thread's runtime");
                runtime.block_on(async move {
                    keep_next_timer_near(gateway.clone());
                    match TcpListener::from_std(listener) {
                        Ok(listener) => {
                            server::serve(
                                listener, gateway, acceptor, limits, metrics, permits, shutdown,
                            )
                            .await
                        }
                        Err(err) => tracing::error!(%err, "gateway thread cannot listen"),
                    }
                });
                let _ = tx.send(());
            })?;
        done.push(rx);
    }
    for rx in done {
        let _ = rx.await;
    }
    tracing::info!("gateway stopped");
    Ok(())
}

/// Keeps the `routes` gauge at the number of apps in the table.
async fn count_routes(
    routes: routes::Routes,
    metrics: metrics::Metrics,
    shutdown: CancellationToken,
) {
    let mut changed = routes.subscribe();
    loop {
        metrics.routes.set(routes.current().apps.len() as i64);
        tokio::select! {
            _ = shutdown.cancelled() => return,
            c = changed.changed() => if c.is_err() { return },
        }
    }
}

/// How often each gateway thread's runtime wakes with nothing to do.
const TICK: std::time::Duration = std::time::Duration::from_millis(250);

/// Keeps a timer due within [`TICK`] on this thread's runtime. A deadline
/// set earlier than the runtime's next timer wakes the event loop through
/// its eventfd (timers may be set from any thread); with a timer always due
/// this soon, a request's deadlines (header reads, answers from the app)
/// never come before it, and the wake-up is saved: a `write` and an
/// `epoll_wait` for every other request at a low rate, four wake-ups a
/// second instead. Every fourth tick also sweeps the thread's idle upstream
/// connections.
fn keep_next_timer_near(gateway: Arc<proxy::Gateway>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        for n in 0u64.. {
            tick.tick().await;
            if n % 4 == 3 {
                gateway.idle.sweep();
            }
        }
    });
}
