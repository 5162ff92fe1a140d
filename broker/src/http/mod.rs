//! The HTTP listener (`--http-listen`): health and the consumer-group admin endpoints, all
//! JSON. One hyper HTTP/1.1 connection task per client; shutdown lets requests in hand
//! finish.
//!
//! Routes:
//! * `GET /health`
//! * `GET /consumer-groups`, `GET /consumer-groups/{group}`,
//!   `GET /consumer-groups/{group}/assignments` (see [`groups`]);
//! * the chat API when the chat fabric runs: `/chat/messages`, `/groups/{id}/members...`
//!   (handled by `chorus_chat::api`, which this module only carries bytes for).

pub mod groups;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use chorus_chat::gateway::Gateway;
use chorus_chat::Chat;

use crate::broker::Broker;

pub type Body = Full<Bytes>;

/// What the listener serves.
#[derive(Debug, Clone)]
pub struct Services {
    /// `None` on a `chorus gateway` (no broker in the process).
    pub broker: Option<Arc<Broker>>,
    /// `None` when the chat fabric is switched off.
    pub gateway: Option<Arc<Gateway>>,
}

/// Binds `addr` and serves until `shutdown` flips. Returns the bound address.
pub async fn start(
    addr: SocketAddr,
    services: Services,
    shutdown: watch::Receiver<bool>,
) -> std::io::Result<(SocketAddr, JoinHandle<()>)> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let task = tokio::spawn(accept_loop(listener, services, shutdown));
    Ok((local, task))
}

async fn accept_loop(
    listener: TcpListener,
    services: Services,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    tracing::warn!(error = %e, "http accept failed");
                    continue;
                }
            },
            _ = shutdown.changed() => break,
        };
        let services = services.clone();
        let mut stop = shutdown.clone();
        connections.spawn(async move {
            let service = service_fn(move |req| {
                let services = services.clone();
                async move { Ok::<_, Infallible>(route(&services, req).await) }
            });
            let conn = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades();
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = stop.changed() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
        });
    }
    while connections.join_next().await.is_some() {}
}

async fn route(services: &Services, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path().to_string();
    if let Some(gateway) = &services.gateway {
        if path == "/ws" {
            return websocket(gateway, req);
        }
        if path == "/metrics" {
            return metrics(Some(gateway));
        }
        if path == "/" && req.method() == Method::GET {
            return Response::builder()
                .status(StatusCode::OK)
                .header("content-type", "text/html; charset=utf-8")
                .body(Full::new(Bytes::from_static(
                    chorus_chat::demo::PAGE.as_bytes(),
                )))
                .expect("a valid response");
        }
        if chorus_chat::api::serves(&path) {
            return chat_api(gateway.chat(), req).await;
        }
    }
    if path == "/metrics" {
        return metrics(None);
    }
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    if req.method() != Method::GET {
        return error(StatusCode::METHOD_NOT_ALLOWED, "only GET is served here");
    }
    if segments.as_slice() == ["health"] {
        return json(StatusCode::OK, &serde_json::json!({ "status": "ok" }));
    }
    let Some(broker) = &services.broker else {
        return error(StatusCode::NOT_FOUND, "no such endpoint");
    };
    match segments.as_slice() {
        ["consumer-groups"] => groups::list(broker).await,
        ["consumer-groups", group] => groups::describe(broker, &decode_segment(group)).await,
        ["consumer-groups", group, "assignments"] => {
            groups::assignments(broker, &decode_segment(group)).await
        }
        _ => error(StatusCode::NOT_FOUND, "no such endpoint"),
    }
}

/// Prometheus text: the chat fabric's metrics when it runs.
fn metrics(gateway: Option<&Arc<Gateway>>) -> Response<Body> {
    let mut text = String::from(
        "# HELP chorus_up The broker is serving.\n# TYPE chorus_up gauge\nchorus_up 1\n",
    );
    if let Some(g) = gateway {
        text.push_str(&g.metrics.render());
    }
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "text/plain; version=0.0.4")
        .body(Full::new(Bytes::from(text)))
        .expect("a valid response")
}

