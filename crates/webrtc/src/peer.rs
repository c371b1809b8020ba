//! Every use of the `webrtc` crate (0.17, the classic `RTCPeerConnection` API) lives in this
//! module: building peer connections with the configured ICE settings, SDP offer/answer,
//! candidates, the publisher's incoming tracks and the viewer's outgoing tracks.
//!
//! The rest of the crate sees only the small types defined here ([`PublishPeer`],
//! [`PlayPeer`], [`IncomingTrack`], [`OutgoingTrack`], [`PeerEvent`]); swapping the WebRTC
//! stack means rewriting this file alone.
//!
//! In 0.17 the `on_track` handlers run one at a time, so the handler only hands the track to
//! the session (which spawns its read loop) and returns.
//!
//! The crate's sender-report interceptor is left out: it maps each packet's RTP timestamp to
//! the instant the packet was written, so audio and video written at different delays from
//! their capture (audio in bursts, through a transcode) get mappings that disagree, and a
//! browser lines them up wrongly. A viewer's session writes its reports itself, on the
//! stream's media clock ([`OutgoingTrack::report`]).

use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use streamgate_media::Codec;
use tokio::sync::mpsc;
use webrtc::api::interceptor_registry::configure_twcc_receiver_only;
use webrtc::api::media_engine::{MediaEngine, MIME_TYPE_H264, MIME_TYPE_OPUS, MIME_TYPE_VP8};
use webrtc::api::setting_engine::SettingEngine;
use webrtc::api::{APIBuilder, API};
use webrtc::dtls::extension::extension_use_srtp::SrtpProtectionProfile;
use webrtc::ice::mdns::MulticastDnsMode;
use webrtc::ice::udp_network::{EphemeralUDP, UDPNetwork};
use webrtc::ice_transport::ice_candidate::RTCIceCandidateInit;
use webrtc::ice_transport::ice_candidate_type::RTCIceCandidateType;
use webrtc::interceptor::nack::generator::Generator;
use webrtc::interceptor::nack::responder::Responder;
use webrtc::interceptor::registry::Registry;
use webrtc::interceptor::report::receiver::ReceiverReport;
use webrtc::peer_connection::configuration::RTCConfiguration;
use webrtc::peer_connection::peer_connection_state::RTCPeerConnectionState;
use webrtc::peer_connection::sdp::session_description::RTCSessionDescription;
use webrtc::peer_connection::RTCPeerConnection;
use webrtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use webrtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use webrtc::rtcp::sender_report::SenderReport;
use webrtc::rtp_transceiver::rtp_codec::{
    RTCRtpCodecCapability, RTCRtpCodecParameters, RTPCodecType,
};
use webrtc::rtp_transceiver::rtp_transceiver_direction::RTCRtpTransceiverDirection;
use webrtc::rtp_transceiver::{RTCPFeedback, RTCRtpTransceiverInit};
use webrtc::track::track_local::track_local_static_rtp::TrackLocalStaticRTP;
use webrtc::track::track_local::{TrackLocal, TrackLocalWriter};
use webrtc::track::track_remote::TrackRemote;

use crate::inbound::RtpIn;
use crate::negotiate::{self, prepare_answer, SectionKind};
use crate::outbound::Stamp;
use crate::sdpfrag;

/// Capacity of a peer's event channel to its session. Events are few (candidates, state
/// changes, tracks, keyframe requests); when it is full a keyframe request is dropped (the
/// browser repeats it) and other events wait.
pub const PEER_EVENT_CAPACITY: usize = 64;

/// After this long without ICE traffic a connection counts as disconnected.
const ICE_DISCONNECTED_TIMEOUT: Duration = Duration::from_secs(5);
/// After this long disconnected a connection counts as failed, and the session ends.
const ICE_FAILED_TIMEOUT: Duration = Duration::from_secs(10);
/// Interval of ICE keep-alives.
const ICE_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(2);

/// Largest RTP or RTCP packet read, in bytes.
const RECEIVE_MTU: usize = 1500;

/// Longest wait for the server's ICE candidates before an answer that carries them (WHIP
/// and WHEP answers, which a client gets in one response) goes out with those gathered so
/// far. Host candidates take milliseconds; the server asks no STUN server.
const GATHER_TIMEOUT: Duration = Duration::from_secs(2);

/// ICE settings shared by every peer connection.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IceSettings {
    /// Address announced in host candidates instead of the local one (1:1 NAT); `None`
    /// announces local addresses.
    pub public_ip: Option<IpAddr>,
    /// UDP ports ICE may use, inclusive; `None` lets the OS choose.
    pub udp_ports: Option<(u16, u16)>,
    /// Local addresses to gather candidates on; empty means every interface but loopback.
    pub ips: Vec<IpAddr>,
}

