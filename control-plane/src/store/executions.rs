//! Executions as stored: queued, running, and their results.

use super::{nodes::timestamp, Store};
use crate::{
    db::entities::executions,
    error::{Error, Result},
};
use berth_proto::{
    domain::{ExecutionState, Language},
    pb,
};
use chrono::Utc;
use sea_orm::{ActiveModelTrait, ColumnTrait, EntityTrait, QueryFilter, Set};

/// Turns a stored execution into its API form.
pub fn to_proto(m: &executions::Model) -> pb::Execution {
    let language = m
        .language
        .parse::<Language>()
        .map_or(pb::Language::Unspecified as i32, |l| {
            pb::Language::from(l) as i32
        });
    let state = m
        .state
        .parse::<ExecutionState>()
        .map_or(pb::ExecutionState::Unspecified as i32, |s| {
            pb::ExecutionState::from(s) as i32
        });
    pb::Execution {
        id: m.id.clone(),
        tenant: m.tenant.clone(),
        language,
        state,
        node_name: m.node_name.clone().unwrap_or_default(),
        stdout: m.stdout.clone(),
        stderr: m.stderr.clone(),
        stdout_truncated: m.stdout_truncated,
        stderr_truncated: m.stderr_truncated,
        exit_code: m.exit_code.unwrap_or(0),
        signal: m.signal.unwrap_or(0),
        wall_time_ms: m.wall_time_ms.max(0) as u32,
        cpu_time_ms: m.cpu_time_ms.max(0) as u32,
        peak_memory_bytes: m.peak_memory_bytes.max(0) as u64,
        error: m.error.clone(),
        created_at: Some(timestamp(m.created_at)),
        finished_at: m.finished_at.map(timestamp),
    }
}

/// A new execution as it is recorded.
pub struct NewExecution<'a> {
    pub id: &'a str,
    pub tenant: &'a str,
    pub language: &'a str,
    pub timeout_ms: u32,
    pub memory_bytes: u64,
    pub state: ExecutionState,
    pub error: &'a str,
}

fn finished(state: ExecutionState) -> bool {
    !matches!(state, ExecutionState::Queued | ExecutionState::Running)
}

impl Store {
    pub async fn insert_execution(&self, new: NewExecution<'_>) -> Result<executions::Model> {
        let now = Utc::now();
        let model = executions::ActiveModel {
            id: Set(new.id.to_owned()),
            tenant: Set(new.tenant.to_owned()),
            language: Set(new.language.to_owned()),
            state: Set(new.state.as_str().to_owned()),
            node_name: Set(None),
            timeout_ms: Set(new.timeout_ms as i32),
            memory_bytes: Set(new.memory_bytes as i64),
            stdout: Set(Vec::new()),
            stderr: Set(Vec::new()),
            stdout_truncated: Set(false),
            stderr_truncated: Set(false),
            exit_code: Set(None),
            signal: Set(None),
            wall_time_ms: Set(0),
            cpu_time_ms: Set(0),
            peak_memory_bytes: Set(0),
            error: Set(new.error.to_owned()),
            created_at: Set(now),
            started_at: Set(None),
            finished_at: Set(finished(new.state).then_some(now)),
        };
        Ok(model.insert(self.db()).await?)
    }

    pub async fn get_execution(&self, id: &str) -> Result<executions::Model> {
        executions::Entity::find_by_id(id)
            .one(self.db())
            .await?
            .ok_or_else(|| Error::NotFound(format!("execution {id} not found")))
    }

    pub async fn start_execution(&self, id: &str, node: &str) -> Result<()> {
        use sea_orm::sea_query::Expr;
        // One statement, and only while it is queued: the result may have
        // been recorded first (the run was sent before this is written).
        executions::Entity::update_many()
            .col_expr(
                executions::Column::State,
                Expr::value(ExecutionState::Running.as_str()),
            )
            .col_expr(executions::Column::NodeName, Expr::value(node))
            .col_expr(executions::Column::StartedAt, Expr::value(Utc::now()))
            .filter(executions::Column::Id.eq(id))
            .filter(executions::Column::State.eq(ExecutionState::Queued.as_str()))
            .exec(self.db())
            .await?;
        Ok(())
    }

    /// Records how an execution ended (once: a finished one stays as it is),
    /// in one statement that also returns the row.
    pub async fn finish_execution(
        &self,
        id: &str,
        state: ExecutionState,
        result: Option<&pb::ExecutionResult>,
        error: &str,
    ) -> Result<executions::Model> {
        use sea_orm::sea_query::Expr;
        let mut update = executions::Entity::update_many()
            .col_expr(executions::Column::State, Expr::value(state.as_str()))
            .col_expr(executions::Column::Error, Expr::value(error))
            .col_expr(executions::Column::FinishedAt, Expr::value(Utc::now()));
        if let Some(r) = result {
            update = update
                .col_expr(executions::Column::Stdout, Expr::value(r.stdout.clone()))
                .col_expr(executions::Column::Stderr, Expr::value(r.stderr.clone()))
                .col_expr(
                    executions::Column::StdoutTruncated,
                    Expr::value(r.stdout_truncated),
                )
                .col_expr(
                    executions::Column::StderrTruncated,
                    Expr::value(r.stderr_truncated),
                )
                .col_expr(
                    executions::Column::ExitCode,
                    Expr::value((r.signal == 0).then_some(r.exit_code)),
                )
                .col_expr(
                    executions::Column::Signal,
                    Expr::value((r.signal != 0).then_some(r.signal)),
                )
                .col_expr(
                    executions::Column::WallTimeMs,
                    Expr::value(r.wall_time_ms.min(i32::MAX as u32) as i32),
                )
                .col_expr(
                    executions::Column::CpuTimeMs,
                    Expr::value(r.cpu_time_ms.min(i32::MAX as u32) as i32),
                )
                .col_expr(
                    executions::Column::PeakMemoryBytes,
                    Expr::value(r.peak_memory_bytes.min(i64::MAX as u64) as i64),
                );
        }
        let updated = update
            .filter(executions::Column::Id.eq(id))
            .filter(executions::Column::State.is_in([
                ExecutionState::Queued.as_str(),
                ExecutionState::Running.as_str(),
            ]))
            .exec_with_returning(self.db())
            .await?;
        match updated.into_iter().next() {
            Some(model) => Ok(model),
            // Already finished (or unknown): as it is.
            None => self.get_execution(id).await,
        }
    }

    /// Executions left queued or running by an earlier control plane.
    pub async fn unfinished_executions(&self) -> Result<Vec<executions::Model>> {
        Ok(executions::Entity::find()
            .filter(executions::Column::State.is_in([
                ExecutionState::Queued.as_str(),
                ExecutionState::Running.as_str(),
            ]))
            .all(self.db())
            .await?)
    }
}
