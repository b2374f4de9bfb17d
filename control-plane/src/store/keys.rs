//! API keys: made here, shown once, stored as a SHA-256 hash.

use super::{events, events::NewEvent, Store};
use crate::{
    db::entities::{api_keys, tenants},
    error::{Error, Result},
};
use berth_proto::{
    domain::{check_dns_label_value, KeyRole, ANONYMOUS_TENANT, API_KEY_PREFIX, API_KEY_SHOWN_LEN},
    FieldError,
};
use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder, Set,
    TransactionTrait,
};
use sha2::{Digest, Sha256};

pub const DEFAULT_RATE_PER_SECOND: f64 = 100.0;
pub const DEFAULT_BURST: u32 = 200;
pub const MAX_RATE_PER_SECOND: f64 = 1_000_000.0;
pub const MAX_BURST: u32 = 1_000_000;
/// Most keys one tenant may hold unrevoked.
pub const MAX_ACTIVE_KEYS_PER_TENANT: u64 = 100;

/// What a new key may do, validated.
#[derive(Debug, Clone)]
pub struct KeySpec {
    pub tenant: String,
    pub name: String,
    pub role: KeyRole,
    pub rate_per_second: f64,
    pub burst: u32,
}

impl KeySpec {
    /// Checks the request's fields, filling defaults (a zero rate or burst).
    pub fn new(
        tenant: &str,
        name: &str,
        role: KeyRole,
        rate_per_second: f64,
        burst: u32,
    ) -> Result<Self, FieldError> {
        let tenant = if tenant.is_empty() { "default" } else { tenant };
        check_dns_label_value(tenant).map_err(|m| FieldError::new("tenant", m))?;
        if tenant == ANONYMOUS_TENANT {
            return Err(FieldError::new(
                "tenant",
                format!("{ANONYMOUS_TENANT:?} is reserved for callers without a key"),
            ));
        }
        let name = name.trim();
        if name.len() > 63 || name.chars().any(char::is_control) {
            return Err(FieldError::new(
                "name",
                "at most 63 characters, no control characters",
            ));
        }
        let rate_per_second = match rate_per_second {
            0.0 => DEFAULT_RATE_PER_SECOND,
            r if r.is_finite() && r > 0.0 && r <= MAX_RATE_PER_SECOND => r,
            r => {
                return Err(FieldError::new(
                    "rate_per_second",
                    format!("{r} is outside (0, {MAX_RATE_PER_SECOND}]"),
                ))
            }
        };
        let burst = match burst {
            0 => DEFAULT_BURST.max(rate_per_second.ceil() as u32),
            b if b <= MAX_BURST => b,
            b => {
                return Err(FieldError::new(
                    "burst",
                    format!("{b} is outside 1–{MAX_BURST}"),
                ))
            }
        };
        Ok(Self {
            tenant: tenant.to_owned(),
            name: name.to_owned(),
            role,
            rate_per_second,
            burst,
        })
    }
}

