//! The listener's side of the SRT handshake (HSv5), ours, sans IO: the handshake datagrams
//! are read here, bounded, and never reach srt-protocol's parser; answers are built from
//! srt-protocol's packet types and serialized by it.
//!
//! - **Induction**: a caller's first handshake (`version 4`, type induction) is answered with
//!   a SYN cookie: a MAC over the caller's address and the current 30-second period, under a
//!   key of this process, so that no state is kept for a caller until it proves it receives
//!   our datagrams at the address it claims.
//! - **Conclusion**: a caller's HSv5 conclusion carrying a cookie of this or the previous
//!   period is read ([`read`]): its HSREQ, its keying material (`KMREQ`), its stream id, and
//!   any extension the live listener refuses (file congestion control, packet filters,
//!   groups). The listener then decides (admission) and answers with a conclusion
//!   ([`accept`]) or a rejection ([`reject`]).
//!
//! The peer's parameters are clamped where srt-protocol takes them as they come: a maximum
//! payload of zero would make its sender loop for ever, a latency of 65 s would make it
//! allocate an acknowledgement history of over a million entries per connection.

use std::cmp::{max, min};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use srt_protocol::connection::{Connection, ConnectionSettings};
use srt_protocol::options::{KeySize, LiveBandwidthMode, PacketCount, PacketSize, SrtVersion};
use srt_protocol::packet::{
    ControlPacket, ControlTypes, CoreRejectReason, HandshakeControlInfo, HandshakeVsInfo, HsV5Info,
    KeyingMaterialMessage, Packet, RejectReason, SeqNumber, ShakeType, SocketId, SrtControlPacket,
    SrtHandshake, SrtShakeFlags, TimeStamp,
};
use srt_protocol::protocol::handshake::Handshake as ListenerHandshake;
use srt_protocol::settings::{CipherSettings, KeyMaterialRefreshSettings, KeySettings};

/// Bytes of the SRT header and of a handshake's fixed part.
pub const HEADER_LEN: usize = 16;
const CIF_LEN: usize = 48;
/// Extension blocks read from one handshake: libsrt sends at most six.
const MAX_BLOCKS: usize = 8;
/// Largest stream id read (the protocol's limit is 512 bytes; longer ones are refused by
/// the stream id parser with a clear code, so they are read to be told apart).
const MAX_STREAM_ID: usize = 1024;
/// Extension block types.
const EXT_HSREQ: u16 = 1;
const EXT_KMREQ: u16 = 3;
const EXT_SID: u16 = 5;
const EXT_CONGESTION: u16 = 6;
const EXT_FILTER: u16 = 7;
const EXT_GROUP: u16 = 8;
/// Handshake types.
const INDUCTION: i32 = 1;
const CONCLUSION: i32 = -1;
/// The validity of a cookie: its period and the one before.
const COOKIE_PERIOD_SECS: u64 = 30;

/// The smallest and largest payload a connection is set up with. srt-protocol takes the
/// peer's MSS as the payload size; libsrt's is 1500 and its floor 76.
const MIN_PAYLOAD: u64 = 188;
const MAX_PAYLOAD: u64 = 1456;
/// The payload this listener sends: seven TS packets, as every SRT tool does.
pub const PAYLOAD: u64 = 1316;
/// The latency each side keeps, and the most a peer may ask for.
pub const LATENCY: Duration = Duration::from_millis(120);
pub const MAX_LATENCY: Duration = Duration::from_secs(5);
/// Flow window bounds (packets in flight).
const MAX_FLOW: u64 = 25_600;
const MIN_FLOW: u64 = 32;
/// How long a connection may hear nothing from its peer.
pub const PEER_IDLE_TIMEOUT: Duration = Duration::from_secs(5);
/// The initial round-trip time, before the first measurement (libsrt's).
const INITIAL_RTT: Duration = Duration::from_millis(100);

/// What a connection mostly does: it sizes the buffers srt-protocol allocates up front.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Receives media (a publisher): a receive buffer of [`RECEIVE_PACKETS`].
    Receiver,
    /// Sends media (a viewer): a send buffer of [`SEND_PACKETS`], a small receive buffer.
    Sender,
}