/// What went wrong with a peer connection.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    /// The browser's SDP could not be applied.
    #[error("invalid SDP: {0}")]
    Sdp(String),
    /// The browser's ICE candidate could not be added.
    #[error("invalid ICE candidate: {0}")]
    Candidate(String),
    /// The WebRTC stack failed.
    #[error("WebRTC: {0}")]
    Stack(String),
}

fn stack(e: webrtc::Error) -> PeerError {
    PeerError::Stack(e.to_string())
}

/// Connection states a session acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Connection {
    /// ICE and DTLS are up: media flows.
    Connected,
    /// The connection failed or was closed.
    Gone,
}

/// What a peer connection tells its session.
#[derive(Debug)]
pub enum PeerEvent {
    /// A local ICE candidate to send to the browser.
    Candidate {
        /// The `candidate:` line.
        candidate: String,
        /// m-line index.
        label: u16,
        /// Media id.
        mid: String,
    },
    /// The connection changed state.
    State(Connection),
    /// The publishing browser opened a track.
    Track(IncomingTrack),
    /// A viewer's browser asked for a keyframe (PLI or FIR).
    KeyframeRequest,
}

/// Packets each sent stream keeps for retransmission on a NACK, as a power of two: 256, two
/// and a half seconds of a 1 Mbit/s video, two thirds of a second at 4 Mbit/s (several round
/// trips either way). The history's slots are allocated up front, 112 bytes each: 28 KB a
/// viewer.
const NACK_HISTORY_LOG2: u8 = 8;

/// Which way a peer connection carries media.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// A publisher's: media comes in.
    Publish,
    /// A viewer's: media goes out.
    Play,
}

/// Builds the `API` object for one peer connection with the given codecs.
///
/// The interceptors are the defaults of `register_default_interceptors` but the sender
/// reports (see the module's comment), each only on the side that uses it: a publisher's peer
/// generates NACKs, receiver reports and transport-wide congestion feedback for what it
/// receives; a viewer's answers NACKs from a retransmission history smaller than the crate's
/// default (8192 packets a sent stream, a megabyte per viewer allocated up front). The
/// receiving side's three interceptors each run a task with a ticker (every 100 ms for two of
/// them) for as long as the peer lives, which a viewer's peer, receiving nothing, would run
/// for nothing.
fn build_api(ice: &IceSettings, codecs: &[CodecSpec], role: Role) -> Result<API, PeerError> {
    let mut media = MediaEngine::default();
    for spec in codecs {
        media
            .register_codec(spec.parameters(), spec.kind())
            .map_err(stack)?;
    }
    media.register_feedback(feedback("nack", ""), RTPCodecType::Video);
    media.register_feedback(feedback("nack", "pli"), RTPCodecType::Video);
    let mut registry = Registry::new();
    match role {
        Role::Play => {
            registry.add(Box::new(
                Responder::builder().with_log2_size(NACK_HISTORY_LOG2),
            ));
        }
        Role::Publish => {
            registry.add(Box::new(Generator::builder()));
            registry.add(Box::new(ReceiverReport::builder()));
            registry = configure_twcc_receiver_only(registry, &mut media).map_err(stack)?;
        }
    }
    let mut settings = SettingEngine::default();
    settings.set_ice_timeouts(
        Some(ICE_DISCONNECTED_TIMEOUT),
        Some(ICE_FAILED_TIMEOUT),
        Some(ICE_KEEPALIVE_INTERVAL),
    );
    settings.set_ice_multicast_dns_mode(MulticastDnsMode::Disabled);
    // SRTP with AES-CM and HMAC-SHA1-80 only, the profile every WebRTC endpoint must support
    // (RFC 8827). The crate's AES-GCM path copies each packet's ciphertext a byte at a time:
    // about a fifth of the server's CPU with 100 viewers, where HMAC-SHA1 costs a twentieth.
    settings.set_srtp_protection_profiles(vec![SrtpProtectionProfile::Srtp_Aes128_Cm_Hmac_Sha1_80]);
    if let Some((min, max)) = ice.udp_ports {
        let udp = EphemeralUDP::new(min, max).map_err(|e| PeerError::Stack(e.to_string()))?;
        settings.set_udp_network(UDPNetwork::Ephemeral(udp));
    }
    if let Some(ip) = ice.public_ip {
        settings.set_nat_1to1_ips(vec![ip.to_string()], RTCIceCandidateType::Host);
    }
    if !ice.ips.is_empty() {
        let allowed = ice.ips.clone();
        settings.set_include_loopback_candidate(allowed.iter().any(IpAddr::is_loopback));
        settings.set_ip_filter(Box::new(move |ip| allowed.contains(&ip)));
    }
    Ok(APIBuilder::new()
        .with_media_engine(media)
        .with_interceptor_registry(registry)
        .with_setting_engine(settings)
        .build())
}