/// A stored key (never the key itself).
#[derive(Debug, Clone)]
pub struct KeyRecord {
    pub id: String,
    pub tenant: String,
    pub name: String,
    pub prefix: String,
    pub key_hash: String,
    pub role: KeyRole,
    pub rate_per_second: f64,
    pub burst: u32,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

impl From<api_keys::Model> for KeyRecord {
    fn from(m: api_keys::Model) -> Self {
        Self {
            id: m.id,
            tenant: m.tenant,
            name: m.name,
            prefix: m.prefix,
            key_hash: m.key_hash,
            // A role this build does not know grants the least.
            role: m.role.parse().unwrap_or(KeyRole::Invoker),
            rate_per_second: m.rate_per_second,
            burst: u32::try_from(m.burst).unwrap_or(DEFAULT_BURST),
            created_at: m.created_at,
            revoked_at: m.revoked_at,
        }
    }
}

/// Hex SHA-256 of a key: what is stored and what gateways compare.
pub fn hash_key(key: &str) -> String {
    let digest = Sha256::digest(key.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// A fresh key: the prefix and 244 random bits, hex.
fn generate_key() -> String {
    format!(
        "{API_KEY_PREFIX}{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

fn key_event(kind: &'static str, key: &KeyRecord, message: String) -> NewEvent {
    NewEvent {
        kind,
        subject_id: key.id.clone(),
        message,
        tenant: Some(key.tenant.clone()),
        ..NewEvent::default()
    }
}

/// Makes tenant `name` unless it exists.
async fn ensure_tenant(conn: &impl sea_orm::ConnectionTrait, name: &str) -> Result<()> {
    if tenants::Entity::find_by_id(name).one(conn).await?.is_none() {
        tenants::ActiveModel {
            name: Set(name.to_owned()),
            created_at: Set(Utc::now()),
            ..Default::default()
        }
        .insert(conn)
        .await?;
    }
    Ok(())
}

impl Store {
    /// Makes tenant `name` unless it exists: a tenant's certificate names
    /// its tenant with authority.
    pub async fn ensure_tenant(&self, name: &str) -> Result<()> {
        ensure_tenant(self.db(), name).await
    }

    /// Makes a key (and its tenant, when new). Returns the record and the
    /// key, which exists nowhere else from now on.
    pub async fn create_key(&self, spec: &KeySpec) -> Result<(KeyRecord, String)> {
        let key = generate_key();
        let now = Utc::now();
        let txn = self.db().begin().await?;
        let active = api_keys::Entity::find()
            .filter(api_keys::Column::Tenant.eq(spec.tenant.as_str()))
            .filter(api_keys::Column::RevokedAt.is_null())
            .count(&txn)
            .await?;
        if active >= MAX_ACTIVE_KEYS_PER_TENANT {
            return Err(Error::ResourceExhausted(format!(
                "tenant {} already holds {active} keys (at most {MAX_ACTIVE_KEYS_PER_TENANT}); revoke one first",
                spec.tenant
            )));
        }
        ensure_tenant(&txn, &spec.tenant).await?;
        let model = api_keys::ActiveModel {
            id: Set(uuid::Uuid::new_v4().to_string()),
            tenant: Set(spec.tenant.clone()),
            name: Set(spec.name.clone()),
            prefix: Set(key[..API_KEY_SHOWN_LEN].to_owned()),
            key_hash: Set(hash_key(&key)),
            admin: Set(spec.role == KeyRole::Admin),
            role: Set(spec.role.as_str().to_owned()),
            rate_per_second: Set(spec.rate_per_second),
            burst: Set(spec.burst as i32),
            created_at: Set(now),
            revoked_at: Set(None),
        }
        .insert(&txn)
        .await?;
        let record = KeyRecord::from(model);
        let event = events::append(
            &txn,
            key_event(
                "key.created",
                &record,
                format!(
                    "{} key {} for tenant {}",
                    record.role, record.prefix, record.tenant
                ),
            ),
        )
        .await?;
        txn.commit().await?;
        self.publish([event]);
        Ok((record, key))
    }

    /// The key that hashes to `key_hash`, unless it is revoked.
    pub async fn active_key_by_hash(&self, key_hash: &str) -> Result<Option<KeyRecord>> {
        Ok(api_keys::Entity::find()
            .filter(api_keys::Column::KeyHash.eq(key_hash))
            .filter(api_keys::Column::RevokedAt.is_null())
            .one(self.db())
            .await?
            .map(KeyRecord::from))
    }

    /// Keys, a tenant's or all, oldest first; revoked ones included.
    pub async fn list_keys(&self, tenant: Option<&str>) -> Result<Vec<KeyRecord>> {
        let mut query = api_keys::Entity::find().order_by_asc(api_keys::Column::CreatedAt);
        if let Some(tenant) = tenant {
            query = query.filter(api_keys::Column::Tenant.eq(tenant));
        }
        Ok(query
            .all(self.db())
            .await?
            .into_iter()
            .map(KeyRecord::from)
            .collect())
    }

    /// Revokes a key (of `tenant`, when given: another tenant's, or an
    /// admin key, is not found); revoking twice keeps the first time.
    pub async fn revoke_key(&self, id: &str, tenant: Option<&str>) -> Result<KeyRecord> {
        let txn = self.db().begin().await?;
        let model = api_keys::Entity::find_by_id(id)
            .one(&txn)
            .await?
            .filter(|key| {
                tenant.is_none_or(|t| key.tenant == t && key.role != KeyRole::Admin.as_str())
            })
            .ok_or_else(|| Error::NotFound(format!("API key {id:?} not found")))?;
        if model.revoked_at.is_some() {
            return Ok(model.into());
        }
        let mut active: api_keys::ActiveModel = model.into();
        active.revoked_at = Set(Some(Utc::now()));
        let record = KeyRecord::from(active.update(&txn).await?);
        let event = events::append(
            &txn,
            key_event(
                "key.revoked",
                &record,
                format!("key {} of tenant {} revoked", record.prefix, record.tenant),
            ),
        )
        .await?;
        txn.commit().await?;
        self.publish([event]);
        Ok(record)
    }
}
