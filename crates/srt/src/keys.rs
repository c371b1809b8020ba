//! Encryption: which passphrase a connection must use, and the key settings it is accepted
//! with. A pure decision, made before the handshake is answered:
//!
//! - where a passphrase is required, the connection is accepted with it and the caller's
//!   announced key size (`Unspecified`, libsrt's default when `pbkeylen` is unset, reads as
//!   AES-128, libsrt's default). The engine then checks the caller's keying material: none
//!   is refused with `SRT_REJ_UNSECURE`, a wrong passphrase with `SRT_REJ_BADSECRET`;
//! - where none is required, a caller announcing a key size is refused here, and one sending
//!   keying material without announcing a size by the request handler
//!   ([`crate::engine::ConnectRequest::encrypts`]).

use srt_protocol::options::{KeySize, Passphrase};
use srt_protocol::settings::KeySettings;

/// How a connection request is to be answered as far as encryption goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyDecision {
    /// Neither side encrypts, as far as the key size shows: accept without key settings
    /// unless the caller sent keying material all the same.
    Plain,
    /// Accept with these settings: the caller's announced key size (possibly `Unspecified`)
    /// and the required passphrase.
    Encrypted(KeySettings),
    /// The caller's encryption does not match what the stream needs.
    Refuse(KeyMismatch),
}

/// Why encryption does not match.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum KeyMismatch {
    /// The caller encrypts but this stream has no passphrase.
    #[error("the caller set a passphrase but the stream has none")]
    UnexpectedPassphrase,
    /// The configured passphrase is not one SRT accepts (10 to 79 bytes).
    #[error("the configured passphrase is not usable")]
    BadConfiguredPassphrase,
}

/// The answer for a caller announcing `caller_key_size` (`Unspecified` when it does not
/// encrypt) to a stream that needs `required` (`None`: no encryption).
pub fn key_decision(caller_key_size: KeySize, required: Option<&str>) -> KeyDecision {
    match (caller_key_size, required) {
        (KeySize::Unspecified, None) => KeyDecision::Plain,
        (_, None) => KeyDecision::Refuse(KeyMismatch::UnexpectedPassphrase),
        (size, Some(pass)) => match Passphrase::try_from(pass.to_owned()) {
            Ok(passphrase) => KeyDecision::Encrypted(KeySettings {
                key_size: size,
                passphrase,
            }),
            Err(_) => KeyDecision::Refuse(KeyMismatch::BadConfiguredPassphrase),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASS: &str = "correct horse battery";

    #[test]
    fn plain_meets_plain() {
        assert_eq!(key_decision(KeySize::Unspecified, None), KeyDecision::Plain);
    }

    #[test]
    fn the_callers_key_size_is_kept() {
        for size in [
            KeySize::Unspecified,
            KeySize::AES128,
            KeySize::AES192,
            KeySize::AES256,
        ] {
            let KeyDecision::Encrypted(ks) = key_decision(size, Some(PASS)) else {
                panic!("not accepted");
            };
            assert_eq!(ks.key_size, size);
            assert_eq!(ks.passphrase.as_bytes(), PASS.as_bytes());
        }
    }

    #[test]
    fn mismatches_are_refused_before_accept() {
        assert_eq!(
            key_decision(KeySize::AES256, None),
            KeyDecision::Refuse(KeyMismatch::UnexpectedPassphrase)
        );
        assert_eq!(
            key_decision(KeySize::AES128, Some("short")),
            KeyDecision::Refuse(KeyMismatch::BadConfiguredPassphrase)
        );
    }
}
