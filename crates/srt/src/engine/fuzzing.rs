//! Drives the engine's datagram path in memory with arbitrary datagrams: the body of the
//! `srt_datagrams` fuzz target (`fuzz/`), and the connections of this module's hostile tests.
//! Not part of the server.
//!
//! Input: one byte of options (bit 0: the connections are encrypted), then datagrams, each as
//! two bytes of length (big-endian) and its bytes. Each datagram goes where the engine sends
//! it: a handshake to the caller-handshake reader; anything else, if the guard lets it through
//! and it parses, to two open connections on the listener's side, a viewer's (which sends,
//! with data handed to it) and a publisher's (which receives). Their timers then run and what
//! they made is taken. The clock moves 10 ms per datagram. A panic is a finding: the engine
//! would count it and end the connection.

use std::io::Cursor;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use bytes::Bytes;
use srt_protocol::connection::DuplexConnection;
use srt_protocol::options::{KeySize, Passphrase};
use srt_protocol::packet::{Packet, SeqNumber};
use srt_protocol::protocol::pending_connection::connect::Connect;
use srt_protocol::protocol::pending_connection::listen::Listen;
use srt_protocol::protocol::pending_connection::ConnectionResult;
use srt_protocol::settings::{ConnInitSettings, KeySettings};

use super::guard;
use super::handshake::{self, Role};

/// The caller's address in these connections.
pub const CALLER: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 40_000);
/// The listener's address.
pub const LISTENER: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 9_000);
/// The passphrase of the encrypted connections.
pub const PASSPHRASE: &str = "correct horse battery";
/// The listener's socket id in these connections.
pub const LOCAL_ID: u32 = 0x1234_5678;
/// Most datagrams taken from one input.
const MAX_DATAGRAMS: usize = 256;

/// The key settings of the encrypted connections (AES-128).
pub fn key_settings() -> Option<KeySettings> {
    Some(KeySettings {
        key_size: KeySize::AES128,
        passphrase: Passphrase::try_from(PASSPHRASE.to_owned()).ok()?,
    })
}

/// The induction and conclusion datagrams of an srt-protocol caller (as srt-tokio's callers
/// send them), with a passphrase or not.
pub fn caller_handshake(key: Option<KeySettings>, now: Instant) -> Option<(Bytes, Bytes)> {
    let settings = ConnInitSettings {
        key_settings: key,
        ..ConnInitSettings::default()
    };
    let mut caller = Connect::new(
        LISTENER,
        CALLER.ip(),
        settings,
        Some("live/cam1,token=t".to_owned()),
        SeqNumber::new_truncate(7),
    );
    let ConnectionResult::SendPacket((induction, _)) = caller.handle_tick(now) else {
        return None;
    };
    let mut listen = Listen::new(ConnInitSettings::default(), true);
    let ConnectionResult::SendPacket(answer) =
        listen.handle_packet(now, Ok((induction.clone(), CALLER)))
    else {
        return None;
    };
    let ConnectionResult::SendPacket((conclusion, _)) =
        caller.handle_packet(Ok((answer.0, LISTENER)), now)
    else {
        return None;
    };
    Some((handshake::bytes(&induction), handshake::bytes(&conclusion)))
}

/// The listener's side of `conclusion` as the engine opens it (encrypted with `key`, or plain),
/// in `role`.
pub fn open_connection(
    conclusion: &[u8],
    key: Option<KeySettings>,
    role: Role,
    now: Instant,
) -> Option<DuplexConnection> {
    let hs = handshake::read(conclusion).ok()?;
    let keys = match key {
        Some(k) => Some(KeySettings {
            key_size: hs.key_size()?,
            passphrase: k.passphrase,
        }),
        None => None,
    };
    let cipher = handshake::cipher(&hs, keys.as_ref()).ok()?;
    let accepted = handshake::accept(&hs, CALLER, LOCAL_ID, cipher, role, now);
    Some(DuplexConnection::new(accepted.connection))
}

/// Runs one fuzz input (see the module's documentation).
pub fn datagrams(data: &[u8]) {
    let Some((&options, mut rest)) = data.split_first() else {
        return;
    };
    let key = if options & 1 == 1 {
        key_settings()
    } else {
        None
    };
    let start = Instant::now();
    let Some((_, conclusion)) = caller_handshake(key.clone(), start) else {
        return;
    };
    let (Some(mut viewer), Some(mut publisher)) = (
        open_connection(&conclusion, key.clone(), Role::Sender, start),
        open_connection(&conclusion, key, Role::Receiver, start),
    ) else {
        return;
    };
    let mut now = start;
    for _ in 0..MAX_DATAGRAMS {
        let Some((len, tail)) = rest.split_first_chunk::<2>() else {
            break;
        };
        let len = usize::from(u16::from_be_bytes(*len)).min(tail.len());
        let (datagram, tail) = tail.split_at(len);
        rest = tail;
        now += Duration::from_millis(10);
        if handshake::is_handshake(datagram) {
            let _ = handshake::read(datagram);
            continue;
        }
        if handshake::dest_socket(datagram).is_none() || guard::check(datagram).is_err() {
            continue;
        }
        // Addressed to these connections, as the engine's routing would need.
        let mut addressed = datagram.to_vec();
        if let Some(dest) = addressed.get_mut(12..16) {
            dest.copy_from_slice(&LOCAL_ID.to_be_bytes());
        }
        let Ok(packet) = Packet::parse(&mut Cursor::new(&addressed[..]), false) else {
            continue;
        };
        viewer.handle_data_input(now, Some((now, Bytes::from_static(&[0x47; 188]))));
        for conn in [&mut viewer, &mut publisher] {
            conn.handle_packet_input(now, Ok((packet.clone(), CALLER)));
            conn.check_timers(now);
            while conn.next_packet(now).is_some() {}
            while conn.next_data(now).is_some() {}
        }
    }
}
