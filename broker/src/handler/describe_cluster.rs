//! DescribeCluster: this broker is the whole cluster and its controller.

use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::{BrokerId, DescribeClusterRequest, DescribeClusterResponse};
use kafka_protocol::protocol::{Message, VersionRange};

use super::{str_bytes, RequestContext};

pub const VERSIONS: VersionRange = DescribeClusterRequest::VERSIONS;

pub async fn handle(
    ctx: &RequestContext,
    request: DescribeClusterRequest,
    version: i16,
) -> DescribeClusterResponse {
    let broker = &ctx.broker;
    let node = BrokerId(broker.node_id());
    let mut response = DescribeClusterResponse::default()
        .with_cluster_id(str_bytes(broker.cluster_id.clone()))
        .with_controller_id(node)
        .with_brokers(vec![DescribeClusterBroker::default()
            .with_broker_id(node)
            .with_host(str_bytes(broker.config.advertised_host.clone()))
            .with_port(broker.config.advertised_port as i32)]);
    if version >= 1 {
        // Brokers (1) and controllers (2) are the same single node here.
        response = response.with_endpoint_type(request.endpoint_type);
    }
    response
}
