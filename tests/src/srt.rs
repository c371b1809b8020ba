//! SRT from the caller's side: URLs and ffmpeg arguments for MPEG-TS over SRT, an srt-tokio
//! caller that reports the rejection code (ffmpeg prints only "Input/output error"), and a raw
//! handshake for what no SRT library sends (a `streamid` over 512 bytes) or plain garbage.

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use srt_protocol::protocol::pending_connection::ConnectionReject;
use srt_tokio::SrtSocket;

/// An ffmpeg SRT URL for `streamid` (written as given: ffmpeg 5.1 passes it on verbatim),
/// with extra `&key=value` options.
pub fn url(addr: SocketAddr, streamid: &str, extra: &str) -> String {
    format!("srt://{addr}?streamid={streamid}{extra}")
}

/// Test pattern with a tone, as [`crate::ffmpeg::publish_args`], but as MPEG-TS to an SRT
/// URL.
pub fn publish_args(url: &str, seconds: Option<u32>) -> Vec<String> {
    let mut args = crate::ffmpeg::publish_args(url, seconds);
    let n = args.len();
    // ... "-f", "flv", url  ->  ... "-f", "mpegts", url
    args[n - 2] = "mpegts".into();
    args
}

/// Records `seconds` of an SRT URL into an MPEG-TS file, with stream copy.
pub fn record_args(url: &str, seconds: u32, out: &std::path::Path) -> Vec<String> {
    let mut args = crate::ffmpeg::record_args(url, seconds, out);
    let n = args.len();
    args[n - 2] = "mpegts".into();
    args
}

/// How an srt-tokio call ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallResult {
    /// Connected (and closed again at once).
    Connected,
    /// Refused with this code, as libsrt reports it (1401, 1404, ...; core codes below 1000).
    Rejected(i32),
    /// Some other failure (timeout, local error).
    Failed(String),
}

/// Calls `addr` with `streamid` (and a passphrase with its key size: 0, 16, 24 or 32) and
/// reports the outcome.
pub fn call(addr: SocketAddr, streamid: &str, passphrase: Option<(&str, u16)>) -> CallResult {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut builder = SrtSocket::builder();
        if let Some((pass, size)) = passphrase {
            builder = builder.encryption(size, pass);
        }
        match builder.call(addr, Some(streamid)).await {
            Ok(mut socket) => {
                let _ = socket.close_and_finish().await;
                CallResult::Connected
            }
            Err(e) => match e
                .get_ref()
                .and_then(|i| i.downcast_ref::<ConnectionReject>())
            {
                Some(ConnectionReject::Rejected(reason)) => {
                    CallResult::Rejected(i32::from(*reason) - 1000)
                }
                _ => CallResult::Failed(e.to_string()),
            },
        }
    })
}

/// SRT's handshake magic in the induction response.
const SRT_MAGIC: u16 = 0x4a17;

/// A raw HSv5 caller handshake up to the listener's answer to the conclusion, carrying
/// `streamid` as the SID extension whatever its length. Returns the answer's handshake type:
/// 0xffffffff (conclusion) if accepted, otherwise the rejection code as libsrt reports it.
pub fn raw_handshake(addr: SocketAddr, streamid: &[u8]) -> Option<i64> {
    raw_handshake_with(addr, streamid, &[])
}

/// [`raw_handshake`] with `extra` extension blocks (type, body) after the SID.
pub fn raw_handshake_with(
    addr: SocketAddr,
    streamid: &[u8],
    extra: &[(u16, &[u8])],
) -> Option<i64> {
    let (_, answer) = caller(addr, 0x1234_5678, streamid, extra, |r| {
        let kind = be32(r, 16 + 20);
        (kind != 1).then_some(if kind == 0xffff_ffff {
            i64::from(kind)
        } else {
            i64::from(kind) - 1000
        })
    })?;
    Some(answer)
}

/// A caller that completes the handshake by hand for `streamid` and then says nothing: its
/// socket and the listener's socket id for it (the destination of its packets), if accepted.
pub fn connect_raw(addr: SocketAddr, streamid: &[u8]) -> Option<(UdpSocket, u32)> {
    caller(addr, 0x2345_6789, streamid, &[], |r| {
        (be32(r, 16 + 20) == 0xffff_ffff).then(|| be32(r, 16 + 24))
    })
}

/// A caller `socket_id` on a socket of its own: induction, then the conclusion for `streamid`
/// with `extra` blocks, until `answer` takes the listener's reply. The socket and what
/// `answer` made of the reply.
fn caller<T>(
    addr: SocketAddr,
    socket_id: u32,
    streamid: &[u8],
    extra: &[(u16, &[u8])],
    answer: impl Fn(&[u8]) -> Option<T>,
) -> Option<(UdpSocket, T)> {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let cookie = cookie(&socket, addr, socket_id)?;
    let conclusion = conclusion(socket_id, cookie, streamid, extra);
    let answer = exchange(&socket, addr, &conclusion, answer)?;
    Some((socket, answer))
}

