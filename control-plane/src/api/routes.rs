//! `berth.v1.RouteService`: the gateways' route table as a watch stream,
//! waking scale-to-zero apps, and traffic reports.
//!
//! One [`RouteHub`] reads the table from the store whenever an event is
//! committed (debounced) and every few seconds besides, and publishes it on
//! a watch channel. Each gateway stream sends a snapshot, then the diff
//! between what it last sent and the newest table; a slow gateway simply
//! skips intermediate tables.

use crate::{
    scheduler::Scheduler,
    store::{routes::RouteTable, Store},
};
use berth_proto::{
    domain::BuildState,
    pb::{self, route_service_server::RouteService},
};
use futures::Stream;
use std::{pin::Pin, sync::Arc, time::Duration};
use tokio::sync::{broadcast, mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

/// Changes arriving within this window are sent as one update.
const DEBOUNCE: Duration = Duration::from_millis(25);
/// The table is re-read this often even without events.
const RESYNC: Duration = Duration::from_secs(5);
/// Most app ids one traffic report may carry.
const MAX_REPORTED_APPS: usize = 10_000;

/// The newest route table, for every gateway stream.
#[derive(Clone)]
pub struct RouteHub {
    table: watch::Receiver<Arc<RouteTable>>,
}

impl RouteHub {
    /// Reads the first table and keeps it current until `shutdown`.
    pub async fn start(store: Store, shutdown: CancellationToken) -> crate::error::Result<Self> {
        let (tx, table) = watch::channel(Arc::new(store.route_table().await?));
        tokio::spawn(refresh(store, tx, shutdown));
        Ok(Self { table })
    }
}

async fn refresh(store: Store, tx: watch::Sender<Arc<RouteTable>>, shutdown: CancellationToken) {
    let mut events = store.subscribe_events();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            received = events.recv() => {
                if let Err(broadcast::error::RecvError::Closed) = received {
                    return;
                }
                // Let a burst of changes land, then read once.
                tokio::time::sleep(DEBOUNCE).await;
                while events.try_recv().is_ok() {}
            }
            _ = tokio::time::sleep(RESYNC) => {}
        }
        match store.route_table().await {
            Ok(table) => {
                tx.send_if_modified(|current| {
                    if **current == table {
                        false
                    } else {
                        *current = Arc::new(table);
                        true
                    }
                });
            }
            Err(err) => tracing::error!(error = %err, "reading the route table failed"),
        }
    }
}

pub struct RouteApi {
    pub hub: RouteHub,
    pub store: Store,
    pub scheduler: Arc<Scheduler>,
    pub shutdown: CancellationToken,
}

type RouteStream = Pin<Box<dyn Stream<Item = Result<pb::RouteUpdate, Status>> + Send>>;

#[tonic::async_trait]
impl RouteService for RouteApi {
    async fn watch_routes(
        &self,
        request: Request<pb::WatchRoutesRequest>,
    ) -> Result<Response<RouteStream>, Status> {
        let caller = crate::auth::caller(&request)?;
        let mut table = self.hub.table.clone();
        table.mark_unchanged();
        // The snapshot is read now, not taken from the hub, whose table may
        // not have caught up yet with what was just committed (a key made
        // a moment ago must work at once); the hub's later tables are sent
        // as diffs against it.
        let fresh = self
            .store
            .route_table()
            .await
            .map_err(|e| Status::internal(format!("reading the route table: {e}")))?;
        let (tx, rx) = mpsc::channel(16);
        let shutdown = self.shutdown.clone();
        tokio::spawn(async move {
            let mut sent = Arc::new(fresh);
            if tx.send(Ok(sent.snapshot())).await.is_err() {
                return;
            }
            tracing::info!(gateway = %caller, "gateway watching routes");
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tx.closed() => return,
                    changed = table.changed() => if changed.is_err() { return },
                }
                let newest = table.borrow_and_update().clone();
                let update = newest.diff(&sent);
                sent = newest;
                if tx.send(Ok(update)).await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn wake_app(
        &self,
        request: Request<pb::WakeAppRequest>,
    ) -> Result<Response<pb::WakeAppResponse>, Status> {
        let app_id = request.get_ref().app_id.trim();
        if app_id.is_empty() {
            return Err(Status::invalid_argument("app_id: required"));
        }
        let app = self.store.get_app(app_id).await?;
        let refuse = |message: String| pb::WakeAppResponse {
            state: pb::AppState::from(app.state) as i32,
            message,
            waking: false,
        };
        if app.stopped {
            return Ok(Response::new(refuse(format!(
                "app {} is stopped; start it to serve traffic",
                app.spec.name
            ))));
        }
        let build = match &app.current_build_id {
            Some(id) => Some(self.store.get_build(id).await?),
            None => None,
        };
        if let Some(build) = build.filter(|b| b.state == BuildState::BuildFailed) {
            return Ok(Response::new(refuse(format!(
                "app {}'s build failed: {}",
                app.spec.name, build.error
            ))));
        }
        self.store
            .touch_apps(std::slice::from_ref(&app.id), chrono::Utc::now())
            .await?;
        self.scheduler.kick();
        Ok(Response::new(pb::WakeAppResponse {
            state: pb::AppState::from(app.state) as i32,
            message: String::new(),
            waking: true,
        }))
    }

    async fn report_traffic(
        &self,
        request: Request<pb::ReportTrafficRequest>,
    ) -> Result<Response<pb::ReportTrafficResponse>, Status> {
        let ids = &request.get_ref().app_ids;
        if ids.len() > MAX_REPORTED_APPS {
            return Err(Status::invalid_argument(format!(
                "app_ids: at most {MAX_REPORTED_APPS} per report"
            )));
        }
        self.store.touch_apps(ids, chrono::Utc::now()).await?;
        Ok(Response::new(pb::ReportTrafficResponse {}))
    }
}
