//! The SRT `streamid`: which stream, publish or play, and the token. A pure function of the
//! string the caller sent.
//!
//! Two forms are accepted:
//!
//! - Ant Media's: `live/cam1,token=T`, optionally `,mode=publish` (the default) or
//!   `,mode=request` (play);
//! - SRT's access-control syntax: `#!::r=live/cam1,m=publish,s=T`, where `m` is `request`
//!   (the default, play) or `publish`, and the token is in `s` or in a `token` key.
//!
//! In both, keys this server does not use are ignored; a key given twice, an item without `=`
//! or with an empty key, or a token in both `s` and `token` is a bad request. ffmpeg 5.1 sends
//! the `streamid` URL option as written, without percent-decoding it, so the whole string is
//! percent-decoded here first (a `%` not followed by two hex digits is a bad request): a URL
//! may then carry `%23!%3A%3Ar%3Dlive%2Fcam1%2Cm%3Dpublish` for the access-control form.

use std::fmt;

use streamgate_auth::{StreamName, StreamNameError};

/// Longest `streamid` accepted, in bytes, before decoding (the SRT protocol's own limit).
pub const MAX_STREAM_ID_LEN: usize = 512;
/// The prefix of the access-control syntax.
const ACCESS_CONTROL_PREFIX: &str = "#!::";

/// Publish or play.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The caller sends media (`m=publish`, `mode=publish`).
    Publish,
    /// The caller receives media (`m=request`, `mode=request`).
    Request,
}

/// What a `streamid` asks for.
#[derive(Clone, PartialEq, Eq)]
pub struct StreamIdRequest {
    /// The stream.
    pub stream: StreamName,
    /// Publish or play.
    pub mode: Mode,
    /// The token, if one was given; never logged.
    pub token: Option<String>,
}

impl fmt::Debug for StreamIdRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StreamIdRequest")
            .field("stream", &self.stream)
            .field("mode", &self.mode)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// Why a `streamid` is refused. Messages never contain the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StreamIdError {
    /// No `streamid`, or an empty one.
    #[error("no streamid")]
    Missing,
    /// Longer than [`MAX_STREAM_ID_LEN`] bytes.
    #[error("streamid longer than {MAX_STREAM_ID_LEN} bytes")]
    TooLong,
    /// A bad percent escape, or bytes that do not decode to UTF-8.
    #[error("streamid is not validly percent-encoded")]
    BadEncoding,
    /// An item without `=` (other than the leading stream name), or with an empty key.
    #[error("malformed streamid item")]
    Malformed,
    /// A key given twice (or a token given in both `s` and `token`).
    #[error("streamid key {0:?} given twice")]
    DuplicateKey(&'static str),
    /// The access-control form without `r=`.
    #[error("streamid names no resource (r=)")]
    MissingResource,
    /// A mode other than `publish` and `request`.
    #[error("streamid mode must be publish or request")]
    BadMode,
    /// The stream name is not valid.
    #[error("streamid stream name: {0}")]
    BadStreamName(#[from] StreamNameError),
}

/// Parses a `streamid` (see the module documentation).
pub fn parse_stream_id(raw: &str) -> Result<StreamIdRequest, StreamIdError> {
    if raw.len() > MAX_STREAM_ID_LEN {
        return Err(StreamIdError::TooLong);
    }
    let decoded = percent_decode(raw)?;
    if decoded.is_empty() {
        return Err(StreamIdError::Missing);
    }
    match decoded.strip_prefix(ACCESS_CONTROL_PREFIX) {
        Some(items) => access_control(items),
        None => ant_media(&decoded),
    }
}

/// Which of the two forms is being read.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Form {
    AntMedia,
    AccessControl,
}

/// Keys found so far, each at most once.
#[derive(Default)]
struct Keys<'a> {
    resource: Option<&'a str>,
    mode: Option<&'a str>,
    token: Option<&'a str>,
}

impl<'a> Keys<'a> {
    /// Records `key=value` if the key is one this server uses in `form`.
    fn set(&mut self, form: Form, key: &str, value: &'a str) -> Result<(), StreamIdError> {
        let (slot, name) = match (form, key) {
            (Form::AccessControl, "r") => (&mut self.resource, "resource"),
            (Form::AccessControl, "m") | (Form::AntMedia, "mode") => (&mut self.mode, "mode"),
            (Form::AccessControl, "s") | (_, "token") => (&mut self.token, "token"),
            _ => return Ok(()),
        };
        if slot.is_some() {
            return Err(StreamIdError::DuplicateKey(name));
        }
        *slot = Some(value);
        Ok(())
    }
}

