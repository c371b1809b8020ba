//! Whether a caller's handshake carries keying material, for the one request srt-tokio cannot
//! tell apart.
//!
//! srt-tokio 0.4.4 shows a request's announced key size, not whether its conclusion handshake
//! carries keying material (a KMREQ extension). A libsrt caller that sets a passphrase without
//! `pbkeylen` announces no key size and still sends keying material; accepting it with no key
//! settings makes srt-protocol panic inside the listener task (`expected no secrets`), which
//! ends every SRT session that listener serves. So a request that announces no key size,
//! towards a stream without a passphrase, is answered only after a look at its handshake:
//!
//! - a caller resends its conclusion handshake until it is answered (libsrt every 250 ms,
//!   srt-tokio every 100 ms);
//! - a UDP socket of ours, bound to the listener's address with `SO_REUSEPORT` and connected to
//!   the caller, gets that caller's next datagrams: the kernel hands a datagram to the connected
//!   socket whose addresses match it rather than to the listener's unconnected one. Nobody
//!   else's datagrams reach it;
//! - the resent handshake is read ([`conclusion_key_material`], a pure function), the socket
//!   closed, and only then is the request answered through srt-tokio.
//!
//! The listener's socket must itself have `SO_REUSEPORT` for this ([`crate::SrtListener::bind`]).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::UdpSocket;
use tokio::sync::Semaphore;

/// How long to wait for the caller to resend its handshake: four of libsrt's resends, ten of
/// srt-tokio's. A caller silent for that long is refused.
pub const RESEND_WAIT: Duration = Duration::from_secs(1);
/// Most looks under way at once (each holds a socket for up to [`RESEND_WAIT`]); further
/// requests wait for one to finish, up to [`RESEND_WAIT`], and are then refused as overload.
pub const MAX_LOOKS: usize = 256;
/// Largest datagram read: SRT packets fit a 1500-byte MTU. A longer one is not a handshake
/// any SRT library sends, and is skipped.
pub const MAX_HANDSHAKE_BYTES: usize = 1500;

/// SRT packet header.
const HEADER_LEN: usize = 16;
/// The handshake's fixed part, before its extensions.
const HANDSHAKE_LEN: usize = 48;
/// First word of a handshake control packet, high half: control bit, type 0.
const HANDSHAKE_CONTROL: u32 = 0x8000;
/// The handshake version that carries extensions.
const HSV5: u32 = 5;
/// Handshake type of a conclusion.
const CONCLUSION: u32 = 0xffff_ffff;
/// The extension-field flag for keying material.
const EXT_FLAG_KMREQ: u16 = 0x0002;
/// Extension block types carrying keying material (request, response).
const EXT_KMREQ: u16 = 3;
const EXT_KMRSP: u16 = 4;

/// What a conclusion handshake says about encryption.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyMaterial {
    /// No sign of encryption.
    Absent,
    /// Keying material, its flag, or a key size.
    Present,
}

/// How a look at a caller's handshake ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Look {
    /// The caller resent its conclusion handshake.
    Seen(KeyMaterial),
    /// It did not within [`RESEND_WAIT`], or the socket to see it could not be made.
    Unseen,
    /// Too many looks under way.
    Busy,
}

/// Reads `datagram` as an SRT packet: `None` unless it is an HSv5 conclusion handshake,
/// otherwise whether it shows any sign of encryption.
///
/// Errs towards `Present`: an extension block of a keying-material type counts even when its
/// length runs past the end of the datagram.
pub fn conclusion_key_material(datagram: &[u8]) -> Option<KeyMaterial> {
    if be32(datagram, 0)? >> 16 != HANDSHAKE_CONTROL
        || be32(datagram, HEADER_LEN)? != HSV5
        || be32(datagram, HEADER_LEN + 20)? != CONCLUSION
    {
        return None;
    }
    let key_size = be16(datagram, HEADER_LEN + 4)?;
    let flags = be16(datagram, HEADER_LEN + 6)?;
    let mut present = key_size != 0 || flags & EXT_FLAG_KMREQ != 0;
    let mut at = HEADER_LEN + HANDSHAKE_LEN;
    while let (Some(kind), Some(words)) = (be16(datagram, at), be16(datagram, at + 2)) {
        present |= kind == EXT_KMREQ || kind == EXT_KMRSP;
        at += 4 + usize::from(words) * 4;
    }
    Some(if present {
        KeyMaterial::Present
    } else {
        KeyMaterial::Absent
    })
}

/// Looks at callers' handshakes on the listener's address.
#[derive(Debug, Clone)]
pub struct Looker {
    local: SocketAddr,
    looks: Arc<Semaphore>,
}