/// Packets a publisher's connection buffers for reordering and its latency window: about
/// 4 s at 20 Mbit/s.
pub const RECEIVE_PACKETS: u64 = 8192;
/// Packets a viewer's connection keeps for retransmission: about 12 MB.
pub const SEND_PACKETS: u64 = 9000;
/// The receive buffer of a connection that receives only control packets.
const CONTROL_ONLY_PACKETS: u64 = 16;

/// The SYN cookies of one listener.
#[derive(Clone)]
pub struct Cookies {
    key: [u8; 32],
}

impl std::fmt::Debug for Cookies {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Cookies")
    }
}

impl Cookies {
    /// Cookies under `key`.
    pub fn new(key: [u8; 32]) -> Self {
        Self { key }
    }

    fn period(now: SystemTime) -> u64 {
        now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs() / COOKIE_PERIOD_SECS
    }

    fn of(&self, peer: SocketAddr, period: u64) -> i32 {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.key)
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        match peer.ip() {
            IpAddr::V4(v4) => mac.update(&v4.octets()),
            IpAddr::V6(v6) => mac.update(&v6.octets()),
        }
        mac.update(&peer.port().to_be_bytes());
        mac.update(&period.to_be_bytes());
        let tag = mac.finalize().into_bytes();
        let mut word = [0u8; 4];
        for (w, t) in word.iter_mut().zip(tag.iter()) {
            *w = *t;
        }
        i32::from_be_bytes(word)
    }

    /// The cookie for `peer` now.
    pub fn make(&self, peer: SocketAddr, now: SystemTime) -> i32 {
        self.of(peer, Self::period(now))
    }

    /// Whether `cookie` is one made for `peer` in this period or the one before.
    pub fn check(&self, peer: SocketAddr, cookie: i32, now: SystemTime) -> bool {
        let period = Self::period(now);
        cookie == self.of(peer, period) || cookie == self.of(peer, period.saturating_sub(1))
    }
}

/// Why a handshake datagram is not read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    /// Shorter than its parts, or an extension block running past the end.
    #[error("truncated handshake")]
    Truncated,
    /// A version other than 4 (induction) or 5.
    #[error("unsupported handshake version")]
    Version,
    /// A handshake type a listener does not take (rendezvous, a rejection, unknown).
    #[error("unexpected handshake type")]
    Type,
    /// Too many extension blocks, or one of a kind twice.
    #[error("malformed extension blocks")]
    Blocks,
    /// An HSREQ that cannot be read.
    #[error("malformed HSREQ")]
    HsReq,
    /// Keying material that cannot be read, or that is not a request with a key.
    #[error("malformed keying material")]
    KeyMaterial,
}

/// A caller's handshake, as read.
#[derive(Debug, Clone)]
pub struct CallerHandshake {
    /// Its SRT header's timestamp (echoed in answers).
    pub timestamp: u32,
    /// Induction or conclusion.
    pub induction: bool,
    /// HSv4 or HSv5.
    pub version: u32,
    /// The key size it announces (HSv5), as bytes (0, 16, 24, 32), or another value.
    pub key_len: u16,
    /// Its initial sequence number (both directions use it).
    pub init_seq: u32,
    /// Its maximum segment size.
    pub mss: u32,
    /// Its flow window.
    pub flow: u32,
    /// Its socket id.
    pub socket_id: u32,
    /// The cookie it returns.
    pub cookie: i32,
    /// Its HSREQ.
    pub hsreq: Option<SrtHandshake>,
    /// Its keying material request.
    pub km: Option<KeyingMaterialMessage>,
    /// Its stream id: `None` when absent, `Err` when not UTF-8 or too long to read.
    pub stream_id: Option<Result<String, StreamIdUnreadable>>,
    /// Whether it asks for something a live listener refuses: a congestion control other
    /// than live, a packet filter, a group.
    pub refused_extension: Option<CoreRejectReason>,
}

/// A stream id that could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamIdUnreadable {
    /// Longer than [`MAX_STREAM_ID`].
    TooLong,
    /// Not UTF-8.
    NotUtf8,
}

