//! Native SRT clients: a publisher sending the looped clip as MPEG-TS, and measuring viewers
//! that demultiplex what they receive.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::{SinkExt as _, StreamExt as _};
use srt_protocol::protocol::pending_connection::ConnectionReject;
use srt_tokio::SrtSocket;
use streamgate_media::flv::{self, FlvAudio, FlvVideo};
use streamgate_media::ts::{TsDemuxer, TsEvent, TsMuxer};
use streamgate_media::{Codec, StreamConfig};
use tokio_util::sync::CancellationToken;

use crate::stats::{Collector, Counters, Meter};
use crate::synth::{self, Clip};

/// TS packets per SRT message (7 × 188 = 1316 bytes, as encoders send).
const PACKETS_PER_MESSAGE: usize = 7;
const TS_PACKET: usize = 188;
/// The kernel receive buffer asked for on each client's UDP socket, as libsrt's callers have
/// (its `SRTO_UDP_RCVBUF` default is about 12 MB; the kernel caps it at `rmem_max`): a viewer
/// joining a stream gets the GOP at once, far more than the kernel's default buffer holds,
/// and datagrams lost there come back only if retransmitted within the latency.
const UDP_RECEIVE_BUFFER: usize = 12 * 1024 * 1024;

/// The SRT access-control streamid for `stream` in `mode` (`publish` or `request`).
pub fn streamid(stream: &str, mode: &str, token: Option<&str>) -> String {
    match token {
        Some(t) => format!("#!::r={stream},m={mode},s={t}"),
        None => format!("#!::r={stream},m={mode}"),
    }
}

async fn call(addr: SocketAddr, streamid: &str, counters: &Counters) -> Option<SrtSocket> {
    Counters::inc(&counters.attempted);
    let mut builder = SrtSocket::builder();
    // Without one, srt-tokio makes its own socket with the kernel's default buffers.
    if let Ok(socket) = udp_socket(addr) {
        builder = builder.socket(socket);
    }
    match builder.call(addr, Some(streamid)).await {
        Ok(s) => {
            Counters::inc(&counters.admitted);
            Some(s)
        }
        Err(e) => {
            let refused = e
                .get_ref()
                .and_then(|i| i.downcast_ref::<ConnectionReject>())
                .is_some();
            Counters::inc(if refused {
                &counters.refused
            } else {
                &counters.failed
            });
            None
        }
    }
}

/// A UDP socket for a caller of `server`, with [`UDP_RECEIVE_BUFFER`].
fn udp_socket(server: SocketAddr) -> std::io::Result<tokio::net::UdpSocket> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(server),
        socket2::Type::DGRAM,
        Some(socket2::Protocol::UDP),
    )?;
    let _ = socket.set_recv_buffer_size(UDP_RECEIVE_BUFFER);
    socket.set_nonblocking(true)?;
    let any: SocketAddr = if server.is_ipv4() {
        (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    socket.bind(&any.into())?;
    tokio::net::UdpSocket::from_std(socket.into())
}

/// Publishes the clip as MPEG-TS until `stop` fires or the server ends the session.
pub async fn publish(
    addr: SocketAddr,
    id: String,
    clip: Arc<Clip>,
    counters: Arc<Counters>,
    stop: CancellationToken,
) {
    let Some(mut socket) = call(addr, &id, &counters).await else {
        return;
    };
    let mut config = StreamConfig::default();
    if let Ok(FlvVideo::Config(c)) = flv::parse_video(0, clip.avc_header.clone()) {
        config.video = Some(c);
    }
    if let Ok(FlvAudio::Config(c)) = flv::parse_audio(0, clip.aac_header.clone()) {
        config.audio = Some(c);
    }
    let mut mux = TsMuxer::new();
    let start = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(synth::FPS)));
    let (mut seq, mut audio_sent) = (0u32, 0u64);
    loop {
        tokio::select! {
            biased;
            _ = stop.cancelled() => break,
            _ = tick.tick() => {
                let mut ts = Vec::new();
                let ms = (u64::from(seq) * 1000 / u64::from(synth::FPS)) as u32;
                if let Ok(FlvVideo::Frame(f)) = flv::parse_video(ms, clip.video_frame(seq).0) {
                    ts.push(mux.frame(&f, &config));
                }
                seq = seq.wrapping_add(1);
                let due = (start.elapsed().as_secs_f64() * synth::AUDIO_FPS) as u64;
                while audio_sent < due {
                    let ms = (audio_sent as f64 * 1000.0 / synth::AUDIO_FPS) as u32;
                    if let Ok(FlvAudio::Frame(f)) = flv::parse_audio(ms, clip.audio_frame(audio_sent)) {
                        ts.push(mux.frame(&f, &config));
                    }
                    audio_sent += 1;
                }
                for bytes in ts {
                    for chunk in bytes.chunks(PACKETS_PER_MESSAGE * TS_PACKET) {
                        if socket.send((Instant::now(), Bytes::copy_from_slice(chunk))).await.is_err() {
                            return;
                        }
                    }
                }
            }
        }
    }
    let _ = socket.close_and_finish().await;
}

/// Plays until `stop` fires or the stream ends, measuring like the RTMP viewer.
pub async fn view(
    addr: SocketAddr,
    id: String,
    counters: Arc<Counters>,
    collector: Arc<Collector>,
    stop: CancellationToken,
) {
    let started = Instant::now();
    let Some(mut socket) = call(addr, &id, &counters).await else {
        return;
    };
    let mut meter = Meter::admitted(started);
    let mut demux = TsDemuxer::new();
    let mut events = Vec::new();
    loop {
        let data = tokio::select! {
            biased;
            _ = stop.cancelled() => break,
            next = socket.next() => match next {
                Some(Ok((_, data))) => data,
                Some(Err(_)) => {
                    Counters::inc(&counters.failed);
                    break;
                }
                None => break,
            },
        };
        meter.bytes(&counters, data.len());
        demux.push(&data, &mut events);
        for e in events.drain(..) {
            let TsEvent::Frame(f) = e else { continue };
            if f.codec != Codec::H264 {
                continue;
            }
            if let Some((seq, sent)) = synth::find_marker_avcc(&f.payload) {
                meter.frame(&counters, seq, sent, f.keyframe);
            }
        }
    }
    collector.add(meter.finish());
}
