//! Executions sent by the control plane, run in the sandbox, answered with
//! their results; cancellable while they run.

use super::Links;
use crate::sandbox::{Outcome, Run, Sandbox, Status};
use berth_proto::{
    domain::{ExecutionState, Language},
    pb::{self, agent_message::Message as Up},
};
use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};
use tokio_util::sync::CancellationToken;

#[derive(Clone)]
pub struct Executor {
    sandbox: Arc<Sandbox>,
    links: Links,
    running: Arc<Mutex<HashMap<String, CancellationToken>>>,
    /// Cancels that came before their run (the control plane may send a
    /// cancel while the run is still on its way), newest last.
    early: Arc<Mutex<std::collections::VecDeque<String>>>,
}

/// How many early cancels are remembered.
const EARLY_CANCELS: usize = 1024;

fn state(status: Status) -> ExecutionState {
    match status {
        Status::Succeeded => ExecutionState::Succeeded,
        Status::Failed => ExecutionState::Failed,
        Status::Timeout => ExecutionState::Timeout,
        Status::MemoryExceeded => ExecutionState::MemoryExceeded,
        Status::Rejected => ExecutionState::Rejected,
        Status::Cancelled => ExecutionState::Cancelled,
    }
}

/// The result message for `outcome`.
pub fn result(execution_id: String, outcome: Outcome) -> pb::ExecutionResult {
    pb::ExecutionResult {
        execution_id,
        state: pb::ExecutionState::from(state(outcome.status)) as i32,
        stdout: outcome.stdout,
        stderr: outcome.stderr,
        stdout_truncated: outcome.stdout_truncated,
        stderr_truncated: outcome.stderr_truncated,
        exit_code: outcome.exit_code.unwrap_or(0),
        signal: outcome.signal.unwrap_or(0),
        wall_time_ms: outcome.wall.as_millis().min(u128::from(u32::MAX)) as u32,
        cpu_time_ms: outcome.cpu.as_millis().min(u128::from(u32::MAX)) as u32,
        peak_memory_bytes: outcome.peak_memory_bytes,
        error: outcome.error,
    }
}

impl Executor {
    pub fn new(sandbox: Arc<Sandbox>, links: Links) -> Self {
        Self {
            sandbox,
            links,
            running: Arc::default(),
            early: Arc::default(),
        }
    }

    pub fn sandbox(&self) -> &Sandbox {
        &self.sandbox
    }

    pub fn running(&self) -> usize {
        self.running.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Runs the request in the background and sends its result up.
    pub fn start(&self, request: pb::ExecutionRequest) {
        let token = CancellationToken::new();
        {
            let mut early = self.early.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(at) = early.iter().position(|id| *id == request.execution_id) {
                early.remove(at);
                token.cancel();
            }
        }
        self.running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(request.execution_id.clone(), token.clone());
        let this = self.clone();
        tokio::spawn(async move {
            let language = pb::Language::try_from(request.language)
                .ok()
                .and_then(|l| Language::try_from(l).ok())
                .map_or_else(
                    || format!("enum value {}", request.language),
                    |l| l.as_str().to_owned(),
                );
            let run = Run {
                language,
                code: request.code,
                stdin: request.stdin,
                timeout: Duration::from_millis(u64::from(request.timeout_ms)),
                memory_bytes: request.memory_bytes,
                validate: request.validate_only,
            };
            let outcome = this.sandbox.run_until(run, &token).await;
            this.running
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&request.execution_id);
            tracing::info!(execution = %request.execution_id, status = ?outcome.status, wall = ?outcome.wall, "execution finished");
            let message = pb::AgentMessage {
                message: Some(Up::ExecutionResult(result(request.execution_id, outcome))),
            };
            // Results matter: wait for room rather than drop one.
            let _ = this.links.outbox.send(message).await;
        });
    }

    pub fn cancel(&self, execution_id: &str) {
        let token = self
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(execution_id)
            .cloned();
        match token {
            Some(token) => token.cancel(),
            None => {
                let mut early = self.early.lock().unwrap_or_else(|p| p.into_inner());
                if early.len() >= EARLY_CANCELS {
                    early.pop_front();
                }
                early.push_back(execution_id.to_owned());
            }
        }
    }
}
