//! Who is calling, and may they: a tower layer in front of every gRPC service.
//!
//! The caller's [`Identity`] is read from its verified client certificate
//! (TLS has already checked the chain and expiry) and put in the request's
//! extensions; the method's path decides which roles may call it.

use berth_pki::{Identity, Role};
use std::{
    sync::Arc,
    task::{Context, Poll},
};
use tonic::{
    transport::server::{TcpConnectInfo, TlsConnectInfo},
    Status,
};
use tower_layer::Layer;
use tower_service::Service;

/// Roles allowed to call a gRPC method, by its path.
pub fn allowed_roles(path: &str) -> &'static [Role] {
    use Role::*;
    let (service, method) = path
        .trim_start_matches('/')
        .split_once('/')
        .unwrap_or((path, ""));
    match service {
        // Standard tooling: any holder of a Berth certificate.
        "grpc.health.v1.Health"
        | "grpc.reflection.v1.ServerReflection"
        | "grpc.reflection.v1alpha.ServerReflection" => &[Admin, Agent, Gateway, ControlPlane],
        "berth.v1.AgentService" => &[Agent],
        // The cluster's nodes: admins, peers, and the gateway passing on an
        // admin key (each method checks the scope, `crate::scope`).
        "berth.v1.NodeService" => match method {
            "ListNodes" | "GetNode" => &[Admin, Gateway, ControlPlane],
            _ => &[Admin, Gateway],
        },
        "berth.v1.RouteService" => &[Gateway],
        // Management: admins, tenants' deployers, and the gateway passing on
        // its caller's API key; each method keeps to the caller's scope.
        "berth.v1.EventService"
        | "berth.v1.AppService"
        | "berth.v1.BuildService"
        | "berth.v1.ApiKeyService"
        | "berth.v1.TenantService"
        | "berth.v1.ExecutionService" => &[Admin, Gateway, Tenant],
        _ => &[Admin],
    }
}

/// Reads the verified peer identity from a request's extensions.
fn peer_identity<B>(req: &http::Request<B>) -> Result<Identity, Status> {
    let certs = req
        .extensions()
        .get::<TlsConnectInfo<TcpConnectInfo>>()
        .and_then(|info| info.peer_certs())
        .ok_or_else(|| Status::unauthenticated("a client certificate is required"))?;
    let leaf = certs
        .first()
        .ok_or_else(|| Status::unauthenticated("a client certificate is required"))?;
    Identity::from_der(leaf)
        .map_err(|e| Status::unauthenticated(format!("client certificate: {e}")))
}

/// The caller of an RPC, for handlers: `request.extensions().get::<Caller>()`.
#[derive(Debug, Clone)]
pub struct Caller(pub Arc<Identity>);

/// Extracts the [`Caller`] a handler's request carries.
pub fn caller<T>(request: &tonic::Request<T>) -> Result<Arc<Identity>, Status> {
    request
        .extensions()
        .get::<Caller>()
        .map(|c| c.0.clone())
        .ok_or_else(|| Status::unauthenticated("no caller identity"))
}

#[derive(Debug, Clone, Default)]
pub struct AuthLayer;

impl<S> Layer<S> for AuthLayer {
    type Service = Auth<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Auth { inner }
    }
}

#[derive(Debug, Clone)]
pub struct Auth<S> {
    inner: S,
}

impl<S, B, R> Service<http::Request<B>> for Auth<S>
where
    S: Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
    R: Default,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future =
        futures::future::Either<S::Future, futures::future::Ready<Result<S::Response, S::Error>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        let path = req.uri().path().to_owned();
        let decision = peer_identity(&req).and_then(|identity| {
            if allowed_roles(&path).contains(&identity.role) {
                Ok(identity)
            } else {
                Err(Status::permission_denied(format!(
                    "{identity} may not call {path}"
                )))
            }
        });
        match decision {
            Ok(identity) => {
                req.extensions_mut().insert(Caller(Arc::new(identity)));
                futures::future::Either::Left(self.inner.call(req))
            }
            Err(status) => {
                tracing::warn!(%path, message = status.message(), "rpc refused");
                futures::future::Either::Right(futures::future::ready(Ok(status.into_http())))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agents_reach_only_the_agent_protocol_and_standard_tools() {
        assert!(allowed_roles("/berth.v1.AgentService/Session").contains(&Role::Agent));
        assert!(!allowed_roles("/berth.v1.AgentService/Session").contains(&Role::Admin));
        assert!(!allowed_roles("/berth.v1.NodeService/DrainNode").contains(&Role::Agent));
        assert!(!allowed_roles("/berth.v1.NodeService/ListNodes").contains(&Role::Agent));
        assert!(!allowed_roles("/berth.v1.AppService/CreateApp").contains(&Role::Agent));
        assert!(allowed_roles("/grpc.health.v1.Health/Check").contains(&Role::Agent));
        assert!(allowed_roles("/berth.v1.NodeService/ListNodes").contains(&Role::Gateway));
        assert!(allowed_roles("/berth.v1.RouteService/WatchRoutes").contains(&Role::Gateway));
        assert!(!allowed_roles("/berth.v1.RouteService/WatchRoutes").contains(&Role::Agent));
        assert!(!allowed_roles("/berth.v1.ApiKeyService/CreateApiKey").contains(&Role::Agent));
        assert!(!allowed_roles("/berth.v1.AgentService/Session").contains(&Role::Gateway));
        assert!(allowed_roles("/berth.v1.AppService/CreateApp").contains(&Role::Tenant));
        assert!(!allowed_roles("/berth.v1.NodeService/ListNodes").contains(&Role::Tenant));
        assert!(!allowed_roles("/berth.v1.RouteService/WatchRoutes").contains(&Role::Tenant));
        assert!(!allowed_roles("/berth.v1.AgentService/Session").contains(&Role::Tenant));
    }
}