impl Looker {
    /// For a listener bound (with `SO_REUSEPORT`) at `local`.
    pub fn new(local: SocketAddr) -> Self {
        Self {
            local,
            looks: Arc::new(Semaphore::new(MAX_LOOKS)),
        }
    }

    /// Waits for `peer` to resend its conclusion handshake and reads it.
    pub async fn look(&self, peer: SocketAddr) -> Look {
        let Ok(Ok(_permit)) =
            tokio::time::timeout(RESEND_WAIT, Arc::clone(&self.looks).acquire_owned()).await
        else {
            return Look::Busy;
        };
        let socket = match steered_socket(self.local, peer) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(peer = %peer, error = %e, "no socket to see the srt handshake on");
                return Look::Unseen;
            }
        };
        match tokio::time::timeout(RESEND_WAIT, next_conclusion(&socket)).await {
            Ok(Ok(k)) => Look::Seen(k),
            Ok(Err(e)) => {
                tracing::debug!(peer = %peer, error = %e, "reading the resent srt handshake failed");
                Look::Unseen
            }
            Err(_) => Look::Unseen,
        }
    }
}

/// A socket on `local` that receives `peer`'s datagrams in place of the listener's socket.
fn steered_socket(local: SocketAddr, peer: SocketAddr) -> std::io::Result<UdpSocket> {
    let socket = Socket::new(Domain::for_address(local), Type::DGRAM, Some(Protocol::UDP))?;
    socket.set_nonblocking(true)?;
    socket.set_reuse_port(true)?;
    socket.bind(&local.into())?;
    socket.connect(&peer.into())?;
    UdpSocket::from_std(socket.into())
}

/// Reads datagrams until one is a conclusion handshake.
async fn next_conclusion(socket: &UdpSocket) -> std::io::Result<KeyMaterial> {
    let mut buf = vec![0u8; MAX_HANDSHAKE_BYTES + 1];
    loop {
        let n = socket.recv(&mut buf).await?;
        if n > MAX_HANDSHAKE_BYTES {
            continue;
        }
        if let Some(k) = buf.get(..n).and_then(conclusion_key_material) {
            return Ok(k);
        }
    }
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    let bytes = b.get(at..at.checked_add(2)?)?;
    Some(u16::from_be_bytes(bytes.try_into().ok()?))
}