/// Splits an item at its first `=`; the key must not be empty.
fn key_value(item: &str) -> Result<(&str, &str), StreamIdError> {
    match item.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k, v)),
        _ => Err(StreamIdError::Malformed),
    }
}

/// `r=...,m=...,s=...` after the `#!::` prefix.
fn access_control(items: &str) -> Result<StreamIdRequest, StreamIdError> {
    let mut keys = Keys::default();
    for item in items.split(',') {
        let (k, v) = key_value(item)?;
        keys.set(Form::AccessControl, k, v)?;
    }
    let resource = keys.resource.ok_or(StreamIdError::MissingResource)?;
    finish(resource, keys.mode, Mode::Request, keys.token)
}

/// `stream,token=...,mode=...`.
fn ant_media(s: &str) -> Result<StreamIdRequest, StreamIdError> {
    let mut items = s.split(',');
    let stream = items.next().unwrap_or_default();
    if stream.contains('=') {
        return Err(StreamIdError::Malformed);
    }
    let mut keys = Keys::default();
    for item in items {
        let (k, v) = key_value(item)?;
        keys.set(Form::AntMedia, k, v)?;
    }
    finish(stream, keys.mode, Mode::Publish, keys.token)
}

fn finish(
    stream: &str,
    mode: Option<&str>,
    default_mode: Mode,
    token: Option<&str>,
) -> Result<StreamIdRequest, StreamIdError> {
    let mode = match mode {
        None => default_mode,
        Some("publish") => Mode::Publish,
        Some("request") => Mode::Request,
        Some(_) => return Err(StreamIdError::BadMode),
    };
    Ok(StreamIdRequest {
        stream: StreamName::new(stream)?,
        mode,
        // An empty token is no token.
        token: token.filter(|t| !t.is_empty()).map(str::to_owned),
    })
}