impl CallerHandshake {
    /// The key size it announces, if it is one SRT has.
    pub fn key_size(&self) -> Option<KeySize> {
        match self.key_len {
            0 => Some(KeySize::Unspecified),
            16 => Some(KeySize::AES128),
            24 => Some(KeySize::AES192),
            32 => Some(KeySize::AES256),
            _ => None,
        }
    }
}

fn word(b: &[u8], at: usize) -> Option<u32> {
    let w: [u8; 4] = b.get(at..at + 4)?.try_into().ok()?;
    Some(u32::from_be_bytes(w))
}

fn half(b: &[u8], at: usize) -> Option<u16> {
    let w: [u8; 2] = b.get(at..at + 2)?.try_into().ok()?;
    Some(u16::from_be_bytes(w))
}

/// Whether `datagram` is a handshake (an SRT control packet of type 0).
pub fn is_handshake(datagram: &[u8]) -> bool {
    half(datagram, 0) == Some(0x8000)
}

/// The destination socket id of an SRT packet.
pub fn dest_socket(datagram: &[u8]) -> Option<u32> {
    word(datagram, 12)
}

/// A string of the handshake's extension encoding: 32-bit words, each little-endian, padded
/// with zero bytes.
fn words_to_string(block: &[u8]) -> Result<String, StreamIdUnreadable> {
    if block.len() > MAX_STREAM_ID {
        return Err(StreamIdUnreadable::TooLong);
    }
    let mut bytes = Vec::with_capacity(block.len());
    for w in block.chunks(4) {
        bytes.extend(w.iter().rev());
    }
    while bytes.last() == Some(&0) {
        bytes.pop();
    }
    String::from_utf8(bytes).map_err(|_| StreamIdUnreadable::NotUtf8)
}

/// Reads a caller's handshake datagram.
pub fn read(datagram: &[u8]) -> Result<CallerHandshake, ReadError> {
    if datagram.len() < HEADER_LEN + CIF_LEN {
        return Err(ReadError::Truncated);
    }
    let at = |o: usize| word(datagram, HEADER_LEN + o).ok_or(ReadError::Truncated);
    let timestamp = word(datagram, 8).ok_or(ReadError::Truncated)?;
    let version = at(0)?;
    let type_field = at(4)?;
    let kind = at(20)? as i32;
    let induction = match (version, kind) {
        (4 | 5, INDUCTION) => true,
        (5, CONCLUSION) => false,
        (4, CONCLUSION) => return Err(ReadError::Version),
        (4 | 5, _) => return Err(ReadError::Type),
        _ => return Err(ReadError::Version),
    };
    let mut hs = CallerHandshake {
        timestamp,
        induction,
        version,
        key_len: ((type_field >> 16) as u16) << 3,
        init_seq: at(8)? & 0x7FFF_FFFF,
        mss: at(12)?,
        flow: at(16)?,
        socket_id: at(24)?,
        cookie: at(28)? as i32,
        hsreq: None,
        km: None,
        stream_id: None,
        refused_extension: None,
    };
    if induction {
        return Ok(hs);
    }
    let mut rest = datagram.get(HEADER_LEN + CIF_LEN..).unwrap_or_default();
    let mut seen = Vec::new();
    while !rest.is_empty() {
        if seen.len() == MAX_BLOCKS {
            return Err(ReadError::Blocks);
        }
        let kind = half(rest, 0).ok_or(ReadError::Truncated)?;
        let len = usize::from(half(rest, 2).ok_or(ReadError::Truncated)?) * 4;
        let block = rest.get(4..4 + len).ok_or(ReadError::Truncated)?;
        rest = rest.get(4 + len..).unwrap_or_default();
        if seen.contains(&kind) {
            return Err(ReadError::Blocks);
        }
        seen.push(kind);
        match kind {
            EXT_HSREQ => {
                if block.len() < 12 {
                    return Err(ReadError::HsReq);
                }
                let mut b = block;
                hs.hsreq = Some(SrtHandshake::parse(&mut b).map_err(|_| ReadError::HsReq)?);
            }
            EXT_KMREQ => {
                let mut b = block;
                let km =
                    KeyingMaterialMessage::parse(&mut b).map_err(|_| ReadError::KeyMaterial)?;
                // A request must wrap at least one key with a salt of 16 bytes (srt-protocol
                // asserts it while unwrapping).
                if km.key_flags.is_empty() || km.salt.len() != 16 {
                    return Err(ReadError::KeyMaterial);
                }
                hs.km = Some(km);
            }
            EXT_SID => hs.stream_id = Some(words_to_string(block)),
            EXT_CONGESTION => {
                if words_to_string(block).as_deref() != Ok("live") {
                    hs.refused_extension = Some(CoreRejectReason::Congestion);
                }
            }
            EXT_FILTER => hs.refused_extension = Some(CoreRejectReason::Filter),
            EXT_GROUP => hs.refused_extension = Some(CoreRejectReason::Group),
            // HSRSP and KMRSP are a listener's; anything else is unknown.
            _ => return Err(ReadError::Blocks),
        }
    }
    Ok(hs)
}

