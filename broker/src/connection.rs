//! One client connection: size-prefixed frames in, responses out, in order.
//!
//! Requests on a connection are handled one at a time, as Kafka does (it mutes a connection
//! while a request is in flight), so responses go out in request order and produce requests
//! for a partition are appended in the order the client sent them. Clients pipeline anyway:
//! the next requests wait in the socket buffer.
//!
//! Frames that cannot be understood close the connection (that is the protocol's answer to an
//! undecodable request): a negative or oversized size prefix (refused before allocating), an
//! unknown API key, a version outside our range (except ApiVersions, which gets KIP-511's v0
//! answer), a body that does not decode. Each is logged once, at the close.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use futures_util::stream::{FuturesOrdered, StreamExt};
use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};

use crate::broker::Broker;
use crate::handler::{self, RequestContext};
use crate::response::{Response, Shareable, SpliceBuf};

/// Why a connection was closed.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("connection error: {0}")]
    Io(#[from] std::io::Error),
    #[error("size prefix {size} is negative or below the smallest request header")]
    BadSize { size: i32 },
    #[error("request of {size} bytes exceeds the limit of {max}")]
    TooLarge { size: usize, max: usize },
    #[error("unknown API key {0}")]
    UnknownApiKey(i16),
    #[error("{api:?} version {version} is not supported")]
    UnsupportedVersion { api: ApiKey, version: i16 },
    #[error("cannot decode {api:?} v{version}: {source}")]
    Decode {
        api: ApiKey,
        version: i16,
        source: anyhow::Error,
    },
    #[error("cannot encode the {api:?} v{version} response: {source}")]
    Encode {
        api: ApiKey,
        version: i16,
        source: anyhow::Error,
    },
    #[error("idle for longer than the idle timeout")]
    Idle,
}

/// The smallest possible request: api key, version, correlation id, client id length.
const MIN_FRAME: i32 = 10;

/// A decoded request header plus the undecoded body.
#[derive(Debug)]
pub struct Frame {
    pub api: ApiKey,
    pub version: i16,
    pub header: RequestHeader,
    pub body: Bytes,
}

/// Responses a connection may have waiting (for an fsync, say) while later requests are read.
const MAX_IN_FLIGHT: usize = 16;

/// The rest of a request's work that may overlap with later requests: waiting for durability
/// and encoding the answer. Effects that order matters for (appends) are done before.
pub type Completion = Pin<Box<dyn Future<Output = Result<Option<Response>, FrameError>> + Send>>;

/// What handling a request produced.
pub enum Handled {
    /// The encoded answer (`None`: no answer, as for `acks=0`).
    Done(Option<Response>),
    /// The answer, once the completion resolves.
    Later(Completion),
}

impl std::fmt::Debug for Handled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Handled::Done(r) => f
                .debug_tuple("Done")
                .field(&r.as_ref().map(Response::len))
                .finish(),
            Handled::Later(_) => f.write_str("Later(..)"),
        }
    }
}

/// Serves one connection until the client leaves, a frame is bad, or shutdown is signalled
/// (then the requests in hand are finished first).
///
/// A reader task turns the socket into frames; this loop handles them in order. A request's
/// effects happen in order, but its answer may wait (a produce with `acks=all` waiting for an
/// fsync) while the next requests are read and applied, so pipelined produce requests share
/// fsyncs instead of queueing one behind another. Answers still leave in request order.
pub async fn serve(
    stream: TcpStream,
    peer: SocketAddr,
    broker: Arc<Broker>,
    mut shutdown: watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    let (read, mut write) = stream.into_split();
    let idle = broker.config.idle_timeout;
    let max = broker.config.max_request_bytes;
    let (frames_tx, mut frames) = mpsc::channel(MAX_IN_FLIGHT);
    let reader = tokio::spawn(read_frames(read, max, idle, frames_tx));
    let mut ctx = RequestContext {
        broker,
        peer,
        client_id: None,
        shutdown: shutdown.clone(),
    };
    let mut pending: FuturesOrdered<Completion> = FuturesOrdered::new();
    let mut stopping = false;
    let mut failure: Option<FrameError> = None;
    loop {
        if stopping && pending.is_empty() {
            break;
        }
        tokio::select! {
            biased;
            Some(done) = pending.next(), if !pending.is_empty() => match done {
                Ok(Some(mut response)) => {
                    if let Err(e) = response.write_to(&mut write).await {
                        failure = Some(e.into());
                        break;
                    }
                }
                Ok(None) => {}
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            },
            _ = shutdown.changed(), if !stopping => stopping = true,
            frame = frames.recv(), if !stopping && pending.len() < MAX_IN_FLIGHT => match frame {
                None => stopping = true, // the client closed its side
                Some(Err(e)) => {
                    failure = Some(e);
                    break;
                }
                Some(Ok(raw)) => match process(&mut ctx, raw).await {
                    Ok(Handled::Done(Some(mut response))) if pending.is_empty() => {
                        if let Err(e) = response.write_to(&mut write).await {
                            failure = Some(e.into());
                            break;
                        }
                    }
                    Ok(Handled::Done(response)) => {
                        pending.push_back(Box::pin(std::future::ready(Ok(response))));
                    }
                    Ok(Handled::Later(completion)) => pending.push_back(completion),
                    Err(e) => {
                        failure = Some(e);
                        break;
                    }
                },
            },
        }
    }
    reader.abort();
    if let Some(e) = failure {
        match &e {
            FrameError::Io(_) | FrameError::Idle => {
                tracing::debug!(%peer, error = %e, "closing connection")
            }
            _ => {
                tracing::warn!(%peer, client_id = ?ctx.client_id, error = %e, "closing connection")
            }
        }
    }
    let _ = write.shutdown().await;
}

