//! Reading the client's chunk stream into messages, within a byte budget.
//!
//! Every limit is checked from the chunk headers, before the payload is buffered: a message
//! longer than its type allows ([`MessageLimits`]) is refused as soon as its header announces
//! it, so nothing is allocated for it. The chunk size the client announces is bounded
//! ([`MAX_IN_CHUNK_SIZE`]), as are the chunk streams it may use ([`MAX_CHUNK_STREAMS`]) and
//! the bytes of the messages it has started but not finished (interleaved chunk streams).
//! Set Chunk Size and Abort are handled here, since they change how chunks are read.
//!
//! Timestamps follow the specification as ffmpeg reads it: a type 0 header gives the absolute
//! time, types 1 and 2 a delta, a type 3 header that starts a message repeats the last delta;
//! a 24-bit field of `0xFFFFFF` means a 4-byte extended timestamp follows, in every chunk of
//! that message. For continuation chunks, whose extended timestamp some encoders omit, the
//! four bytes are skipped only when they repeat the one of the message's first chunk.

use std::collections::HashMap;

use bytes::{Buf, Bytes, BytesMut};

/// Largest chunk size a client may announce; a larger one closes the connection.
pub const MAX_IN_CHUNK_SIZE: u32 = 64 * 1024;
/// Most chunk streams a client may use on one connection (ffmpeg and OBS use fewer than 10).
pub const MAX_CHUNK_STREAMS: usize = 32;
/// Largest command message (AMF0 or AMF3 command), in bytes.
pub const MAX_COMMAND_BYTES: usize = 64 * 1024;
/// Largest data message (`@setDataFrame`, `onMetaData`), in bytes.
pub const MAX_DATA_BYTES: usize = 64 * 1024;
/// Largest protocol control or user control message, in bytes (the largest real one has 10).
pub const MAX_CONTROL_BYTES: usize = 64;
/// Chunk size before the client announces one (the protocol's initial value).
const INITIAL_CHUNK_SIZE: usize = 128;
/// A 24-bit timestamp field with this value means a 4-byte extended timestamp follows.
const EXTENDED: u32 = 0xFF_FFFF;

/// RTMP message type ids read here.
pub mod msg_type {
    /// Set Chunk Size.
    pub const SET_CHUNK_SIZE: u8 = 1;
    /// Abort Message.
    pub const ABORT: u8 = 2;
    /// Acknowledgement.
    pub const ACK: u8 = 3;
    /// User Control.
    pub const USER_CONTROL: u8 = 4;
    /// Window Acknowledgement Size.
    pub const WINDOW_ACK_SIZE: u8 = 5;
    /// Set Peer Bandwidth.
    pub const SET_PEER_BANDWIDTH: u8 = 6;
    /// Audio data.
    pub const AUDIO: u8 = 8;
    /// Video data.
    pub const VIDEO: u8 = 9;
    /// AMF3 data.
    pub const DATA_AMF3: u8 = 15;
    /// AMF3 command.
    pub const COMMAND_AMF3: u8 = 17;
    /// AMF0 data.
    pub const DATA_AMF0: u8 = 18;
    /// AMF0 command.
    pub const COMMAND_AMF0: u8 = 20;
    /// Aggregate (several FLV tags in one message).
    pub const AGGREGATE: u8 = 22;
}

/// The largest message of each type that is read at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MessageLimits {
    /// Largest audio, video or aggregate message: the largest media frame taken at ingest.
    pub max_media_bytes: usize,
}

impl MessageLimits {
    /// The largest message of type `type_id`, or `None` for a type that is refused (shared
    /// objects and the unassigned ids).
    pub fn max_len(&self, type_id: u8) -> Option<usize> {
        use msg_type::*;
        match type_id {
            SET_CHUNK_SIZE | ABORT | ACK | USER_CONTROL | WINDOW_ACK_SIZE | SET_PEER_BANDWIDTH => {
                Some(MAX_CONTROL_BYTES)
            }
            AUDIO | VIDEO | AGGREGATE => Some(self.max_media_bytes),
            DATA_AMF3 | DATA_AMF0 => Some(MAX_DATA_BYTES),
            COMMAND_AMF3 | COMMAND_AMF0 => Some(MAX_COMMAND_BYTES),
            _ => None,
        }
    }
}

