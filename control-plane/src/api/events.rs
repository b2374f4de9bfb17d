//! `berth.v1.EventService`: the event log as a resumable stream — all of it
//! for admins, a tenant's own events for its deployers.

use crate::{
    db::entities::events,
    scope::Scope,
    store::{events::EventFilter, nodes::timestamp, Store},
};
use berth_proto::pb::{self, event_service_server::EventService};
use futures::Stream;
use std::pin::Pin;
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

pub struct EventApi {
    pub store: Store,
    pub shutdown: CancellationToken,
}

fn to_proto(event: events::Model) -> pb::Event {
    pb::Event {
        sequence: event.sequence as u64,
        kind: event.kind,
        app_id: event.app_id.unwrap_or_default(),
        app_hostname: event.app_hostname.unwrap_or_default(),
        node_name: event.node_name.unwrap_or_default(),
        subject_id: event.subject_id,
        message: event.message,
        at: Some(timestamp(event.at)),
    }
}

type EventStream = Pin<Box<dyn Stream<Item = Result<pb::Event, Status>> + Send>>;

#[tonic::async_trait]
impl EventService for EventApi {
    async fn watch_events(
        &self,
        request: Request<pb::WatchEventsRequest>,
    ) -> Result<Response<EventStream>, Status> {
        let scope = Scope::of(&request, &self.store).await?;
        let request = request.into_inner();
        let after = i64::try_from(request.after_sequence)
            .map_err(|_| Status::invalid_argument("after_sequence: out of range"))?;
        let app = Some(request.app_id).filter(|a| !a.is_empty());
        let (tx, rx) = mpsc::channel(256);
        let store = self.store.clone();
        let shutdown = self.shutdown.clone();
        // Subscribe before reading the backlog so nothing falls in between.
        let live = store.subscribe_events();
        tokio::spawn(async move {
            tokio::select! {
                _ = shutdown.cancelled() => {}
                _ = tx.closed() => {}
                result = deliver(&store, after, EventFilter {
                    app_id: app.as_deref(),
                    tenant: scope.tenant(),
                    ..EventFilter::default()
                }, request.follow, live, &tx) => {
                    if let Err(status) = result {
                        let _ = tx.send(Err(status)).await;
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

async fn deliver(
    store: &Store,
    mut after: i64,
    filter: EventFilter<'_>,
    follow: bool,
    mut live: broadcast::Receiver<events::Model>,
    tx: &mpsc::Sender<Result<pb::Event, Status>>,
) -> Result<(), Status> {
    loop {
        // Catch up from the database, a page at a time.
        loop {
            let page = store.events_after(after, filter).await?;
            let done = (page.len() as u64) < crate::store::events::PAGE;
            for event in page {
                after = event.sequence;
                if tx.send(Ok(to_proto(event))).await.is_err() {
                    return Ok(());
                }
            }
            if done {
                break;
            }
        }
        if !follow {
            return Ok(());
        }
        // Then follow live events until we fall behind, and catch up again.
        loop {
            match live.recv().await {
                Ok(event) if event.sequence <= after => {}
                Ok(event) if !filter.matches(&event) => {}
                Ok(event) => {
                    after = event.sequence;
                    if tx.send(Ok(to_proto(event))).await.is_err() {
                        return Ok(());
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => break,
                Err(broadcast::error::RecvError::Closed) => return Ok(()),
            }
        }
    }
}
