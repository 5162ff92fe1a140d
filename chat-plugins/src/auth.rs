//! JSON Web Tokens, HS256 only: the chat API and the WebSocket gateway accept a token
//! signed with the shared secret, with `sub` (the user id) and `exp` (seconds since the
//! epoch) required. A `role` of `service` marks a backend allowed to act for anyone.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::error::ChatError;

type HmacSha256 = Hmac<Sha256>;

/// Who a verified token speaks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    pub user: String,
    pub service: bool,
    pub expires_at: i64,
}

/// Checks signatures and expiry with one shared secret.
#[derive(Clone)]
pub struct Verifier {
    key: HmacSha256,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Verifier(..)")
    }
}

impl Verifier {
    pub fn new(secret: &[u8]) -> Self {
        Verifier {
            key: HmacSha256::new_from_slice(secret).expect("HMAC takes keys of any length"),
        }
    }

    /// The claims of `token` when it is well formed, signed with our secret, and not
    /// expired at `now_s` (seconds).
    pub fn verify(&self, token: &str, now_s: i64) -> Result<Claims, ChatError> {
        let bad = ChatError::Unauthorized("the token is not a valid HS256 JWT");
        let mut parts = token.split('.');
        let (Some(header), Some(payload), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(bad);
        };
        let header: serde_json::Value = decode_json(header).ok_or(bad)?;
        if header.get("alg").and_then(|a| a.as_str()) != Some("HS256") {
            return Err(ChatError::Unauthorized("only HS256 tokens are accepted"));
        }
        let signature = URL_SAFE_NO_PAD
            .decode(signature)
            .map_err(|_| ChatError::Unauthorized("the token signature is not base64url"))?;
        let mut mac = self.key.clone();
        mac.update(&token.as_bytes()[..header_and_payload_len(token)]);
        mac.verify_slice(&signature)
            .map_err(|_| ChatError::Unauthorized("the token signature does not match"))?;
        let claims: serde_json::Value =
            decode_json(payload).ok_or(ChatError::Unauthorized("the token payload is not JSON"))?;
        let user = claims
            .get("sub")
            .and_then(|s| s.as_str())
            .filter(|s| !s.is_empty())
            .ok_or(ChatError::Unauthorized("the token has no sub"))?;
        let expires_at = claims
            .get("exp")
            .and_then(|e| e.as_i64().or_else(|| e.as_f64().map(|f| f as i64)))
            .ok_or(ChatError::Unauthorized("the token has no exp"))?;
        if expires_at <= now_s {
            return Err(ChatError::Unauthorized("the token has expired"));
        }
        Ok(Claims {
            user: user.to_string(),
            service: claims.get("role").and_then(|r| r.as_str()) == Some("service"),
            expires_at,
        })
    }

    /// Signs `claims` (a JSON object) as an HS256 token: for tests, the development token
    /// of the demo page, and service tokens.
    pub fn sign(&self, claims: &serde_json::Value) -> String {
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
        let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
        let signing_input = format!("{header}.{payload}");
        let mut mac = self.key.clone();
        mac.update(signing_input.as_bytes());
        let signature = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
        format!("{signing_input}.{signature}")
    }
}

/// Length of `header.payload` (the signed part) of a three-part token.
fn header_and_payload_len(token: &str) -> usize {
    token.rfind('.').unwrap_or(0)
}

fn decode_json(part: &str) -> Option<serde_json::Value> {
    let bytes = URL_SAFE_NO_PAD.decode(part).ok()?;
    serde_json::from_slice(&bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn signed_tokens_verify_and_tampered_or_expired_ones_do_not() {
        let v = Verifier::new(b"secret");
        let token = v.sign(&json!({"sub": "alice", "exp": 2000}));
        let claims = v.verify(&token, 1000).unwrap();
        assert_eq!(claims.user, "alice");
        assert!(!claims.service);
        assert!(v.verify(&token, 2000).is_err(), "expired at exp");
        assert!(Verifier::new(b"other").verify(&token, 1000).is_err());
        let mut tampered = token.clone();
        tampered.insert(token.find('.').unwrap() + 2, 'x');
        assert!(v.verify(&tampered, 1000).is_err());
        assert!(v.verify("a.b", 1000).is_err());
        assert!(v.verify("", 1000).is_err());
        let none = format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(br#"{"alg":"none"}"#),
            URL_SAFE_NO_PAD.encode(br#"{"sub":"mallory","exp":9999}"#)
        );
        assert!(v.verify(&none, 1000).is_err());
        let no_exp = v.sign(&json!({"sub": "alice"}));
        assert!(v.verify(&no_exp, 1000).is_err());
        let service = v.sign(&json!({"sub": "billing", "exp": 2000, "role": "service"}));
        assert!(v.verify(&service, 1000).unwrap().service);
    }

    #[test]
    fn a_token_made_elsewhere_verifies() {
        // Made with Python's hmac module: HS256 over {"sub":"1234567890","name":"John Doe",
        // "exp":4102444800} with the secret "your-256-bit-secret".
        let token = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIiwiZXhwIjo0MTAyNDQ0ODAwfQ.0JCBL3AWwdAVCfNfHsCB0PKuJl4J0dEe_AhadcRH-rk";
        let v = Verifier::new(b"your-256-bit-secret");
        let claims = v.verify(token, 0).unwrap();
        assert_eq!(claims.user, "1234567890");
        assert_eq!(claims.expires_at, 4_102_444_800);
    }
}
