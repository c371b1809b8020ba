//! A second look at the client's chunk stream, for what the session library does not expose:
//! the chunk size the client announces (bounded here), and the connect command's `tcUrl` and
//! `flashVer` (the client's user agent).

use std::io::Cursor;

use rml_amf0::Amf0Value;
use rml_rtmp::chunk_io::ChunkDeserializer;

/// Largest chunk size a client may announce; a larger one closes the connection.
pub const MAX_IN_CHUNK_SIZE: u32 = 64 * 1024;
/// Longest tcUrl or flashVer kept, in bytes.
pub const MAX_CONNECT_STRING_LEN: usize = 4096;

const SET_CHUNK_SIZE: u8 = 1;
const COMMAND_AMF0: u8 = 20;

/// What the connect command said.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConnectInfo {
    /// The `tcUrl` property.
    pub tc_url: Option<String>,
    /// The `flashVer` property, used as the user agent.
    pub flash_ver: Option<String>,
}

/// Why the watcher wants the connection closed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WatchError {
    /// The client announced a chunk size over [`MAX_IN_CHUNK_SIZE`] (or zero).
    #[error("client chunk size {0} is outside 1..={MAX_IN_CHUNK_SIZE}")]
    ChunkSize(u32),
    /// The chunk stream could not be parsed.
    #[error("malformed RTMP chunk stream: {0}")]
    Malformed(String),
}

/// Follows the client's chunk stream alongside the session.
pub struct InboundWatch {
    chunks: ChunkDeserializer,
    connect: ConnectInfo,
    saw_connect: bool,
}

impl Default for InboundWatch {
    fn default() -> Self {
        Self {
            chunks: ChunkDeserializer::new(),
            connect: ConnectInfo::default(),
            saw_connect: false,
        }
    }
}

impl std::fmt::Debug for InboundWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InboundWatch")
            .field("saw_connect", &self.saw_connect)
            .finish_non_exhaustive()
    }
}

impl InboundWatch {
    /// Feeds the same bytes the session gets (after the handshake).
    pub fn feed(&mut self, bytes: &[u8]) -> Result<(), WatchError> {
        let mut input = bytes;
        loop {
            let message = self
                .chunks
                .get_next_message(input)
                .map_err(|e| WatchError::Malformed(e.to_string()))?;
            input = &[];
            let Some(m) = message else { return Ok(()) };
            match m.type_id {
                SET_CHUNK_SIZE => {
                    let size = m
                        .data
                        .get(..4)
                        .and_then(|b| <[u8; 4]>::try_from(b).ok())
                        .map(|b| u32::from_be_bytes(b) & 0x7FFF_FFFF)
                        .ok_or_else(|| WatchError::Malformed("short SetChunkSize".into()))?;
                    if size == 0 || size > MAX_IN_CHUNK_SIZE {
                        return Err(WatchError::ChunkSize(size));
                    }
                    self.chunks
                        .set_max_chunk_size(size as usize)
                        .map_err(|e| WatchError::Malformed(e.to_string()))?;
                }
                COMMAND_AMF0 if !self.saw_connect => self.look_for_connect(&m.data),
                _ => {}
            }
        }
    }

    fn look_for_connect(&mut self, data: &[u8]) {
        let Ok(values) = rml_amf0::deserialize(&mut Cursor::new(data)) else {
            return;
        };
        let mut it = values.into_iter();
        if !matches!(it.next(), Some(Amf0Value::Utf8String(ref c)) if c == "connect") {
            return;
        }
        self.saw_connect = true;
        let Some(props) = it.nth(1).and_then(Amf0Value::get_object_properties) else {
            return;
        };
        let text = |key: &str| match props.get(key) {
            Some(Amf0Value::Utf8String(s)) if s.len() <= MAX_CONNECT_STRING_LEN => Some(s.clone()),
            _ => None,
        };
        self.connect = ConnectInfo {
            tc_url: text("tcUrl"),
            flash_ver: text("flashVer"),
        };
    }

    /// What the connect command said, once it has been seen.
    pub fn connect(&self) -> &ConnectInfo {
        &self.connect
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chunk::encode_message;
    use std::collections::HashMap;

    fn command(values: Vec<Amf0Value>) -> Vec<u8> {
        let payload = rml_amf0::serialize(&values).unwrap();
        // The watcher starts at the protocol's initial chunk size, 128.
        let mut out = Vec::new();
        for (i, piece) in payload.chunks(128).enumerate() {
            if i == 0 {
                out.push(3);
                out.extend_from_slice(&[0, 0, 0]);
                out.extend_from_slice(&(payload.len() as u32).to_be_bytes()[1..]);
                out.push(COMMAND_AMF0);
                out.extend_from_slice(&[0, 0, 0, 0]);
            } else {
                out.push(0xC3);
            }
            out.extend_from_slice(piece);
        }
        out
    }

    fn set_chunk_size(size: u32) -> Vec<u8> {
        let mut out = vec![2, 0, 0, 0, 0, 0, 4, SET_CHUNK_SIZE, 0, 0, 0, 0];
        out.extend_from_slice(&size.to_be_bytes());
        out
    }

    #[test]
    fn captures_connect_and_follows_chunk_size() {
        let mut props = HashMap::new();
        props.insert("app".into(), Amf0Value::Utf8String("live?token=a".into()));
        props.insert(
            "tcUrl".into(),
            Amf0Value::Utf8String("rtmp://h/live?token=a".into()),
        );
        props.insert(
            "flashVer".into(),
            Amf0Value::Utf8String("FMLE/3.0 (compatible; Lavf59)".into()),
        );
        let connect = command(vec![
            Amf0Value::Utf8String("connect".into()),
            Amf0Value::Number(1.0),
            Amf0Value::Object(props),
        ]);
        let mut w = InboundWatch::default();
        w.feed(&set_chunk_size(4096)).unwrap();
        // After the new chunk size, a large message arrives in one chunk.
        w.feed(
            &encode_message(
                3,
                0,
                COMMAND_AMF0,
                0,
                &rml_amf0::serialize(&vec![Amf0Value::Utf8String("x".repeat(300))]).unwrap(),
            )
            .unwrap(),
        )
        .unwrap();
        let mut w2 = InboundWatch::default();
        for b in connect.chunks(7) {
            w2.feed(b).unwrap();
        }
        assert_eq!(
            w2.connect().tc_url.as_deref(),
            Some("rtmp://h/live?token=a")
        );
        assert_eq!(
            w2.connect().flash_ver.as_deref(),
            Some("FMLE/3.0 (compatible; Lavf59)")
        );
    }

    #[test]
    fn refuses_absurd_chunk_sizes() {
        for size in [0, MAX_IN_CHUNK_SIZE + 1, 0x7FFF_FFFF] {
            assert_eq!(
                InboundWatch::default().feed(&set_chunk_size(size)),
                Err(WatchError::ChunkSize(size))
            );
        }
        assert!(InboundWatch::default()
            .feed(&set_chunk_size(MAX_IN_CHUNK_SIZE))
            .is_ok());
    }

    #[test]
    fn garbage_is_an_error_or_waits_never_a_panic() {
        let mut seed = 7u32;
        for _ in 0..200 {
            let mut w = InboundWatch::default();
            let bytes: Vec<u8> = (0..512)
                .map(|_| {
                    seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                    (seed >> 16) as u8
                })
                .collect();
            let _ = w.feed(&bytes);
        }
    }
}