/// An SRT control packet of `kind` to socket `dest`, with `info` and a body of `words`.
pub fn control(kind: u16, info: u32, dest: u32, words: &[u32]) -> Vec<u8> {
    let mut p = (0x8000_0000u32 | u32::from(kind) << 16)
        .to_be_bytes()
        .to_vec();
    p.extend_from_slice(&info.to_be_bytes());
    p.extend_from_slice(&0u32.to_be_bytes());
    p.extend_from_slice(&dest.to_be_bytes());
    for w in words {
        p.extend_from_slice(&w.to_be_bytes());
    }
    p
}

/// The listener's SYN cookie for `socket` (an induction, answered).
pub fn cookie(socket: &UdpSocket, addr: SocketAddr, socket_id: u32) -> Option<u32> {
    let induction = handshake(4, 2, 1, socket_id, 0, &[]);
    exchange(socket, addr, &induction, |r| {
        (be16(r, 16 + 6) == SRT_MAGIC).then(|| be32(r, 16 + 28))
    })
}

/// An HSv5 conclusion from `socket_id` with `cookie`: libsrt's HSREQ, the stream id, and
/// `extra` extension blocks (type, body in the protocol's word order).
pub fn conclusion(socket_id: u32, cookie: u32, streamid: &[u8], extra: &[(u16, &[u8])]) -> Vec<u8> {
    let mut ext = Vec::new();
    // HSREQ: SRT version 1.4.1, flags (TSBPD both ways, TLPKTDROP, NAKREPORT, REXMITFLG),
    // 120 ms latency each way.
    ext.extend_from_slice(&1u16.to_be_bytes());
    ext.extend_from_slice(&3u16.to_be_bytes());
    ext.extend_from_slice(&0x0001_0401u32.to_be_bytes());
    ext.extend_from_slice(&0x0000_00bfu32.to_be_bytes());
    ext.extend_from_slice(&((120u32 << 16) | 120).to_be_bytes());
    let mut block = |kind: u16, text: &[u8]| {
        // Strings: the bytes in 32-bit words, each word little-endian.
        let mut b = text.to_vec();
        b.resize(b.len().div_ceil(4) * 4, 0);
        ext.extend_from_slice(&kind.to_be_bytes());
        ext.extend_from_slice(&u16::try_from(b.len() / 4).unwrap().to_be_bytes());
        for word in b.chunks(4) {
            ext.extend(word.iter().rev());
        }
    };
    block(5, streamid);
    for (kind, body) in extra {
        block(*kind, body);
    }
    // Extension flags: HSREQ | CONFIG (the SID).
    handshake(5, 0x0005, 0xffff_ffff, socket_id, cookie, &ext)
}

/// A handshake control packet to the listener (destination socket 0).
fn handshake(
    version: u32,
    ext_field: u16,
    kind: u32,
    socket_id: u32,
    cookie: u32,
    ext: &[u8],
) -> Vec<u8> {
    // Control type 0, handshake, to destination socket 0.
    let mut p = control(0, 0, 0, &[]);
    p.extend_from_slice(&version.to_be_bytes());
    p.extend_from_slice(&0u16.to_be_bytes()); // encryption: none
    p.extend_from_slice(&ext_field.to_be_bytes());
    p.extend_from_slice(&0x0100_0000u32.to_be_bytes()); // initial sequence number
    p.extend_from_slice(&1500u32.to_be_bytes()); // MTU
    p.extend_from_slice(&8192u32.to_be_bytes()); // flow window
    p.extend_from_slice(&kind.to_be_bytes());
    p.extend_from_slice(&socket_id.to_be_bytes());
    p.extend_from_slice(&cookie.to_be_bytes());
    p.extend_from_slice(&[127, 0, 0, 1]);
    p.extend_from_slice(&[0; 12]);
    p.extend_from_slice(ext);
    p
}

