//! ApiVersions: the versions of every API this broker serves, built from [`super::APIS`].

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{ApiVersionsRequest, ApiVersionsResponse};
use kafka_protocol::protocol::{Message, VersionRange};

use super::{RequestContext, APIS};

pub const VERSIONS: VersionRange = ApiVersionsRequest::VERSIONS;

fn api_keys() -> Vec<ApiVersion> {
    APIS.iter()
        .map(|(key, range)| {
            ApiVersion::default()
                .with_api_key(*key as i16)
                .with_min_version(range.min)
                .with_max_version(range.max)
        })
        .collect()
}

pub async fn handle(
    ctx: &RequestContext,
    request: ApiVersionsRequest,
    version: i16,
) -> ApiVersionsResponse {
    if version >= 3 {
        tracing::debug!(
            peer = %ctx.peer,
            client = %request.client_software_name,
            client_version = %request.client_software_version,
            "client connected"
        );
        let valid_name = |s: &str| {
            !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-'))
        };
        if !valid_name(&request.client_software_name)
            || !valid_name(&request.client_software_version)
        {
            // KIP-511: names must be alphanumerics, '.' and '-'.
            return ApiVersionsResponse::default()
                .with_error_code(ResponseError::InvalidRequest.code())
                .with_api_keys(api_keys());
        }
    }
    ApiVersionsResponse::default().with_api_keys(api_keys())
}

/// KIP-511: the v0 answer to a request whose version we do not serve.
pub fn unsupported_version_response() -> ApiVersionsResponse {
    ApiVersionsResponse::default()
        .with_error_code(ResponseError::UnsupportedVersion.code())
        .with_api_keys(api_keys())
}
