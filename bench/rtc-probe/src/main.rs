//! What a WebRTC viewer costs on `rtc` (the sans-IO rewrite of webrtc-rs), for comparison with
//! `bench/str0m-probe` and the server's `webrtc` crate under `scripts/bench --webrtc`.
//!
//! `rtc-probe server PORT [KBPS] [VIDEO_BUFFER]` sends a stream of KBPS kbit/s (H.264 frames at
//! 30 per second with a keyframe every 2 s, and 20 ms Opus frames) to every peer that connects:
//! one thread, one UDP socket (datagrams are routed to peers by remote address, learned from the
//! ICE username of each peer's first STUN request), ICE lite, SRTP_AES128_CM_HMAC_SHA1_80, frames
//! packetized per peer with `rtc`'s RTP packetizer and written with `RTCRtpSender::write_rtp`,
//! VIDEO_BUFFER packets kept for resends per peer by the NACK responder interceptor (256, as the
//! server keeps; a power of two, as the interceptor requires), resent as RTX. Offers come over
//! TCP on PORT (4-byte big-endian length, then the SDP). Every 5 s it prints its CPU (a share of one core),
//! the datagrams it sent per second, and its anonymous RSS per connected peer, in the same format
//! as `str0m-probe server`. Crypto is aws-lc-rs (as in the str0m probe); the interceptors are
//! the NACK responder and RTCP sender and receiver reports (no TWCC, no pacer).
//!
//! It has no client: use the str0m probe's,
//! `bench/str0m-probe/target/release/str0m-probe client 127.0.0.1:PORT N RAMP_SECONDS HOLD_SECONDS`.
//!
//! Outside the workspace (its own lock file), so that `rtc`'s stack is built only here:
//! `cargo run --release --manifest-path bench/rtc-probe/Cargo.toml -- server 47000`. The
//! signaling, the stream and the report are `bench/probe-harness.rs`, shared with the str0m
//! probe.
use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::time::Instant;

#[path = "../../probe-harness.rs"]
mod harness;

use harness::{write_msg, Report, Source};

use bytes::{Bytes, BytesMut};
use rtc::dtls::extension::extension_use_srtp::SrtpProtectionProfile;
use rtc::interceptor::{NackResponderBuilder, ReceiverReportBuilder, SenderReportBuilder};
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::configuration::interceptor_registry::{Registry, Slot};
use rtc::peer_connection::configuration::media_engine::{
    MediaEngine, MIME_TYPE_H264, MIME_TYPE_OPUS, MIME_TYPE_RTX,
};
use rtc::peer_connection::configuration::setting_engine::SettingEngineBuilder;
use rtc::peer_connection::configuration::RTCConfigurationBuilder;
use rtc::peer_connection::event::RTCPeerConnectionEvent;
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::peer_connection::state::RTCPeerConnectionState;
use rtc::peer_connection::transport::{CandidateConfig, CandidateHostConfig, RTCIceCandidate};
use rtc::peer_connection::{RTCPeerConnection, RTCPeerConnectionBuilder};
use rtc::rtp::packetizer::{new_packetizer, Packetizer};
use rtc::rtp::sequence::new_random_sequencer;
use rtc::rtp_transceiver::rtp_sender::{
    RTCPFeedback, RTCRtpCodec, RTCRtpCodecParameters, RTCRtpCodingParameters,
    RTCRtpEncodingParameters, RTCRtpRtxParameters, RtpCodecKind, TYPE_RTCP_FB_NACK,
};
use rtc::rtp_transceiver::RTCRtpSenderId;
use rtc::sansio::Protocol;
use rtc::shared::{TaggedBytesMut, TransportContext, TransportProtocol};

type BoxError = Box<dyn std::error::Error>;

/// RTP packets are cut to fit this many bytes (before SRTP's tag).
const MTU: usize = 1200;

fn h264() -> RTCRtpCodec {
    RTCRtpCodec {
        mime_type: MIME_TYPE_H264.to_owned(),
        clock_rate: 90000,
        channels: 0,
        sdp_fmtp_line: "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f"
            .to_owned(),
        rtcp_feedback: vec![],
    }
}

fn opus() -> RTCRtpCodec {
    RTCRtpCodec {
        mime_type: MIME_TYPE_OPUS.to_owned(),
        clock_rate: 48000,
        channels: 2,
        sdp_fmtp_line: "minptime=10;useinbandfec=1".to_owned(),
        rtcp_feedback: vec![],
    }
}