/// A codec as registered for a peer connection.
#[derive(Debug, Clone)]
pub struct CodecSpec {
    codec: Codec,
    payload_type: u8,
    fmtp: String,
}

impl CodecSpec {
    /// H.264 (packetization mode 1) with the given `profile-level-id` (six hex digits).
    pub fn h264(payload_type: u8, profile_level_id: &str) -> Self {
        Self {
            codec: Codec::H264,
            payload_type,
            fmtp: format!(
                "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id={profile_level_id}"
            ),
        }
    }

    /// VP8.
    pub fn vp8(payload_type: u8) -> Self {
        Self {
            codec: Codec::Vp8,
            payload_type,
            fmtp: String::new(),
        }
    }

    /// Opus, stereo-capable, with in-band FEC.
    pub fn opus(payload_type: u8) -> Self {
        Self {
            codec: Codec::Opus,
            payload_type,
            fmtp: "minptime=10;useinbandfec=1".into(),
        }
    }

    /// What the browser may publish: H.264 in the profiles browsers use, VP8, Opus.
    pub fn publish_set() -> Vec<Self> {
        vec![
            Self::h264(102, "42001f"),
            Self::h264(125, "42e01f"),
            Self::h264(112, "4d001f"),
            Self::h264(106, "64001f"),
            Self::vp8(96),
            Self::opus(111),
        ]
    }

    fn kind(&self) -> RTPCodecType {
        match self.codec {
            Codec::Opus | Codec::Aac => RTPCodecType::Audio,
            Codec::H264 | Codec::Vp8 => RTPCodecType::Video,
        }
    }

    fn capability(&self) -> RTCRtpCodecCapability {
        let video_feedback = || {
            vec![
                feedback("goog-remb", ""),
                feedback("ccm", "fir"),
                feedback("nack", ""),
                feedback("nack", "pli"),
            ]
        };
        match self.codec {
            Codec::H264 => RTCRtpCodecCapability {
                mime_type: MIME_TYPE_H264.into(),
                clock_rate: 90_000,
                channels: 0,
                sdp_fmtp_line: self.fmtp.clone(),
                rtcp_feedback: video_feedback(),
            },
            Codec::Vp8 => RTCRtpCodecCapability {
                mime_type: MIME_TYPE_VP8.into(),
                clock_rate: 90_000,
                channels: 0,
                sdp_fmtp_line: self.fmtp.clone(),
                rtcp_feedback: video_feedback(),
            },
            Codec::Opus | Codec::Aac => RTCRtpCodecCapability {
                mime_type: MIME_TYPE_OPUS.into(),
                clock_rate: 48_000,
                channels: 2,
                sdp_fmtp_line: self.fmtp.clone(),
                rtcp_feedback: vec![],
            },
        }
    }

    fn parameters(&self) -> RTCRtpCodecParameters {
        RTCRtpCodecParameters {
            capability: self.capability(),
            payload_type: self.payload_type,
            ..Default::default()
        }
    }
}

fn feedback(typ: &str, parameter: &str) -> RTCPFeedback {
    RTCPFeedback {
        typ: typ.into(),
        parameter: parameter.into(),
    }
}

/// The codec of a negotiated MIME type.
fn codec_of(mime: &str) -> Option<Codec> {
    if mime.eq_ignore_ascii_case(MIME_TYPE_H264) {
        Some(Codec::H264)
    } else if mime.eq_ignore_ascii_case(MIME_TYPE_VP8) {
        Some(Codec::Vp8)
    } else if mime.eq_ignore_ascii_case(MIME_TYPE_OPUS) {
        Some(Codec::Opus)
    } else {
        None
    }
}

/// A peer connection plus the hooks every session needs.
struct Core {
    pc: Arc<RTCPeerConnection>,
}

impl Core {
    async fn new(
        ice: &IceSettings,
        codecs: &[CodecSpec],
        role: Role,
        events: mpsc::Sender<PeerEvent>,
    ) -> Result<Self, PeerError> {
        let api = build_api(ice, codecs, role)?;
        let pc = Arc::new(
            api.new_peer_connection(RTCConfiguration::default())
                .await
                .map_err(stack)?,
        );
        let tx = events.clone();
        pc.on_ice_candidate(Box::new(move |candidate| {
            let tx = tx.clone();
            Box::pin(async move {
                let Some(c) = candidate else { return };
                let Ok(init) = c.to_json() else { return };
                let _ = tx
                    .send(PeerEvent::Candidate {
                        candidate: init.candidate,
                        label: init.sdp_mline_index.unwrap_or(0),
                        mid: init.sdp_mid.unwrap_or_else(|| "0".into()),
                    })
                    .await;
            })
        }));
        let tx = events;
        pc.on_peer_connection_state_change(Box::new(move |state| {
            let tx = tx.clone();
            Box::pin(async move {
                let event = match state {
                    RTCPeerConnectionState::Connected => Connection::Connected,
                    RTCPeerConnectionState::Failed | RTCPeerConnectionState::Closed => {
                        Connection::Gone
                    }
                    _ => return,
                };
                let _ = tx.send(PeerEvent::State(event)).await;
            })
        }));
        Ok(Self { pc })
    }

