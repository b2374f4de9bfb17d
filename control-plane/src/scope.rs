//! Whose things a management call may see and change.
//!
//! A call acts for the whole cluster (an admin certificate, or an admin API
//! key passed on by the gateway) or for one tenant (a tenant certificate,
//! or a deployer key passed on by the gateway). Every management method
//! asks [`Scope::of`] first and then keeps to it: another tenant's apps,
//! builds, keys and executions answer `NOT_FOUND`, exactly as ones that do
//! not exist, and lists and event streams hold only the tenant's own.
//!
//! The gateway's certificate alone grants nothing here: it must pass on the
//! caller's key (`x-berth-key` metadata), which this control plane checks
//! itself, so a gateway cannot act beyond the keys its users hold.

use crate::{auth, store::Store};
use berth_pki::Role;
use berth_proto::domain::KeyRole;
use tonic::{Request, Status};

/// The metadata the gateway passes a caller's API key in.
pub const KEY_METADATA: &str = "x-berth-key";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// Every tenant, and the cluster's own things (nodes, cleanup).
    Cluster,
    /// One tenant's things only.
    Tenant(String),
}

impl Scope {
    /// The scope of `request`'s caller; refused when it may not manage at all.
    pub async fn of<T>(request: &Request<T>, store: &Store) -> Result<Scope, Status> {
        let identity = auth::caller(request)?;
        match identity.role {
            Role::Admin | Role::ControlPlane => Ok(Scope::Cluster),
            Role::Tenant if identity.name == ANONYMOUS_TENANT => Err(reserved()),
            Role::Tenant => Ok(Scope::Tenant(identity.name.clone())),
            Role::Gateway => {
                let key = passed_key(request, store).await?.ok_or_else(|| {
                    Status::permission_denied(
                        "a management call through the gateway must carry the caller's API key",
                    )
                })?;
                match key.role {
                    KeyRole::Admin => Ok(Scope::Cluster),
                    KeyRole::Deployer => Ok(Scope::Tenant(key.tenant)),
                    KeyRole::Invoker => Err(Status::permission_denied(
                        "this key may call apps and run code only (role invoker); managing needs a deployer or admin key",
                    )),
                }
            }
            Role::Agent => Err(Status::permission_denied("agents do not manage")),
        }
    }

    /// Refuses a tenant: the call reaches across tenants or into the
    /// cluster's own things (nodes, cleanup).
    pub fn require_cluster(&self) -> Result<(), Status> {
        match self {
            Scope::Cluster => Ok(()),
            Scope::Tenant(_) => Err(Status::permission_denied(
                "this needs an admin: an admin certificate, or an admin API key through the gateway",
            )),
        }
    }

    /// The tenant to filter by: `None` for the cluster.
    pub fn tenant(&self) -> Option<&str> {
        match self {
            Scope::Cluster => None,
            Scope::Tenant(tenant) => Some(tenant),
        }
    }

    /// Whether `tenant`'s things are visible.
    pub fn sees(&self, tenant: &str) -> bool {
        self.tenant().is_none_or(|own| own == tenant)
    }

    /// `NOT_FOUND` (as for something that does not exist) unless `tenant`'s
    /// things are visible; `what` names the thing asked for.
    pub fn check(&self, tenant: &str, what: &str) -> Result<(), Status> {
        if self.sees(tenant) {
            Ok(())
        } else {
            tracing::warn!(scope = ?self, owner = %tenant, %what, "another tenant's thing was asked for");
            Err(Status::not_found(format!("{what} not found")))
        }
    }

    /// The tenant something new is made in: the one asked for (empty: the
    /// scope's own, or `default` for the cluster); a tenant may not name
    /// another.
    pub fn tenant_for_new(&self, asked: &str) -> Result<String, Status> {
        match self {
            Scope::Cluster if asked.is_empty() => Ok("default".to_owned()),
            Scope::Cluster => Ok(asked.to_owned()),
            Scope::Tenant(own) if asked.is_empty() || asked == own => Ok(own.clone()),
            Scope::Tenant(own) => Err(Status::permission_denied(format!(
                "tenant: this caller manages tenant {own:?} only, not {asked:?}"
            ))),
        }
    }
}

