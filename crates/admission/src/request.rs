//! [`AdmitRequest`]: what a listener asks for, owned, so that it can cross to the blocking
//! pool or out of a sans-IO session core.

use std::fmt;
use std::net::IpAddr;

use streamgate_auth::{AccessRequest, Action, Protocol, StreamName};

/// One publish or play attempt, as a listener describes it.
#[derive(Clone)]
pub struct AdmitRequest {
    /// Publish or play.
    pub action: Action,
    /// The stream asked for.
    pub stream: StreamName,
    token: Option<String>,
    /// The peer's address.
    pub peer_ip: IpAddr,
    /// The HTTP/WebSocket `Origin` header.
    pub origin: Option<String>,
    /// The HTTP `Referer` header.
    pub referer: Option<String>,
    /// The peer's user agent.
    pub user_agent: Option<String>,
    /// The protocol the request arrived on.
    pub protocol: Protocol,
}

impl AdmitRequest {
    /// A request with no headers.
    pub fn new(
        protocol: Protocol,
        action: Action,
        stream: StreamName,
        token: Option<String>,
        peer_ip: IpAddr,
    ) -> Self {
        Self {
            action,
            stream,
            token,
            peer_ip,
            origin: None,
            referer: None,
            user_agent: None,
            protocol,
        }
    }

    /// The request with these headers (as the protocol carries them).
    pub fn with_headers(
        mut self,
        origin: Option<String>,
        referer: Option<String>,
        user_agent: Option<String>,
    ) -> Self {
        self.origin = origin;
        self.referer = referer;
        self.user_agent = user_agent;
        self
    }

    pub(crate) fn with_action(mut self, action: Action) -> Self {
        self.action = action;
        self
    }

    /// The token as presented.
    pub fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    /// The auth crate's view of the request.
    pub(crate) fn access(&self) -> AccessRequest<'_> {
        AccessRequest {
            action: self.action,
            stream: &self.stream,
            token: self.token.as_deref(),
            peer_ip: self.peer_ip,
            origin: self.origin.as_deref(),
            referer: self.referer.as_deref(),
            user_agent: self.user_agent.as_deref(),
            protocol: self.protocol,
        }
    }
}

impl fmt::Debug for AdmitRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdmitRequest")
            .field("action", &self.action)
            .field("stream", &self.stream)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("peer_ip", &self.peer_ip)
            .field("origin", &self.origin)
            .field("referer", &self.referer)
            .field("user_agent", &self.user_agent)
            .field("protocol", &self.protocol)
            .finish()
    }
}