/// H.264 (with RTX) and Opus only, NACK (and PLI) offered for video, a NACK responder keeping
/// `video_buffer` packets per video stream, and RTCP sender and receiver reports.
fn media(video_buffer: u16) -> Result<(MediaEngine, Registry), BoxError> {
    let mut m = MediaEngine::default();
    m.register_codec(
        RTCRtpCodecParameters {
            rtp_codec: h264(),
            payload_type: 102,
        },
        RtpCodecKind::Video,
    )?;
    // Resends go out as RTX (RFC 4588), as str0m sends them; a str0m receiver asks for none
    // unless RTX is negotiated.
    m.register_codec(
        RTCRtpCodecParameters {
            rtp_codec: RTCRtpCodec {
                mime_type: MIME_TYPE_RTX.to_owned(),
                clock_rate: 90000,
                channels: 0,
                sdp_fmtp_line: "apt=102".to_owned(),
                rtcp_feedback: vec![],
            },
            payload_type: 103,
        },
        RtpCodecKind::Video,
    )?;
    m.register_codec(
        RTCRtpCodecParameters {
            rtp_codec: opus(),
            payload_type: 111,
        },
        RtpCodecKind::Audio,
    )?;
    for parameter in ["", "pli"] {
        m.register_feedback(
            RTCPFeedback {
                typ: TYPE_RTCP_FB_NACK.to_owned(),
                parameter: parameter.to_owned(),
            },
            RtpCodecKind::Video,
        );
    }
    let registry = Registry::new()
        .with(
            Slot::NackResponder,
            NackResponderBuilder::new().with_size(video_buffer).build(),
        )
        .with(Slot::SenderReport, SenderReportBuilder::new().build())
        .with(Slot::ReceiverReport, ReceiverReportBuilder::new().build());
    Ok((m, registry))
}

/// One outgoing track of a peer: its sender, and the packetizer that cuts frames for it with
/// the payload type the offer gave the codec.
struct Track {
    sender: RTCRtpSenderId,
    packetizer: Box<dyn Packetizer>,
}

struct Peer {
    pc: RTCPeerConnection,
    timeout: Option<Instant>,
    connected: bool,
    alive: bool,
    video: Option<Track>,
    audio: Option<Track>,
}

/// Builds a peer for `offer` with the ICE username fragment `ufrag`, and returns it with its
/// answer.
fn answer(
    offer: String,
    ufrag: String,
    local: SocketAddr,
    video_buffer: u16,
    now: Instant,
) -> Result<(Peer, String), BoxError> {
    let (media_engine, registry) = media(video_buffer)?;
    let pwd = format!("{:016x}{:016x}", rand_u64(), rand_u64());
    let settings = SettingEngineBuilder::new()
        .with_lite(true)
        .with_ice_credentials(ufrag, pwd)
        .with_srtp_protection_profiles(vec![SrtpProtectionProfile::Srtp_Aes128_Cm_Hmac_Sha1_80])
        .build();
    let mut pc = RTCPeerConnectionBuilder::new()
        .with_configuration(RTCConfigurationBuilder::new().build())
        .with_setting_engine(settings)
        .with_media_engine(media_engine)
        .with_interceptor_registry(registry)
        .build(now)?;
    let mut senders = Vec::new();
    for (kind, codec) in [(RtpCodecKind::Video, h264()), (RtpCodecKind::Audio, opus())] {
        let ssrc = rand_u64() as u32;
        let rtx = (kind == RtpCodecKind::Video).then(|| RTCRtpRtxParameters {
            ssrc: rand_u64() as u32,
        });
        let track = MediaStreamTrack::new(
            format!("probe-{kind}"),
            format!("probe-{kind}-{ssrc:08x}"),
            format!("probe-{kind}"),
            kind,
            vec![RTCRtpEncodingParameters {
                rtp_coding_parameters: RTCRtpCodingParameters {
                    ssrc: Some(ssrc),
                    rtx,
                    ..Default::default()
                },
                codec,
                ..Default::default()
            }],
        );
        senders.push((kind, pc.add_track(track)?, ssrc));
    }
    pc.set_remote_description(now, RTCSessionDescription::offer(offer)?)?;
    let candidate = CandidateHostConfig {
        base_config: CandidateConfig {
            network: "udp".to_owned(),
            address: local.ip().to_string(),
            port: local.port(),
            component: 1,
            ..Default::default()
        },
        ..Default::default()
    }
    .new_candidate_host()?;
    pc.add_local_candidate(RTCIceCandidate::from(&candidate).to_json()?)?;
    let answer = pc.create_answer(None)?;
    pc.set_local_description(now, answer)?;
    let sdp = pc.local_description().ok_or("no local description")?.sdp;
    let mut peer = Peer {
        pc,
        timeout: None,
        connected: false,
        alive: true,
        video: None,
        audio: None,
    };
    for (kind, id, ssrc) in senders {
        let Some(mut sender) = peer.pc.rtp_sender(id) else {
            continue;
        };
        let (mime, clock_rate) = match kind {
            RtpCodecKind::Video => (MIME_TYPE_H264, 90000),
            _ => (MIME_TYPE_OPUS, 48000),
        };
        // The first codec of the kind that the answer kept, with the offer's payload type.
        let Some(codec) = sender
            .get_parameters()
            .rtp_parameters
            .codecs
            .iter()
            .find(|c| c.rtp_codec.mime_type.eq_ignore_ascii_case(mime))
            .cloned()
        else {
            continue;
        };
        let packetizer = Box::new(new_packetizer(
            now,
            MTU,
            codec.payload_type,
            ssrc,
            codec.rtp_codec.payloader()?,
            Box::new(new_random_sequencer()),
            clock_rate,
        ));
        let track = Some(Track {
            sender: id,
            packetizer,
        });
        match kind {
            RtpCodecKind::Video => peer.video = track,
            _ => peer.audio = track,
        }
    }
    Ok((peer, sdp))
}

