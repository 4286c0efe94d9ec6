use thiserror::Error;

/// Why a request body was rejected. Every variant is the client's fault (HTTP 4xx); the
/// message names the offending event and field so a developer can fix their call.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum DecodeError {
    #[error("invalid JSON: {0}")]
    InvalidJson(String),
    #[error("{location}: {message}")]
    InvalidEvent { location: String, message: String },
    #[error("{location}: event is {size} bytes, larger than the limit of {limit} bytes")]
    EventTooLarge {
        location: String,
        size: usize,
        limit: usize,
    },
    #[error("batch is empty")]
    EmptyBatch,
}

impl DecodeError {
    pub(crate) fn invalid(location: &str, message: impl Into<String>) -> Self {
        Self::InvalidEvent {
            location: location.to_owned(),
            message: message.into(),
        }
    }

    /// True when the input was too large rather than malformed (HTTP 413 rather than 400).
    pub fn is_too_large(&self) -> bool {
        matches!(self, Self::EventTooLarge { .. })
    }
}

pub type Result<T, E = DecodeError> = std::result::Result<T, E>;
