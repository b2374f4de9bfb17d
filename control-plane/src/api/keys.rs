//! `berth.v1.ApiKeyService`: gateway API keys — every tenant's for admins,
//! a tenant's own for its deployers.

use crate::{
    scope::Scope,
    store::{
        keys::{KeyRecord, KeySpec, DEFAULT_BURST, DEFAULT_RATE_PER_SECOND},
        nodes::timestamp,
        Store,
    },
};
use berth_proto::{
    domain::KeyRole,
    pb::{self, api_key_service_server::ApiKeyService},
};
use tonic::{Request, Response, Status};

pub struct KeyApi {
    pub store: Store,
}

fn to_proto(key: KeyRecord) -> pb::ApiKey {
    pb::ApiKey {
        id: key.id,
        tenant: key.tenant,
        name: key.name,
        prefix: key.prefix,
        admin: key.role == KeyRole::Admin,
        role: pb::KeyRole::from(key.role).into(),
        rate_per_second: key.rate_per_second,
        burst: key.burst,
        created_at: Some(timestamp(key.created_at)),
        revoked_at: key.revoked_at.map(timestamp),
    }
}

#[tonic::async_trait]
impl ApiKeyService for KeyApi {
    async fn create_api_key(
        &self,
        request: Request<pb::CreateApiKeyRequest>,
    ) -> Result<Response<pb::CreateApiKeyResponse>, Status> {
        let scope = Scope::of(&request, &self.store).await?;
        let r = request.into_inner();
        let tenant = scope.tenant_for_new(&r.tenant)?;
        let role = KeyRole::from_wire(r.role, r.admin).map_err(crate::error::Error::from)?;
        let spec = KeySpec::new(&tenant, &r.name, role, r.rate_per_second, r.burst)
            .map_err(crate::error::Error::from)?;
        if let Scope::Tenant(own) = &scope {
            if spec.role == KeyRole::Admin {
                return Err(Status::permission_denied(
                    "role: a tenant makes deployer and invoker keys only; admin keys come from an admin",
                ));
            }
            if spec.rate_per_second > DEFAULT_RATE_PER_SECOND || spec.burst > DEFAULT_BURST {
                return Err(Status::permission_denied(format!(
                    "rate_per_second, burst: a tenant's keys get at most {DEFAULT_RATE_PER_SECOND}/s and a burst of {DEFAULT_BURST}; an admin may raise them (tenant {own})"
                )));
            }
        }
        let (record, key) = self.store.create_key(&spec).await?;
        tracing::info!(id = %record.id, prefix = %record.prefix, tenant = %record.tenant, role = %record.role, "API key created");
        Ok(Response::new(pb::CreateApiKeyResponse {
            api_key: Some(to_proto(record)),
            key,
        }))
    }

    async fn list_api_keys(
        &self,
        request: Request<pb::ListApiKeysRequest>,
    ) -> Result<Response<pb::ListApiKeysResponse>, Status> {
        let scope = Scope::of(&request, &self.store).await?;
        let tenant = scope.tenant_filter(&request.get_ref().tenant)?;
        let mut keys = self.store.list_keys(tenant.as_deref()).await?;
        // A tenant's deployer neither sees nor touches an admin's key that
        // happens to sit in its tenant.
        if scope.tenant().is_some() {
            keys.retain(|k| k.role != KeyRole::Admin);
        }
        Ok(Response::new(pb::ListApiKeysResponse {
            api_keys: keys.into_iter().map(to_proto).collect(),
        }))
    }

    async fn revoke_api_key(
        &self,
        request: Request<pb::RevokeApiKeyRequest>,
    ) -> Result<Response<pb::ApiKey>, Status> {
        let scope = Scope::of(&request, &self.store).await?;
        let id = request.get_ref().id.trim();
        if id.is_empty() {
            return Err(Status::invalid_argument("id: required"));
        }
        let record = self.store.revoke_key(id, scope.tenant()).await?;
        tracing::info!(id = %record.id, prefix = %record.prefix, "API key revoked");
        Ok(Response::new(to_proto(record)))
    }
}