/// `GET /ws`: checks the token and origin (401/403 before any upgrade), then switches the
/// connection to WebSocket and hands it to the gateway.
fn websocket(gateway: &Arc<Gateway>, mut req: Request<Incoming>) -> Response<Body> {
    let header = |name: hyper::header::HeaderName| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let claims = match gateway.authorize(
        req.uri().query(),
        header(hyper::header::AUTHORIZATION).as_deref(),
        header(hyper::header::ORIGIN).as_deref(),
    ) {
        Ok(c) => c,
        Err(e) => {
            let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::UNAUTHORIZED);
            return json(status, &e.body());
        }
    };
    let upgrade =
        header(hyper::header::UPGRADE).is_some_and(|u| u.eq_ignore_ascii_case("websocket"));
    let version_ok = header(hyper::header::SEC_WEBSOCKET_VERSION).as_deref() == Some("13");
    let Some(key) = header(hyper::header::SEC_WEBSOCKET_KEY).filter(|_| upgrade && version_ok)
    else {
        return error(
            StatusCode::BAD_REQUEST,
            "expected a WebSocket upgrade (version 13)",
        );
    };
    let on_upgrade = hyper::upgrade::on(&mut req);
    // Registered now, before the 101 goes out, so nothing sent after it is missed.
    let admitted = gateway.admit(claims);
    tokio::spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => chorus_chat::gateway::serve(admitted, TokioIo::new(upgraded)).await,
            Err(e) => tracing::debug!(error = %e, "websocket upgrade failed"),
        }
    });
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(hyper::header::UPGRADE, "websocket")
        .header(hyper::header::CONNECTION, "Upgrade")
        .header(
            hyper::header::SEC_WEBSOCKET_ACCEPT,
            chorus_chat::gateway::accept_key(key.as_bytes()),
        )
        .body(Full::new(Bytes::new()))
        .expect("a valid response")
}

/// Hands a chat API request to the chat fabric, with its body read up to the chat's limit.
async fn chat_api(chat: &Chat, req: Request<Incoming>) -> Response<Body> {
    use http_body_util::{BodyExt, Limited};
    let (parts, body) = req.into_parts();
    let limit = chat.config.max_body_bytes;
    let body = match Limited::new(body, limit).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => {
            let e = chorus_chat::error::ChatError::MessageTooLarge {
                len: limit + 1,
                max: limit,
            };
            return json(
                StatusCode::from_u16(e.status()).unwrap_or(StatusCode::BAD_REQUEST),
                &e.body(),
            );
        }
    };
    let authorization = parts
        .headers
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let answer = chat
        .handle_http(chorus_chat::api::HttpRequest {
            method: parts.method.as_str(),
            path: parts.uri.path(),
            query: parts.uri.query(),
            authorization,
            body: &body,
        })
        .await;
    let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if answer.body.is_null() {
        return Response::builder()
            .status(status)
            .body(Full::new(Bytes::new()))
            .expect("a valid response");
    }
    json(status, &answer.body)
}

/// Percent-decodes a path segment (group ids may contain characters URLs escape).
fn decode_segment(segment: &str) -> String {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(hi), Some(lo)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((hi * 16 + lo) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub fn json(status: StatusCode, value: &impl serde::Serialize) -> Response<Body> {
    let body = serde_json::to_vec_pretty(value).unwrap_or_else(|_| b"{}".to_vec());
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .expect("a valid response")
}

pub fn error(status: StatusCode, message: &str) -> Response<Body> {
    json(status, &serde_json::json!({ "error": message }))
}

#[cfg(test)]
mod tests {
    #[test]
    fn path_segments_are_percent_decoded() {
        assert_eq!(super::decode_segment("my%20group"), "my group");
        assert_eq!(super::decode_segment("plain"), "plain");
        assert_eq!(super::decode_segment("bad%zz"), "bad%zz");
        assert_eq!(super::decode_segment("end%2"), "end%2");
    }
}
