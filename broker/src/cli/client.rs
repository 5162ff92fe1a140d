//! A small Kafka client for the admin commands: one connection per broker, versions chosen
//! from the broker's ApiVersions answer, requests routed to partition leaders and group
//! coordinators the way any client routes them, so the commands work against Apache Kafka
//! and Redpanda clusters as well as Chorus.

use std::collections::HashMap;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::api_versions_response::ApiVersionsResponse;
use kafka_protocol::messages::find_coordinator_request::FindCoordinatorRequest;
use kafka_protocol::messages::metadata_request::{MetadataRequest, MetadataRequestTopic};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, MetadataResponse, RequestHeader, ResponseHeader, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::error::{CliError, Result};

const CLIENT_ID: &str = "chorus-cli";
/// Largest response accepted (a fetch of many partitions stays well below).
const MAX_RESPONSE_BYTES: usize = 256 << 20;

/// One broker connection.
#[derive(Debug)]
pub struct Connection {
    pub addr: String,
    stream: TcpStream,
    /// api key -> (min, max) the broker supports.
    versions: HashMap<i16, (i16, i16)>,
    next_id: i32,
    timeout: Duration,
}

fn api_name(key: i16) -> &'static str {
    ApiKey::try_from(key).map_or("an unknown API", |k| match k {
        ApiKey::Produce => "Produce",
        ApiKey::Fetch => "Fetch",
        ApiKey::ListOffsets => "ListOffsets",
        ApiKey::Metadata => "Metadata",
        ApiKey::OffsetCommit => "OffsetCommit",
        ApiKey::OffsetFetch => "OffsetFetch",
        ApiKey::FindCoordinator => "FindCoordinator",
        ApiKey::JoinGroup => "JoinGroup",
        ApiKey::Heartbeat => "Heartbeat",
        ApiKey::LeaveGroup => "LeaveGroup",
        ApiKey::SyncGroup => "SyncGroup",
        ApiKey::DescribeGroups => "DescribeGroups",
        ApiKey::ListGroups => "ListGroups",
        ApiKey::ApiVersions => "ApiVersions",
        ApiKey::CreateTopics => "CreateTopics",
        ApiKey::DeleteTopics => "DeleteTopics",
        ApiKey::DescribeConfigs => "DescribeConfigs",
        ApiKey::CreatePartitions => "CreatePartitions",
        ApiKey::DeleteGroups => "DeleteGroups",
        ApiKey::IncrementalAlterConfigs => "IncrementalAlterConfigs",
        ApiKey::OffsetDelete => "OffsetDelete",
        ApiKey::ConsumerGroupDescribe => "ConsumerGroupDescribe",
        _ => "a Kafka API",
    })
}

impl Connection {
    /// Connects and learns the broker's API versions.
    pub async fn connect(addr: &str, timeout: Duration) -> Result<Connection> {
        let stream = tokio::time::timeout(timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| CliError::Unreachable {
                addr: addr.to_string(),
                source: std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"),
            })?
            .map_err(|source| CliError::Unreachable {
                addr: addr.to_string(),
                source,
            })?;
        let _ = stream.set_nodelay(true);
        let mut conn = Connection {
            addr: addr.to_string(),
            stream,
            versions: HashMap::new(),
            next_id: 1,
            timeout,
        };
        // v3 first (flexible); a broker that does not know it answers in v0 with its list.
        let request = ApiVersionsRequest::default()
            .with_client_software_name(StrBytes::from_static_str(CLIENT_ID))
            .with_client_software_version(StrBytes::from_static_str(env!("CARGO_PKG_VERSION")));
        let mut answer: ApiVersionsResponse = conn.exchange(&request, 3).await?;
        if answer.error_code == 35 && answer.api_keys.is_empty() {
            answer = conn.exchange(&ApiVersionsRequest::default(), 0).await?;
        }
        CliError::check(answer.error_code, format!("ApiVersions from {addr}"), None)?;
        conn.versions = answer
            .api_keys
            .iter()
            .map(|k| (k.api_key, (k.min_version, k.max_version)))
            .collect();
        Ok(conn)
    }

