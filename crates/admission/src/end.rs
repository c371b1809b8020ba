//! [`EndReason`]: why an admitted session ended, the one type every protocol maps to its own
//! wire message (an RTMP status, an SRT close, a WebSocket `play_finished`).

use std::fmt;

use streamgate_auth::Revocation;

/// Why an admitted session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    /// The server ended it: its token was revoked or changed, or an anonymous viewer's
    /// publish ended.
    Revoked(Revocation),
    /// The client closed it (or its connection).
    ClientClosed,
    /// A viewer's stream ended and the viewer does not wait for the next publish.
    StreamEnded,
    /// A publisher sent no media for its idle timeout.
    Idle,
    /// A viewer took nothing the server wrote for its stall timeout.
    Stalled,
    /// The stream carries media the viewer's protocol cannot (a VP8 stream to RTMP or SRT).
    Unsupported,
    /// The peer broke the protocol or a limit.
    ProtocolError,
    /// The connection failed.
    ConnectionError,
    /// The server is shutting down.
    Shutdown,
}

impl EndReason {
    /// A stable snake_case code for logs and metrics.
    pub fn code(self) -> &'static str {
        match self {
            Self::Revoked(r) => r.code(),
            Self::ClientClosed => "client_closed",
            Self::StreamEnded => "stream_ended",
            Self::Idle => "idle",
            Self::Stalled => "stalled",
            Self::Unsupported => "unsupported",
            Self::ProtocolError => "protocol_error",
            Self::ConnectionError => "connection_error",
            Self::Shutdown => "shutdown",
        }
    }

    /// Every code, for metrics.
    pub fn codes() -> impl Iterator<Item = &'static str> {
        Revocation::CODES.into_iter().chain([
            "client_closed",
            "stream_ended",
            "idle",
            "stalled",
            "unsupported",
            "protocol_error",
            "connection_error",
            "shutdown",
        ])
    }

    /// Whether the server's token policy ended the session.
    pub fn is_revocation(self) -> bool {
        matches!(self, Self::Revoked(_))
    }
}

impl fmt::Display for EndReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Revoked(r) => r.fmt(f),
            Self::ClientClosed => f.write_str("closed by the client"),
            Self::StreamEnded => f.write_str("the stream ended"),
            Self::Idle => f.write_str("no media for the idle timeout"),
            Self::Stalled => f.write_str("the client took nothing for the stall timeout"),
            Self::Unsupported => f.write_str("the stream's media cannot be carried"),
            Self::ProtocolError => f.write_str("protocol error"),
            Self::ConnectionError => f.write_str("connection error"),
            Self::Shutdown => f.write_str("server shutdown"),
        }
    }
}
