//! Reading and decoding JSON request bodies with a size bound and errors that name the field.

use axum::body::Body;
use axum::http::{header, HeaderMap, StatusCode};
use serde::de::DeserializeOwned;

use crate::ApiError;

/// Largest request body accepted, in bytes; larger ones get 413.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

fn too_large() -> ApiError {
    ApiError {
        status: StatusCode::PAYLOAD_TOO_LARGE,
        message: format!("request body is larger than {MAX_BODY_BYTES} bytes"),
    }
}

/// Reads the body (at most [`MAX_BODY_BYTES`]) and decodes it as JSON into `T`.
pub async fn json_body<T: DeserializeOwned>(
    headers: &HeaderMap,
    body: Body,
) -> Result<T, ApiError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        return Err(too_large());
    }
    // Past the Content-Length check, a read error is almost always the limit being hit by a
    // chunked body (a vanished peer never sees the answer anyway).
    let bytes = axum::body::to_bytes(body, MAX_BODY_BYTES)
        .await
        .map_err(|_| too_large())?;
    decode(&bytes)
}

/// Decodes JSON into `T`; the error names the offending field.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(ApiError::bad_request("request body must be a JSON object"));
    }
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut *de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let what = inner.to_string();
        // serde_json appends " at line L column C"; the field path says more.
        let what = match what.rfind(" at line ") {
            Some(i) if inner.is_data() => what.get(..i).unwrap_or(&what).to_owned(),
            _ => what,
        };
        if inner.is_syntax() || inner.is_eof() {
            ApiError::bad_request(format!("malformed JSON: {what}"))
        } else if path == "." {
            ApiError::bad_request(what)
        } else {
            ApiError::bad_request(format!("{path}: {what}"))
        }
    })?;
    de.end()
        .map_err(|e| ApiError::bad_request(format!("malformed JSON: {e}")))?;
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(rename_all = "camelCase", deny_unknown_fields)]
    #[allow(dead_code)]
    struct T {
        max_uses: Option<u32>,
        list: Option<Vec<u8>>,
    }

    #[test]
    fn errors_name_the_field() {
        let e = decode::<T>(br#"{"maxUses":"x"}"#).unwrap_err();
        assert!(
            e.message.starts_with("maxUses: invalid type"),
            "{}",
            e.message
        );
        let e = decode::<T>(br#"{"list":[1,"x"]}"#).unwrap_err();
        assert!(e.message.starts_with("list[1]:"), "{}", e.message);
        let e = decode::<T>(br#"{"maxUses":1"#).unwrap_err();
        assert!(e.message.starts_with("malformed JSON"), "{}", e.message);
        let e = decode::<T>(br#"{"nope":1}"#).unwrap_err();
        assert!(e.message.contains("unknown field `nope`"), "{}", e.message);
        assert!(decode::<T>(b"  ")
            .unwrap_err()
            .message
            .contains("JSON object"));
        assert!(decode::<T>(b"[1,2]")
            .unwrap_err()
            .message
            .contains("JSON object"));
        assert!(decode::<T>(b"{}").is_ok());
    }
}
