//! `berth.v1.ExecutionService`: runs for the tenant the caller speaks for
//! ([`crate::scope::execution_tenant`]); another tenant's run is not found.

use super::{Executions, MAX_TIMEOUT_MS};
use crate::{
    db::entities::executions as entity,
    store::{executions::to_proto, Store},
};
use berth_proto::{domain::ExecutionState, pb};
use std::sync::Arc;
use tonic::Status;

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
    /// Records a run for the tenant the caller speaks for.
    async fn submitted(
        &self,
        request: tonic::Request<pb::ExecuteRequest>,
    ) -> Result<entity::Model, Status> {
        let tenant =
            crate::scope::execution_tenant(&request, &self.store, &request.get_ref().tenant)
                .await?;
        self.executions
            .submit(pb::ExecuteRequest {
                tenant,
                ..request.into_inner()
            })
            .await
    }

    /// Execution `id`, when the tenant the caller speaks for (`asked`,
    /// held to its key or certificate) may see it.
    async fn asked<T>(
        &self,
        request: &tonic::Request<T>,
        id: &str,
        asked: &str,
    ) -> Result<entity::Model, Status> {
        let tenant = crate::scope::execution_tenant(request, &self.store, asked).await?;
        self.owned(id, &tenant).await
    }

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
        let submitted = self.submitted(request).await?;
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
        let submitted = self.submitted(request).await?;
        Ok(tonic::Response::new(to_proto(&submitted)))
    }

    async fn get_execution(
        &self,
        request: tonic::Request<pb::GetExecutionRequest>,
    ) -> Result<tonic::Response<pb::Execution>, Status> {
        let r = request.get_ref();
        let execution = self.asked(&request, &r.execution_id, &r.tenant).await?;
        Ok(tonic::Response::new(to_proto(&execution)))
    }

    async fn cancel_execution(
        &self,
        request: tonic::Request<pb::CancelExecutionRequest>,
    ) -> Result<tonic::Response<pb::Execution>, Status> {
        let r = request.get_ref();
        let execution = self.asked(&request, &r.execution_id, &r.tenant).await?;
        Ok(tonic::Response::new(to_proto(
            &self.executions.cancel(&execution.id).await?,
        )))
    }

    async fn validate_code(
        &self,
        request: tonic::Request<pb::ValidateCodeRequest>,
    ) -> Result<tonic::Response<pb::ValidateCodeResponse>, Status> {
        let tenant = crate::scope::execution_tenant(&request, &self.store, "").await?;
        let request = request.into_inner();
        let submitted = self
            .executions
            .submit_as(
                pb::ExecuteRequest {
                    tenant,
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
