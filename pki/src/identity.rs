//! Who a certificate belongs to: a role and a name, carried in a URI SAN.

use crate::PkiError;
use std::{fmt, str::FromStr};
use x509_parser::{extensions::GeneralName, prelude::FromDer};

/// URI prefix of Berth identities in certificates.
pub const URI_PREFIX: &str = "spiffe://berth/";

/// What a certificate's holder is allowed to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    ControlPlane,
    Agent,
    Gateway,
    /// The whole cluster: every tenant, every node.
    Admin,
    /// One tenant's deployer, the tenant being the certificate's name: it
    /// manages that tenant's apps, builds, keys and executions, and sees
    /// nothing of other tenants.
    Tenant,
}

impl Role {
    pub const ALL: [Role; 5] = [
        Role::ControlPlane,
        Role::Agent,
        Role::Gateway,
        Role::Admin,
        Role::Tenant,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::ControlPlane => "control-plane",
            Role::Agent => "agent",
            Role::Gateway => "gateway",
            Role::Admin => "admin",
            Role::Tenant => "tenant",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = PkiError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|role| role.as_str() == s)
            .ok_or_else(|| {
                PkiError::Invalid(format!(
                    "unknown role {s:?}; expected control-plane, agent, gateway, admin or tenant"
                ))
            })
    }
}

/// The holder of a certificate.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Identity {
    pub role: Role,
    pub name: String,
}

impl Identity {
    pub fn new(role: Role, name: impl Into<String>) -> Self {
        Self {
            role,
            name: name.into(),
        }
    }

    pub fn uri(&self) -> String {
        format!("{URI_PREFIX}{}/{}", self.role, self.name)
    }

    /// Parses `spiffe://berth/{role}/{name}`.
    pub fn from_uri(uri: &str) -> Option<Self> {
        let rest = uri.strip_prefix(URI_PREFIX)?;
        let (role, name) = rest.split_once('/')?;
        if name.is_empty() || name.contains('/') {
            return None;
        }
        Some(Self {
            role: role.parse().ok()?,
            name: name.to_owned(),
        })
    }

    /// Reads the identity out of a DER certificate. A certificate with no
    /// Berth URI SAN, or with more than one, has no identity.
    pub fn from_der(der: &[u8]) -> Result<Self, PkiError> {
        let (_, cert) = x509_parser::certificate::X509Certificate::from_der(der)
            .map_err(|e| PkiError::Invalid(format!("unreadable certificate: {e}")))?;
        let sans = cert
            .subject_alternative_name()
            .map_err(|e| PkiError::Invalid(format!("bad subjectAltName: {e}")))?
            .ok_or_else(|| PkiError::Invalid("certificate has no subjectAltName".into()))?;
        let mut found = sans
            .value
            .general_names
            .iter()
            .filter_map(|name| match name {
                GeneralName::URI(uri) if uri.starts_with(URI_PREFIX) => Some(*uri),
                _ => None,
            });
        let uri = found
            .next()
            .ok_or_else(|| PkiError::Invalid("certificate carries no berth identity".into()))?;
        if found.next().is_some() {
            return Err(PkiError::Invalid(
                "certificate carries several berth identities".into(),
            ));
        }
        Self::from_uri(uri)
            .ok_or_else(|| PkiError::Invalid(format!("malformed berth identity {uri:?}")))
    }

    /// Reads the identity from the first certificate of a PEM file's text.
    pub fn from_pem(pem: &str) -> Result<Self, PkiError> {
        use rustls_pki_types::{pem::PemObject, CertificateDer};
        let der = CertificateDer::from_pem_slice(pem.as_bytes())
            .map_err(|e| PkiError::Invalid(format!("no certificate in PEM: {e}")))?;
        Self::from_der(&der)
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.role, self.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_uri_round_trips() {
        let id = Identity::new(Role::Agent, "node-1");
        assert_eq!(id.uri(), "spiffe://berth/agent/node-1");
        assert_eq!(Identity::from_uri(&id.uri()), Some(id));
        assert_eq!(Identity::from_uri("spiffe://berth/root/x"), None);
        assert_eq!(Identity::from_uri("spiffe://berth/agent/"), None);
        assert_eq!(Identity::from_uri("spiffe://berth/agent/a/b"), None);
        assert_eq!(Identity::from_uri("spiffe://other/agent/a"), None);
    }
}