impl Scope {
    /// The tenant a list is filtered by: the one asked for (empty: every
    /// tenant for the cluster, the scope's own for a tenant).
    pub fn tenant_filter(&self, asked: &str) -> Result<Option<String>, Status> {
        if asked.is_empty() && *self == Scope::Cluster {
            return Ok(None);
        }
        self.tenant_for_new(asked).map(Some)
    }
}

pub use berth_proto::domain::ANONYMOUS_TENANT;

/// The key the gateway passed on, checked here; `None` when it passed none.
async fn passed_key<T>(
    request: &Request<T>,
    store: &Store,
) -> Result<Option<crate::store::keys::KeyRecord>, Status> {
    let Some(key) = request.metadata().get(KEY_METADATA) else {
        return Ok(None);
    };
    let key = key
        .to_str()
        .map_err(|_| Status::unauthenticated("the API key is not text"))?;
    let hash = crate::store::keys::hash_key(key.trim());
    match store.active_key_by_hash(&hash).await? {
        Some(key) => Ok(Some(key)),
        None => {
            tracing::warn!("a call through the gateway with an unknown or revoked key");
            Err(Status::unauthenticated("the API key is unknown or revoked"))
        }
    }
}

/// The tenant an execution call is for; empty (for reads) means every
/// tenant's. Admins name any. A tenant's certificate, and a key the gateway
/// passes on, are held to their own tenant; a call through the gateway
/// without a key is its anonymous caller's. The gateway's word alone names
/// no tenant.
pub async fn execution_tenant<T>(
    request: &Request<T>,
    store: &Store,
    asked: &str,
) -> Result<String, Status> {
    let identity = auth::caller(request)?;
    match identity.role {
        Role::Tenant if identity.name == ANONYMOUS_TENANT => Err(reserved()),
        Role::Tenant => Scope::Tenant(identity.name.clone()).tenant_for_new(asked),
        Role::Gateway => match passed_key(request, store).await? {
            None => Ok(ANONYMOUS_TENANT.to_owned()),
            Some(key) if key.role == KeyRole::Admin => Ok(asked.to_owned()),
            Some(key) => Scope::Tenant(key.tenant).tenant_for_new(asked),
        },
        Role::Admin | Role::ControlPlane | Role::Agent => Ok(asked.to_owned()),
    }
}

fn reserved() -> Status {
    Status::permission_denied(format!(
        "tenant {ANONYMOUS_TENANT:?} is reserved for callers without a key"
    ))
}

#[cfg(test)]
mod tests {
    use super::Scope;

    #[test]
    fn a_tenant_sees_its_own_and_makes_nothing_elsewhere() {
        let acme = Scope::Tenant("acme".into());
        assert!(acme.sees("acme"));
        assert!(!acme.sees("globex"));
        assert_eq!(
            acme.check("globex", "app x").unwrap_err().code(),
            tonic::Code::NotFound
        );
        assert_eq!(acme.tenant_for_new("").unwrap(), "acme");
        assert_eq!(
            acme.tenant_for_new("globex").unwrap_err().code(),
            tonic::Code::PermissionDenied
        );
        assert!(acme.require_cluster().is_err());
        assert!(Scope::Cluster.sees("globex"));
        assert_eq!(Scope::Cluster.tenant_for_new("").unwrap(), "default");
        assert_eq!(Scope::Cluster.tenant_filter("").unwrap(), None);
        assert_eq!(acme.tenant_filter("").unwrap().as_deref(), Some("acme"));
        assert!(acme.tenant_filter("globex").is_err());
    }
}