    /// The version to use for `R`: the highest both sides know, at most `cap`.
    pub fn version<R: Request>(&self, cap: i16) -> Result<i16> {
        let unsupported = || CliError::UnsupportedApi {
            addr: self.addr.clone(),
            api: api_name(R::KEY),
        };
        let (min, max) = *self.versions.get(&R::KEY).ok_or_else(unsupported)?;
        let version = max.min(R::VERSIONS.max).min(cap);
        if version < min.max(R::VERSIONS.min) {
            return Err(unsupported());
        }
        Ok(version)
    }

    /// Sends `request` at the best common version.
    pub async fn call<R: Request>(&mut self, request: &R) -> Result<R::Response> {
        self.call_capped(request, i16::MAX).await.map(|(r, _)| r)
    }

    /// Sends `request` at the best common version no higher than `cap`; returns the answer
    /// and the version used.
    pub async fn call_capped<R: Request>(
        &mut self,
        request: &R,
        cap: i16,
    ) -> Result<(R::Response, i16)> {
        let version = self.version::<R>(cap)?;
        Ok((self.exchange(request, version).await?, version))
    }

    /// Like [`Connection::call`], waiting up to `wait` when that is longer than the usual
    /// timeout (a JoinGroup waits for the whole rebalance).
    pub async fn call_patient<R: Request>(
        &mut self,
        request: &R,
        wait: Duration,
    ) -> Result<R::Response> {
        let usual = self.timeout;
        self.timeout = usual.max(wait);
        let result = self.call(request).await;
        self.timeout = usual;
        result
    }

    /// Sends `request` without reading an answer (a Produce with `acks=0` gets none).
    pub async fn send_only<R: Request>(&mut self, request: &R, cap: i16) -> Result<()> {
        let version = self.version::<R>(cap)?;
        let (_, frame) = self.frame(request, version)?;
        let addr = self.addr.clone();
        self.stream
            .write_all(&frame)
            .await
            .map_err(|source| CliError::Connection {
                addr,
                api: api_name(R::KEY),
                source,
            })
    }

    /// A request frame, size prefix included, and its correlation id.
    fn frame<R: Request>(&mut self, request: &R, version: i16) -> Result<(i32, BytesMut)> {
        let api = api_name(R::KEY);
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1);
        let header = RequestHeader::default()
            .with_request_api_key(R::KEY)
            .with_request_api_version(version)
            .with_correlation_id(id)
            .with_client_id(Some(StrBytes::from_static_str(CLIENT_ID)));
        let encode_failed = || CliError::Protocol {
            api,
            version,
            action: "encoded",
        };
        let mut body = BytesMut::new();
        body.put_i32(0);
        header
            .encode(&mut body, R::header_version(version))
            .map_err(|_| encode_failed())?;
        request
            .encode(&mut body, version)
            .map_err(|_| encode_failed())?;
        let len = (body.len() - 4) as i32;
        body[..4].copy_from_slice(&len.to_be_bytes());
        Ok((id, body))
    }

    async fn exchange<R: Request>(&mut self, request: &R, version: i16) -> Result<R::Response> {
        let api = api_name(R::KEY);
        let (id, body) = self.frame(request, version)?;
        let addr = self.addr.clone();
        let io = |source| CliError::Connection {
            addr: addr.clone(),
            api,
            source,
        };
        let timeout = self.timeout;
        let read = async {
            self.stream.write_all(&body).await.map_err(io)?;
            let size = self.stream.read_i32().await.map_err(io)?;
            if size < 4 || size as usize > MAX_RESPONSE_BYTES {
                return Err(CliError::Protocol {
                    api,
                    version,
                    action: "read (bad size)",
                });
            }
            let mut buf = vec![0u8; size as usize];
            self.stream.read_exact(&mut buf).await.map_err(io)?;
            Ok(Bytes::from(buf))
        };
        let mut frame =
            tokio::time::timeout(timeout, read)
                .await
                .map_err(|_| CliError::Timeout {
                    addr: self.addr.clone(),
                    api,
                    timeout_ms: timeout.as_millis() as u64,
                })??;
        let decode_failed = || CliError::Protocol {
            api,
            version,
            action: "decoded",
        };
        let header = ResponseHeader::decode(&mut frame, R::Response::header_version(version))
            .map_err(|_| decode_failed())?;
        if header.correlation_id != id {
            return Err(decode_failed());
        }
        let response = R::Response::decode(&mut frame, version).map_err(|_| decode_failed())?;
        // Trailing bytes are tolerated: newer brokers may add tagged fields.
        let _ = frame.remaining();
        Ok(response)
    }
}

