//! Berth's certificates and mTLS identities.
//!
//! Every gRPC hop is mutual TLS. A certificate says who its holder is with one
//! URI subject alternative name, `spiffe://berth/{role}/{name}`: the role
//! (`control-plane`, `agent`, `gateway`, `admin`) decides what it may call,
//! and for agents the name is the node name.
//!
//! - [`authority`]: make a CA and issue leaf certificates (rcgen).
//! - [`identity`]: read a peer's role and name back out of its certificate.
//! - [`files`]: where the PEM files live on disk, and tonic TLS configs from them.

pub mod authority;
pub mod files;
pub mod identity;

pub use authority::{CertificateAuthority, IssuedCert, LeafRequest};
pub use files::{TlsArgs, TlsFiles, TlsMaterial};
pub use identity::{Identity, Role};

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("writing {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} already exists; refusing to overwrite it")]
    Exists { path: PathBuf },
    #[error("certificate: {0}")]
    Rcgen(#[from] rcgen::Error),
    #[error("{0}")]
    Invalid(String),
}
