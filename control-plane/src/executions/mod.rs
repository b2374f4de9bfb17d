//! Code executions: checked, queued (bounded, one line per tenant), sent
//! to ready nodes that run the language within their concurrency (one per
//! core) and within each tenant's share, and finished from the agents'
//! results. A node lost mid-run fails its executions.
//!
//! - `queue`: the tenants' lines and the turn they are served in.
//! - `capacity`: the ready nodes' slots and tenants' own limits, cached.
//! - `request`: the limits a request is checked against.
//! - `api`: the gRPC service `berth.v1.ExecutionService`.

mod api;
mod capacity;
mod queue;
mod request;

pub use api::ExecutionApi;

use crate::{
    db::entities::executions as entity,
    quotas::Defaults,
    sessions::Sessions,
    store::{executions::NewExecution, Store},
};
use berth_proto::{
    domain::{ExecutionState, Language, NodeName, NodeState},
    pb::{self, control_message::Message as Down},
};
use capacity::{Capacity, CapacityCache, ReadyNode};
use queue::{FairQueue, Fit, Queued};
use request::{check, state_of};
use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};
use tokio::sync::{broadcast, Notify};
use tokio_util::sync::CancellationToken;
use tonic::Status;

pub const MAX_CODE_BYTES: usize = 50 * 1024;
pub const DEFAULT_TIMEOUT_MS: u32 = 30_000;
pub const MAX_TIMEOUT_MS: u32 = 60_000;
pub const MIN_MEMORY_BYTES: u64 = 16 << 20;
pub const MAX_MEMORY_BYTES: u64 = 1 << 30;
pub const MAX_STDIN_BYTES: usize = 1 << 20;
/// Executions waiting for a free slot, all tenants together, at most (each
/// tenant has its own, smaller share: [`Defaults::max_queued_executions`]).
pub const MAX_QUEUE: usize = 1024;
/// Compiling may take this long on top of the run's own timeout.
const COMPILE_ALLOWANCE: Duration = Duration::from_secs(70);

/// A place [`State::reserve`] took: given back when dropped, unless a
/// run filled it.
struct Place<'a> {
    executions: &'a Executions,
    tenant: &'a str,
    filled: bool,
}

impl Place<'_> {
    /// The run takes its place, under the same lock that queues it.
    fn fill(mut self, state: &mut State) {
        state.release(self.tenant);
        self.filled = true;
    }
}

impl Drop for Place<'_> {
    fn drop(&mut self) {
        if !self.filled {
            self.executions.lock().release(self.tenant);
        }
    }
}

/// A run placed on a node.
struct Running {
    node: String,
    tenant: String,
}

#[derive(Default)]
struct State {
    queue: FairQueue,
    /// Execution id → where it runs and whose it is.
    running: HashMap<String, Running>,
    /// Places in the queue taken by submissions still being recorded, by
    /// tenant: counted with the waiting, so that submissions at once cannot
    /// all pass the same check.
    reserved: HashMap<String, usize>,
}

impl State {
    /// Takes a place in the queue for `tenant`, within its `share` and
    /// [`MAX_QUEUE`].
    fn reserve(&mut self, tenant: &str, share: usize) -> Result<(), Status> {
        let held = self.reserved.get(tenant).copied().unwrap_or(0);
        let waiting = self.queue.waiting(tenant) + held;
        if waiting >= share {
            return Err(Status::resource_exhausted(format!(
                "tenant {tenant} already has {waiting} executions waiting (its share is {share}); retry when some have run"
            )));
        }
        if self.queue.len() + self.reserved.values().sum::<usize>() >= MAX_QUEUE {
            return Err(Status::resource_exhausted(format!(
                "every execution slot is busy and {MAX_QUEUE} executions are waiting; retry later"
            )));
        }
        *self.reserved.entry(tenant.to_owned()).or_default() += 1;
        Ok(())
    }

    /// Gives back a place [`State::reserve`] took.
    fn release(&mut self, tenant: &str) {
        if let Some(held) = self.reserved.get_mut(tenant) {
            *held -= 1;
            if *held == 0 {
                self.reserved.remove(tenant);
            }
        }
    }

    /// Runs each tenant has placed.
    fn running_by_tenant(&self) -> HashMap<String, usize> {
        let mut counts = HashMap::new();
        for run in self.running.values() {
            *counts.entry(run.tenant.clone()).or_default() += 1;
        }
        counts
    }
}

