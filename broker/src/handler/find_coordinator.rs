//! FindCoordinator: this broker coordinates every group (and would every transactional id).
//!
//! Advertising it also matters beyond groups: librdkafka enables LZ4 compression only for
//! brokers that list FindCoordinator v0.

use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::{BrokerId, FindCoordinatorRequest, FindCoordinatorResponse};
use kafka_protocol::protocol::{Message, StrBytes, VersionRange};

use super::{str_bytes, RequestContext};
use crate::error::BrokerError;

pub const VERSIONS: VersionRange = FindCoordinatorRequest::VERSIONS;

const KEY_GROUP: i8 = 0;
const KEY_TRANSACTION: i8 = 1;

pub async fn handle(
    ctx: &RequestContext,
    request: FindCoordinatorRequest,
    version: i16,
) -> FindCoordinatorResponse {
    let broker = &ctx.broker;
    let node = BrokerId(broker.node_id());
    let host = str_bytes(broker.config.advertised_host.clone());
    let port = broker.config.advertised_port as i32;
    let check = |key: &StrBytes| -> Result<(), BrokerError> {
        match request.key_type {
            KEY_GROUP | KEY_TRANSACTION if !key.is_empty() => Ok(()),
            KEY_GROUP | KEY_TRANSACTION => {
                Err(BrokerError::InvalidRequest("empty coordinator key"))
            }
            _ => Err(BrokerError::InvalidRequest("unknown coordinator key type")),
        }
    };
    if version < 4 {
        return match check(&request.key) {
            Ok(()) => FindCoordinatorResponse::default()
                .with_node_id(node)
                .with_host(host)
                .with_port(port),
            Err(e) => FindCoordinatorResponse::default()
                .with_error_code(e.code())
                .with_error_message(Some(e.message()))
                .with_node_id(BrokerId(-1))
                .with_port(-1),
        };
    }
    let coordinators = request
        .coordinator_keys
        .iter()
        .map(|key| {
            let base = Coordinator::default().with_key(key.clone());
            match check(key) {
                Ok(()) => base
                    .with_node_id(node)
                    .with_host(host.clone())
                    .with_port(port),
                Err(e) => base
                    .with_error_code(e.code())
                    .with_error_message(Some(e.message()))
                    .with_node_id(BrokerId(-1))
                    .with_port(-1),
            }
        })
        .collect();
    FindCoordinatorResponse::default().with_coordinators(coordinators)
}
