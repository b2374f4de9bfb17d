//! The networks Berth's containers join. Apps: Docker's default bridge
//! when the host's container firewall is in place, else a bridge of
//! Berth's own with traffic between its containers turned off. Build
//! steps: a bridge of their own ([`BUILD_NETWORK`]), so that what a build
//! step sends (it keeps `NET_RAW`: Docker's builder cannot drop it) never
//! reaches an app container's segment.

use super::{containers::LABEL_MANAGED, firewall::Firewall, DockerError};
use bollard::{errors::Error as EngineError, models::NetworkCreateRequest, Docker};
use std::collections::HashMap;

/// The network app containers join when the engine's default bridge cannot
/// be made to isolate them: one bridge on the host with traffic between
/// its containers turned off (`enable_icc=false`), so no container reaches
/// another, of another app or of the same one, while published ports
/// answer from the host. Made once, not per app (making a bridge costs a
/// new app's first start about 80 ms).
pub const NETWORK: &str = "berth-apps";

/// The network build steps run on: apart from every app, traffic between
/// its containers turned off.
pub const BUILD_NETWORK: &str = "berth-builds";

/// Docker's default bridge network.
const DEFAULT_BRIDGE: &str = "bridge";

const ICC_OPTION: &str = "com.docker.network.bridge.enable_icc";

/// The network chosen for app containers on this engine, once known.
static CHOSEN: std::sync::RwLock<Option<String>> = std::sync::RwLock::new(None);

fn chosen() -> Option<String> {
    CHOSEN.read().unwrap_or_else(|p| p.into_inner()).clone()
}

fn choose(network: Option<&str>) {
    *CHOSEN.write().unwrap_or_else(|p| p.into_inner()) = network.map(str::to_owned);
}

/// The network app containers join: the default bridge once
/// [`choose_default_bridge`] found it isolated, else [`NETWORK`].
pub fn current() -> String {
    chosen().unwrap_or_else(|| NETWORK.to_owned())
}

/// Forgets the choice (the chosen network went away).
pub fn forget() {
    choose(None);
}

/// Serializes choosing: the engine may accept two networks of one name
/// when both are created at once.
static CHOOSING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Makes sure the apps' network exists: unless the default bridge was
/// chosen, [`NETWORK`], made when missing.
pub async fn ensure(docker: &Docker) -> Result<(), DockerError> {
    if chosen().is_some() {
        return Ok(());
    }
    let _one_at_a_time = CHOOSING.lock().await;
    if chosen().is_some() {
        return Ok(());
    }
    make_isolated(docker, NETWORK).await?;
    choose(Some(NETWORK));
    Ok(())
}

/// Makes sure [`BUILD_NETWORK`] exists, made when missing.
pub async fn ensure_build_network(docker: &Docker) -> Result<(), DockerError> {
    static MAKING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    let _one_at_a_time = MAKING.lock().await;
    make_isolated(docker, BUILD_NETWORK).await
}

/// A container on the default bridge starts faster than on a network made
/// by hand (no embedded DNS server to set up inside it: about 50 ms per
/// container on this machine). The agent chooses it once the host's
/// container firewall ([`super::firewall`]) is in place, which keeps its
/// containers from each other and from the host as [`NETWORK`]'s
/// `enable_icc=false` would.
pub async fn choose_default_bridge() {
    let _one_at_a_time = CHOOSING.lock().await;
    choose(Some(DEFAULT_BRIDGE));
}

/// Checks the host's container firewall for the bridges Berth's containers
/// are on, writing its rules again where they are missing; whether they
/// are in place (why not is logged and kept in `firewall`). Once they are
/// not, new app containers go to [`NETWORK`] (its own `enable_icc=false`
/// keeps them apart) instead of the default bridge.
pub async fn enforce_firewall(docker: &Docker, firewall: &Firewall) -> bool {
    let held = match bridges(docker).await {
        Ok(bridges) => firewall.ensure(&bridges).await.is_ok(),
        Err(err) => {
            tracing::warn!(error = %err, "listing the container bridges failed");
            firewall.problem().is_none()
        }
    };
    if !held && chosen().as_deref() == Some(DEFAULT_BRIDGE) {
        tracing::warn!(
            "the container firewall is not in place: new app containers join {NETWORK} instead of the default bridge"
        );
        forget();
    }
    held
}

/// The bridge interfaces Berth's containers are on: the default bridge's
/// (apps when chosen), [`NETWORK`]'s and [`BUILD_NETWORK`]'s where they
/// exist.
pub async fn bridges(docker: &Docker) -> Result<Vec<String>, DockerError> {
    let mut found = Vec::new();
    for name in [DEFAULT_BRIDGE, NETWORK, BUILD_NETWORK] {
        let network = match docker
            .inspect_network(
                name,
                None::<bollard::query_parameters::InspectNetworkOptions>,
            )
            .await
        {
            Ok(network) => network,
            Err(EngineError::DockerResponseServerError {
                status_code: 404, ..
            }) => continue,
            Err(err) => return Err(err.into()),
        };
        let named = network
            .options
            .as_ref()
            .and_then(|o| o.get("com.docker.network.bridge.name"))
            .cloned();
        // Docker names a bridge it made for a network `br-` and the first
        // twelve characters of the network's id, unless told otherwise.
        let interface = named.or_else(|| {
            let id = network.id.unwrap_or_default();
            (id.len() >= 12).then(|| format!("br-{}", &id[..12]))
        });
        if let Some(interface) = interface {
            found.push(interface);
        }
    }
    Ok(found)
}

/// Makes bridge network `name`, with traffic between its containers
/// turned off, unless it exists (as it must be).
async fn make_isolated(docker: &Docker, name: &str) -> Result<(), DockerError> {
    match docker
        .inspect_network(
            name,
            None::<bollard::query_parameters::InspectNetworkOptions>,
        )
        .await
    {
        Ok(network) => {
            let icc = network
                .options
                .as_ref()
                .and_then(|o| o.get(ICC_OPTION))
                .map(String::as_str);
            if icc != Some("false") {
                return Err(DockerError::Failed(format!(
                    "the network {name} exists but lets its containers talk to each other \
                     ({ICC_OPTION} is not false); remove it and Berth makes it anew"
                )));
            }
            return Ok(());
        }
        Err(EngineError::DockerResponseServerError {
            status_code: 404, ..
        }) => {}
        Err(err) => return Err(err.into()),
    }
    let request = NetworkCreateRequest {
        name: name.to_owned(),
        driver: Some("bridge".into()),
        options: Some(HashMap::from([(ICC_OPTION.to_owned(), "false".to_owned())])),
        labels: Some(HashMap::from([(
            LABEL_MANAGED.to_owned(),
            "true".to_owned(),
        )])),
        ..Default::default()
    };
    match docker.create_network(request).await {
        // Or created meanwhile by another agent on this engine.
        Ok(_)
        | Err(EngineError::DockerResponseServerError {
            status_code: 409, ..
        }) => Ok(()),
        Err(err) => Err(err.into()),
    }
}
