//! What a listener asks: an [`AccessRequest`], and the two answers, [`Grant`] and [`Denial`].

use std::fmt;
use std::net::IpAddr;

use tokio_util::sync::CancellationToken;

use crate::end::{Revocation, SessionEnd};
use crate::registry::SessionGuard;
use crate::{StreamName, TokenId};

/// What the peer wants to do with the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// Send media into the stream.
    Publish,
    /// Receive the stream.
    Play,
}

/// The protocol a request arrived on (for logs and protocol-specific rules).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// RTMP.
    Rtmp,
    /// SRT.
    Srt,
    /// WebRTC negotiated over WebSocket.
    WebRtc,
    /// WebRTC published over WHIP (RFC 9725).
    Whip,
    /// WebRTC played over WHEP.
    Whep,
    /// HLS (and LL-HLS) over HTTP.
    Hls,
    /// MPEG-DASH over HTTP.
    Dash,
    /// A stream this node pulls from the node of the cluster that publishes it, published
    /// into this node's relay.
    Cluster,
}

impl Protocol {
    /// Lower-case name for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Rtmp => "rtmp",
            Self::Srt => "srt",
            Self::WebRtc => "webrtc",
            Self::Whip => "whip",
            Self::Whep => "whep",
            Self::Hls => "hls",
            Self::Dash => "dash",
            Self::Cluster => "cluster",
        }
    }
}

/// One publish or play attempt, as every listener describes it to [`crate::Auth::authorize`].
#[derive(Clone, Copy)]
pub struct AccessRequest<'a> {
    /// Publish or play.
    pub action: Action,
    /// The stream asked for.
    pub stream: &'a StreamName,
    /// The token as presented; never logged.
    pub token: Option<&'a str>,
    /// The peer's address.
    pub peer_ip: IpAddr,
    /// The HTTP/WebSocket `Origin` header, if the protocol has one.
    pub origin: Option<&'a str>,
    /// The HTTP `Referer` header, if any.
    pub referer: Option<&'a str>,
    /// The peer's user agent, if the protocol carries one.
    pub user_agent: Option<&'a str>,
    /// The protocol the request arrived on.
    pub protocol: Protocol,
}

impl fmt::Debug for AccessRequest<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccessRequest")
            .field("action", &self.action)
            .field("stream", &self.stream)
            .field("token", &self.token.map(|_| "<redacted>"))
            .field("peer_ip", &self.peer_ip)
            .field("origin", &self.origin)
            .field("referer", &self.referer)
            .field("user_agent", &self.user_agent)
            .field("protocol", &self.protocol)
            .finish()
    }
}

/// Why a request was refused; one variant per reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Denial {
    /// A token is required and none was presented.
    #[error("a token is required")]
    Missing,
    /// The presented token is not known.
    #[error("unknown token")]
    Unknown,
    /// The token has expired.
    #[error("token expired")]
    Expired,
    /// The token is not valid yet.
    #[error("token not yet valid")]
    NotYetValid,
    /// A subscribe token presented to publish, or the reverse.
    #[error("wrong kind of token for this action")]
    WrongKind,
    /// The token does not cover this stream.
    #[error("token does not allow this stream")]
    StreamNotAllowed,
    /// The peer's IP is not allowed.
    #[error("IP address not allowed")]
    IpNotAllowed,
    /// The request's Origin is not allowed.
    #[error("origin not allowed")]
    OriginNotAllowed,
    /// The request's Referer is not allowed.
    #[error("referer not allowed")]
    RefererNotAllowed,
    /// The peer's user agent is not allowed.
    #[error("user agent not allowed")]
    UserAgentNotAllowed,
    /// The token's `maxUses` are spent.
    #[error("token uses exhausted")]
    UsesExhausted,
    /// The stream is already being published.
    #[error("stream is already live")]
    StreamInUse,
    /// A viewer without a token asked for a stream that is not live.
    #[error("stream is not live")]
    StreamNotLive,
    /// The token is disabled.
    #[error("token disabled")]
    Disabled,
    /// The signed token's id (`jti`) has been revoked.
    #[error("token revoked")]
    Revoked,
    /// A signed token's issuer, audience, lifetime or missing `jti` is not accepted here.
    #[error("signed token's claims not accepted")]
    ClaimsRefused,
    /// The decision could not be recorded durably (the store failed); nothing was admitted.
    #[error("authorization temporarily unavailable")]
    Unavailable,
}

