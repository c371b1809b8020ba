//! Native WebRTC viewers over WHEP: each one a peer connection (ICE, DTLS, SRTP through the
//! `webrtc` crate, the same release the server runs) that offers to receive H.264 and Opus,
//! posts its offer with the play token as the bearer, and counts what arrives: the stamped
//! frames' sequence numbers (drops), their send times (latency), and the bytes of both tracks.
//! One process holds hundreds of them; they gather loopback candidates only.

use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;
use webrtc::api::interceptor_registry::register_default_interceptors;
use webrtc::api::media_engine::MediaEngine;
use webrtc::api::setting_engine::SettingEngine;
use webrtc::api::{APIBuilder, API};
use webrtc::ice::mdns::MulticastDnsMode;
use webrtc::ice::network_type::NetworkType;
use webrtc::interceptor::registry::Registry;
use webrtc::peer_connection::configuration::RTCConfiguration;
use webrtc::peer_connection::peer_connection_state::RTCPeerConnectionState;
use webrtc::peer_connection::sdp::session_description::RTCSessionDescription;
use webrtc::rtp_transceiver::rtp_codec::RTPCodecType;
use webrtc::rtp_transceiver::rtp_transceiver_direction::RTCRtpTransceiverDirection;
use webrtc::rtp_transceiver::RTCRtpTransceiverInit;
use webrtc::track::track_remote::TrackRemote;

use crate::stats::{Collector, Counters, Meter};
use crate::synth;

/// Where the viewers play: the HTTP address, the stream (`app/name`) and the bearer.
#[derive(Debug, Clone)]
pub struct Target {
    /// host:port of the HTTP listener.
    pub addr: String,
    /// app/name.
    pub stream: String,
    /// Subscribe token, if the stream needs one.
    pub token: Option<String>,
}

/// Longest SDP answer read back.
const MAX_ANSWER: usize = 64 * 1024;
/// How long the offer, the POST and the connection may take.
const SETUP_TIMEOUT: Duration = Duration::from_secs(20);

/// The WebRTC API every viewer's peer connection is made from: the default codecs and
/// interceptors (NACK, receiver reports, TWCC), as a browser has, on loopback only.
pub fn api() -> Result<API, String> {
    let mut media = MediaEngine::default();
    media
        .register_default_codecs()
        .map_err(|e| format!("webrtc codecs: {e}"))?;
    let registry = register_default_interceptors(Registry::new(), &mut media)
        .map_err(|e| format!("webrtc interceptors: {e}"))?;
    let mut settings = SettingEngine::default();
    settings.set_ice_multicast_dns_mode(MulticastDnsMode::Disabled);
    settings.set_network_types(vec![NetworkType::Udp4]);
    settings.set_include_loopback_candidate(true);
    settings.set_ip_filter(Box::new(|ip: IpAddr| ip.is_loopback()));
    Ok(APIBuilder::new()
        .with_media_engine(media)
        .with_interceptor_registry(registry)
        .with_setting_engine(settings)
        .build())
}

/// Plays until `stop` fires or the peer connection ends, then reports like the other viewers.
pub async fn view(
    api: Arc<API>,
    target: Arc<Target>,
    counters: Arc<Counters>,
    collector: Arc<Collector>,
    stop: CancellationToken,
) {
    Counters::inc(&counters.attempted);
    let started = Instant::now();
    // Made when the first track arrives (the viewer is admitted then), shared by both tracks.
    let meter: Arc<Mutex<Option<Meter>>> = Arc::default();
    let pc = match api.new_peer_connection(RTCConfiguration::default()).await {
        Ok(pc) => Arc::new(pc),
        Err(_) => {
            Counters::inc(&counters.failed);
            return;
        }
    };
    let ended = CancellationToken::new();
    {
        let ended = ended.clone();
        pc.on_peer_connection_state_change(Box::new(move |state| {
            if matches!(
                state,
                RTCPeerConnectionState::Failed
                    | RTCPeerConnectionState::Closed
                    | RTCPeerConnectionState::Disconnected
            ) {
                ended.cancel();
            }
            Box::pin(async {})
        }));
    }
    {
        let (meter, counters, stop) = (Arc::clone(&meter), Arc::clone(&counters), stop.clone());
        pc.on_track(Box::new(move |track, _, _| {
            let (meter, counters, stop) = (Arc::clone(&meter), Arc::clone(&counters), stop.clone());
            tokio::spawn(read_track(track, meter, counters, started, stop));
            Box::pin(async {})
        }));
    }
    let setup = tokio::time::timeout(SETUP_TIMEOUT, negotiate(&pc, &target));
    let location = tokio::select! {
        _ = stop.cancelled() => None,
        r = setup => match r {
            Ok(Ok(location)) => {
                Counters::inc(&counters.admitted);
                Some(location)
            }
            Ok(Err(Refusal::Refused)) => {
                Counters::inc(&counters.refused);
                None
            }
            Ok(Err(Refusal::Failed)) | Err(_) => {
                Counters::inc(&counters.failed);
                None
            }
        },
    };
    if location.is_some() {
        tokio::select! {
            _ = stop.cancelled() => {}
            _ = ended.cancelled() => {
                if !stop.is_cancelled() {
                    Counters::inc(&counters.failed);
                }
            }
        }
    }
    if let Some(location) = location {
        let _ = tokio::time::timeout(
            Duration::from_secs(5),
            request(&target, "DELETE", &location, None),
        )
        .await;
    }
    let _ = pc.close().await;
    let meter = meter.lock().unwrap_or_else(PoisonError::into_inner).take();
    collector.add(meter.map(Meter::finish).unwrap_or_default());
}