    async fn add_candidate(
        &self,
        candidate: String,
        label: Option<u16>,
        mid: Option<String>,
    ) -> Result<(), PeerError> {
        if candidate.is_empty() {
            // End of candidates: nothing to do.
            return Ok(());
        }
        self.pc
            .add_ice_candidate(RTCIceCandidateInit {
                candidate,
                sdp_mid: mid,
                sdp_mline_index: label,
                username_fragment: None,
            })
            .await
            .map_err(|e| PeerError::Candidate(e.to_string()))
    }

    async fn close(&self) {
        let _ = self.pc.close().await;
    }

    /// Applies the client's offer and answers it; with `gather`, waits for the server's
    /// candidates (within [`GATHER_TIMEOUT`]) and returns the answer with them.
    async fn answer(&self, offer: String, gather: bool) -> Result<String, PeerError> {
        let offer =
            RTCSessionDescription::offer(offer).map_err(|e| PeerError::Sdp(e.to_string()))?;
        self.pc
            .set_remote_description(offer)
            .await
            .map_err(|e| PeerError::Sdp(e.to_string()))?;
        self.local_answer(gather).await
    }

    /// Creates and applies the answer to the remote offer in force (see [`Core::answer`]).
    async fn local_answer(&self, gather: bool) -> Result<String, PeerError> {
        let answer = self.pc.create_answer(None).await.map_err(stack)?;
        let mut gathered = self.pc.gathering_complete_promise().await;
        let sdp = answer.sdp.clone();
        self.pc.set_local_description(answer).await.map_err(stack)?;
        if !gather {
            return Ok(sdp);
        }
        let _ = tokio::time::timeout(GATHER_TIMEOUT, gathered.recv()).await;
        Ok(self
            .pc
            .local_description()
            .await
            .map_or(sdp, |local| local.sdp))
    }

    /// Restarts ICE with the client's new credentials and candidates: the remote offer again
    /// with them, answered; returns the server's new credentials and candidates as an SDP
    /// fragment.
    async fn restart_ice(
        &self,
        ufrag: &str,
        pwd: &str,
        candidates: &[String],
    ) -> Result<String, PeerError> {
        let remote = self
            .pc
            .remote_description()
            .await
            .ok_or_else(|| PeerError::Sdp("no offer to restart".into()))?;
        let offer = sdpfrag::with_credentials(&remote.sdp, ufrag, pwd, candidates);
        self.answer(offer, true).await?;
        let local = self
            .pc
            .local_description()
            .await
            .ok_or_else(|| PeerError::Stack("no local description".into()))?;
        sdpfrag::answer(&local.sdp)
            .ok_or_else(|| PeerError::Stack("no ICE credentials in the answer".into()))
    }
}

/// The server side of a browser's publish.
pub struct PublishPeer {
    core: Core,
    video_ssrcs: Arc<Mutex<Vec<u32>>>,
}

impl std::fmt::Debug for PublishPeer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PublishPeer").finish_non_exhaustive()
    }
}

impl PublishPeer {
    /// A peer connection ready for the browser's offer.
    pub async fn new(
        ice: &IceSettings,
        events: mpsc::Sender<PeerEvent>,
    ) -> Result<Self, PeerError> {
        let core = Core::new(
            ice,
            &CodecSpec::publish_set(),
            Role::Publish,
            events.clone(),
        )
        .await?;
        let video_ssrcs = Arc::new(Mutex::new(Vec::new()));
        let ssrcs = Arc::clone(&video_ssrcs);
        core.pc
            .on_track(Box::new(move |track, _receiver, _transceiver| {
                let events = events.clone();
                let ssrcs = Arc::clone(&ssrcs);
                Box::pin(async move {
                    let codec = codec_of(&track.codec().capability.mime_type);
                    if matches!(codec, Some(Codec::H264 | Codec::Vp8)) {
                        ssrcs
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .push(track.ssrc());
                    }
                    let _ = events
                        .send(PeerEvent::Track(IncomingTrack { track, codec }))
                        .await;
                })
            }));
        Ok(Self { core, video_ssrcs })
    }

    /// Applies the browser's offer and returns the answer, its candidates to follow one by
    /// one ([`PeerEvent::Candidate`]).
    pub async fn answer(&self, offer: String) -> Result<String, PeerError> {
        self.core.answer(offer, false).await
    }

