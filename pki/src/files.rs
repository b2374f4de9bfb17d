//! PEM files on disk, and the tonic TLS configurations made from them.

use crate::{authority::CA_CERT_FILE, Identity, PkiError};
use std::time::Duration;
use std::{
    io::Write,
    path::{Path, PathBuf},
};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, ServerTlsConfig};

/// The three files a party needs for mTLS: the CA to trust, its own
/// certificate and its own key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// The TLS flags every service takes; unset ones default to `DATA_DIR/certs/`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct TlsArgs {
    /// CA certificate that peers' certificates must chain to [default: DATA_DIR/certs/ca.pem].
    #[arg(long, env = "BERTH_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
    /// This service's certificate [default: DATA_DIR/certs/<control-plane|agent|gateway>.pem].
    #[arg(long, env = "BERTH_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// This service's private key [default: next to the certificate, `-key.pem`].
    #[arg(long, env = "BERTH_TLS_KEY", hide_env_values = true)]
    pub tls_key: Option<PathBuf>,
}

impl TlsArgs {
    /// The files to use: the flags where given, else `data_dir/certs/{stem}.pem` and friends.
    pub fn files(self, data_dir: &Path, stem: &str) -> TlsFiles {
        let defaults = TlsFiles::in_dir(&data_dir.join("certs"), stem);
        TlsFiles {
            ca: self.tls_ca.unwrap_or(defaults.ca),
            cert: self.tls_cert.unwrap_or(defaults.cert),
            key: self.tls_key.unwrap_or(defaults.key),
        }
    }
}

/// [`TlsFiles`] read into memory.
#[derive(Clone)]
pub struct TlsMaterial {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

impl TlsFiles {
    /// `dir/ca.pem`, `dir/{stem}.pem`, `dir/{stem}-key.pem`.
    pub fn in_dir(dir: &Path, stem: &str) -> Self {
        Self {
            ca: dir.join(CA_CERT_FILE),
            cert: dir.join(format!("{stem}.pem")),
            key: dir.join(format!("{stem}-key.pem")),
        }
    }

    pub fn load(&self) -> Result<TlsMaterial, PkiError> {
        let read = |path: &Path| {
            std::fs::read_to_string(path).map_err(|source| PkiError::Read {
                path: path.to_owned(),
                source,
            })
        };
        Ok(TlsMaterial {
            ca_pem: read(&self.ca)?,
            cert_pem: read(&self.cert)?,
            key_pem: read(&self.key)?,
        })
    }
}

impl TlsMaterial {
    /// Who this certificate says we are.
    pub fn identity(&self) -> Result<Identity, PkiError> {
        Identity::from_pem(&self.cert_pem)
    }

    /// Server side: our certificate, and client certificates required and
    /// checked against the CA (expiry included).
    pub fn server_config(&self) -> ServerTlsConfig {
        ServerTlsConfig::new()
            .identity(tonic::transport::Identity::from_pem(
                &self.cert_pem,
                &self.key_pem,
            ))
            .client_ca_root(Certificate::from_pem(&self.ca_pem))
            .client_auth_optional(false)
    }

    /// Client side: trust only the CA, present our certificate.
    pub fn client_config(&self) -> ClientTlsConfig {
        ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&self.ca_pem))
            .identity(tonic::transport::Identity::from_pem(
                &self.cert_pem,
                &self.key_pem,
            ))
    }

    /// An mTLS endpoint for `url` (`https://host:port`), with connect timeout
    /// and HTTP/2 keep-alives set; connect it with `.connect().await`.
    pub fn endpoint(&self, url: &str) -> Result<Endpoint, tonic::transport::Error> {
        Ok(Endpoint::from_shared(url.to_owned())?
            .tls_config(self.client_config())?
            .connect_timeout(Duration::from_secs(5))
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(Duration::from_secs(20)))
    }
}

/// Writes a new file; private keys get mode 0600. Refuses to overwrite.
pub(crate) fn write_new(path: &Path, contents: &str, private: bool) -> Result<(), PkiError> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(if private { 0o600 } else { 0o644 });
    }
    let mut file = options.open(path).map_err(|source| {
        if source.kind() == std::io::ErrorKind::AlreadyExists {
            PkiError::Exists {
                path: path.to_owned(),
            }
        } else {
            PkiError::Write {
                path: path.to_owned(),
                source,
            }
        }
    })?;
    file.write_all(contents.as_bytes())
        .map_err(|source| PkiError::Write {
            path: path.to_owned(),
            source,
        })
}
