//! `berth.v1.NodeService`: the node registry, for the cluster's admins.

use crate::{scope::Scope, sessions::Sessions, store::Store};
use berth_proto::{
    domain::{proto_enum, NodeName, NodeState},
    pb::{self, node_service_server::NodeService},
};
use tonic::{Request, Response, Status};

pub struct NodeApi {
    pub store: Store,
    pub sessions: Sessions,
}

impl NodeApi {
    fn node(&self, record: crate::store::nodes::NodeRecord) -> pb::Node {
        let connected = self.sessions.is_connected(&record.name);
        record.to_proto(connected)
    }
}

#[tonic::async_trait]
impl NodeService for NodeApi {
    async fn list_nodes(
        &self,
        request: Request<pb::ListNodesRequest>,
    ) -> Result<Response<pb::ListNodesResponse>, Status> {
        Scope::of(&request, &self.store).await?.require_cluster()?;
        let state: pb::NodeState = proto_enum("state", request.get_ref().state)?;
        let filter = match state {
            pb::NodeState::Unspecified => None,
            other => Some(NodeState::try_from(other).map_err(|_| {
                Status::invalid_argument(format!("state: unknown enum value {}", other as i32))
            })?),
        };
        let nodes = self.store.list_nodes(filter).await?;
        Ok(Response::new(pb::ListNodesResponse {
            nodes: nodes.into_iter().map(|n| self.node(n)).collect(),
        }))
    }

    async fn get_node(
        &self,
        request: Request<pb::GetNodeRequest>,
    ) -> Result<Response<pb::Node>, Status> {
        Scope::of(&request, &self.store).await?.require_cluster()?;
        let name = NodeName::parse("name", &request.get_ref().name)?;
        Ok(Response::new(self.node(self.store.get_node(&name).await?)))
    }

    async fn drain_node(
        &self,
        request: Request<pb::DrainNodeRequest>,
    ) -> Result<Response<pb::Node>, Status> {
        Scope::of(&request, &self.store).await?.require_cluster()?;
        let name = NodeName::parse("name", &request.get_ref().name)?;
        let node = self.store.set_drained(&name, true).await?;
        tracing::info!(node = %name, "node drained");
        Ok(Response::new(self.node(node)))
    }

    async fn undrain_node(
        &self,
        request: Request<pb::UndrainNodeRequest>,
    ) -> Result<Response<pb::Node>, Status> {
        Scope::of(&request, &self.store).await?.require_cluster()?;
        let name = NodeName::parse("name", &request.get_ref().name)?;
        let node = self.store.set_drained(&name, false).await?;
        tracing::info!(node = %name, "node undrained");
        Ok(Response::new(self.node(node)))
    }
}
