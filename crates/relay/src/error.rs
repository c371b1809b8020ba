//! The one error type of this crate.

use thiserror::Error;

/// Why the relay refused a request.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RelayError {
    /// Another publisher is attached to this stream name.
    #[error("stream {name:?} already has a publisher")]
    AlreadyPublishing {
        /// The stream name.
        name: String,
    },
    /// The stream is not live (under the tag asked for).
    #[error("stream {name:?} is not live")]
    NotLive {
        /// The stream name.
        name: String,
    },
}
