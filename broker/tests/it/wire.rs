//! A minimal raw Kafka client for exact protocol checks: encode a request with
//! `kafka-protocol`, send it, read and decode the response.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub struct Wire {
    pub stream: TcpStream,
    next_id: i32,
}

impl Wire {
    pub async fn connect(addr: &str) -> Wire {
        Wire {
            stream: TcpStream::connect(addr).await.unwrap(),
            next_id: 1,
        }
    }

    /// Encodes a request frame (size prefix included).
    pub fn frame<R: Encodable>(&mut self, api: ApiKey, version: i16, request: &R) -> (i32, Bytes) {
        let id = self.next_id;
        self.next_id += 1;
        let header = RequestHeader::default()
            .with_request_api_key(api as i16)
            .with_request_api_version(version)
            .with_correlation_id(id)
            .with_client_id(Some(StrBytes::from_static_str("wire-test")));
        let mut body = BytesMut::new();
        header
            .encode(&mut body, api.request_header_version(version))
            .unwrap();
        request.encode(&mut body, version).unwrap();
        let mut out = BytesMut::new();
        out.put_i32(body.len() as i32);
        out.extend_from_slice(&body);
        (id, out.freeze())
    }

    pub async fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.unwrap();
    }

    /// Reads one response frame: (correlation id, body), or `None` if the broker closed.
    pub async fn read_response(&mut self, api: ApiKey, version: i16) -> Option<(i32, Bytes)> {
        let size = self.stream.read_i32().await.ok()?;
        let mut buf = vec![0u8; size as usize];
        self.stream.read_exact(&mut buf).await.ok()?;
        let mut buf = Bytes::from(buf);
        let header =
            ResponseHeader::decode(&mut buf, api.response_header_version(version)).unwrap();
        Some((header.correlation_id, buf))
    }

    /// Sends a request and decodes its response.
    pub async fn call<Req: Encodable, Resp: Decodable>(
        &mut self,
        api: ApiKey,
        version: i16,
        request: &Req,
    ) -> Resp {
        let (id, frame) = self.frame(api, version, request);
        self.send_raw(&frame).await;
        let (got, mut body) = self
            .read_response(api, version)
            .await
            .expect("the broker closed the connection");
        assert_eq!(got, id, "correlation id");
        let resp = Resp::decode(&mut body, version).unwrap();
        assert!(
            !body.has_remaining(),
            "trailing bytes in {api:?} v{version} response"
        );
        resp
    }

    /// True when the broker closed the connection (EOF or reset) within `secs`.
    pub async fn closed_within(&mut self, secs: u64) -> bool {
        let mut buf = [0u8; 64];
        loop {
            match tokio::time::timeout(
                std::time::Duration::from_secs(secs),
                self.stream.read(&mut buf),
            )
            .await
            {
                Ok(Ok(0)) | Ok(Err(_)) => return true,
                Ok(Ok(_)) => continue,
                Err(_) => return false,
            }
        }
    }
}