fn be32(b: &[u8], at: usize) -> Option<u32> {
    let bytes = b.get(at..at.checked_add(4)?)?;
    Some(u32::from_be_bytes(bytes.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

    use super::*;

    /// A caller's HSv5 handshake of `kind` with `key_size` (in the field's units of 8 bytes),
    /// extension `flags` and extension blocks `(type, body words)`.
    fn handshake(kind: u32, key_size: u16, flags: u16, blocks: &[(u16, u16)]) -> Vec<u8> {
        let mut p = Vec::new();
        p.extend_from_slice(&0x8000_0000u32.to_be_bytes());
        p.extend_from_slice(&[0; 12]);
        p.extend_from_slice(&HSV5.to_be_bytes());
        p.extend_from_slice(&key_size.to_be_bytes());
        p.extend_from_slice(&flags.to_be_bytes());
        p.extend_from_slice(&[0; 12]); // sequence number, MTU, flow window
        p.extend_from_slice(&kind.to_be_bytes());
        p.extend_from_slice(&[0; 24]); // socket id, cookie, peer address
        for &(t, words) in blocks {
            p.extend_from_slice(&t.to_be_bytes());
            p.extend_from_slice(&words.to_be_bytes());
            p.extend(std::iter::repeat_n(0xab, usize::from(words) * 4));
        }
        p
    }

    const HSREQ: (u16, u16) = (1, 3);
    const KMREQ: (u16, u16) = (3, 10);
    const SID: (u16, u16) = (5, 4);

    #[test]
    fn a_plain_conclusion_has_none() {
        let d = handshake(CONCLUSION, 0, 0x0005, &[HSREQ, SID]);
        assert_eq!(conclusion_key_material(&d), Some(KeyMaterial::Absent));
        let bare = handshake(CONCLUSION, 0, 0, &[]);
        assert_eq!(conclusion_key_material(&bare), Some(KeyMaterial::Absent));
    }

    #[test]
    fn keying_material_is_seen_with_no_key_size() {
        // libsrt with a passphrase and no pbkeylen: key size 0, KMREQ flag and block.
        let d = handshake(CONCLUSION, 0, 0x0007, &[HSREQ, KMREQ, SID]);
        assert_eq!(conclusion_key_material(&d), Some(KeyMaterial::Present));
        // The block without its flag, the flag without its block, a key size alone.
        let block = handshake(CONCLUSION, 0, 0x0005, &[HSREQ, SID, KMREQ]);
        assert_eq!(conclusion_key_material(&block), Some(KeyMaterial::Present));
        let flag = handshake(CONCLUSION, 0, 0x0007, &[HSREQ, SID]);
        assert_eq!(conclusion_key_material(&flag), Some(KeyMaterial::Present));
        let size = handshake(CONCLUSION, 4, 0x0005, &[HSREQ, SID]);
        assert_eq!(conclusion_key_material(&size), Some(KeyMaterial::Present));
        let response = handshake(CONCLUSION, 0, 0, &[(4, 10)]);
        assert_eq!(
            conclusion_key_material(&response),
            Some(KeyMaterial::Present)
        );
    }

    #[test]
    fn a_block_running_past_the_end_still_counts() {
        let mut d = handshake(CONCLUSION, 0, 0x0001, &[HSREQ]);
        d.extend_from_slice(&EXT_KMREQ.to_be_bytes());
        d.extend_from_slice(&200u16.to_be_bytes());
        assert_eq!(conclusion_key_material(&d), Some(KeyMaterial::Present));
    }

    #[test]
    fn other_packets_are_not_conclusions() {
        let induction = handshake(1, 0, 0x4a17, &[]);
        assert_eq!(conclusion_key_material(&induction), None);
        let mut v4 = handshake(CONCLUSION, 0, 0, &[]);
        v4[16..20].copy_from_slice(&4u32.to_be_bytes());
        assert_eq!(conclusion_key_material(&v4), None);
        let mut keepalive = handshake(CONCLUSION, 0, 0, &[]);
        keepalive[0..4].copy_from_slice(&0x8001_0000u32.to_be_bytes());
        assert_eq!(conclusion_key_material(&keepalive), None);
        let mut data = handshake(CONCLUSION, 0, 0, &[]);
        data[0] = 0;
        assert_eq!(conclusion_key_material(&data), None);
    }

    #[test]
    fn malformed_input_is_not_a_conclusion() {
        let full = handshake(CONCLUSION, 0, 0x0007, &[HSREQ, KMREQ]);
        for len in 0..HEADER_LEN + 24 {
            assert_eq!(conclusion_key_material(&full[..len]), None, "{len} bytes");
        }
        // Cut anywhere after the handshake type, it is still read, never past its end.
        for len in HEADER_LEN + 24..full.len() {
            assert!(
                conclusion_key_material(&full[..len]).is_some(),
                "{len} bytes"
            );
        }
        let mut s = 0x2545_f491u32;
        for _ in 0..2000 {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            let len = (s % 200) as usize;
            let mut d: Vec<u8> = (0..len).map(|i| (s >> (i % 24)) as u8).collect();
            if let Some(w) = d.get_mut(16..24) {
                w.copy_from_slice(&[0, 0, 0, 5, 0xff, 0xff, 0xff, 0xff]);
            }
            let _ = conclusion_key_material(&d);
        }
    }

    /// Binds a listener-like socket (with `SO_REUSEPORT`) on loopback.
    fn listener_socket() -> std::net::UdpSocket {
        let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP)).unwrap();
        s.set_reuse_port(true).unwrap();
        s.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
            .unwrap();
        s.into()
    }

    #[tokio::test]
    async fn the_callers_resent_handshake_is_seen_and_no_one_elses() {
        let listener = listener_socket();
        let local = listener.local_addr().unwrap();
        let caller = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let other = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let looker = Looker::new(local);
        let peer = caller.local_addr().unwrap();
        let look = tokio::spawn(async move { looker.look(peer).await });
        let with_keys = handshake(CONCLUSION, 0, 0x0007, &[HSREQ, KMREQ, SID]);
        let plain = handshake(CONCLUSION, 0, 0x0005, &[HSREQ, SID]);
        // The caller resends every 100 ms; another peer sends a plain handshake meanwhile.
        for _ in 0..5 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            other.send_to(&plain, local).unwrap();
            caller.send_to(&with_keys, local).unwrap();
        }
        assert_eq!(look.await.unwrap(), Look::Seen(KeyMaterial::Present));
        // Every one of the other peer's datagrams went to the listener.
        listener.set_nonblocking(true).unwrap();
        let mut buf = [0u8; 2048];
        let mut from_other = 0;
        while let Ok((_, from)) = listener.recv_from(&mut buf) {
            if from == other.local_addr().unwrap() {
                from_other += 1;
            }
        }
        assert_eq!(from_other, 5);
    }

    #[tokio::test]
    async fn a_silent_caller_is_unseen() {
        let listener = listener_socket();
        let looker = Looker::new(listener.local_addr().unwrap());
        let start = std::time::Instant::now();
        assert_eq!(
            looker.look(SocketAddr::from(([127, 0, 0, 1], 9))).await,
            Look::Unseen
        );
        assert!(start.elapsed() >= RESEND_WAIT);
    }
}