/// Reads frames until end of stream, a bad frame, or the idle timeout, passing each on.
async fn read_frames(
    read: tokio::net::tcp::OwnedReadHalf,
    max: usize,
    idle: std::time::Duration,
    frames: mpsc::Sender<Result<BytesMut, FrameError>>,
) {
    let mut read = BufReader::with_capacity(64 << 10, read);
    loop {
        let frame = match tokio::time::timeout(idle, read_frame(&mut read, max)).await {
            Err(_) => Err(FrameError::Idle),
            Ok(Ok(Some(frame))) => Ok(frame),
            Ok(Ok(None)) => return,
            Ok(Err(e)) => Err(e),
        };
        let stop = frame.is_err();
        if frames.send(frame).await.is_err() || stop {
            return;
        }
    }
}

/// Reads one size-prefixed frame; `None` at a clean end of stream between frames.
async fn read_frame(
    read: &mut BufReader<tokio::net::tcp::OwnedReadHalf>,
    max: usize,
) -> Result<Option<BytesMut>, FrameError> {
    let size = match read.read_i32().await {
        Ok(n) => n,
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    if size < MIN_FRAME {
        return Err(FrameError::BadSize { size });
    }
    let size = size as usize;
    if size > max {
        return Err(FrameError::TooLarge { size, max });
    }
    // Filled straight from the socket buffer, without zeroing it first.
    let mut buf = BytesMut::with_capacity(size);
    while buf.len() < size {
        let want = (size - buf.len()) as u64;
        if (&mut *read).take(want).read_buf(&mut buf).await? == 0 {
            return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into());
        }
    }
    Ok(Some(buf))
}

/// Decodes the header and dispatches; see [`Handled`].
async fn process(ctx: &mut RequestContext, mut raw: BytesMut) -> Result<Handled, FrameError> {
    let key = i16::from_be_bytes([raw[0], raw[1]]);
    let version = i16::from_be_bytes([raw[2], raw[3]]);
    let api = ApiKey::try_from(key).map_err(|_| FrameError::UnknownApiKey(key))?;
    let Some(range) = handler::versions(api) else {
        return Err(FrameError::UnknownApiKey(key));
    };
    if version < range.min || version > range.max {
        if api == ApiKey::ApiVersions {
            // KIP-511: answer in v0 so any client can read which versions we do speak.
            let correlation_id = i32::from_be_bytes([raw[4], raw[5], raw[6], raw[7]]);
            let response = handler::api_versions::unsupported_version_response();
            return encode(api, 0, correlation_id, &response).map(|r| Handled::Done(Some(r)));
        }
        return Err(FrameError::UnsupportedVersion { api, version });
    }
    let header_version = api.request_header_version(version);
    let mut buf = raw.split().freeze();
    let header =
        RequestHeader::decode(&mut buf, header_version).map_err(|source| FrameError::Decode {
            api,
            version,
            source,
        })?;
    if ctx.client_id.is_none() {
        ctx.client_id = header.client_id.as_ref().map(|c| c.to_string());
    }
    let frame = Frame {
        api,
        version,
        header,
        body: buf,
    };
    handler::dispatch(ctx, frame).await
}

/// Encodes a response with its header and size prefix.
pub fn encode<R: Encodable>(
    api: ApiKey,
    version: i16,
    correlation_id: i32,
    response: &R,
) -> Result<Response, FrameError> {
    encode_sharing(api, version, correlation_id, response, Shareable::default())
}

/// Like [`encode`], but large parts of the response that `shareable` names (a fetch's record
/// data) are referenced instead of copied; see [`SpliceBuf`].
pub fn encode_sharing<R: Encodable>(
    api: ApiKey,
    version: i16,
    correlation_id: i32,
    response: &R,
    shareable: Shareable,
) -> Result<Response, FrameError> {
    let header_version = api.response_header_version(version);
    let header = ResponseHeader::default().with_correlation_id(correlation_id);
    let encode_err = |source| FrameError::Encode {
        api,
        version,
        source,
    };
    let size = header
        .compute_size(header_version)
        .and_then(|h| response.compute_size(version).map(|b| h + b))
        .map_err(encode_err)?;
    let mut buf = SpliceBuf::new(4 + size, shareable);
    buf.put_i32(size as i32);
    header
        .encode(&mut buf, header_version)
        .map_err(encode_err)?;
    response.encode(&mut buf, version).map_err(encode_err)?;
    buf.finish().map_err(|e| encode_err(e.into()))
}

/// Decodes a request body of the version in the header. Trailing bytes are tolerated, as
/// Kafka tolerates them: librdkafka's Metadata v13 requests carry a few.
pub fn decode<R: Decodable>(frame: &mut Frame) -> Result<R, FrameError> {
    let (api, version) = (frame.api, frame.version);
    let r = R::decode(&mut frame.body, version).map_err(|source| FrameError::Decode {
        api,
        version,
        source,
    })?;
    if frame.body.has_remaining() {
        tracing::trace!(
            ?api,
            version,
            extra = frame.body.remaining(),
            "bytes after the request body"
        );
    }
    Ok(r)
}