    /// Applies a WHIP client's offer and returns the answer with the server's candidates in
    /// it (the client gets no others).
    pub async fn answer_gathered(&self, offer: String) -> Result<String, PeerError> {
        self.core.answer(offer, true).await
    }

    /// Restarts ICE (see [`crate::sdpfrag`]); returns the answer fragment.
    pub async fn restart_ice(
        &self,
        ufrag: &str,
        pwd: &str,
        candidates: &[String],
    ) -> Result<String, PeerError> {
        self.core.restart_ice(ufrag, pwd, candidates).await
    }

    /// Adds one of the browser's candidates.
    pub async fn add_candidate(
        &self,
        candidate: String,
        label: Option<u16>,
        mid: Option<String>,
    ) -> Result<(), PeerError> {
        self.core.add_candidate(candidate, label, mid).await
    }

    /// Sends a PLI for every incoming video track.
    pub async fn request_keyframe(&self) {
        let ssrcs = self
            .video_ssrcs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        for ssrc in ssrcs {
            let pli = PictureLossIndication {
                sender_ssrc: 0,
                media_ssrc: ssrc,
            };
            let _ = self.core.pc.write_rtcp(&[Box::new(pli)]).await;
        }
    }

    /// Closes the connection.
    pub async fn close(&self) {
        self.core.close().await;
    }
}

/// A track the publishing browser sends.
pub struct IncomingTrack {
    track: Arc<TrackRemote>,
    codec: Option<Codec>,
}

impl std::fmt::Debug for IncomingTrack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IncomingTrack")
            .field("codec", &self.codec)
            .finish()
    }
}

impl IncomingTrack {
    /// The negotiated codec, if it is one streamgate carries.
    pub fn codec(&self) -> Option<Codec> {
        self.codec
    }

    /// The next RTP packet; `None` when the track has ended.
    pub async fn read(&self, buf: &mut Vec<u8>) -> Option<RtpIn> {
        buf.resize(RECEIVE_MTU, 0);
        let (pkt, _) = self.track.read(buf).await.ok()?;
        Some(RtpIn {
            seq: pkt.header.sequence_number,
            timestamp: pkt.header.timestamp,
            marker: pkt.header.marker,
            payload: pkt.payload,
        })
    }
}

/// The server side of a browser's playback.
pub struct PlayPeer {
    core: Core,
    video: Option<OutgoingTrack>,
    audio: Option<OutgoingTrack>,
}

impl std::fmt::Debug for PlayPeer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PlayPeer").finish_non_exhaustive()
    }
}

/// One track sent to a viewer.
#[derive(Clone)]
pub struct OutgoingTrack {
    track: Arc<TrackLocalStaticRTP>,
    pc: Arc<RTCPeerConnection>,
    ssrc: u32,
    sent: Arc<Sent>,
}

/// Packets and payload octets sent on a track, for its sender reports (both wrap, as
/// RFC 3550 has them).
#[derive(Debug, Default)]
struct Sent {
    packets: AtomicU32,
    octets: AtomicU32,
}

/// Seconds from the NTP epoch (1900) to the Unix epoch (1970).
const NTP_UNIX_OFFSET_SECS: u64 = 2_208_988_800;

/// A wall-clock time as a 64-bit NTP timestamp (seconds since 1900 and a binary fraction).
pub fn ntp_timestamp(at: SystemTime) -> u64 {
    let since = at.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs().wrapping_add(NTP_UNIX_OFFSET_SECS);
    let frac = (u64::from(since.subsec_nanos()) << 32) / 1_000_000_000;
    (secs << 32) | frac
}

impl std::fmt::Debug for OutgoingTrack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutgoingTrack").finish_non_exhaustive()
    }
}

impl OutgoingTrack {
    /// Writes one RTP packet; SSRC and payload type are filled in per connection.
    pub async fn write(&self, stamp: Stamp, payload: Bytes) -> Result<(), PeerError> {
        let pkt = webrtc::rtp::packet::Packet {
            header: webrtc::rtp::header::Header {
                version: 2,
                marker: stamp.marker,
                sequence_number: stamp.seq,
                timestamp: stamp.timestamp,
                ..Default::default()
            },
            payload,
        };
        let octets = u32::try_from(pkt.payload.len()).unwrap_or(u32::MAX);
        match self.track.write_rtp(&pkt).await {
            Ok(_) => {
                self.sent.packets.fetch_add(1, Ordering::Relaxed);
                self.sent.octets.fetch_add(octets, Ordering::Relaxed);
                Ok(())
            }
            Err(webrtc::Error::ErrClosedPipe) => Err(PeerError::Stack("closed".into())),
            Err(e) => Err(stack(e)),
        }
    }

    /// Whether a packet has been written on this track.
    pub fn has_sent(&self) -> bool {
        self.sent.packets.load(Ordering::Relaxed) > 0
    }