/// Sends `packet` (again every 250 ms) until an answer `check` accepts, for 3 s.
fn exchange<T>(
    socket: &UdpSocket,
    addr: SocketAddr,
    packet: &[u8],
    check: impl Fn(&[u8]) -> Option<T>,
) -> Option<T> {
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut buf = [0u8; 2048];
    while Instant::now() < deadline {
        socket.send_to(packet, addr).unwrap();
        let until = Instant::now() + Duration::from_millis(250);
        while Instant::now() < until {
            if let Ok((n, _)) = socket.recv_from(&mut buf) {
                let r = &buf[..n];
                if n >= 64 && r[0] & 0x80 != 0 && be16(r, 0) & 0x7fff == 0 {
                    if let Some(v) = check(r) {
                        return Some(v);
                    }
                }
            }
        }
    }
    None
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Sends `count` datagrams of pseudo-random bytes and lengths to `addr`, some shaped like
/// SRT control packets (handshakes, shutdowns, ACKs) with random bodies.
pub fn spray_garbage(addr: SocketAddr, count: usize, seed: u32) {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut s = seed.max(1);
    let mut next = move || {
        s ^= s << 13;
        s ^= s >> 17;
        s ^= s << 5;
        s
    };
    for i in 0..count {
        let len = (next() % 1500) as usize;
        let mut d: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        if i % 2 == 0 && d.len() >= 4 {
            // A control packet of a random type, to socket 0 or a random socket.
            d[0] = 0x80;
            d[1] = (next() % 8) as u8;
        }
        if i % 4 == 0 && d.len() >= 16 {
            d[12..16].copy_from_slice(&[0, 0, 0, 0]);
        }
        let _ = socket.send_to(&d, addr);
        if i % 50 == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

/// A UDP relay between one caller and the server, on loopback: it drops a share of the
/// datagrams each way (seeded, so a run is repeatable) for a time from its start, and delays
/// every datagram by a fixed time each way. It stops when dropped.
pub struct Relay {
    /// Where the caller sends to.
    pub addr: SocketAddr,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Relay {
    /// Drops `loss` of the datagrams each way for `lossy_for`, then none.
    pub fn lossy(server: SocketAddr, loss: f64, lossy_for: Duration) -> Self {
        Self::start(server, loss, lossy_for, Duration::ZERO)
    }

    /// Delays every datagram by `one_way` each way: a peer `2 * one_way` away.
    pub fn delayed(server: SocketAddr, one_way: Duration) -> Self {
        Self::start(server, 0.0, Duration::ZERO, one_way)
    }

    fn start(server: SocketAddr, loss: f64, lossy_for: Duration, delay: Duration) -> Self {
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::sync::{mpsc, Arc, Mutex};
        let socket = || {
            let s =
                socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None).unwrap();
            // Room for bursts, so that the relay drops only what it means to.
            let _ = s.set_recv_buffer_size(4 << 20);
            let _ = s.set_send_buffer_size(4 << 20);
            s.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
                .unwrap();
            UdpSocket::from(s)
        };
        let front = socket();
        let back = socket();
        for s in [&front, &back] {
            s.set_read_timeout(Some(Duration::from_millis(100)))
                .unwrap();
        }
        let addr = front.local_addr().unwrap();
        let client: Arc<Mutex<Option<SocketAddr>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let threshold = (loss * f64::from(u32::MAX)) as u32;
        let lossless_from = Instant::now() + lossy_for;
        let mut threads = Vec::new();
        for dir in 0..2 {
            let (from, to) = if dir == 0 {
                (front.try_clone().unwrap(), back.try_clone().unwrap())
            } else {
                (back.try_clone().unwrap(), front.try_clone().unwrap())
            };
            // Datagrams go out from a thread of their own, each at its time.
            let (line, due) = mpsc::channel::<(Instant, Vec<u8>)>();
            let (out_client, out_stop) = (Arc::clone(&client), Arc::clone(&stop));
            threads.push(std::thread::spawn(move || {
                while !out_stop.load(Ordering::Relaxed) {
                    let Ok((at, datagram)) = due.recv_timeout(Duration::from_millis(100)) else {
                        continue;
                    };
                    std::thread::sleep(at.saturating_duration_since(Instant::now()));
                    let dest = if dir == 0 {
                        Some(server)
                    } else {
                        *out_client.lock().unwrap()
                    };
                    if let Some(dest) = dest {
                        let _ = to.send_to(&datagram, dest);
                    }
                }
            }));
            let (client, stop) = (Arc::clone(&client), Arc::clone(&stop));
            threads.push(std::thread::spawn(move || {
                let mut seed: u32 = 0x9e37_79b9 ^ dir;
                let mut buf = vec![0u8; 2048];
                while !stop.load(Ordering::Relaxed) {
                    let Ok((n, peer)) = from.recv_from(&mut buf) else {
                        continue;
                    };
                    seed ^= seed << 13;
                    seed ^= seed >> 17;
                    seed ^= seed << 5;
                    if seed < threshold && Instant::now() < lossless_from {
                        continue;
                    }
                    if dir == 0 {
                        *client.lock().unwrap() = Some(peer);
                    }
                    let _ = line.send((Instant::now() + delay, buf[..n].to_vec()));
                }
            }));
        }
        Self {
            addr,
            stop,
            threads,
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}
