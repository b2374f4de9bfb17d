//! `berth.v1.ApiKeyService`: gateway API keys, for admins.

use crate::store::{
    keys::{KeyRecord, KeySpec},
    nodes::timestamp,
    Store,
};
use berth_proto::pb::{self, api_key_service_server::ApiKeyService};
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
        admin: key.admin,
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
        let r = request.into_inner();
        let spec = KeySpec::new(&r.tenant, &r.name, r.admin, r.rate_per_second, r.burst)
            .map_err(crate::error::Error::from)?;
        let (record, key) = self.store.create_key(&spec).await?;
        tracing::info!(id = %record.id, prefix = %record.prefix, tenant = %record.tenant, admin = record.admin, "API key created");
        Ok(Response::new(pb::CreateApiKeyResponse {
            api_key: Some(to_proto(record)),
            key,
        }))
    }

    async fn list_api_keys(
        &self,
        request: Request<pb::ListApiKeysRequest>,
    ) -> Result<Response<pb::ListApiKeysResponse>, Status> {
        let tenant = Some(request.get_ref().tenant.as_str()).filter(|t| !t.is_empty());
        let keys = self.store.list_keys(tenant).await?;
        Ok(Response::new(pb::ListApiKeysResponse {
            api_keys: keys.into_iter().map(to_proto).collect(),
        }))
    }

    async fn revoke_api_key(
        &self,
        request: Request<pb::RevokeApiKeyRequest>,
    ) -> Result<Response<pb::ApiKey>, Status> {
        let id = request.get_ref().id.trim();
        if id.is_empty() {
            return Err(Status::invalid_argument("id: required"));
        }
        let record = self.store.revoke_key(id).await?;
        tracing::info!(id = %record.id, prefix = %record.prefix, "API key revoked");
        Ok(Response::new(to_proto(record)))
    }
}