    /// Writes a sender report: wall-clock time `at` is RTP time `rtp_time` on this track.
    pub async fn report(&self, at: SystemTime, rtp_time: u32) -> Result<(), PeerError> {
        let report = SenderReport {
            ssrc: self.ssrc,
            ntp_time: ntp_timestamp(at),
            rtp_time,
            packet_count: self.sent.packets.load(Ordering::Relaxed),
            octet_count: self.sent.octets.load(Ordering::Relaxed),
            ..Default::default()
        };
        self.pc
            .write_rtcp(&[Box::new(report)])
            .await
            .map(|_| ())
            .map_err(stack)
    }
}

impl PlayPeer {
    /// A peer connection sending video (if `video` names codecs: the same track offered
    /// under each, the browser answering with the first it takes) and Opus audio (if `audio`).
    pub async fn new(
        ice: &IceSettings,
        video: Vec<CodecSpec>,
        audio: bool,
        events: mpsc::Sender<PeerEvent>,
    ) -> Result<Self, PeerError> {
        Self::build(ice, video, audio, None, events).await
    }

    /// A peer connection answering a WHEP client's `offer` with the same tracks as
    /// [`PlayPeer::new`] offers (each bound to the client's codec of its kind that matches),
    /// and the answer, with the server's candidates in it; the kinds the client takes none of
    /// (or did not ask for) have no track.
    pub async fn answering(
        ice: &IceSettings,
        video: Vec<CodecSpec>,
        audio: bool,
        offer: String,
        events: mpsc::Sender<PeerEvent>,
    ) -> Result<(Self, String), PeerError> {
        let mut peer = Self::build(ice, video, audio, Some(offer), events).await?;
        let answer = peer.core.local_answer(true).await?;
        // A section the answer rejects (or that the offer did not have) carries nothing.
        let sections = negotiate::answered_kinds(&answer);
        if !sections.contains(&SectionKind::Video) {
            peer.video = None;
        }
        if !sections.contains(&SectionKind::Audio) {
            peer.audio = None;
        }
        if peer.video.is_none() && peer.audio.is_none() {
            return Err(PeerError::Sdp(
                "the offer takes none of the stream's codecs".into(),
            ));
        }
        Ok((peer, answer))
    }

    /// The peer connection and its tracks; with `offer`, the client's offer applied first
    /// and the tracks bound to its sections.
    async fn build(
        ice: &IceSettings,
        video: Vec<CodecSpec>,
        audio: bool,
        offer: Option<String>,
        events: mpsc::Sender<PeerEvent>,
    ) -> Result<Self, PeerError> {
        let mut codecs = video.clone();
        if audio {
            codecs.push(CodecSpec::opus(111));
        }
        let core = Core::new(ice, &codecs, Role::Play, events.clone()).await?;
        // One track per kind, described by its first codec; it is bound to whichever of its
        // kind's codecs the answer takes.
        let mut video_track = None;
        let mut audio_track = None;
        let firsts = video.first().into_iter().chain(
            codecs
                .iter()
                .filter(|c| c.kind() == RTPCodecType::Audio)
                .take(1),
        );
        for spec in firsts {
            let (id, is_video) = match spec.kind() {
                RTPCodecType::Video => ("video", true),
                _ => ("audio", false),
            };
            let track = Arc::new(TrackLocalStaticRTP::new(
                spec.capability(),
                id.to_owned(),
                "streamgate".to_owned(),
            ));
            // A client's offer applied below binds its section of this kind to this sending
            // transceiver.
            let sender = core
                .pc
                .add_transceiver_from_track(
                    Arc::clone(&track) as Arc<dyn TrackLocal + Send + Sync>,
                    Some(RTCRtpTransceiverInit {
                        direction: RTCRtpTransceiverDirection::Sendonly,
                        send_encodings: vec![],
                    }),
                )
                .await
                .map_err(stack)?
                .sender()
                .await;
            let ssrc = sender
                .get_parameters()
                .await
                .encodings
                .first()
                .map(|e| e.ssrc)
                .ok_or_else(|| PeerError::Stack("a track without an SSRC".into()))?;
            let tx = events.clone();
            // RTCP must be read for the interceptors (NACK, reports) to work; keyframe
            // requests are passed on.
            tokio::spawn(async move {
                while let Ok((packets, _)) = sender.read_rtcp().await {
                    if !is_video {
                        continue;
                    }
                    let wants_key = packets.iter().any(|p| {
                        let any = p.as_any();
                        any.is::<PictureLossIndication>() || any.is::<FullIntraRequest>()
                    });
                    if wants_key {
                        let _ = tx.try_send(PeerEvent::KeyframeRequest);
                    }
                }
            });
            let outgoing = OutgoingTrack {
                track,
                pc: Arc::clone(&core.pc),
                ssrc,
                sent: Arc::default(),
            };
            if is_video {
                video_track = Some(outgoing);
            } else {
                audio_track = Some(outgoing);
            }
        }
        if let Some(offer) = offer {
            let offer =
                RTCSessionDescription::offer(offer).map_err(|e| PeerError::Sdp(e.to_string()))?;
            core.pc
                .set_remote_description(offer)
                .await
                .map_err(|e| PeerError::Sdp(e.to_string()))?;
        }
        Ok(Self {
            core,
            video: video_track,
            audio: audio_track,
        })
    }

