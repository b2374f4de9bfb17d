//! The gateway's link to the control plane: the route watch (snapshot, then
//! changes; reconnect with backoff and resync), waking scale-to-zero apps,
//! and reporting which apps served traffic.

use crate::routes::Routes;
use backon::BackoffBuilder;
use berth_pki::TlsMaterial;
use berth_proto::pb::{self, route_service_client::RouteServiceClient};
use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

/// A wake is not asked again for the same app within this long.
const WAKE_DEBOUNCE: Duration = Duration::from_secs(2);
/// Longest a WakeApp call may take.
const WAKE_RPC_TIMEOUT: Duration = Duration::from_secs(10);

/// Calls to the control plane made while serving traffic.
#[derive(Clone)]
pub struct Link {
    channel: watch::Receiver<Option<Channel>>,
    /// Apps that served traffic since the last report.
    traffic: Arc<Mutex<HashSet<String>>>,
    /// When each app was last asked to wake.
    woken: Arc<Mutex<HashMap<String, Instant>>>,
}

/// Why an app could not be woken.
#[derive(Debug, thiserror::Error)]
pub enum WakeError {
    #[error("{0}")]
    Refused(String),
    #[error("the control plane is unreachable: {0}")]
    Unreachable(String),
}

impl Link {
    /// The channel to the control plane, while connected.
    pub fn channel(&self) -> Option<Channel> {
        self.channel.borrow().clone()
    }

    /// Notes a request for `app_id` for the next traffic report.
    pub fn record_traffic(&self, app_id: &str) {
        let mut traffic = self.traffic.lock().unwrap_or_else(|p| p.into_inner());
        if !traffic.contains(app_id) {
            traffic.insert(app_id.to_owned());
        }
    }

    /// Asks the control plane to start an instance of `app_id`, unless that
    /// was asked moments ago (concurrent first requests share one wake).
    pub async fn wake(&self, app_id: &str) -> Result<(), WakeError> {
        {
            let mut woken = self.woken.lock().unwrap_or_else(|p| p.into_inner());
            let now = Instant::now();
            woken.retain(|_, at| now.duration_since(*at) < WAKE_DEBOUNCE);
            if woken.contains_key(app_id) {
                return Ok(());
            }
            woken.insert(app_id.to_owned(), now);
        }
        let channel = self
            .channel
            .borrow()
            .clone()
            .ok_or_else(|| WakeError::Unreachable("not connected".into()))?;
        let mut client = RouteServiceClient::new(channel);
        let call = client.wake_app(pb::WakeAppRequest {
            app_id: app_id.to_owned(),
        });
        let outcome = match tokio::time::timeout(WAKE_RPC_TIMEOUT, call).await {
            Err(_) => Err(WakeError::Unreachable("WakeApp timed out".into())),
            Ok(Err(status)) => Err(WakeError::Unreachable(status.message().to_owned())),
            Ok(Ok(reply)) => {
                let reply = reply.into_inner();
                if reply.waking {
                    tracing::info!(app = app_id, "woke a scale-to-zero app");
                    Ok(())
                } else {
                    Err(WakeError::Refused(reply.message))
                }
            }
        };
        if outcome.is_err() {
            // Let the next request ask again.
            self.woken
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(app_id);
        }
        outcome
    }
}

/// Starts the link's tasks; they run until `shutdown`.
pub fn start(
    endpoint: String,
    tls: TlsMaterial,
    routes: Routes,
    report_every: Duration,
    reconnect_max: Duration,
    shutdown: CancellationToken,
) -> Link {
    let (channel_tx, channel) = watch::channel(None);
    let link = Link {
        channel,
        traffic: Arc::default(),
        woken: Arc::default(),
    };
    tokio::spawn(watch_routes(
        endpoint,
        tls,
        routes,
        channel_tx,
        reconnect_max,
        shutdown.clone(),
    ));
    tokio::spawn(report_traffic(link.clone(), report_every, shutdown));
    link
}

async fn watch_routes(
    endpoint: String,
    tls: TlsMaterial,
    routes: Routes,
    channel_tx: watch::Sender<Option<Channel>>,
    reconnect_max: Duration,
    shutdown: CancellationToken,
) {
    let backoff_builder = backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(100))
        .with_max_delay(reconnect_max)
        .with_jitter()
        .without_max_times();
    let mut backoff = backoff_builder.build();
    loop {
        let mut synced = false;
        let result = tokio::select! {
            _ = shutdown.cancelled() => return,
            result = watch_once(&endpoint, &tls, &routes, &channel_tx, &mut synced) => result,
        };
        if synced {
            backoff = backoff_builder.build();
        }
        let delay = backoff.next().unwrap_or(reconnect_max);
        match result {
            Ok(()) => tracing::warn!(retry_in = ?delay, "route watch ended; reconnecting"),
            Err(err) => {
                tracing::warn!(error = %err, retry_in = ?delay, "route watch failed; reconnecting")
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
        }
    }
}

async fn watch_once(
    endpoint: &str,
    tls: &TlsMaterial,
    routes: &Routes,
    channel_tx: &watch::Sender<Option<Channel>>,
    synced: &mut bool,
) -> anyhow::Result<()> {
    let channel = tls.endpoint(endpoint)?.connect().await?;
    channel_tx.send_replace(Some(channel.clone()));
    let mut stream = RouteServiceClient::new(channel)
        .watch_routes(pb::WatchRoutesRequest {})
        .await?
        .into_inner();
    while let Some(update) = stream.message().await? {
        if update.snapshot {
            tracing::info!(
                apps = update.apps.len(),
                keys = update.keys.len(),
                "route snapshot received"
            );
            *synced = true;
        }
        routes.apply(&update);
    }
    Ok(())
}

async fn report_traffic(link: Link, every: Duration, shutdown: CancellationToken) {
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let app_ids: Vec<String> =
            std::mem::take(&mut *link.traffic.lock().unwrap_or_else(|p| p.into_inner()))
                .into_iter()
                .collect();
        if app_ids.is_empty() {
            continue;
        }
        let Some(channel) = link.channel.borrow().clone() else {
            continue;
        };
        let mut client = RouteServiceClient::new(channel);
        let call = client.report_traffic(pb::ReportTrafficRequest { app_ids });
        match tokio::time::timeout(Duration::from_secs(10), call).await {
            Ok(Ok(_)) => {}
            Ok(Err(status)) => tracing::warn!(message = status.message(), "traffic report refused"),
            Err(_) => tracing::warn!("traffic report timed out"),
        }
    }
}
