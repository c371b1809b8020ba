//! Turning an RTMP app and stream key into a stream name and a token.
//!
//! ffmpeg's `rtmp://h/live/cam1?token=T` arrives as app `live`, key `cam1?token=T`; an OBS-style
//! server URL `rtmp://h/live?token=T` with key `cam1` arrives as app `live?token=T`; the connect
//! command's `tcUrl` may carry the query too. The stream name is `app/key` without any query.

use streamgate_auth::{StreamName, StreamNameError};

/// Longest token accepted from a URL query, in bytes.
pub const MAX_TOKEN_LEN: usize = 4096;

/// What a publish or play request asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// `app/key`.
    pub stream: StreamName,
    /// The token, from the key's query, else the app's, else the tcUrl's.
    pub token: Option<String>,
}

/// Why the app/key do not name a stream.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    /// The stream name is invalid.
    #[error("invalid stream name: {0}")]
    Name(#[from] StreamNameError),
    /// The token is longer than [`MAX_TOKEN_LEN`] or badly escaped.
    #[error("invalid token in the URL")]
    Token,
}

/// Parses the app, the stream key and (if the connect command had one) the tcUrl.
pub fn parse_target(app: &str, key: &str, tc_url: Option<&str>) -> Result<Target, TargetError> {
    let (app_name, app_query) = split_query(app);
    let (key_name, key_query) = split_query(key);
    let tc_query = tc_url.and_then(|u| split_query(u).1);
    let app_name = app_name.trim_matches('/');
    let name = if app_name.is_empty() {
        key_name.to_owned()
    } else {
        format!("{app_name}/{key_name}")
    };
    let stream = StreamName::new(&name)?;
    let mut token = None;
    for query in [key_query, app_query, tc_query].into_iter().flatten() {
        if let Some(t) = query_param(query, "token")? {
            token = Some(t);
            break;
        }
    }
    Ok(Target { stream, token })
}

fn split_query(s: &str) -> (&str, Option<&str>) {
    match s.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (s, None),
    }
}

/// The percent-decoded value of `name` in a `a=b&c=d` query, if present and non-empty.
fn query_param(query: &str, name: &str) -> Result<Option<String>, TargetError> {
    for pair in query.split('&') {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        if k == name && !v.is_empty() {
            if v.len() > MAX_TOKEN_LEN {
                return Err(TargetError::Token);
            }
            return percent_decode(v).map(Some);
        }
    }
    Ok(None)
}

fn percent_decode(v: &str) -> Result<String, TargetError> {
    let bytes = v.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            let hex = bytes.get(i + 1..i + 3).ok_or(TargetError::Token)?;
            let hex = std::str::from_utf8(hex).map_err(|_| TargetError::Token)?;
            out.push(u8::from_str_radix(hex, 16).map_err(|_| TargetError::Token)?);
            i += 3;
        } else {
            out.push(if b == b'+' { b' ' } else { b });
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| TargetError::Token)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(app: &str, key: &str, tc: Option<&str>) -> Result<(String, Option<String>), TargetError> {
        parse_target(app, key, tc).map(|t| (t.stream.as_str().to_owned(), t.token))
    }

    #[test]
    fn token_locations() {
        let ok = |name: &str, token: Option<&str>| Ok((name.to_owned(), token.map(str::to_owned)));
        assert_eq!(
            t("live", "cam1?token=abc", None),
            ok("live/cam1", Some("abc"))
        );
        assert_eq!(
            t("live?token=abc", "cam1", None),
            ok("live/cam1", Some("abc"))
        );
        assert_eq!(
            t("live", "cam1", Some("rtmp://h:1935/live?token=abc")),
            ok("live/cam1", Some("abc"))
        );
        assert_eq!(
            t("live", "cam1?x=1&token=k%2Dy&z", None),
            ok("live/cam1", Some("k-y"))
        );
        assert_eq!(
            t(
                "live?token=app",
                "cam1?token=key",
                Some("rtmp://h/live?token=tc")
            ),
            ok("live/cam1", Some("key"))
        );
        assert_eq!(t("live", "cam1", None), ok("live/cam1", None));
        assert_eq!(t("live", "cam1?token=", None), ok("live/cam1", None));
        assert_eq!(t("live/", "cam1", None), ok("live/cam1", None));
    }

    #[test]
    fn bad_input() {
        assert!(matches!(t("live", "", None), Err(TargetError::Name(_))));
        assert!(matches!(
            t("live", "cam 1", None),
            Err(TargetError::Name(_))
        ));
        assert!(matches!(t("live", "../x", None), Err(TargetError::Name(_))));
        assert_eq!(t("live", "cam1?token=%zz", None), Err(TargetError::Token));
        assert_eq!(t("live", "cam1?token=%4", None), Err(TargetError::Token));
        assert_eq!(t("live", "cam1?token=%ff", None), Err(TargetError::Token));
        let long = format!("cam1?token={}", "a".repeat(MAX_TOKEN_LEN + 1));
        assert_eq!(t("live", &long, None), Err(TargetError::Token));
    }
}