fn control(timestamp: u32, dest: u32, info: HandshakeControlInfo) -> Packet {
    Packet::Control(ControlPacket {
        timestamp: TimeStamp::from_micros(timestamp),
        dest_sockid: SocketId(dest),
        control_type: ControlTypes::Handshake(info),
    })
}

/// Serializes a packet.
pub fn bytes(packet: &Packet) -> Bytes {
    let mut out = BytesMut::with_capacity(256);
    packet.serialize(&mut out);
    out.freeze()
}

/// The answer to an induction: HSv5, with the cookie for `peer`.
pub fn induction_response(
    hs: &CallerHandshake,
    peer: SocketAddr,
    listener_id: u32,
    cookie: i32,
) -> Bytes {
    bytes(&control(
        hs.timestamp,
        hs.socket_id,
        HandshakeControlInfo {
            init_seq_num: SeqNumber::new_truncate(hs.init_seq),
            max_packet_size: PacketSize(u64::from(hs.mss)),
            max_flow_size: PacketCount(u64::from(hs.flow)),
            shake_type: ShakeType::Induction,
            socket_id: SocketId(listener_id),
            syn_cookie: cookie,
            peer_addr: peer.ip(),
            info: HandshakeVsInfo::V5(HsV5Info::default()),
        },
    ))
}

/// A rejection of `hs` with `reason`.
pub fn reject(
    hs: &CallerHandshake,
    peer: SocketAddr,
    listener_id: u32,
    reason: RejectReason,
) -> Bytes {
    bytes(&control(
        hs.timestamp,
        hs.socket_id,
        HandshakeControlInfo {
            init_seq_num: SeqNumber::new_truncate(hs.init_seq),
            max_packet_size: PacketSize(u64::from(hs.mss)),
            max_flow_size: PacketCount(u64::from(hs.flow)),
            shake_type: ShakeType::Rejection(reason),
            socket_id: SocketId(listener_id),
            syn_cookie: hs.cookie,
            peer_addr: peer.ip(),
            info: HandshakeVsInfo::V5(HsV5Info::default()),
        },
    ))
}

/// Checks the caller's encryption against what the stream needs (`keys`: the required
/// passphrase with the caller's key size), as libsrt's listener would: the cipher for the
/// connection, or the rejection.
pub fn cipher(
    hs: &CallerHandshake,
    keys: Option<&KeySettings>,
) -> Result<Option<CipherSettings>, RejectReason> {
    let unsecure = RejectReason::Core(CoreRejectReason::Unsecure);
    match (keys, &hs.km) {
        (None, None) => Ok(None),
        // One side encrypts, the other does not.
        (None, Some(_)) | (Some(_), None) => Err(unsecure),
        (Some(keys), Some(km)) => {
            // The wrapped keys must be of the size the caller announced (srt-protocol
            // panics on a mismatch otherwise), and of one SRT has.
            let key_len = keys.key_size.as_usize();
            let wrapped = km.wrapped_keys.len();
            let count = km.key_flags.bits().count_ones() as usize;
            if count == 0 || wrapped != key_len * count + 8 {
                return Err(unsecure);
            }
            CipherSettings::new(keys, &KeyMaterialRefreshSettings::default(), km)
                .map(Some)
                .map_err(|_| RejectReason::Core(CoreRejectReason::BadSecret))
        }
    }
}