/// One complete message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Chunk stream it arrived on.
    pub csid: u32,
    /// Message type id.
    pub type_id: u8,
    /// Message stream id.
    pub stream_id: u32,
    /// Timestamp in milliseconds.
    pub timestamp: u32,
    /// Payload.
    pub payload: Bytes,
}

/// Why the chunk stream cannot be read on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChunkError {
    /// The client announced a chunk size over [`MAX_IN_CHUNK_SIZE`] (or zero).
    #[error("client chunk size {0} is outside 1..={MAX_IN_CHUNK_SIZE}")]
    ChunkSize(u32),
    /// A message longer than its type allows.
    #[error("message of type {type_id} announces {len} bytes, over the limit of {limit}")]
    TooLarge {
        /// Message type id.
        type_id: u8,
        /// Announced length.
        len: usize,
        /// The limit for that type.
        limit: usize,
    },
    /// A message type this server does not read.
    #[error("message type {0} is not accepted")]
    RefusedType(u8),
    /// More than [`MAX_CHUNK_STREAMS`] chunk streams.
    #[error("more than {MAX_CHUNK_STREAMS} chunk streams")]
    TooManyChunkStreams,
    /// A compressed header on a chunk stream that has had no full header.
    #[error("chunk stream {0} continues a header it never sent")]
    NoPreviousHeader(u32),
    /// The messages started and not finished hold more than the budget.
    #[error("unfinished messages hold more than {0} bytes")]
    InFlight(usize),
    /// A control message too short for its type.
    #[error("malformed control message of type {0}")]
    MalformedControl(u8),
}

/// What is known of one chunk stream.
#[derive(Debug, Default)]
struct ChunkStream {
    /// The last message header (type, length, stream id), once one has been seen.
    has_header: bool,
    type_id: u8,
    len: usize,
    stream_id: u32,
    /// Timestamp of the current or last message.
    timestamp: u32,
    /// The last delta (the absolute time after a type 0 header).
    delta: u32,
    /// Whether the last header's timestamp field was extended, and the extended value.
    extended: bool,
    extended_value: u32,
    /// The message being assembled, with its announced length reserved in the budget.
    partial: Option<BytesMut>,
}

/// The client's chunk stream, read into messages within the budget.
#[derive(Debug)]
pub struct Dechunker {
    /// Bytes received and not yet parsed (less than one chunk).
    buf: BytesMut,
    chunk_size: usize,
    streams: HashMap<u32, ChunkStream>,
    limits: MessageLimits,
    /// Announced bytes of the messages being assembled.
    in_flight: usize,
    max_in_flight: usize,
}

/// What one chunk did.
enum Step {
    /// Its payload is not all there yet; nothing was consumed.
    NeedMore,
    /// It was consumed, and completed this message if any.
    Consumed(Option<Message>),
}

/// A parsed chunk header: what the bytes said, before it is applied to the stream's state.
struct Header {
    csid: u32,
    fmt: u8,
    /// Bytes the basic and message headers take, extended timestamp included.
    len: usize,
    ts_field: u32,
    msg_len: usize,
    type_id: u8,
    stream_id: u32,
    /// The extended timestamp, when one was read.
    extended: Option<u32>,
}

impl Dechunker {
    /// A reader at the initial chunk size.
    pub fn new(limits: MessageLimits) -> Self {
        Self {
            buf: BytesMut::new(),
            chunk_size: INITIAL_CHUNK_SIZE,
            streams: HashMap::new(),
            limits,
            // One media message at its largest and a few small ones interleaved with it.
            max_in_flight: limits.max_media_bytes + 4 * MAX_COMMAND_BYTES,
            in_flight: 0,
        }
    }

    /// The chunk size in force.
    pub fn chunk_size(&self) -> usize {
        self.chunk_size
    }

    /// Takes received bytes; read the messages they complete with [`Dechunker::next_message`].
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes buffered, partial messages included (for tests and accounting).
    pub fn buffered(&self) -> usize {
        self.buf.len()
            + self
                .streams
                .values()
                .filter_map(|s| s.partial.as_ref().map(BytesMut::len))
                .sum::<usize>()
    }