impl Denial {
    /// A stable snake_case code for logs and metrics.
    pub fn code(self) -> &'static str {
        match self {
            Self::Missing => "missing",
            Self::Unknown => "unknown",
            Self::Expired => "expired",
            Self::NotYetValid => "not_yet_valid",
            Self::WrongKind => "wrong_kind",
            Self::StreamNotAllowed => "stream_not_allowed",
            Self::IpNotAllowed => "ip_not_allowed",
            Self::OriginNotAllowed => "origin_not_allowed",
            Self::RefererNotAllowed => "referer_not_allowed",
            Self::UserAgentNotAllowed => "user_agent_not_allowed",
            Self::UsesExhausted => "uses_exhausted",
            Self::StreamInUse => "stream_in_use",
            Self::StreamNotLive => "stream_not_live",
            Self::Disabled => "disabled",
            Self::Revoked => "revoked",
            Self::ClaimsRefused => "claims_refused",
            Self::Unavailable => "unavailable",
        }
    }

    /// Every code, for metrics.
    pub const CODES: [&'static str; 17] = [
        "missing",
        "unknown",
        "expired",
        "not_yet_valid",
        "wrong_kind",
        "stream_not_allowed",
        "ip_not_allowed",
        "origin_not_allowed",
        "referer_not_allowed",
        "user_agent_not_allowed",
        "uses_exhausted",
        "stream_in_use",
        "stream_not_live",
        "disabled",
        "revoked",
        "claims_refused",
        "unavailable",
    ];

    /// Whether this is a failed authentication (a token missing, wrong or refused by its
    /// rules), which is delayed and counted per source; a busy or not-live stream and a
    /// store failure are not.
    pub fn is_auth_failure(self) -> bool {
        !matches!(
            self,
            Self::StreamInUse | Self::StreamNotLive | Self::Unavailable
        )
    }
}

/// Permission to publish or play, held for as long as the session lives.
///
/// A publish grant holds the stream's lease: while it lives no other publish of the name is
/// granted. Dropping the grant ends the session in the registry and releases the lease.
/// Listeners must stop the session when [`Grant::cancelled`] fires (the token was revoked,
/// disabled, rotated or expired).
pub struct Grant {
    pub(crate) guard: SessionGuard,
    pub(crate) token: Option<TokenId>,
    pub(crate) subscribe_requires_auth: bool,
    pub(crate) srt_passphrase: Option<crate::SrtPassphrase>,
}

impl Grant {
    /// The registry's id for this session.
    pub fn session_id(&self) -> u64 {
        self.guard.id()
    }

    /// For an anonymous viewer: the registry's id of the publish session it is bound to
    /// (it ends with that one).
    pub fn bound_to(&self) -> Option<u64> {
        self.guard.bound_to()
    }

    /// The token that admitted the session, if one did.
    pub fn token_id(&self) -> Option<TokenId> {
        self.token
    }

    /// When the token that admitted the session expires (Unix milliseconds), if it does:
    /// the session ends then.
    pub fn expires_on(&self) -> Option<crate::UnixMillis> {
        self.guard.expires_on()
    }

    /// For a publish grant: whether viewers of the stream need a subscribe token.
    pub fn subscribe_requires_auth(&self) -> bool {
        self.subscribe_requires_auth
    }

    /// For a publish grant: the passphrase SRT connections admitted by its token must use.
    pub fn srt_passphrase(&self) -> Option<&str> {
        self.srt_passphrase
            .as_ref()
            .map(crate::SrtPassphrase::expose)
    }

    /// Fires when the session must end; clone it into the session's task.
    pub fn cancellation(&self) -> CancellationToken {
        self.guard.end().token()
    }

    /// The signal that ends the session, with the reason.
    pub fn end(&self) -> &SessionEnd {
        self.guard.end()
    }

    /// Why the server ended the session, once it has.
    pub fn end_reason(&self) -> Option<Revocation> {
        self.guard.end().reason()
    }

    /// Whether the session has been told to end.
    pub fn is_cancelled(&self) -> bool {
        self.guard.end().is_ended()
    }

    /// Resolves when the session must end, with the reason.
    pub async fn cancelled(&self) -> Revocation {
        self.guard.end().ended().await
    }
}

impl fmt::Debug for Grant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Grant")
            .field("session", &self.guard.id())
            .field("token", &self.token)
            .finish()
    }
}