/// Why a WHEP request did not give a session.
enum Refusal {
    /// The server said no (401, 403, 404, 409).
    Refused,
    /// Anything else.
    Failed,
}

/// Offers to receive video and audio, posts the offer (all candidates in it, as OBS and most
/// WHEP players do) and applies the answer; returns the session's resource path.
async fn negotiate(
    pc: &webrtc::peer_connection::RTCPeerConnection,
    target: &Target,
) -> Result<String, Refusal> {
    for kind in [RTPCodecType::Video, RTPCodecType::Audio] {
        pc.add_transceiver_from_kind(
            kind,
            Some(RTCRtpTransceiverInit {
                direction: RTCRtpTransceiverDirection::Recvonly,
                send_encodings: Vec::new(),
            }),
        )
        .await
        .map_err(|_| Refusal::Failed)?;
    }
    let offer = pc.create_offer(None).await.map_err(|_| Refusal::Failed)?;
    let mut gathered = pc.gathering_complete_promise().await;
    pc.set_local_description(offer)
        .await
        .map_err(|_| Refusal::Failed)?;
    let _ = gathered.recv().await;
    let local = pc.local_description().await.ok_or(Refusal::Failed)?;
    let path = format!("/{}/whep", target.stream);
    let (status, location, body) = request(target, "POST", &path, Some(&local.sdp))
        .await
        .map_err(|_| Refusal::Failed)?;
    match status {
        201 => {}
        401 | 403 | 404 | 409 => return Err(Refusal::Refused),
        _ => return Err(Refusal::Failed),
    }
    let answer = RTCSessionDescription::answer(body).map_err(|_| Refusal::Failed)?;
    pc.set_remote_description(answer)
        .await
        .map_err(|_| Refusal::Failed)?;
    location.ok_or(Refusal::Failed)
}

/// One HTTP/1.1 request on its own connection: (status, Location, body).
async fn request(
    target: &Target,
    method: &str,
    path: &str,
    sdp: Option<&str>,
) -> std::io::Result<(u16, Option<String>, String)> {
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n",
        target.addr
    );
    if let Some(token) = &target.token {
        head.push_str(&format!("Authorization: Bearer {token}\r\n"));
    }
    let body = sdp.unwrap_or_default();
    if sdp.is_some() {
        head.push_str("Content-Type: application/sdp\r\n");
    }
    head.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    let mut s = TcpStream::connect(target.addr.as_str()).await?;
    s.write_all(head.as_bytes()).await?;
    s.write_all(body.as_bytes()).await?;
    let mut raw = Vec::new();
    (&mut s)
        .take(MAX_ANSWER as u64)
        .read_to_end(&mut raw)
        .await?;
    let text = String::from_utf8_lossy(&raw);
    let bad = || std::io::Error::new(std::io::ErrorKind::InvalidData, "malformed HTTP answer");
    let (head, body) = text.split_once("\r\n\r\n").ok_or_else(bad)?;
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(bad)?;
    let location = head.lines().find_map(|l| {
        let (name, value) = l.split_once(':')?;
        name.eq_ignore_ascii_case("location")
            .then(|| value.trim().to_owned())
    });
    Ok((status, location, body.to_owned()))
}

/// Reads a track's RTP until it ends or `stop` fires: bytes of both tracks, and from the
/// video's stamped frames the join time, latency and lost frames.
async fn read_track(
    track: Arc<TrackRemote>,
    meter: Arc<Mutex<Option<Meter>>>,
    counters: Arc<Counters>,
    started: Instant,
    stop: CancellationToken,
) {
    let video = track.kind() == RTPCodecType::Video;
    loop {
        let packet = tokio::select! {
            _ = stop.cancelled() => break,
            r = track.read_rtp() => match r {
                Ok((packet, _)) => packet,
                Err(_) => break,
            },
        };
        let mark = if video {
            synth::find_marker_rtp_h264(&packet.payload)
        } else {
            None
        };
        let mut meter = meter.lock().unwrap_or_else(PoisonError::into_inner);
        let meter = meter.get_or_insert_with(|| Meter::admitted(started));
        meter.bytes(&counters, packet.payload.len());
        if let Some((seq, sent)) = mark {
            meter.frame(&counters, seq, sent, true);
        }
    }
}