/// The execution queue and its dispatcher.
pub struct Executions {
    store: Store,
    sessions: Sessions,
    state: Mutex<State>,
    /// Executions as they end, as recorded.
    finished: broadcast::Sender<Arc<entity::Model>>,
    wake: Notify,
    /// Ready nodes and tenants' limits, read again after a node or tenant
    /// event or a second.
    capacity: tokio::sync::Mutex<CapacityCache>,
    /// Each tenant's share where it set none of its own.
    defaults: Defaults,
}

impl Executions {
    pub fn new(store: Store, sessions: Sessions, defaults: Defaults) -> Arc<Self> {
        let events = store.subscribe_events();
        Arc::new(Self {
            store,
            sessions,
            state: Mutex::new(State::default()),
            finished: broadcast::channel(1024).0,
            wake: Notify::new(),
            capacity: tokio::sync::Mutex::new(CapacityCache::new(events)),
            defaults,
        })
    }

    /// The cluster's defaults of each tenant's share.
    pub fn defaults(&self) -> Defaults {
        self.defaults
    }

    /// Execution slots of the ready, connected nodes.
    pub async fn slots(&self) -> crate::error::Result<usize> {
        Ok(self.capacity().await?.slots())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Fails what an earlier control plane left unfinished, then dispatches
    /// until `shutdown`.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        match self.store.unfinished_executions().await {
            Ok(left) => {
                for execution in left {
                    let _ = self
                        .store
                        .finish_execution(
                            &execution.id,
                            ExecutionState::Failed,
                            None,
                            "the control plane restarted before this execution finished",
                        )
                        .await;
                }
            }
            Err(err) => tracing::error!(error = %err, "reading unfinished executions"),
        }
        loop {
            if let Err(err) = self.dispatch().await {
                tracing::error!(error = %err, "dispatching executions failed");
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            }
        }
    }

    /// Records and queues an execution; a broken limit is recorded as
    /// `rejected` with the reason. `ResourceExhausted` when the queue is full.
    pub async fn submit(&self, request: pb::ExecuteRequest) -> Result<entity::Model, Status> {
        self.submit_as(request, false).await
    }

    /// [`Executions::submit`]; `validate`: check the code, do not run it.
    pub async fn submit_as(
        &self,
        request: pb::ExecuteRequest,
        validate: bool,
    ) -> Result<entity::Model, Status> {
        let tenant = if request.tenant.is_empty() {
            "default".to_owned()
        } else {
            request.tenant.clone()
        };
        let id = uuid::Uuid::new_v4().to_string();
        let language_name = pb::Language::try_from(request.language)
            .ok()
            .and_then(|l| Language::try_from(l).ok())
            .map_or("unknown".to_owned(), |l| l.as_str().to_owned());
        let (language, timeout_ms, memory_bytes) = match check(&request) {
            Ok(checked) => checked,
            Err(reason) => {
                let model = self
                    .store
                    .insert_execution(NewExecution {
                        id: &id,
                        tenant: &tenant,
                        language: &language_name,
                        timeout_ms: request.timeout_ms,
                        memory_bytes: request.memory_bytes,
                        state: ExecutionState::Rejected,
                        error: &reason,
                    })
                    .await?;
                return Ok(model);
            }
        };
        let own = self
            .capacity()
            .await?
            .limits
            .get(&tenant)
            .copied()
            .unwrap_or_default();
        let share = self.defaults.queued_executions(&own);
        self.lock().reserve(&tenant, share)?;
        // Given back however this ends, a dropped call included.
        let place = Place {
            executions: self,
            tenant: &tenant,
            filled: false,
        };
        let recorded = self
            .store
            .insert_execution(NewExecution {
                id: &id,
                tenant: &tenant,
                language: language.as_str(),
                timeout_ms,
                memory_bytes,
                state: ExecutionState::Queued,
                error: "",
            })
            .await;
        let model = recorded?;
        let mut state = self.lock();
        place.fill(&mut state);
        state.queue.push_back(Queued {
            id: id.clone(),
            tenant,
            language,
            request: pb::ExecutionRequest {
                execution_id: id,
                language: pb::Language::from(language) as i32,
                code: request.code,
                stdin: request.stdin,
                timeout_ms,
                memory_bytes,
                validate_only: validate,
            },
        });
        drop(state);
        self.wake.notify_one();
        Ok(model)
    }

    /// Waits until execution `id` has ended.
    pub async fn wait(&self, id: &str, timeout_ms: u32) -> Result<entity::Model, Status> {
        let mut finished = self.finished.subscribe();
        let deadline = tokio::time::Instant::now()
            + Duration::from_millis(u64::from(timeout_ms))
            + COMPILE_ALLOWANCE;
        loop {
            let model = self.store.get_execution(id).await?;
            let state: ExecutionState = model.state.parse().unwrap_or(ExecutionState::Failed);
            if !matches!(state, ExecutionState::Queued | ExecutionState::Running) {
                return Ok(model);
            }
            // Woken by its end (with the row as recorded), by a lost
            // message or after a second: read the store again.
            loop {
                tokio::select! {
                    _ = tokio::time::sleep_until(deadline) => {
                        return Err(Status::deadline_exceeded(format!("execution {id} has not finished; ask again with GetExecution")));
                    }
                    got = finished.recv() => match got {
                        Ok(done) if done.id == id => return Ok(done.as_ref().clone()),
                        Ok(_) => continue,
                        Err(_) => break,
                    },
                    _ = tokio::time::sleep(Duration::from_secs(1)) => break,
                }
            }
        }
    }

    /// Cancels a queued or running execution.
    pub async fn cancel(&self, id: &str) -> Result<entity::Model, Status> {
        let queued = self.lock().queue.remove(id);
        if queued {
            let model = self
                .store
                .finish_execution(
                    id,
                    ExecutionState::Cancelled,
                    None,
                    "cancelled before it ran",
                )
                .await?;
            let _ = self.finished.send(Arc::new(model.clone()));
            return Ok(model);
        }
        let node = self.lock().running.get(id).map(|run| run.node.clone());
        if let Some(node) = node {
            if let Ok(node) = NodeName::parse("node", &node) {
                self.sessions
                    .send(
                        &node,
                        pb::ControlMessage {
                            message: Some(Down::CancelExecution(pb::CancelExecution {
                                execution_id: id.to_owned(),
                            })),
                        },
                    )
                    .await;
            }
            // The agent answers with the cancelled result.
            return self.wait(id, 10_000).await;
        }
        Ok(self.store.get_execution(id).await?)
    }

    /// An agent's result.
    /// A result for a run placed on another node is refused: the record
    /// stays as it was.
    pub async fn complete(&self, node: &str, result: pb::ExecutionResult) {
        let running_there = self
            .lock()
            .running
            .get(&result.execution_id)
            .map(|run| run.node.as_str())
            == Some(node);
        if !running_there {
            // Not running there by this control plane's count (restarted
            // since, or another replica's): the record says where it went.
            let placed = self.store.get_execution(&result.execution_id).await;
            if !placed.is_ok_and(|e| e.node_name.as_deref() == Some(node)) {
                tracing::warn!(execution = %result.execution_id, %node, "a node reported a result for an execution not placed on it; ignored");
                return;
            }
        }
        self.lock().running.remove(&result.execution_id);
        // The next queued run first: this slot is free.
        self.wake.notify_one();
        let state = state_of(&result);
        match self
            .store
            .finish_execution(&result.execution_id, state, Some(&result), &result.error)
            .await
        {
            Ok(model) => {
                let _ = self.finished.send(Arc::new(model));
            }
            Err(err) => {
                tracing::warn!(execution = %result.execution_id, error = %err, "recording an execution result failed");
            }
        }
    }

    /// The node's session ended or it went down: its runs are lost.
    pub async fn node_lost(&self, node: &str) {
        let lost: Vec<String> = {
            let mut state = self.lock();
            let ids: Vec<String> = state
                .running
                .iter()
                .filter(|(_, run)| run.node == node)
                .map(|(id, _)| id.clone())
                .collect();
            for id in &ids {
                state.running.remove(id);
            }
            ids
        };
        for id in lost {
            tracing::warn!(execution = %id, %node, "node lost while running an execution");
            let recorded = self
                .store
                .finish_execution(
                    &id,
                    ExecutionState::Failed,
                    None,
                    &format!("node {node} was lost while running this execution"),
                )
                .await;
            if let Ok(model) = recorded {
                let _ = self.finished.send(Arc::new(model));
            }
        }
        self.wake.notify_one();
    }

    async fn capacity(&self) -> crate::error::Result<Capacity> {
        self.capacity
            .lock()
            .await
            .read(&self.store, &self.sessions)
            .await
    }

    /// Sends queued executions to nodes with free slots: tenants in turn,
    /// each within its share of running executions.
    async fn dispatch(&self) -> crate::error::Result<()> {
        if self.lock().queue.is_empty() {
            return Ok(());
        }
        let capacity = self.capacity().await?;
        let slots = capacity.slots();
        let share = |tenant: &str| {
            let own = capacity.limits.get(tenant).copied().unwrap_or_default();
            self.defaults.running_executions(&own, slots)
        };
        let (picked, unrunnable) = {
            let mut state = self.lock();
            let mut busy: HashMap<String, usize> = HashMap::new();
            for run in state.running.values() {
                *busy.entry(run.node.clone()).or_default() += 1;
            }
            let mut per_tenant = state.running_by_tenant();
            let (picked, unrunnable) = state.queue.take(&mut per_tenant, share, |queued| {
                let language = queued.language.as_str();
                let able: Vec<&ReadyNode> = capacity
                    .nodes
                    .iter()
                    .filter(|(_, langs, _)| langs.iter().any(|l| l == language))
                    .collect();
                if able.is_empty() {
                    return Fit::Never;
                }
                // The least busy node with a free slot.
                let free = able
                    .iter()
                    .filter(|(name, _, slots)| {
                        busy.get(name.as_str()).copied().unwrap_or(0) < *slots
                    })
                    .min_by_key(|(name, _, _)| busy.get(name.as_str()).copied().unwrap_or(0));
                match free {
                    Some((name, _, _)) => {
                        *busy.entry(name.to_string()).or_default() += 1;
                        Fit::Place(name.clone())
                    }
                    None => Fit::NotNow,
                }
            });
            for (node, queued) in &picked {
                state.running.insert(
                    queued.id.clone(),
                    Running {
                        node: node.to_string(),
                        tenant: queued.tenant.clone(),
                    },
                );
            }
            (picked, unrunnable)
        };
        for queued in unrunnable {
            let reason = format!(
                "no ready node runs {} at the moment",
                queued.language.as_str()
            );
            // One failed write leaves the others to go on.
            match self
                .store
                .finish_execution(&queued.id, ExecutionState::Rejected, None, &reason)
                .await
            {
                Ok(model) => {
                    let _ = self.finished.send(Arc::new(model));
                }
                Err(err) => {
                    tracing::warn!(execution = %queued.id, error = %err, "recording an unrunnable execution failed")
                }
            }
        }
        for (node, queued) in picked {
            let id = queued.id.clone();
            // Sent first, recorded as running after: the write is not on
            // the run's path.
            let sent = self
                .sessions
                .send(
                    &node,
                    pb::ControlMessage {
                        message: Some(Down::Execute(queued.request.clone())),
                    },
                )
                .await;
            if sent {
                if let Err(err) = self.store.start_execution(&id, node.as_str()).await {
                    tracing::warn!(execution = %id, error = %err, "recording an execution as running failed");
                }
            } else {
                // The node went away between the listing and now: queue
                // again, unless it was ended meanwhile (its node was lost,
                // or it was cancelled).
                let mut state = self.lock();
                if state.running.remove(&id).is_some() {
                    state.queue.push_front(queued);
                }
            }
        }
        Ok(())
    }

    /// Languages ready nodes run, with their versions.
    pub async fn info(&self) -> crate::error::Result<pb::ExecutionInfo> {
        let mut languages: Vec<pb::LanguageInfo> = Vec::new();
        for node in self.store.list_nodes(Some(NodeState::Ready)).await? {
            for runtime in node.runtimes.iter().filter(|r| r.available) {
                let Ok(language) = runtime.name.parse::<Language>() else {
                    continue;
                };
                let code = pb::Language::from(language) as i32;
                if !languages.iter().any(|l| l.language == code) {
                    languages.push(pb::LanguageInfo {
                        language: code,
                        version: runtime.version.clone(),
                    });
                }
            }
        }
        languages.sort_by_key(|l| l.language);
        Ok(pb::ExecutionInfo {
            languages,
            default_timeout_ms: DEFAULT_TIMEOUT_MS,
            max_timeout_ms: MAX_TIMEOUT_MS,
            default_memory_bytes: berth_proto::domain::DEFAULT_EXECUTION_MEMORY_BYTES,
            max_memory_bytes: MAX_MEMORY_BYTES,
            max_code_bytes: MAX_CODE_BYTES as u32,
        })
    }
}