/// A cheap pseudo-random number (xorshift seeded from the clock); enough for SSRCs and ICE
/// passwords in a benchmark.
fn rand_u64() -> u64 {
    use std::cell::Cell;
    thread_local!(static STATE: Cell<u64> = Cell::new(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0x9e37_79b9_7f4a_7c15, |d| d.as_nanos() as u64)
            | 1
    ));
    STATE.with(|s| {
        let mut x = s.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        s.set(x);
        x
    })
}

fn drain(p: &mut Peer, sock: &UdpSocket, sent: &mut u64) {
    while let Some(t) = p.pc.poll_write() {
        let _ = sock.send_to(&t.message, t.transport.peer_addr);
        *sent += 1;
    }
    while let Some(e) = p.pc.poll_event() {
        if let RTCPeerConnectionEvent::OnConnectionStateChangeEvent(s) = e {
            match s {
                RTCPeerConnectionState::Connected => p.connected = true,
                RTCPeerConnectionState::Disconnected
                | RTCPeerConnectionState::Failed
                | RTCPeerConnectionState::Closed => {
                    p.connected = false;
                    p.alive = false;
                }
                _ => {}
            }
        }
    }
    // Incoming RTCP (receiver reports, NACKs, PLIs) has been handled by the interceptors by
    // now; nothing here wants it.
    while p.pc.poll_read().is_some() {}
    p.timeout = p.pc.poll_timeout();
    if !p.alive {
        let _ = p.pc.close();
        while p.pc.poll_write().is_some() {}
        p.timeout = None;
    }
}

fn fail(p: &mut Peer, e: impl std::fmt::Display) {
    eprintln!("peer error {e}");
    p.connected = false;
    p.alive = false;
    let _ = p.pc.close();
    p.timeout = None;
}

/// Packetizes one frame for the track `track` picks of every connected peer and writes it.
fn write_all(
    peers: &mut [Peer],
    track: impl Fn(&mut Peer) -> Option<&mut Track>,
    now: Instant,
    samples: u32,
    data: &Bytes,
    sock: &UdpSocket,
    sent: &mut u64,
) {
    for p in peers.iter_mut().filter(|p| p.connected) {
        let Some(t) = track(p) else { continue };
        let id = t.sender;
        let packets = match t.packetizer.packetize(now, data, samples) {
            Ok(packets) => packets,
            Err(e) => {
                fail(p, e);
                continue;
            }
        };
        let Some(mut sender) = p.pc.rtp_sender(id) else {
            continue;
        };
        let mut error = None;
        for packet in packets {
            if let Err(e) = sender.write_rtp(now, packet) {
                error = Some(e);
                break;
            }
        }
        match error {
            Some(e) => fail(p, e),
            None => drain(p, sock, sent),
        }
    }
}

/// The ICE username fragment of ours that a STUN binding request names (USERNAME is
/// "ours:theirs"), if `b` is one.
fn stun_ufrag(b: &[u8]) -> Option<&str> {
    if b.len() < 20 || b[0] > 3 || b[4..8] != [0x21, 0x12, 0xa4, 0x42] {
        return None;
    }
    let mut i = 20;
    while i + 4 <= b.len() {
        let typ = u16::from_be_bytes([b[i], b[i + 1]]);
        let len = u16::from_be_bytes([b[i + 2], b[i + 3]]) as usize;
        let value = b.get(i + 4..i + 4 + len)?;
        if typ == 0x0006 {
            let user = std::str::from_utf8(value).ok()?;
            return user.split(':').next();
        }
        i += 4 + len.div_ceil(4) * 4;
    }
    None
}