/// A connection accepted: its settings and the conclusion that answers the caller.
#[derive(Debug)]
pub struct Accepted {
    /// For `DuplexConnection::new`.
    pub connection: Connection,
    /// The conclusion response (also the answer to every repeat of the caller's conclusion).
    pub response: Bytes,
}

/// Accepts `hs` from `peer` as the connection `local_id`, encrypted with `cipher`.
pub fn accept(
    hs: &CallerHandshake,
    peer: SocketAddr,
    local_id: u32,
    cipher: Option<CipherSettings>,
    role: Role,
    now: Instant,
) -> Accepted {
    let (peer_send, peer_recv) = hs
        .hsreq
        .as_ref()
        .map_or((Duration::ZERO, Duration::ZERO), |r| {
            (r.send_latency, r.recv_latency)
        });
    // Each direction's latency is the larger of what the sender and the receiver want.
    let recv_latency = max(LATENCY, peer_send).min(MAX_LATENCY);
    let send_latency = max(LATENCY, peer_recv).min(MAX_LATENCY);
    let payload = u64::from(hs.mss)
        .clamp(MIN_PAYLOAD, MAX_PAYLOAD)
        .min(PAYLOAD);
    let flow = u64::from(hs.flow).clamp(MIN_FLOW, MAX_FLOW);
    let (recv_buffer, send_buffer) = match role {
        Role::Receiver => (RECEIVE_PACKETS, CONTROL_ONLY_PACKETS),
        Role::Sender => (CONTROL_ONLY_PACKETS, SEND_PACKETS),
    };
    let ext_km = cipher
        .as_ref()
        .and_then(CipherSettings::wrap_keying_material)
        .map(SrtControlPacket::KeyRefreshResponse);
    let key_size = cipher
        .as_ref()
        .map_or(KeySize::Unspecified, |c| c.key_settings.key_size);
    let info = HandshakeControlInfo {
        init_seq_num: SeqNumber::new_truncate(hs.init_seq),
        max_packet_size: PacketSize(payload),
        max_flow_size: PacketCount(flow),
        shake_type: ShakeType::Conclusion,
        socket_id: SocketId(local_id),
        syn_cookie: hs.cookie,
        peer_addr: peer.ip(),
        info: HandshakeVsInfo::V5(HsV5Info {
            key_size,
            ext_hs: Some(SrtControlPacket::HandshakeResponse(SrtHandshake {
                version: SrtVersion::CURRENT,
                flags: SrtShakeFlags::SUPPORTED,
                send_latency,
                recv_latency,
            })),
            ext_km,
            ext_group: None,
            sid: None,
        }),
    };
    let response = control(hs.timestamp, hs.socket_id, info.clone());
    let settings = ConnectionSettings {
        remote: peer,
        remote_sockid: SocketId(hs.socket_id),
        local_sockid: SocketId(local_id),
        // The caller started about half a round trip ago.
        socket_start_time: now.checked_sub(INITIAL_RTT / 2).unwrap_or(now),
        rtt: INITIAL_RTT,
        init_seq_num: SeqNumber::new_truncate(hs.init_seq),
        max_packet_size: PacketSize(payload),
        max_flow_size: PacketCount(flow),
        send_tsbpd_latency: send_latency,
        recv_tsbpd_latency: recv_latency,
        too_late_packet_drop: true,
        peer_idle_timeout: PEER_IDLE_TIMEOUT,
        recv_buffer_size: PacketCount(recv_buffer),
        send_buffer_size: PacketCount(send_buffer),
        cipher,
        stream_id: None,
        // The stream paces itself: send what is due at each timer, as fast as it comes.
        bandwidth: LiveBandwidthMode::Unlimited,
        statistics_interval: Duration::from_secs(1),
    };
    Accepted {
        response: bytes(&response),
        connection: Connection {
            settings,
            handshake: ListenerHandshake::Listener(ControlTypes::Handshake(info)),
        },
    }
}

/// `min` for the caller's and our payload, exported for the tests.
pub fn negotiated_payload(mss: u32) -> u64 {
    min(u64::from(mss).clamp(MIN_PAYLOAD, MAX_PAYLOAD), PAYLOAD)
}
