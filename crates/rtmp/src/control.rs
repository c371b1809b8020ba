//! Protocol control and user control messages the server sends.

use bytes::Bytes;

use crate::chunk::encode_message;
use crate::dechunk::msg_type;

/// Chunk stream of protocol control messages (the specification's reserved one).
pub const CONTROL_CSID: u8 = 2;

/// User control event types.
pub mod user_event {
    /// Stream Begin.
    pub const STREAM_BEGIN: u16 = 0;
    /// Set Buffer Length (from clients).
    pub const SET_BUFFER_LENGTH: u16 = 3;
    /// Ping Request (from either side).
    pub const PING_REQUEST: u16 = 6;
    /// Ping Response.
    pub const PING_RESPONSE: u16 = 7;
}

fn control(type_id: u8, payload: &[u8]) -> Bytes {
    // Payloads here are a few bytes: far below the message size limit.
    encode_message(CONTROL_CSID, 0, type_id, 0, payload).unwrap_or_default()
}

/// Window Acknowledgement Size.
pub fn window_ack_size(size: u32) -> Bytes {
    control(msg_type::WINDOW_ACK_SIZE, &size.to_be_bytes())
}

/// Set Peer Bandwidth, dynamic limit.
pub fn set_peer_bandwidth(size: u32) -> Bytes {
    let mut p = size.to_be_bytes().to_vec();
    p.push(2);
    control(msg_type::SET_PEER_BANDWIDTH, &p)
}

/// Set Chunk Size.
pub fn set_chunk_size(size: u32) -> Bytes {
    control(msg_type::SET_CHUNK_SIZE, &size.to_be_bytes())
}

/// Acknowledgement of `received` bytes (the count wraps at 2^32).
pub fn acknowledgement(received: u64) -> Bytes {
    control(msg_type::ACK, &(received as u32).to_be_bytes())
}

/// A user control event with a 4-byte argument.
pub fn user_control(event: u16, value: u32) -> Bytes {
    let mut p = event.to_be_bytes().to_vec();
    p.extend_from_slice(&value.to_be_bytes());
    control(msg_type::USER_CONTROL, &p)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dechunk::{Dechunker, MessageLimits};

    #[test]
    fn messages_read_back() {
        let mut d = Dechunker::new(MessageLimits {
            max_media_bytes: 1024,
        });
        d.push(&window_ack_size(2_500_000));
        d.push(&set_peer_bandwidth(2_500_000));
        d.push(&acknowledgement(u64::from(u32::MAX) + 5));
        d.push(&user_control(user_event::PING_RESPONSE, 77));
        let mut got = Vec::new();
        while let Some(m) = d.next_message().unwrap() {
            got.push((m.type_id, m.payload.to_vec()));
        }
        assert_eq!(
            got,
            [
                (
                    msg_type::WINDOW_ACK_SIZE,
                    2_500_000u32.to_be_bytes().to_vec()
                ),
                (msg_type::SET_PEER_BANDWIDTH, vec![0, 0x26, 0x25, 0xA0, 2]),
                (msg_type::ACK, vec![0, 0, 0, 4]),
                (msg_type::USER_CONTROL, vec![0, 7, 0, 0, 0, 77]),
            ]
        );
    }
}
