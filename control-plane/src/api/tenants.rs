//! `berth.v1.TenantService`: tenants and their fair shares — every tenant
//! for admins (who set limits), its own for a tenant's deployer.

use crate::{
    executions::Executions,
    quotas::{Limits, MAX_LIMIT},
    scope::Scope,
    store::{nodes::timestamp, tenants::TenantRecord, Store},
};
use berth_proto::pb::{self, tenant_service_server::TenantService};
use std::sync::Arc;
use tonic::{Request, Response, Status};

pub struct TenantApi {
    pub store: Store,
    pub executions: Arc<Executions>,
}

impl TenantApi {
    async fn view(&self, tenant: TenantRecord, slots: usize) -> pb::Tenant {
        let defaults = self.executions.defaults();
        pb::Tenant {
            effective: Some(defaults.effective(&tenant.limits, slots).to_proto()),
            limits: Some(tenant.limits.to_proto()),
            created_at: Some(timestamp(tenant.created_at)),
            name: tenant.name,
        }
    }
}

/// The change a request asks for, each value checked.
fn change(limits: Option<pb::TenantLimits>) -> Result<Limits, Status> {
    let limits = limits.ok_or_else(|| Status::invalid_argument("limits: required"))?;
    let check = |field: &str, value: Option<u32>| match value {
        Some(n) if n > MAX_LIMIT => Err(Status::invalid_argument(format!(
            "limits.{field}: {n} is over {MAX_LIMIT} (0 returns to the default)"
        ))),
        other => Ok(other),
    };
    Ok(Limits {
        max_running_executions: check("max_running_executions", limits.max_running_executions)?,
        max_queued_executions: check("max_queued_executions", limits.max_queued_executions)?,
        max_running_builds: check("max_running_builds", limits.max_running_builds)?,
    })
}

#[tonic::async_trait]
impl TenantService for TenantApi {
    async fn list_tenants(
        &self,
        request: Request<pb::ListTenantsRequest>,
    ) -> Result<Response<pb::ListTenantsResponse>, Status> {
        let scope = Scope::of(&request, &self.store).await?;
        let slots = self.executions.slots().await?;
        let mut tenants = Vec::new();
        for tenant in self.store.list_tenants(scope.tenant()).await? {
            tenants.push(self.view(tenant, slots).await);
        }
        Ok(Response::new(pb::ListTenantsResponse { tenants }))
    }

    async fn set_tenant_limits(
        &self,
        request: Request<pb::SetTenantLimitsRequest>,
    ) -> Result<Response<pb::Tenant>, Status> {
        Scope::of(&request, &self.store).await?.require_cluster()?;
        let request = request.into_inner();
        let change = change(request.limits)?;
        let tenant = self.store.set_tenant_limits(&request.name, &change).await?;
        tracing::info!(tenant = %tenant.name, limits = %tenant.limits, "tenant limits set");
        let slots = self.executions.slots().await?;
        Ok(Response::new(self.view(tenant, slots).await))
    }
}
