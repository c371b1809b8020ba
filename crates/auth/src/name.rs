//! `StreamName`: the validated `app/stream` string every protocol maps its request to.

use std::fmt;

/// Longest stream name accepted, in bytes.
pub const MAX_STREAM_NAME_LEN: usize = 255;
/// Most `/`-separated segments a stream name may have.
pub const MAX_STREAM_NAME_SEGMENTS: usize = 4;

/// Why a string is not a valid stream name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StreamNameError {
    /// The name is empty.
    #[error("stream name is empty")]
    Empty,
    /// The name is longer than [`MAX_STREAM_NAME_LEN`].
    #[error("stream name is longer than {MAX_STREAM_NAME_LEN} bytes")]
    TooLong,
    /// A segment is empty, `.` or `..`, or there are too many segments.
    #[error(
        "stream name must be 1 to {MAX_STREAM_NAME_SEGMENTS} non-empty segments separated by '/'"
    )]
    BadSegments,
    /// A character outside `A-Z a-z 0-9 _ - . ~`.
    #[error("stream name may only contain letters, digits, '_', '-', '.', '~' and '/'")]
    BadCharacter,
}

/// A validated stream name such as `live/cam1`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StreamName(String);

impl StreamName {
    /// Validates `name` and wraps it.
    pub fn new(name: &str) -> Result<Self, StreamNameError> {
        if name.is_empty() {
            return Err(StreamNameError::Empty);
        }
        if name.len() > MAX_STREAM_NAME_LEN {
            return Err(StreamNameError::TooLong);
        }
        if !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b'~' | b'/'))
        {
            return Err(StreamNameError::BadCharacter);
        }
        let mut segments = 0;
        for segment in name.split('/') {
            segments += 1;
            if segment.is_empty() || segment == "." || segment == ".." {
                return Err(StreamNameError::BadSegments);
            }
        }
        if segments > MAX_STREAM_NAME_SEGMENTS {
            return Err(StreamNameError::BadSegments);
        }
        Ok(Self(name.to_owned()))
    }

    /// The name as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for StreamName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for StreamName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StreamName({:?})", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_usual_names() {
        for ok in ["live/cam1", "cam1", "app/room.1/cam_2-x", "a~b/c"] {
            assert_eq!(StreamName::new(ok).unwrap().as_str(), ok);
        }
    }

    #[test]
    fn refuses_bad_names() {
        let long = "a".repeat(MAX_STREAM_NAME_LEN + 1);
        let cases = [
            ("", StreamNameError::Empty),
            (long.as_str(), StreamNameError::TooLong),
            ("live//cam", StreamNameError::BadSegments),
            ("/live", StreamNameError::BadSegments),
            ("live/", StreamNameError::BadSegments),
            ("live/..", StreamNameError::BadSegments),
            ("a/b/c/d/e", StreamNameError::BadSegments),
            ("live/cam?token=x", StreamNameError::BadCharacter),
            ("live cam", StreamNameError::BadCharacter),
            ("live/cäm", StreamNameError::BadCharacter),
        ];
        for (input, want) in cases {
            assert_eq!(StreamName::new(input), Err(want), "{input:?}");
        }
    }
}
