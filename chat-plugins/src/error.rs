//! What the chat API answers when it cannot do what was asked: the protocol's error codes
//! (`chat-protocol.md`), each with its HTTP status.

use crate::log::LogError;

#[derive(Debug, thiserror::Error)]
pub enum ChatError {
    #[error("{0}")]
    InvalidMessage(&'static str),
    #[error("the content is {len} bytes; at most {max} are allowed")]
    MessageTooLarge { len: usize, max: usize },
    #[error("{0}")]
    Unauthorized(&'static str),
    #[error("{0}")]
    Forbidden(&'static str),
    #[error("{0}")]
    NotFound(&'static str),
    #[error("too many messages; slow down")]
    RateLimited,
    #[error("the log could not take the write; retry with the same msg_id")]
    Unavailable(#[source] LogError),
}

impl ChatError {
    /// The protocol's error code.
    pub fn code(&self) -> &'static str {
        match self {
            ChatError::InvalidMessage(_) => "INVALID_MESSAGE",
            ChatError::MessageTooLarge { .. } => "MESSAGE_TOO_LARGE",
            ChatError::Unauthorized(_) => "UNAUTHORIZED",
            ChatError::Forbidden(_) => "FORBIDDEN",
            ChatError::NotFound(_) => "NOT_FOUND",
            ChatError::RateLimited => "RATE_LIMIT_EXCEEDED",
            ChatError::Unavailable(_) => "UNAVAILABLE",
        }
    }

    /// The HTTP status for the same error.
    pub fn status(&self) -> u16 {
        match self {
            ChatError::InvalidMessage(_) => 400,
            ChatError::MessageTooLarge { .. } => 413,
            ChatError::Unauthorized(_) => 401,
            ChatError::Forbidden(_) => 403,
            ChatError::NotFound(_) => 404,
            ChatError::RateLimited => 429,
            ChatError::Unavailable(_) => 503,
        }
    }

    /// The JSON body the HTTP API and the WebSocket `error` frame carry.
    pub fn body(&self) -> serde_json::Value {
        serde_json::json!({
            "error_code": self.code(),
            "error_message": self.to_string(),
        })
    }
}

impl From<LogError> for ChatError {
    fn from(e: LogError) -> Self {
        ChatError::Unavailable(e)
    }
}

pub type Result<T, E = ChatError> = std::result::Result<T, E>;