/// Decodes `%XX` escapes; anything else is kept as it is.
fn percent_decode(s: &str) -> Result<String, StreamIdError> {
    if !s.contains('%') {
        return Ok(s.to_owned());
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or(StreamIdError::BadEncoding)?;
            out.push(hex);
            i += 3;
        } else {
            out.push(b);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| StreamIdError::BadEncoding)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(s: &str) -> (String, Mode, Option<String>) {
        let r = parse_stream_id(s).unwrap_or_else(|e| panic!("{s}: {e}"));
        (r.stream.to_string(), r.mode, r.token)
    }

    fn t(s: &str) -> Option<String> {
        Some(s.to_owned())
    }

    #[test]
    fn ant_media_form() {
        assert_eq!(
            ok("live/cam1,token=abc"),
            ("live/cam1".into(), Mode::Publish, t("abc"))
        );
        assert_eq!(
            ok("live/cam1,token=abc,mode=request"),
            ("live/cam1".into(), Mode::Request, t("abc"))
        );
        assert_eq!(
            ok("live/cam1,mode=publish,token=a=b"),
            ("live/cam1".into(), Mode::Publish, t("a=b"))
        );
        assert_eq!(ok("live/cam1"), ("live/cam1".into(), Mode::Publish, None));
        assert_eq!(
            ok("live/cam1,token="),
            ("live/cam1".into(), Mode::Publish, None)
        );
        // Unknown keys are ignored, even the access-control ones.
        assert_eq!(
            ok("live/cam1,foo=bar,s=x,token=y"),
            ("live/cam1".into(), Mode::Publish, t("y"))
        );
    }

    #[test]
    fn access_control_form() {
        assert_eq!(
            ok("#!::r=live/cam1,m=publish,s=abc"),
            ("live/cam1".into(), Mode::Publish, t("abc"))
        );
        assert_eq!(
            ok("#!::m=request,r=live/cam1,s=abc"),
            ("live/cam1".into(), Mode::Request, t("abc"))
        );
        assert_eq!(
            ok("#!::r=live/cam1,token=abc"),
            ("live/cam1".into(), Mode::Request, t("abc"))
        );
        assert_eq!(
            ok("#!::r=live/cam1,u=someone,h=example.com,t=stream,x-custom=1,m=publish"),
            ("live/cam1".into(), Mode::Publish, None)
        );
    }

    #[test]
    fn percent_encoded_forms() {
        assert_eq!(
            ok("%23!%3A%3Ar%3Dlive%2Fcam1%2Cm%3Dpublish%2Cs%3Dabc"),
            ("live/cam1".into(), Mode::Publish, t("abc"))
        );
        assert_eq!(
            ok("live%2fcam1,token=a%2Db"),
            ("live/cam1".into(), Mode::Publish, t("a-b"))
        );
        assert_eq!(
            parse_stream_id("live/cam1,token=%"),
            Err(StreamIdError::BadEncoding)
        );
        assert_eq!(
            parse_stream_id("live/cam1,token=%4"),
            Err(StreamIdError::BadEncoding)
        );
        assert_eq!(
            parse_stream_id("live/cam1,token=%zz"),
            Err(StreamIdError::BadEncoding)
        );
        assert_eq!(
            parse_stream_id("live/cam1,token=%ff%fe"),
            Err(StreamIdError::BadEncoding)
        );
        assert_eq!(parse_stream_id("%e2%82"), Err(StreamIdError::BadEncoding));
    }

    #[test]
    fn malformed_duplicate_and_bad_values() {
        use StreamIdError::*;
        let cases: &[(&str, StreamIdError)] = &[
            ("", Missing),
            ("%", BadEncoding),
            ("#!::", Malformed),
            ("#!::r=live/a,,m=publish", Malformed),
            ("#!::r=live/a,m", Malformed),
            ("#!::=x,r=live/a", Malformed),
            ("#!::m=publish,s=x", MissingResource),
            ("#!::r=live/a,r=live/b", DuplicateKey("resource")),
            ("#!::r=live/a,m=publish,m=publish", DuplicateKey("mode")),
            ("#!::r=live/a,s=x,token=y", DuplicateKey("token")),
            ("#!::r=live/a,s=x,s=x", DuplicateKey("token")),
            ("#!::r=live/a,m=bidirectional", BadMode),
            ("#!::r=live/a,m=PUBLISH", BadMode),
            ("live/a,mode=play", BadMode),
            ("live/a,token=x,token=y", DuplicateKey("token")),
            ("live/a,mode=publish,mode=request", DuplicateKey("mode")),
            ("live/a,token", Malformed),
            ("token=x", Malformed),
            (",token=x", BadStreamName(StreamNameError::Empty)),
            (
                "live/a b,token=x",
                BadStreamName(StreamNameError::BadCharacter),
            ),
            ("live/../x", BadStreamName(StreamNameError::BadSegments)),
            ("#!::r=,m=publish", BadStreamName(StreamNameError::Empty)),
        ];
        for (s, e) in cases {
            assert_eq!(parse_stream_id(s).as_ref().err(), Some(e), "{s:?}");
        }
    }

    #[test]
    fn length_limit_is_on_the_raw_string() {
        let token = "a".repeat(MAX_STREAM_ID_LEN - "live/a,token=".len());
        let at_limit = format!("live/a,token={token}");
        assert_eq!(at_limit.len(), MAX_STREAM_ID_LEN);
        assert_eq!(parse_stream_id(&at_limit).unwrap().token, Some(token));
        assert_eq!(
            parse_stream_id(&format!("{at_limit}a")),
            Err(StreamIdError::TooLong)
        );
        assert_eq!(
            parse_stream_id(&"%41".repeat(200)),
            Err(StreamIdError::TooLong)
        );
    }

    #[test]
    fn the_token_never_shows_in_debug_or_errors() {
        let r = parse_stream_id("live/a,token=secret-token-value").unwrap();
        assert!(!format!("{r:?}").contains("secret-token-value"));
        let e =
            parse_stream_id("#!::r=live/a,s=secret-token-value,s=secret-token-value").unwrap_err();
        assert!(!e.to_string().contains("secret"));
    }

    #[test]
    fn arbitrary_input_never_panics() {
        let mut seed = 99u32;
        let alphabet = b"#!:=,%rmstokenpublishrequest/live0123456789abcdefABCDEF\xc3\xa9 ";
        for _ in 0..5000 {
            seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            let len = (seed >> 16) as usize % 80;
            let s: Vec<u8> = (0..len)
                .map(|_| {
                    seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                    alphabet[(seed >> 16) as usize % alphabet.len()]
                })
                .collect();
            let s = String::from_utf8_lossy(&s);
            let _ = parse_stream_id(&s);
        }
    }
}