    /// The next complete message, `None` when more bytes are needed. Set Chunk Size and
    /// Abort are applied here and returned too.
    pub fn next_message(&mut self) -> Result<Option<Message>, ChunkError> {
        loop {
            let Some(header) = self.parse_header()? else {
                return Ok(None);
            };
            match self.chunk(header)? {
                Step::NeedMore => return Ok(None),
                Step::Consumed(None) => {}
                Step::Consumed(Some(message)) => {
                    self.control(&message)?;
                    return Ok(Some(message));
                }
            }
        }
    }

    /// Applies the chunk-level control messages.
    fn control(&mut self, m: &Message) -> Result<(), ChunkError> {
        match m.type_id {
            msg_type::SET_CHUNK_SIZE => {
                let size = be_u32(&m.payload).ok_or(ChunkError::MalformedControl(m.type_id))?
                    & 0x7FFF_FFFF;
                if size == 0 || size > MAX_IN_CHUNK_SIZE {
                    return Err(ChunkError::ChunkSize(size));
                }
                self.chunk_size = size as usize;
            }
            msg_type::ABORT => {
                let csid = be_u32(&m.payload).ok_or(ChunkError::MalformedControl(m.type_id))?;
                if let Some(s) = self.streams.get_mut(&csid) {
                    if let Some(p) = s.partial.take() {
                        self.in_flight = self.in_flight.saturating_sub(s.len);
                        drop(p);
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// The header at the front of the buffer, if it is all there.
    fn parse_header(&self) -> Result<Option<Header>, ChunkError> {
        let b = &self.buf[..];
        let Some(&first) = b.first() else {
            return Ok(None);
        };
        let fmt = first >> 6;
        let (csid, mut at) = match first & 0x3F {
            0 => match b.get(1) {
                Some(&x) => (u32::from(x) + 64, 2),
                None => return Ok(None),
            },
            1 => match (b.get(1), b.get(2)) {
                (Some(&lo), Some(&hi)) => (u32::from(hi) * 256 + u32::from(lo) + 64, 3),
                _ => return Ok(None),
            },
            n => (u32::from(n), 1),
        };
        let prev = self.streams.get(&csid);
        if prev.is_none() && self.streams.len() >= MAX_CHUNK_STREAMS {
            return Err(ChunkError::TooManyChunkStreams);
        }
        let prev_header = prev.filter(|s| s.has_header);
        if fmt != 0 && prev_header.is_none() {
            return Err(ChunkError::NoPreviousHeader(csid));
        }
        let mut h = Header {
            csid,
            fmt,
            len: 0,
            ts_field: 0,
            msg_len: prev_header.map_or(0, |s| s.len),
            type_id: prev_header.map_or(0, |s| s.type_id),
            stream_id: prev_header.map_or(0, |s| s.stream_id),
            extended: None,
        };
        let header_len = match fmt {
            0 => 11,
            1 => 7,
            2 => 3,
            _ => 0,
        };
        let Some(mh) = b.get(at..at + header_len) else {
            return Ok(None);
        };
        if fmt <= 2 {
            h.ts_field = be_u24(mh.get(0..3));
        }
        if fmt <= 1 {
            h.msg_len = be_u24(mh.get(3..6)) as usize;
            h.type_id = mh.get(6).copied().unwrap_or_default();
        }
        if fmt == 0 {
            let id = mh.get(7..11).and_then(|s| <[u8; 4]>::try_from(s).ok());
            h.stream_id = u32::from_le_bytes(id.unwrap_or_default());
        }
        at += header_len;
        let extended = match fmt {
            0..=2 => h.ts_field == EXTENDED,
            _ => prev_header.is_some_and(|s| s.extended),
        };
        if extended {
            let Some(ext) = b.get(at..at + 4) else {
                return Ok(None);
            };
            let value = be_u32(ext).unwrap_or_default();
            let continuation = fmt == 3 && prev.is_some_and(|s| s.partial.is_some());
            let prev_value = prev_header.map_or(0, |s| s.extended_value);
            // A continuation chunk's extended timestamp is only skipped when it is one.
            if !continuation || value == prev_value {
                at += 4;
                h.extended = Some(value);
            }
        }
        h.len = at;
        Ok(Some(h))
    }

    /// Applies a header and consumes its chunk if its payload is all there.
    fn chunk(&mut self, h: Header) -> Result<Step, ChunkError> {
        let continuation = self
            .streams
            .get(&h.csid)
            .is_some_and(|s| s.partial.is_some());
        if continuation && h.fmt != 3 {
            // A new header on a stream with a message in progress: the old one is abandoned.
            self.abandon(h.csid);
        }
        let continuation = continuation && h.fmt == 3;
        let (msg_len, have) = if continuation {
            let s = self.streams.get(&h.csid);
            (
                s.map_or(0, |s| s.len),
                s.and_then(|s| s.partial.as_ref()).map_or(0, BytesMut::len),
            )
        } else {
            let limit = self
                .limits
                .max_len(h.type_id)
                .ok_or(ChunkError::RefusedType(h.type_id))?;
            if h.msg_len > limit {
                return Err(ChunkError::TooLarge {
                    type_id: h.type_id,
                    len: h.msg_len,
                    limit,
                });
            }
            (h.msg_len, 0)
        };
        let take = (msg_len - have).min(self.chunk_size);
        if self.buf.len() < h.len + take {
            return Ok(Step::NeedMore);
        }
        if !continuation && take < msg_len && self.in_flight + msg_len > self.max_in_flight {
            return Err(ChunkError::InFlight(self.max_in_flight));
        }
        // The chunk is complete: apply the header and consume it.
        self.buf.advance(h.len);
        let data = self.buf.split_to(take);
        let s = self.streams.entry(h.csid).or_default();
        if !continuation {
            let delta = h.extended.unwrap_or(h.ts_field);
            s.timestamp = match h.fmt {
                0 => delta,
                1 | 2 => s.timestamp.wrapping_add(delta),
                _ => s.timestamp.wrapping_add(s.delta),
            };
            if h.fmt <= 2 {
                s.delta = delta;
                s.extended = h.extended.is_some();
            }
            if let Some(v) = h.extended {
                s.extended_value = v;
            }
            s.has_header = true;
            s.type_id = h.type_id;
            s.len = msg_len;
            s.stream_id = h.stream_id;
            if take == msg_len {
                return Ok(Step::Consumed(Some(message(h.csid, s, data.freeze()))));
            }
            // Reserve what the chunks so far hold; the rest grows as they arrive, so a
            // message announced and never sent costs its budget, not its memory.
            let mut partial = BytesMut::with_capacity((2 * take).min(msg_len));
            partial.extend_from_slice(&data);
            s.partial = Some(partial);
            self.in_flight += msg_len;
            return Ok(Step::Consumed(None));
        }
        let Some(partial) = s.partial.as_mut() else {
            return Ok(Step::Consumed(None));
        };
        partial.extend_from_slice(&data);
        if partial.len() < msg_len {
            return Ok(Step::Consumed(None));
        }
        let payload = s.partial.take().unwrap_or_default().freeze();
        self.in_flight = self.in_flight.saturating_sub(msg_len);
        Ok(Step::Consumed(Some(message(h.csid, s, payload))))
    }

    /// Drops the message in progress on `csid`.
    fn abandon(&mut self, csid: u32) {
        if let Some(s) = self.streams.get_mut(&csid) {
            if s.partial.take().is_some() {
                self.in_flight = self.in_flight.saturating_sub(s.len);
            }
        }
    }
}

fn message(csid: u32, s: &ChunkStream, payload: Bytes) -> Message {
    Message {
        csid,
        type_id: s.type_id,
        stream_id: s.stream_id,
        timestamp: s.timestamp,
        payload,
    }
}

fn be_u24(b: Option<&[u8]>) -> u32 {
    match b {
        Some(&[a, b, c]) => u32::from_be_bytes([0, a, b, c]),
        _ => 0,
    }
}

/// The first four bytes as a big-endian number.
pub(crate) fn be_u32(b: &[u8]) -> Option<u32> {
    b.get(..4)
        .and_then(|s| <[u8; 4]>::try_from(s).ok())
        .map(u32::from_be_bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chunk::{encode_message, OUT_CHUNK_SIZE};

    const LIMITS: MessageLimits = MessageLimits {
        max_media_bytes: 1024 * 1024,
    };

    fn read_all(d: &mut Dechunker) -> Result<Vec<Message>, ChunkError> {
        let mut out = Vec::new();
        while let Some(m) = d.next_message()? {
            out.push(m);
        }
        Ok(out)
    }

    fn set_chunk_size(size: u32) -> Vec<u8> {
        let mut out = vec![2, 0, 0, 0, 0, 0, 4, msg_type::SET_CHUNK_SIZE, 0, 0, 0, 0];
        out.extend_from_slice(&size.to_be_bytes());
        out
    }

    #[test]
    fn reads_what_the_writer_writes_in_any_split() {
        let payload: Vec<u8> = (0..10_000u32).map(|i| i as u8).collect();
        let mut wire = set_chunk_size(OUT_CHUNK_SIZE);
        for ts in [0u32, 40, 0xFF_FFFF, 0x1234_5678] {
            wire.extend_from_slice(&encode_message(8, ts, msg_type::VIDEO, 1, &payload).unwrap());
        }
        for step in [1, 7, 4096, wire.len()] {
            let mut d = Dechunker::new(LIMITS);
            let mut got = Vec::new();
            for piece in wire.chunks(step) {
                d.push(piece);
                got.extend(read_all(&mut d).unwrap());
            }
            let ts: Vec<u32> = got.iter().map(|m| m.timestamp).collect();
            assert_eq!(ts, [0, 0, 40, 0xFF_FFFF, 0x1234_5678], "split {step}");
            assert!(got[1..].iter().all(|m| m.payload == payload[..]));
            assert_eq!(d.buffered(), 0);
        }
    }

    #[test]
    fn compressed_headers_carry_deltas() {
        // csid 4: type 0 at 1000, type 1 delta 40, type 2 delta 20, type 3 new message (20).
        let mut w = vec![
            4,
            0,
            0x03,
            0xE8,
            0,
            0,
            2,
            msg_type::AUDIO,
            1,
            0,
            0,
            0,
            0xAF,
            1,
        ];
        w.extend_from_slice(&[0x44, 0, 0, 40, 0, 0, 3, msg_type::AUDIO, 0xAF, 1, 2]);
        w.extend_from_slice(&[0x84, 0, 0, 20, 0xAF, 1, 3]);
        w.extend_from_slice(&[0xC4, 0xAF, 1, 4]);
        let mut d = Dechunker::new(LIMITS);
        d.push(&w);
        let got = read_all(&mut d).unwrap();
        let ts: Vec<u32> = got.iter().map(|m| m.timestamp).collect();
        assert_eq!(ts, [1000, 1040, 1060, 1080]);
        assert!(got.iter().all(|m| m.stream_id == 1 && m.csid == 4));
        assert_eq!(&got[3].payload[..], &[0xAF, 1, 4]);
    }

    #[test]
    fn oversized_messages_are_refused_from_their_header() {
        // A 16 MiB command: refused from its 12 header bytes, nothing buffered.
        let mut d = Dechunker::new(LIMITS);
        d.push(&[
            3,
            0,
            0,
            0,
            0xFF,
            0xFF,
            0xFF,
            msg_type::COMMAND_AMF0,
            0,
            0,
            0,
            0,
        ]);
        assert_eq!(
            d.next_message(),
            Err(ChunkError::TooLarge {
                type_id: msg_type::COMMAND_AMF0,
                len: 0xFF_FFFF,
                limit: MAX_COMMAND_BYTES
            })
        );
        let mut d = Dechunker::new(LIMITS);
        d.push(&[6, 0, 0, 0, 0x10, 0, 1, msg_type::VIDEO, 1, 0, 0, 0]);
        assert!(matches!(d.next_message(), Err(ChunkError::TooLarge { .. })));
        let mut d = Dechunker::new(LIMITS);
        d.push(&[3, 0, 0, 0, 0, 0, 1, 19, 0, 0, 0, 0, 0]);
        assert_eq!(d.next_message(), Err(ChunkError::RefusedType(19)));
    }

    #[test]
    fn chunk_sizes_streams_and_unfinished_messages_are_bounded() {
        for size in [0, MAX_IN_CHUNK_SIZE + 1, 0x7FFF_FFFF] {
            let mut d = Dechunker::new(LIMITS);
            d.push(&set_chunk_size(size));
            assert_eq!(d.next_message(), Err(ChunkError::ChunkSize(size)));
        }
        let mut d = Dechunker::new(LIMITS);
        d.push(&set_chunk_size(MAX_IN_CHUNK_SIZE));
        assert!(d.next_message().unwrap().is_some());
        assert_eq!(d.chunk_size(), MAX_IN_CHUNK_SIZE as usize);

        // One more chunk stream than allowed, each with a one-byte message.
        let mut d = Dechunker::new(LIMITS);
        let mut w = Vec::new();
        for csid in 0..=MAX_CHUNK_STREAMS as u16 {
            w.extend_from_slice(&[1, csid as u8, (csid >> 8) as u8]);
            w.extend_from_slice(&[0, 0, 0, 0, 0, 1, msg_type::ACK, 0, 0, 0, 0, 0]);
        }
        d.push(&w);
        assert_eq!(read_all(&mut d), Err(ChunkError::TooManyChunkStreams));

        // Started commands on many chunk streams, never finished: the budget runs out before
        // the memory does.
        let mut d = Dechunker::new(MessageLimits {
            max_media_bytes: 1000,
        });
        let mut w = Vec::new();
        for csid in 3..20u8 {
            w.extend_from_slice(&[csid, 0, 0, 0, 0, 0xFF, 0xFF, msg_type::COMMAND_AMF0]);
            w.extend_from_slice(&[0, 0, 0, 0]);
            w.extend_from_slice(&[0; 128]);
        }
        d.push(&w);
        assert!(matches!(read_all(&mut d), Err(ChunkError::InFlight(_))));
        assert!(d.buffered() < 8 * 1024, "{} bytes held", d.buffered());
    }

    #[test]
    fn interleaved_streams_and_aborts() {
        let mut d = Dechunker::new(LIMITS);
        // Two 200-byte messages on csids 4 and 6, their chunks interleaved.
        let a = [1u8; 200];
        let b = [2u8; 200];
        let mut w = vec![4, 0, 0, 1, 0, 0, 200, msg_type::AUDIO, 1, 0, 0, 0];
        w.extend_from_slice(&a[..128]);
        w.extend_from_slice(&[6, 0, 0, 2, 0, 0, 200, msg_type::VIDEO, 1, 0, 0, 0]);
        w.extend_from_slice(&b[..128]);
        w.push(0xC4);
        w.extend_from_slice(&a[128..]);
        // csid 6 is aborted; then a fresh message on it.
        w.extend_from_slice(&[2, 0, 0, 0, 0, 0, 4, msg_type::ABORT, 0, 0, 0, 0, 0, 0, 0, 6]);
        w.extend_from_slice(&[6, 0, 0, 3, 0, 0, 1, msg_type::VIDEO, 1, 0, 0, 0, 9]);
        d.push(&w);
        let got = read_all(&mut d).unwrap();
        let kinds: Vec<(u32, u8, usize)> = got
            .iter()
            .map(|m| (m.csid, m.type_id, m.payload.len()))
            .collect();
        assert_eq!(kinds, [(4, 8, 200), (2, 2, 4), (6, 9, 1)]);
        assert_eq!(d.in_flight, 0);
        // A compressed header on a stream that never had a full one.
        let mut d = Dechunker::new(LIMITS);
        d.push(&[0xC5, 1, 2, 3]);
        assert_eq!(d.next_message(), Err(ChunkError::NoPreviousHeader(5)));
    }

    #[test]
    fn garbage_is_an_error_or_waits_never_a_panic() {
        let mut seed = 7u32;
        for _ in 0..2000 {
            let mut d = Dechunker::new(LIMITS);
            let bytes: Vec<u8> = (0..512)
                .map(|_| {
                    seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                    (seed >> 16) as u8
                })
                .collect();
            d.push(&bytes);
            let _ = read_all(&mut d);
            assert!(d.buffered() <= 512 + MAX_IN_CHUNK_SIZE as usize);
        }
    }
}
