//! Finding the control plane and dialling it as an admin over mTLS.

use anyhow::Context;
use berth_pki::TlsFiles;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use tonic::transport::Channel;

/// Name of the file `berth up` writes with the addresses it bound.
pub const ENDPOINTS_FILE: &str = "endpoints.json";

/// Where `berth up` is listening, as written into its data dir.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Endpoints {
    pub grpc: String,
    pub gateway: String,
    pub metrics: String,
    /// The gateway's own `/metrics` (not on its users' address).
    #[serde(default)]
    pub gateway_metrics: String,
}

impl Endpoints {
    pub fn read(data_dir: &Path) -> Option<Self> {
        let text = std::fs::read_to_string(data_dir.join(ENDPOINTS_FILE)).ok()?;
        serde_json::from_str(&text).ok()
    }
}

/// The cluster a client command talks to.
pub struct Target {
    pub data_dir: PathBuf,
    pub endpoint: Option<String>,
    pub certs: Option<PathBuf>,
    /// The certificate's file stem in the certs directory.
    pub identity: String,
}

impl Target {
    pub fn endpoint(&self) -> String {
        self.endpoint
            .clone()
            .or_else(|| Endpoints::read(&self.data_dir).map(|e| e.grpc))
            .unwrap_or_else(|| "https://127.0.0.1:7443".to_owned())
    }

    /// An mTLS channel with the chosen certificate (the admin's by default).
    pub async fn connect(&self) -> anyhow::Result<Channel> {
        let dir = self
            .certs
            .clone()
            .unwrap_or_else(|| self.data_dir.join("certs"));
        let tls = TlsFiles::in_dir(&dir, &self.identity)
            .load()
            .with_context(|| {
                format!(
                    "loading the {} certificate from {} (run `berth up` first, or pass --certs)",
                    self.identity,
                    dir.display()
                )
            })?;
        let endpoint = self.endpoint();
        tls.endpoint(&endpoint)
            .with_context(|| format!("endpoint {endpoint}"))?
            .connect()
            .await
            .with_context(|| format!("connecting to the control plane at {endpoint}"))
    }
}

/// The reply of an RPC, or its status as a short error: `NotFound: node x not found`.
pub fn reply<T>(result: Result<tonic::Response<T>, tonic::Status>) -> anyhow::Result<T> {
    result
        .map(tonic::Response::into_inner)
        .map_err(|status| anyhow::anyhow!("{:?}: {}", status.code(), status.message()))
}
