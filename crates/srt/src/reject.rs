//! Which SRT rejection code a refusal carries.
//!
//! SRT callers (libsrt, srt-live-transmit, srt-tokio) report the code; ffmpeg only says
//! "Input/output error".
//! Codes in the 1400 range are SRT's "predefined" access-control codes, modelled on HTTP
//! statuses (libsrt's `SRT_REJX_*`; srt-tokio names them `ServerRejectReason` and numbers
//! them 1000 higher, as they travel on the wire).
//!
//! | refusal | code |
//! |---|---|
//! | no streamid, malformed, duplicate key, bad stream name, over 512 bytes | 1400 bad request |
//! | token missing, unknown, expired, not yet valid, disabled, of the wrong kind, uses spent | 1401 unauthorized |
//! | too many connections | 1402 overload |
//! | token does not cover the stream; IP, origin, referer or user agent not allowed | 1403 forbidden |
//! | viewer without a token, stream not live | 1404 not found |
//! | `m=` other than `publish` or `request` | 1405 bad mode |
//! | a second publish of a live stream | 1409 conflict |
//! | the token store failed | 1503 unavailable |
//! | a caller announcing a key size, or sending keying material, to a stream without passphrase | core 11 (`SRT_REJ_UNSECURE`) |
//! | no encryption where a passphrase is needed (the engine, from the keying material) | core 11 (`SRT_REJ_UNSECURE`) |
//! | wrong passphrase (the engine, unwrapping the caller's keys) | core 10 (`SRT_REJ_BADSECRET`) |
//! | a file-transfer caller (`transtype=file`), a packet filter, a group | core 13, 14, 15 (`SRT_REJ_CONGESTION`, `_FILTER`, `_GROUP`) |
//! | too many handshakes waiting for their decision (in all, or from one address) | 1402 overload |

use srt_protocol::packet::{CoreRejectReason, RejectReason, ServerRejectReason};
use streamgate_auth::Denial;

use crate::streamid::StreamIdError;

/// The rejection for a denial of the auth decision.
pub fn denial_reason(d: Denial) -> RejectReason {
    use Denial::*;
    let server = match d {
        Missing | Unknown | Expired | NotYetValid | WrongKind | Disabled | UsesExhausted => {
            ServerRejectReason::Unauthorized
        }
        StreamNotAllowed | IpNotAllowed | OriginNotAllowed | RefererNotAllowed
        | UserAgentNotAllowed => ServerRejectReason::Forbidden,
        StreamNotLive => ServerRejectReason::Notfound,
        StreamInUse => ServerRejectReason::Conflict,
        Unavailable => ServerRejectReason::Down,
        // Any reason added later (such as a revoked signed token) is a credential problem
        // until said otherwise.
        #[allow(unreachable_patterns)]
        _ => ServerRejectReason::Unauthorized,
    };
    RejectReason::Server(server)
}

/// The rejection for a `streamid` that cannot be used.
pub fn stream_id_reason(e: &StreamIdError) -> RejectReason {
    match e {
        StreamIdError::BadMode => RejectReason::Server(ServerRejectReason::BadMode),
        _ => RejectReason::Server(ServerRejectReason::BadRequest),
    }
}

/// The rejection when the caller's encryption does not match what the stream needs.
pub fn encryption_reason() -> RejectReason {
    RejectReason::Core(CoreRejectReason::Unsecure)
}

/// The rejection when the listener is full.
pub fn overload_reason() -> RejectReason {
    RejectReason::Server(ServerRejectReason::Overload)
}

/// The code a libsrt caller sees for a rejection (srt-tokio's wire numbers less 1000).
pub fn libsrt_code(r: RejectReason) -> i32 {
    i32::from(r) - 1000
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_as_callers_see_them() {
        let code = |d| libsrt_code(denial_reason(d));
        assert_eq!(code(Denial::Missing), 1401);
        assert_eq!(code(Denial::Unknown), 1401);
        assert_eq!(code(Denial::Expired), 1401);
        assert_eq!(code(Denial::StreamNotAllowed), 1403);
        assert_eq!(code(Denial::IpNotAllowed), 1403);
        assert_eq!(code(Denial::StreamNotLive), 1404);
        assert_eq!(code(Denial::StreamInUse), 1409);
        assert_eq!(code(Denial::Unavailable), 1503);
        assert_eq!(libsrt_code(stream_id_reason(&StreamIdError::TooLong)), 1400);
        assert_eq!(libsrt_code(stream_id_reason(&StreamIdError::BadMode)), 1405);
        assert_eq!(libsrt_code(overload_reason()), 1402);
        assert_eq!(libsrt_code(encryption_reason()), 11);
    }
}
