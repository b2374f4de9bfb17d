//! Code executions: checked, queued (bounded), sent to ready nodes that run
//! the language within their concurrency (one per core), and finished from
//! the agents' results. A node lost mid-run fails its executions.

use crate::{
    db::entities::executions as entity,
    sessions::Sessions,
    store::{
        executions::{to_proto, NewExecution},
        Store,
    },
};
use berth_proto::{
    domain::{ExecutionState, Language, NodeName, NodeState},
    pb::{self, control_message::Message as Down},
};
use std::{
    collections::{HashMap, VecDeque},
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
/// Executions waiting for a free slot, at most.
pub const MAX_QUEUE: usize = 256;
/// Compiling may take this long on top of the run's own timeout.
const COMPILE_ALLOWANCE: Duration = Duration::from_secs(70);

struct Queued {
    id: String,
    language: Language,
    request: pb::ExecutionRequest,
}

#[derive(Default)]
struct State {
    queue: VecDeque<Queued>,
    /// Execution id → node running it.
    running: HashMap<String, String>,
}

/// The execution queue and its dispatcher.
pub struct Executions {
    store: Store,
    sessions: Sessions,
    state: Mutex<State>,
    /// Executions as they end, as recorded.
    finished: broadcast::Sender<Arc<entity::Model>>,
    wake: Notify,
    /// Ready nodes, read again after a node event or a second.
    nodes: tokio::sync::Mutex<NodeCache>,
}

/// What [`Executions::nodes`] last read, and whether it still holds.
struct NodeCache {
    nodes: Vec<(NodeName, Vec<String>, usize)>,
    read_at: Option<tokio::time::Instant>,
    events: broadcast::Receiver<crate::db::entities::events::Model>,
}

/// Longest a node listing serves without a node event (another control
/// plane on the same database may have changed a node).
const NODES_MAX_AGE: Duration = Duration::from_secs(1);

/// A request that breaks a limit: the message says which and its value.
fn check(request: &pb::ExecuteRequest) -> Result<(Language, u32, u64), String> {
    let language = pb::Language::try_from(request.language)
        .ok()
        .and_then(|l| Language::try_from(l).ok())
        .ok_or_else(|| {
            format!(
                "language: unknown (enum value {}); one of {}",
                request.language,
                Language::names()
            )
        })?;
    if request.code.len() > MAX_CODE_BYTES {
        return Err(format!(
            "code: {} bytes is over the limit of {MAX_CODE_BYTES} bytes",
            request.code.len()
        ));
    }
    let timeout_ms = match request.timeout_ms {
        0 => DEFAULT_TIMEOUT_MS,
        t if t > MAX_TIMEOUT_MS => {
            return Err(format!(
                "timeout: {t} ms is over the limit of {MAX_TIMEOUT_MS} ms"
            ))
        }
        t => t,
    };
    let memory = match request.memory_bytes {
        0 => language.default_memory_bytes(),
        m if !(MIN_MEMORY_BYTES..=MAX_MEMORY_BYTES).contains(&m) => {
            return Err(format!(
            "memory: {m} bytes is outside the limits {MIN_MEMORY_BYTES}..{MAX_MEMORY_BYTES} bytes"
        ))
        }
        m => m,
    };
    if request.stdin.len() > MAX_STDIN_BYTES {
        return Err(format!(
            "stdin: {} bytes is over the limit of {MAX_STDIN_BYTES} bytes",
            request.stdin.len()
        ));
    }
    Ok((language, timeout_ms, memory))
}

fn state_of(result: &pb::ExecutionResult) -> ExecutionState {
    match pb::ExecutionState::try_from(result.state)
        .ok()
        .and_then(|s| ExecutionState::try_from(s).ok())
    {
        Some(ExecutionState::Queued | ExecutionState::Running) | None => ExecutionState::Failed,
        Some(state) => state,
    }
}

impl Executions {
    pub fn new(store: Store, sessions: Sessions) -> Arc<Self> {
        let events = store.subscribe_events();
        Arc::new(Self {
            store,
            sessions,
            state: Mutex::new(State::default()),
            finished: broadcast::channel(1024).0,
            wake: Notify::new(),
            nodes: tokio::sync::Mutex::new(NodeCache {
                nodes: Vec::new(),
                read_at: None,
                events,
            }),
        })
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
        if self.lock().queue.len() >= MAX_QUEUE {
            return Err(Status::resource_exhausted(format!(
                "every execution slot is busy and {MAX_QUEUE} executions are waiting; retry later"
            )));
        }
        let model = self
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
            .await?;
        self.lock().queue.push_back(Queued {
            id: id.clone(),
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
        let queued = {
            let mut state = self.lock();
            let before = state.queue.len();
            state.queue.retain(|q| q.id != id);
            before != state.queue.len()
        };
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
        let node = self.lock().running.get(id).cloned();
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
            .map(String::as_str)
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
                .filter(|(_, n)| n.as_str() == node)
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

    /// Nodes that can run executions now: ready, connected, with the
    /// languages they report and how many slots they have. The listing is
    /// kept until a node event (or [`NODES_MAX_AGE`]); connections are
    /// checked each time.
    async fn nodes(&self) -> crate::error::Result<Vec<(NodeName, Vec<String>, usize)>> {
        let mut cache = self.nodes.lock().await;
        let mut stale = cache.read_at.is_none_or(|at| at.elapsed() >= NODES_MAX_AGE);
        loop {
            match cache.events.try_recv() {
                Ok(event) => stale |= event.kind.starts_with("node."),
                Err(broadcast::error::TryRecvError::Lagged(_)) => stale = true,
                Err(_) => break,
            }
        }
        if stale {
            let read_at = tokio::time::Instant::now();
            cache.nodes = self
                .store
                .list_nodes(Some(NodeState::Ready))
                .await?
                .into_iter()
                .map(|n| {
                    let languages = n
                        .runtimes
                        .iter()
                        .filter(|r| r.available)
                        .map(|r| r.name.clone())
                        .collect();
                    let slots = (n.cpu_millis as usize / 1000).max(1);
                    (n.name, languages, slots)
                })
                .collect();
            cache.read_at = Some(read_at);
        }
        Ok(cache
            .nodes
            .iter()
            .filter(|(name, _, _)| self.sessions.is_connected(name))
            .cloned()
            .collect())
    }

    /// Sends queued executions to nodes with free slots, oldest first.
    async fn dispatch(&self) -> crate::error::Result<()> {
        if self.lock().queue.is_empty() {
            return Ok(());
        }
        let nodes = self.nodes().await?;
        let (picked, unrunnable) = {
            let mut state = self.lock();
            let mut busy: HashMap<String, usize> = HashMap::new();
            for node in state.running.values() {
                *busy.entry(node.clone()).or_default() += 1;
            }
            let mut picked = Vec::new();
            let mut unrunnable = Vec::new();
            let mut waiting = VecDeque::new();
            while let Some(queued) = state.queue.pop_front() {
                let language = queued.language.as_str();
                let able: Vec<&(NodeName, Vec<String>, usize)> = nodes
                    .iter()
                    .filter(|(_, langs, _)| langs.iter().any(|l| l == language))
                    .collect();
                if able.is_empty() {
                    unrunnable.push(queued);
                    continue;
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
                        state.running.insert(queued.id.clone(), name.to_string());
                        picked.push((name.clone(), queued));
                    }
                    None => waiting.push_back(queued),
                }
            }
            state.queue = waiting;
            (picked, unrunnable)
        };
        for queued in unrunnable {
            let reason = format!(
                "no ready node runs {} at the moment",
                queued.language.as_str()
            );
            let model = self
                .store
                .finish_execution(&queued.id, ExecutionState::Rejected, None, &reason)
                .await?;
            let _ = self.finished.send(Arc::new(model));
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
                self.store.start_execution(&id, node.as_str()).await?;
            } else {
                // The node went away between the listing and now: queue again.
                let mut state = self.lock();
                state.running.remove(&id);
                state.queue.push_front(queued);
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

/// `berth.v1.ExecutionService`.
pub struct ExecutionApi {
    pub executions: Arc<Executions>,
    pub store: Store,
}

fn id_arg(id: &str) -> Result<String, Status> {
    uuid::Uuid::parse_str(id.trim())
        .map(|u| u.to_string())
        .map_err(|_| {
            Status::invalid_argument(format!("execution_id: {id:?} is not an execution id"))
        })
}

impl ExecutionApi {
    /// The execution `id`, when `tenant` (empty for an admin) may see it:
    /// another tenant's is not found, exactly as one that does not exist.
    async fn owned(&self, id: &str, tenant: &str) -> Result<entity::Model, Status> {
        let id = id_arg(id)?;
        let not_found = || Status::not_found(format!("execution {id} not found"));
        let execution = match self.store.get_execution(&id).await {
            Ok(execution) => execution,
            Err(crate::error::Error::NotFound(_)) => return Err(not_found()),
            Err(err) => return Err(err.into()),
        };
        if !tenant.is_empty() && execution.tenant != tenant {
            tracing::warn!(execution = %id, %tenant, "an execution of another tenant was asked for");
            return Err(not_found());
        }
        Ok(execution)
    }
}

#[tonic::async_trait]
impl pb::execution_service_server::ExecutionService for ExecutionApi {
    async fn execute(
        &self,
        request: tonic::Request<pb::ExecuteRequest>,
    ) -> Result<tonic::Response<pb::Execution>, Status> {
        let tenant = crate::scope::execution_tenant(&request, &request.get_ref().tenant)?;
        let request = pb::ExecuteRequest {
            tenant,
            ..request.into_inner()
        };
        let submitted = self.executions.submit(request).await?;
        let done = self
            .executions
            .wait(&submitted.id, submitted.timeout_ms.max(0) as u32)
            .await?;
        Ok(tonic::Response::new(to_proto(&done)))
    }

    async fn submit_execution(
        &self,
        request: tonic::Request<pb::ExecuteRequest>,
    ) -> Result<tonic::Response<pb::Execution>, Status> {
        let tenant = crate::scope::execution_tenant(&request, &request.get_ref().tenant)?;
        let request = pb::ExecuteRequest {
            tenant,
            ..request.into_inner()
        };
        let submitted = self.executions.submit(request).await?;
        Ok(tonic::Response::new(to_proto(&submitted)))
    }

    async fn get_execution(
        &self,
        request: tonic::Request<pb::GetExecutionRequest>,
    ) -> Result<tonic::Response<pb::Execution>, Status> {
        let tenant = crate::scope::execution_tenant(&request, &request.get_ref().tenant)?;
        let execution = self.owned(&request.get_ref().execution_id, &tenant).await?;
        Ok(tonic::Response::new(to_proto(&execution)))
    }

    async fn cancel_execution(
        &self,
        request: tonic::Request<pb::CancelExecutionRequest>,
    ) -> Result<tonic::Response<pb::Execution>, Status> {
        let tenant = crate::scope::execution_tenant(&request, &request.get_ref().tenant)?;
        let execution = self.owned(&request.get_ref().execution_id, &tenant).await?;
        Ok(tonic::Response::new(to_proto(
            &self.executions.cancel(&execution.id).await?,
        )))
    }

    async fn validate_code(
        &self,
        request: tonic::Request<pb::ValidateCodeRequest>,
    ) -> Result<tonic::Response<pb::ValidateCodeResponse>, Status> {
        let request = request.into_inner();
        let submitted = self
            .executions
            .submit_as(
                pb::ExecuteRequest {
                    tenant: String::new(),
                    language: request.language,
                    code: request.code,
                    stdin: Vec::new(),
                    timeout_ms: MAX_TIMEOUT_MS,
                    memory_bytes: 0,
                },
                true,
            )
            .await?;
        let done = self.executions.wait(&submitted.id, MAX_TIMEOUT_MS).await?;
        let state: ExecutionState = done.state.parse().unwrap_or(ExecutionState::Failed);
        if state == ExecutionState::Rejected {
            return Err(Status::invalid_argument(done.error));
        }
        let output = format!(
            "{}\n{}",
            String::from_utf8_lossy(&done.stdout),
            String::from_utf8_lossy(&done.stderr)
        );
        let (errors, warnings) = berth_proto::domain::diagnostics::parse(&output);
        let to_pb = |d: berth_proto::domain::diagnostics::Diagnostic| pb::CodeDiagnostic {
            line: d.line,
            column: d.column,
            message: d.message,
        };
        let mut errors: Vec<pb::CodeDiagnostic> = errors.into_iter().map(to_pb).collect();
        if state != ExecutionState::Succeeded && errors.is_empty() {
            // The checker failed without a located message: say what it said.
            let first = output
                .lines()
                .map(str::trim)
                .find(|l| !l.is_empty())
                .map(str::to_owned)
                .unwrap_or_else(|| done.error.clone());
            errors.push(pb::CodeDiagnostic {
                line: 0,
                column: 0,
                message: first,
            });
        }
        Ok(tonic::Response::new(pb::ValidateCodeResponse {
            valid: errors.is_empty(),
            errors,
            warnings: warnings.into_iter().map(to_pb).collect(),
        }))
    }

    async fn get_execution_info(
        &self,
        _request: tonic::Request<pb::GetExecutionInfoRequest>,
    ) -> Result<tonic::Response<pb::ExecutionInfo>, Status> {
        Ok(tonic::Response::new(self.executions.info().await?))
    }
}
