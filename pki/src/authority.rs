//! A certificate authority that issues Berth's leaf certificates (rcgen).

use crate::{files::write_new, Identity, PkiError, Role};
use berth_proto::domain::NodeName;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use std::path::Path;
use time::{Duration, OffsetDateTime};

pub const CA_CERT_FILE: &str = "ca.pem";
pub const CA_KEY_FILE: &str = "ca-key.pem";

/// A CA's certificate and private key, both PEM.
pub struct CertificateAuthority {
    pub cert_pem: String,
    key_pem: String,
}

/// What to put in a leaf certificate.
#[derive(Debug, Clone)]
pub struct LeafRequest {
    pub role: Role,
    /// A lowercase DNS name; for agents, the node name.
    pub name: String,
    /// Extra DNS names or IP addresses the holder serves on.
    pub sans: Vec<String>,
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
}

impl LeafRequest {
    /// A certificate valid from now (less a minute of clock skew) for `days`.
    pub fn new(role: Role, name: impl Into<String>, days: u32) -> Self {
        let now = OffsetDateTime::now_utc();
        Self {
            role,
            name: name.into(),
            sans: Vec::new(),
            not_before: now - Duration::minutes(1),
            not_after: now + Duration::days(i64::from(days)),
        }
    }

    pub fn with_sans(mut self, sans: impl IntoIterator<Item = String>) -> Self {
        self.sans.extend(sans);
        self
    }
}

/// A leaf certificate and its private key, both PEM.
pub struct IssuedCert {
    pub cert_pem: String,
    pub key_pem: String,
}

impl IssuedCert {
    /// Writes `{stem}.pem` and `{stem}-key.pem` into `dir`, never overwriting.
    pub fn save(&self, dir: &Path, stem: &str) -> Result<(), PkiError> {
        write_new(&dir.join(format!("{stem}.pem")), &self.cert_pem, false)?;
        write_new(&dir.join(format!("{stem}-key.pem")), &self.key_pem, true)
    }
}

impl CertificateAuthority {
    /// A new self-signed CA valid for ten years.
    pub fn generate(common_name: &str) -> Result<Self, PkiError> {
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, common_name);
        dn.push(DnType::OrganizationName, "Berth");
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let now = OffsetDateTime::now_utc();
        params.not_before = now - Duration::minutes(1);
        params.not_after = now + Duration::days(3650);
        let key = KeyPair::generate()?;
        let cert = params.self_signed(&key)?;
        Ok(Self {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// Reads `ca.pem` and `ca-key.pem` from `dir`.
    pub fn load(dir: &Path) -> Result<Self, PkiError> {
        let read = |file: &str| {
            let path = dir.join(file);
            std::fs::read_to_string(&path).map_err(|source| PkiError::Read { path, source })
        };
        let ca = Self {
            cert_pem: read(CA_CERT_FILE)?,
            key_pem: read(CA_KEY_FILE)?,
        };
        ca.issuer()?;
        Ok(ca)
    }

    /// Writes `ca.pem` and `ca-key.pem` into `dir` (created), never overwriting.
    pub fn save(&self, dir: &Path) -> Result<(), PkiError> {
        std::fs::create_dir_all(dir).map_err(|source| PkiError::Write {
            path: dir.to_owned(),
            source,
        })?;
        write_new(&dir.join(CA_CERT_FILE), &self.cert_pem, false)?;
        write_new(&dir.join(CA_KEY_FILE), &self.key_pem, true)
    }

    fn issuer(&self) -> Result<Issuer<'static, KeyPair>, PkiError> {
        let key = KeyPair::from_pem(&self.key_pem)?;
        Ok(Issuer::from_ca_cert_pem(&self.cert_pem, key)?)
    }

    /// Issues a leaf certificate for `request`. Its identity URI SAN carries
    /// the role and name; the name is also a DNS SAN.
    pub fn issue(&self, request: &LeafRequest) -> Result<IssuedCert, PkiError> {
        let name =
            NodeName::parse("name", &request.name).map_err(|e| PkiError::Invalid(e.to_string()))?;
        let identity = Identity::new(request.role, name.as_str());
        let mut params = CertificateParams::new(vec![name.to_string()])?;
        for san in &request.sans {
            params.subject_alt_names.push(match san.parse() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => SanType::DnsName(san.clone().try_into()?),
            });
        }
        params
            .subject_alt_names
            .push(SanType::URI(identity.uri().try_into()?));
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, name.as_str());
        dn.push(DnType::OrganizationalUnitName, request.role.as_str());
        params.distinguished_name = dn;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.not_before = request.not_before;
        params.not_after = request.not_after;
        params.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer()?)?;
        Ok(IssuedCert {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_certificates_carry_their_identity() {
        let ca = CertificateAuthority::generate("test").unwrap();
        let leaf = ca
            .issue(&LeafRequest::new(Role::Agent, "node-7", 1).with_sans(["127.0.0.1".into()]))
            .unwrap();
        assert_eq!(
            Identity::from_pem(&leaf.cert_pem).unwrap(),
            Identity::new(Role::Agent, "node-7")
        );
        assert!(
            Identity::from_pem(&ca.cert_pem).is_err(),
            "the CA has no identity"
        );
    }

    #[test]
    fn names_that_are_not_dns_safe_are_refused() {
        let ca = CertificateAuthority::generate("test").unwrap();
        for bad in ["", "Node", "a/b", "x y"] {
            assert!(
                ca.issue(&LeafRequest::new(Role::Agent, bad, 1)).is_err(),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn a_saved_ca_loads_and_is_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let ca = CertificateAuthority::generate("test").unwrap();
        ca.save(dir.path()).unwrap();
        assert!(matches!(ca.save(dir.path()), Err(PkiError::Exists { .. })));
        let loaded = CertificateAuthority::load(dir.path()).unwrap();
        assert_eq!(loaded.cert_pem, ca.cert_pem);
        loaded
            .issue(&LeafRequest::new(Role::Admin, "admin", 1))
            .unwrap();
    }
}
