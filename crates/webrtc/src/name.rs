//! From a WebSocket `streamId` (and the endpoint's path) to a [`StreamName`], and from a
//! [`Denial`] to the `error` definition a browser is sent.

use streamgate_auth::{Denial, Revocation, StreamName};

use crate::message::Definition;

/// The stream a `streamId` names. On `/<App>/websocket`, a bare id `cam1` means `<App>/cam1`
/// (as Ant Media applications name streams); an id with a `/` is taken as a full name.
pub fn resolve(app: Option<&str>, stream_id: &str) -> Result<StreamName, Definition> {
    let full;
    let name = match app {
        Some(app) if !stream_id.contains('/') => {
            full = format!("{app}/{stream_id}");
            full.as_str()
        }
        _ => stream_id,
    };
    StreamName::new(name).map_err(|_| Definition::InvalidStreamName)
}

/// The `error` definition for a refusal.
pub fn denial_definition(denial: Denial) -> Definition {
    match denial {
        Denial::StreamInUse => Definition::StreamIdInUse,
        Denial::StreamNotLive => Definition::NoStreamExist,
        _ => Definition::UnauthorizedAccess,
    }
}

/// The `reason` of the `publish_finished` or `play_finished` that tells a browser the server
/// ended its session.
pub fn revocation_reason(r: Revocation) -> &'static str {
    match r {
        Revocation::Deleted => "token deleted",
        Revocation::Disabled => "token disabled",
        Revocation::Rotated => "token rotated",
        Revocation::Expired => "token expired",
        Revocation::JtiRevoked => "token revoked",
        Revocation::NotAllowed(d) => match d {
            Denial::StreamNotAllowed => "token changed: this stream is no longer allowed",
            Denial::IpNotAllowed => "token changed: this address is no longer allowed",
            Denial::OriginNotAllowed => "token changed: this origin is no longer allowed",
            Denial::RefererNotAllowed => "token changed: this referer is no longer allowed",
            Denial::UserAgentNotAllowed => "token changed: this user agent is no longer allowed",
            _ => "token changed: no longer allowed",
        },
        Revocation::PublisherEnded => "the publish that admitted this viewer ended",
        Revocation::NowProtected => "the stream now requires a subscribe token",
        Revocation::LeaseLost => "another node publishes this stream now",
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn app_prefix_applies_to_bare_ids() {
        assert_eq!(resolve(Some("live"), "cam1").unwrap().as_str(), "live/cam1");
        assert_eq!(
            resolve(Some("LiveApp"), "live/cam1").unwrap().as_str(),
            "live/cam1"
        );
        assert_eq!(resolve(None, "live/cam1").unwrap().as_str(), "live/cam1");
        assert_eq!(resolve(None, "cam1").unwrap().as_str(), "cam1");
        assert_eq!(resolve(None, "../x"), Err(Definition::InvalidStreamName));
        assert_eq!(
            resolve(Some("live"), "a b"),
            Err(Definition::InvalidStreamName)
        );
    }

    #[test]
    fn denials_map_to_sdk_definitions() {
        assert_eq!(
            denial_definition(Denial::StreamInUse),
            Definition::StreamIdInUse
        );
        assert_eq!(
            denial_definition(Denial::StreamNotLive),
            Definition::NoStreamExist
        );
        assert_eq!(
            denial_definition(Denial::OriginNotAllowed),
            Definition::UnauthorizedAccess
        );
        assert_eq!(
            denial_definition(Denial::Missing),
            Definition::UnauthorizedAccess
        );
    }
}