fn server(tcp_port: u16, kbps: u64, video_buffer: u16) {
    let offers = harness::offers(tcp_port);
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let local = sock.local_addr().unwrap();
    eprintln!("udp {local}");
    let mut peers: Vec<Peer> = Vec::new();
    let mut by_ufrag: HashMap<String, usize> = HashMap::new();
    let mut by_addr: HashMap<SocketAddr, usize> = HashMap::new();
    let mut buf = vec![0u8; 2000];
    let mut sent = 0u64;
    let start = Instant::now();
    let mut source = Source::new(kbps, start);
    let mut report = Report::new(start);
    loop {
        report.iteration();
        let now = Instant::now();
        // New offers.
        while let Ok((offer, mut s)) = offers.try_recv() {
            let ufrag = format!("rp{:06x}", peers.len());
            match answer(offer, ufrag.clone(), local, video_buffer, now) {
                Ok((mut p, sdp)) => {
                    write_msg(&mut s, &sdp);
                    drain(&mut p, &sock, &mut sent);
                    by_ufrag.insert(ufrag, peers.len());
                    peers.push(p);
                }
                Err(e) => eprintln!("offer refused: {e}"),
            }
        }
        let now = Instant::now();
        for p in peers.iter_mut() {
            if p.alive && p.timeout.is_some_and(|t| t <= now) {
                match p.pc.handle_timeout(now) {
                    Ok(()) => drain(p, &sock, &mut sent),
                    Err(e) => fail(p, e),
                }
            }
        }
        if let Some((_, data)) = source.video(now) {
            write_all(
                &mut peers,
                |p| p.video.as_mut(),
                now,
                3000,
                &Bytes::from(data),
                &sock,
                &mut sent,
            );
        }
        if let Some((_, data)) = source.audio(now) {
            write_all(
                &mut peers,
                |p| p.audio.as_mut(),
                now,
                960,
                &Bytes::from(data),
                &sock,
                &mut sent,
            );
        }
        let live = || peers.iter().filter(|p| p.connected && p.alive).count();
        report.tick(now, peers.len(), live, sent);
        // Wait for a datagram or the next deadline (offers wait at most 20 ms, the audio
        // interval).
        let mut due = source.next_due().min(report.next_due());
        for p in &peers {
            if let Some(t) = p.timeout.filter(|_| p.alive) {
                due = due.min(t);
            }
        }
        let wait = due.saturating_duration_since(Instant::now());
        if wait.is_zero() {
            continue;
        }
        sock.set_read_timeout(Some(wait)).unwrap();
        if let Ok((n, from)) = sock.recv_from(&mut buf) {
            let idx = match by_addr.get(&from) {
                Some(&i) => Some(i),
                None => {
                    let i = stun_ufrag(&buf[..n]).and_then(|u| by_ufrag.get(u).copied());
                    if let Some(i) = i {
                        by_addr.insert(from, i);
                    }
                    i
                }
            };
            let Some(i) = idx else { continue };
            let p = &mut peers[i];
            if !p.alive {
                continue;
            }
            let r = p.pc.handle_read(TaggedBytesMut {
                now: Instant::now(),
                transport: TransportContext {
                    local_addr: local,
                    peer_addr: from,
                    ecn: None,
                    transport_protocol: TransportProtocol::UDP,
                },
                message: BytesMut::from(&buf[..n]),
            });
            match r {
                Ok(()) => drain(p, &sock, &mut sent),
                Err(e) => fail(p, e),
            }
        }
    }
}

/// VIDEO_BUFFER, 256 if not given. The NACK responder keeps no packets at all for a size that
/// is not a power of two, so such a size is refused here.
fn video_buffer(arg: Option<&String>) -> u16 {
    let n: u16 = arg.map_or(256, |a| a.parse().unwrap());
    if !n.is_power_of_two() {
        eprintln!("VIDEO_BUFFER must be a power of two from 1 to 32768");
        std::process::exit(2);
    }
    n
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("server") => server(
            args[2].parse().unwrap(),
            args.get(3).map_or(1000, |a| a.parse().unwrap()),
            video_buffer(args.get(4)),
        ),
        _ => {
            eprintln!("usage: rtc-probe server PORT [KBPS] [VIDEO_BUFFER]");
            std::process::exit(2);
        }
    }
}
