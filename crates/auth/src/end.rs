//! Why the server ends an admitted session ([`Revocation`]), and the signal that carries it to
//! the session's task ([`SessionEnd`]).

use std::sync::{Arc, OnceLock};

use tokio_util::sync::CancellationToken;

use crate::Denial;

/// Why the registry told a live session to end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Revocation {
    /// Its token was deleted.
    Deleted,
    /// Its token was disabled.
    Disabled,
    /// Its token's secret was rotated.
    Rotated,
    /// Its token expired.
    Expired,
    /// Its signed token's id (`jti`) was revoked.
    JtiRevoked,
    /// Its token was changed and no longer admits it, for this reason.
    NotAllowed(Denial),
    /// An anonymous viewer's publish session ended.
    PublisherEnded,
    /// An anonymous viewer's stream now needs a subscribe token.
    NowProtected,
    /// Another node holds the stream's publish lease now (this node could not renew it in
    /// time).
    LeaseLost,
}

impl Revocation {
    /// A stable snake_case code for logs and metrics.
    pub fn code(self) -> &'static str {
        match self {
            Self::Deleted => "token_deleted",
            Self::Disabled => "token_disabled",
            Self::Rotated => "token_rotated",
            Self::Expired => "token_expired",
            Self::JtiRevoked => "token_revoked",
            Self::NotAllowed(_) => "no_longer_allowed",
            Self::PublisherEnded => "publisher_ended",
            Self::NowProtected => "subscribe_token_required",
            Self::LeaseLost => "lease_lost",
        }
    }

    /// Every code, for metrics.
    pub const CODES: [&'static str; 9] = [
        "token_deleted",
        "token_disabled",
        "token_rotated",
        "token_expired",
        "token_revoked",
        "no_longer_allowed",
        "publisher_ended",
        "subscribe_token_required",
        "lease_lost",
    ];
}

impl std::fmt::Display for Revocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Deleted => f.write_str("token deleted"),
            Self::Disabled => f.write_str("token disabled"),
            Self::Rotated => f.write_str("token rotated"),
            Self::Expired => f.write_str("token expired"),
            Self::JtiRevoked => f.write_str("token revoked"),
            Self::NotAllowed(d) => write!(f, "token changed: {d}"),
            Self::PublisherEnded => f.write_str("the publish that admitted this viewer ended"),
            Self::NowProtected => f.write_str("the stream now requires a subscribe token"),
            Self::LeaseLost => f.write_str("another node publishes this stream now"),
        }
    }
}

/// Fires once when the server ends a session, with the reason; clones share it. The first
/// reason given wins.
#[derive(Debug, Clone, Default)]
pub struct SessionEnd {
    inner: Arc<EndInner>,
}

#[derive(Debug, Default)]
struct EndInner {
    token: CancellationToken,
    reason: OnceLock<Revocation>,
}

impl SessionEnd {
    /// Ends the session for `why`; false if it had been ended already.
    pub fn end(&self, why: Revocation) -> bool {
        let first = self.inner.reason.set(why).is_ok();
        if first {
            self.inner.token.cancel();
        }
        first
    }

    /// Why the session was ended, once it has been.
    pub fn reason(&self) -> Option<Revocation> {
        self.inner.reason.get().copied()
    }

    /// Whether the session has been ended.
    pub fn is_ended(&self) -> bool {
        self.inner.token.is_cancelled()
    }

    /// Resolves once the session has been ended, with the reason.
    pub async fn ended(&self) -> Revocation {
        self.inner.token.cancelled().await;
        self.reason().unwrap_or(Revocation::Deleted)
    }

    /// The cancellation fired with it (for code that selects on tokens).
    pub fn token(&self) -> CancellationToken {
        self.inner.token.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_reason_wins() {
        let end = SessionEnd::default();
        assert!(!end.is_ended());
        assert!(end.end(Revocation::Rotated));
        assert!(!end.end(Revocation::Deleted));
        assert_eq!(end.reason(), Some(Revocation::Rotated));
        assert!(end.token().is_cancelled());
    }

    #[test]
    fn codes_are_listed() {
        let all = [
            Revocation::Deleted,
            Revocation::Disabled,
            Revocation::Rotated,
            Revocation::Expired,
            Revocation::JtiRevoked,
            Revocation::NotAllowed(Denial::IpNotAllowed),
            Revocation::PublisherEnded,
            Revocation::NowProtected,
        ];
        for r in all {
            assert!(Revocation::CODES.contains(&r.code()));
        }
    }
}