/// The cluster as the commands see it: a bootstrap connection, the brokers from metadata,
/// and connections to them opened on first use.
#[derive(Debug)]
pub struct Cluster {
    bootstrap: String,
    /// Node id -> advertised `host:port`.
    nodes: HashMap<i32, String>,
    /// Connections by address.
    connections: HashMap<String, Connection>,
    timeout: Duration,
}

impl Cluster {
    /// Connects to the first reachable address of a comma-separated bootstrap list.
    pub async fn connect(bootstrap: &str, timeout: Duration) -> Result<Cluster> {
        let mut last = None;
        for addr in bootstrap
            .split(',')
            .map(str::trim)
            .filter(|a| !a.is_empty())
        {
            match Connection::connect(addr, timeout).await {
                Ok(conn) => {
                    let mut connections = HashMap::new();
                    connections.insert(addr.to_string(), conn);
                    return Ok(Cluster {
                        bootstrap: addr.to_string(),
                        nodes: HashMap::new(),
                        connections,
                        timeout,
                    });
                }
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or(CliError::InvalidArgument {
            arg: "--bootstrap-server",
            value: bootstrap.to_string(),
            reason: "expected HOST:PORT[,HOST:PORT...]",
        }))
    }

    /// The bootstrap connection (any broker can answer metadata and admin requests).
    pub fn any(&mut self) -> &mut Connection {
        self.connections
            .get_mut(&self.bootstrap)
            .expect("the bootstrap connection is kept")
    }

    /// Metadata for `topics` (`None`: every topic); remembers the brokers it names.
    pub async fn metadata(&mut self, topics: Option<&[String]>) -> Result<MetadataResponse> {
        let request = MetadataRequest::default()
            .with_topics(topics.map(|names| {
                names
                    .iter()
                    .map(|n| {
                        MetadataRequestTopic::default()
                            .with_name(Some(TopicName(StrBytes::from_string(n.clone()))))
                    })
                    .collect()
            }))
            .with_allow_auto_topic_creation(false);
        let response = self.any().call(&request).await?;
        for b in &response.brokers {
            self.nodes
                .insert(b.node_id.0, format!("{}:{}", b.host, b.port));
        }
        Ok(response)
    }

    /// The connection to broker `node`, opened on first use.
    pub async fn node(&mut self, node: i32) -> Result<&mut Connection> {
        if !self.nodes.contains_key(&node) {
            self.metadata(Some(&[])).await?;
        }
        let addr = self
            .nodes
            .get(&node)
            .cloned()
            .unwrap_or_else(|| self.bootstrap.clone());
        self.connection(&addr).await
    }

    async fn connection(&mut self, addr: &str) -> Result<&mut Connection> {
        if !self.connections.contains_key(addr) {
            let conn = Connection::connect(addr, self.timeout).await?;
            self.connections.insert(addr.to_string(), conn);
        }
        Ok(self.connections.get_mut(addr).expect("just inserted"))
    }

    /// The connection to `group`'s coordinator.
    pub async fn coordinator(&mut self, group: &str) -> Result<&mut Connection> {
        let conn = self.any();
        let version = conn.version::<FindCoordinatorRequest>(i16::MAX)?;
        let request = if version >= 4 {
            FindCoordinatorRequest::default()
                .with_coordinator_keys(vec![StrBytes::from_string(group.to_string())])
        } else {
            FindCoordinatorRequest::default().with_key(StrBytes::from_string(group.to_string()))
        };
        let response = conn.call(&request).await?;
        let (code, message, node, host, port) = match response.coordinators.first() {
            Some(c) if version >= 4 => (
                c.error_code,
                c.error_message.as_ref().map(|m| m.to_string()),
                c.node_id.0,
                c.host.to_string(),
                c.port,
            ),
            _ => (
                response.error_code,
                response.error_message.as_ref().map(|m| m.to_string()),
                response.node_id.0,
                response.host.to_string(),
                response.port,
            ),
        };
        CliError::check(
            code,
            format!("finding the coordinator of group {group}"),
            message.as_deref(),
        )?;
        let addr = format!("{host}:{port}");
        self.nodes.insert(node, addr.clone());
        self.connection(&addr).await
    }
}