    /// Restarts ICE (see [`crate::sdpfrag`]); returns the answer fragment.
    pub async fn restart_ice(
        &self,
        ufrag: &str,
        pwd: &str,
        candidates: &[String],
    ) -> Result<String, PeerError> {
        self.core.restart_ice(ufrag, pwd, candidates).await
    }

    /// The server's offer.
    pub async fn offer(&self) -> Result<String, PeerError> {
        let offer = self.core.pc.create_offer(None).await.map_err(stack)?;
        let sdp = offer.sdp.clone();
        self.core
            .pc
            .set_local_description(offer)
            .await
            .map_err(stack)?;
        Ok(sdp)
    }

    /// Applies the browser's answer, and returns the kinds of media it rejected (the
    /// others play); refused if it rejected every section.
    pub async fn accept_answer(&self, answer: &str) -> Result<Vec<SectionKind>, PeerError> {
        let prepared = prepare_answer(answer);
        let offered = usize::from(self.video.is_some()) + usize::from(self.audio.is_some());
        if offered > 0 && prepared.rejected.len() >= offered {
            return Err(PeerError::Sdp(
                "the answer rejects every media section".into(),
            ));
        }
        // The sections rejected lose their tracks first: nothing is sent on them.
        for t in self.core.pc.get_transceivers().await {
            let kind = match t.kind() {
                RTPCodecType::Video => SectionKind::Video,
                RTPCodecType::Audio => SectionKind::Audio,
                _ => SectionKind::Other,
            };
            if prepared.rejected.contains(&kind) {
                self.core
                    .pc
                    .remove_track(&t.sender().await)
                    .await
                    .map_err(stack)?;
            }
        }
        let answer = RTCSessionDescription::answer(prepared.sdp)
            .map_err(|e| PeerError::Sdp(e.to_string()))?;
        self.core
            .pc
            .set_remote_description(answer)
            .await
            .map_err(|e| PeerError::Sdp(e.to_string()))?;
        Ok(prepared.rejected)
    }

    /// Adds one of the browser's candidates.
    pub async fn add_candidate(
        &self,
        candidate: String,
        label: Option<u16>,
        mid: Option<String>,
    ) -> Result<(), PeerError> {
        self.core.add_candidate(candidate, label, mid).await
    }

    /// The video track, if one was negotiated.
    pub fn video(&self) -> Option<&OutgoingTrack> {
        self.video.as_ref()
    }

    /// The audio track, if one was negotiated.
    pub fn audio(&self) -> Option<&OutgoingTrack> {
        self.audio.as_ref()
    }

