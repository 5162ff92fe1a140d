//! InitProducerId: producer ids and epochs for idempotent producers, including the KIP-360
//! epoch bump for an existing producer. Transactions are not supported.

use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};
use kafka_protocol::protocol::{Message, VersionRange};

use super::RequestContext;
use crate::error::BrokerError;

pub const VERSIONS: VersionRange = InitProducerIdRequest::VERSIONS;

pub async fn handle(
    ctx: &RequestContext,
    request: InitProducerIdRequest,
    _version: i16,
) -> InitProducerIdResponse {
    let failed = |e: BrokerError| {
        InitProducerIdResponse::default()
            .with_error_code(e.code())
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1)
    };
    match request.transactional_id.as_deref() {
        None => {}
        Some(id) if id.is_empty() => {
            return failed(BrokerError::InvalidRequest("empty transactional id"))
        }
        Some(_) => return failed(BrokerError::TransactionsUnsupported),
    }
    let (existing, epoch) = (request.producer_id.0, request.producer_epoch);
    let result = ctx
        .blocking(move |broker| {
            if existing >= 0 && epoch >= 0 {
                broker.producer_ids.bump(existing, epoch)
            } else {
                broker.producer_ids.allocate()
            }
        })
        .await;
    match result {
        Ok((id, epoch)) => InitProducerIdResponse::default()
            .with_producer_id(ProducerId(id))
            .with_producer_epoch(epoch),
        Err(e) => failed(e),
    }
}