    /// Closes the connection.
    pub async fn close(&self) {
        self.core.close().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::negotiate::{h264_profile_ids, H264_PAYLOAD_TYPES};

    fn loopback() -> IceSettings {
        IceSettings {
            ips: vec![IpAddr::from([127, 0, 0, 1])],
            ..IceSettings::default()
        }
    }

    /// Chromium's real answer rejecting the video section of an offer it takes no codec of
    /// (a High profile stream offered under its own id only) is applied: audio plays, and
    /// the rejection is reported.
    #[tokio::test]
    async fn an_answer_rejecting_the_video_plays_the_audio() {
        let (tx, _rx) = mpsc::channel(PEER_EVENT_CAPACITY);
        let peer = PlayPeer::new(&loopback(), vec![CodecSpec::h264(102, "64000d")], true, tx)
            .await
            .expect("peer");
        let offer = peer.offer().await.expect("offer");
        assert!(offer.contains("profile-level-id=64000d"));
        // Retransmission and keyframe requests are offered for the video.
        for line in ["a=rtcp-fb:102 nack", "a=rtcp-fb:102 nack pli"] {
            assert!(
                offer.lines().any(|l| l.trim_end() == line),
                "{line}: {offer}"
            );
        }
        let answer = include_str!("fixtures/chromium-answer-rejects-high.sdp");
        assert_eq!(
            peer.accept_answer(answer).await.expect("accepted"),
            [SectionKind::Video]
        );
        peer.close().await;

        // Unprepared, the peer connection refuses the same answer as a whole.
        let (tx, _rx) = mpsc::channel(PEER_EVENT_CAPACITY);
        let peer = PlayPeer::new(&loopback(), vec![CodecSpec::h264(102, "64000d")], true, tx)
            .await
            .expect("peer");
        peer.offer().await.expect("offer");
        let raw = RTCSessionDescription::answer(answer.to_owned()).expect("sdp");
        assert!(peer.core.pc.set_remote_description(raw).await.is_err());
        peer.close().await;
    }

    /// Chromium's real answer to a High profile stream offered under its own id and the
    /// fallbacks takes Main (`4d001f`), and the video section is kept.
    #[tokio::test]
    async fn chromium_takes_a_high_stream_as_main() {
        let specs = ["64000d", "4d001f", "42e01f", "42001f"]
            .iter()
            .zip(H264_PAYLOAD_TYPES)
            .map(|(id, pt)| CodecSpec::h264(pt, id))
            .collect();
        let (tx, _rx) = mpsc::channel(PEER_EVENT_CAPACITY);
        let peer = PlayPeer::new(&loopback(), specs, true, tx)
            .await
            .expect("peer");
        peer.offer().await.expect("offer");
        let answer = include_str!("fixtures/chromium-answer-high-as-main.sdp");
        assert!(answer.contains("m=video 9 UDP/TLS/RTP/SAVPF 106 112 125"));
        assert_eq!(peer.accept_answer(answer).await.expect("accepted"), []);
        peer.close().await;
    }

    /// Transport-wide congestion feedback is negotiated where the server receives media, a
    /// publisher's peer, and not where it only sends, a viewer's (which runs none of the
    /// receiving side's interceptors).
    #[tokio::test]
    async fn congestion_feedback_is_negotiated_for_publishers_only() {
        let (tx, _rx) = mpsc::channel(PEER_EVENT_CAPACITY);
        let viewer = PlayPeer::new(&loopback(), vec![CodecSpec::h264(102, "42e01f")], true, tx)
            .await
            .expect("peer");
        let offer = viewer.offer().await.expect("offer");
        assert!(offer.contains("a=rtcp-fb:102 nack"), "{offer}");
        assert!(!offer.contains("transport-cc"), "{offer}");
        assert!(!offer.contains("transport-wide-cc"), "{offer}");
        viewer.close().await;

        let (tx, _rx) = mpsc::channel(PEER_EVENT_CAPACITY);
        let publisher = PublishPeer::new(&loopback(), tx).await.expect("peer");
        let browser_offer = include_str!("fixtures/offer-high-only.sdp")
            .replace("profile-level-id=64000d", "profile-level-id=42e01f");
        let answer = publisher.answer(browser_offer).await.expect("answer");
        assert!(answer.contains("transport-cc"), "{answer}");
        publisher.close().await;
    }

    /// An answer that rejects every section is refused.
    #[tokio::test]
    async fn an_answer_rejecting_everything_is_refused() {
        let (tx, _rx) = mpsc::channel(PEER_EVENT_CAPACITY);
        let peer = PlayPeer::new(&loopback(), vec![CodecSpec::h264(102, "64000d")], true, tx)
            .await
            .expect("peer");
        peer.offer().await.expect("offer");
        let answer = include_str!("fixtures/chromium-answer-rejects-high.sdp")
            .replace("m=audio 9 ", "m=audio 0 ");
        assert!(peer.accept_answer(&answer).await.is_err());
        peer.close().await;
    }

    /// A stream's H.264 is offered under each of its profile ids, in order.
    #[tokio::test]
    async fn video_is_offered_under_every_profile_id() {
        let ids = h264_profile_ids(None);
        let specs = ids
            .iter()
            .zip(H264_PAYLOAD_TYPES)
            .map(|(id, pt)| CodecSpec::h264(pt, id))
            .collect();
        let (tx, _rx) = mpsc::channel(PEER_EVENT_CAPACITY);
        let peer = PlayPeer::new(&loopback(), specs, true, tx)
            .await
            .expect("peer");
        let offer = peer.offer().await.expect("offer");
        let m = offer
            .lines()
            .find(|l| l.starts_with("m=video"))
            .expect("a video section");
        assert!(m.ends_with(" 102 106 112"), "{m}");
        for id in &ids {
            assert!(offer.contains(&format!("profile-level-id={id}")), "{id}");
        }
        assert_eq!(offer.matches("m=audio").count(), 1);
        peer.close().await;
    }

    #[test]
    fn ntp_timestamps_count_from_1900_in_binary_fractions() {
        assert_eq!(ntp_timestamp(UNIX_EPOCH), NTP_UNIX_OFFSET_SECS << 32);
        let later = UNIX_EPOCH + Duration::from_millis(1_500);
        assert_eq!(
            ntp_timestamp(later),
            ((NTP_UNIX_OFFSET_SECS + 1) << 32) | 0x8000_0000
        );
    }
}
