//! Native RTMP clients: a synthetic publisher and a measuring viewer, one tokio task each, cheap
//! enough to hold thousands of viewers.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use rml_rtmp::handshake::{Handshake, HandshakeProcessResult, PeerType};
use rml_rtmp::sessions::{
    ClientSession, ClientSessionConfig, ClientSessionEvent, ClientSessionResult,
    PublishRequestType, StreamMetadata,
};
use rml_rtmp::time::RtmpTimestamp;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use crate::stats::{Collector, Counters, Meter};
use crate::synth::{self, Clip};

/// How long the server has to answer connect, publish or play.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Socket read size.
const READ_BUFFER: usize = 64 * 1024;

/// Where and what to publish or play.
#[derive(Debug, Clone)]
pub struct Target {
    /// `host:port`.
    pub addr: String,
    /// RTMP app (`live`).
    pub app: String,
    /// Stream key (`cam1`).
    pub key: String,
    /// Token for the query, if any.
    pub token: Option<String>,
}

impl Target {
    fn key_with_token(&self) -> String {
        match &self.token {
            Some(t) => format!("{}?token={t}", self.key),
            None => self.key.clone(),
        }
    }
}

/// Why a client stopped before it was admitted.
#[derive(Debug)]
enum Outcome {
    /// The server answered the request with an error or closed the connection.
    Refused,
    /// Could not connect or the protocol broke.
    Failed,
}

struct Conn {
    socket: TcpStream,
    session: ClientSession,
    events: std::collections::VecDeque<ClientSessionEvent>,
    buf: BytesMut,
}

impl Conn {
    async fn open(t: &Target) -> Result<Self, Outcome> {
        let mut socket = TcpStream::connect(&t.addr)
            .await
            .map_err(|_| Outcome::Failed)?;
        let _ = socket.set_nodelay(true);
        let mut hs = Handshake::new(PeerType::Client);
        let p0p1 = hs
            .generate_outbound_p0_and_p1()
            .map_err(|_| Outcome::Failed)?;
        socket.write_all(&p0p1).await.map_err(|_| Outcome::Failed)?;
        let mut buf = vec![0u8; 4096];
        let leftover = loop {
            let n = socket.read(&mut buf).await.map_err(|_| Outcome::Failed)?;
            if n == 0 {
                return Err(Outcome::Failed);
            }
            match hs
                .process_bytes(buf.get(..n).unwrap_or_default())
                .map_err(|_| Outcome::Failed)?
            {
                HandshakeProcessResult::InProgress { response_bytes } => {
                    socket
                        .write_all(&response_bytes)
                        .await
                        .map_err(|_| Outcome::Failed)?;
                }
                HandshakeProcessResult::Completed {
                    response_bytes,
                    remaining_bytes,
                } => {
                    socket
                        .write_all(&response_bytes)
                        .await
                        .map_err(|_| Outcome::Failed)?;
                    break remaining_bytes;
                }
            }
        };
        let config = ClientSessionConfig {
            tc_url: Some(format!("rtmp://{}/{}", t.addr, t.app)),
            flash_version: "FMLE/3.0 (compatible; streamgate-load)".into(),
            ..ClientSessionConfig::new()
        };
        let (session, initial) = ClientSession::new(config).map_err(|_| Outcome::Failed)?;
        let mut c = Self {
            socket,
            session,
            events: Default::default(),
            buf: BytesMut::with_capacity(READ_BUFFER),
        };
        c.send(initial).await?;
        c.feed(&leftover).await?;
        let r = c
            .session
            .request_connection(t.app.clone())
            .map_err(|_| Outcome::Failed)?;
        c.send(vec![r]).await?;
        match c
            .wait(|e| {
                matches!(
                    e,
                    ClientSessionEvent::ConnectionRequestAccepted
                        | ClientSessionEvent::ConnectionRequestRejected { .. }
                )
            })
            .await?
        {
            ClientSessionEvent::ConnectionRequestAccepted => Ok(c),
            _ => Err(Outcome::Refused),
        }
    }

    async fn send(&mut self, results: Vec<ClientSessionResult>) -> Result<(), Outcome> {
        for r in results {
            match r {
                ClientSessionResult::OutboundResponse(p) => {
                    self.socket
                        .write_all(&p.bytes)
                        .await
                        .map_err(|_| Outcome::Failed)?;
                }
                ClientSessionResult::RaisedEvent(e) => self.events.push_back(e),
                ClientSessionResult::UnhandleableMessageReceived(_) => {}
            }
        }
        Ok(())
    }

    async fn feed(&mut self, bytes: &[u8]) -> Result<(), Outcome> {
        if bytes.is_empty() {
            return Ok(());
        }
        let results = self
            .session
            .handle_input(bytes)
            .map_err(|_| Outcome::Failed)?;
        self.send(results).await
    }

    /// Reads once; false at end of stream.
    async fn read_once(&mut self) -> Result<bool, Outcome> {
        self.buf.clear();
        if self.buf.capacity() < READ_BUFFER {
            self.buf.reserve(READ_BUFFER);
        }
        let n = self
            .socket
            .read_buf(&mut self.buf)
            .await
            .map_err(|_| Outcome::Failed)?;
        if n == 0 {
            return Ok(false);
        }
        let bytes = self.buf.split().freeze();
        self.feed(&bytes).await?;
        Ok(true)
    }

    /// Waits for an event matching `want`; a closed connection before it is a refusal.
    async fn wait(
        &mut self,
        want: impl Fn(&ClientSessionEvent) -> bool,
    ) -> Result<ClientSessionEvent, Outcome> {
        let deadline = tokio::time::Instant::now() + REQUEST_TIMEOUT;
        loop {
            if let Some(i) = self.events.iter().position(&want) {
                return self.events.remove(i).ok_or(Outcome::Failed);
            }
            match tokio::time::timeout_at(deadline, self.read_once()).await {
                Ok(Ok(true)) => {}
                Ok(Ok(false)) | Ok(Err(_)) => return Err(Outcome::Refused),
                Err(_) => return Err(Outcome::Failed),
            }
        }
    }
}

fn count(counters: &Counters, outcome: Outcome) {
    match outcome {
        Outcome::Refused => Counters::inc(&counters.refused),
        Outcome::Failed => Counters::inc(&counters.failed),
    }
}

/// Publishes the synthetic stream until `stop` fires or the server ends the session.
pub async fn publish(
    t: Arc<Target>,
    clip: Arc<Clip>,
    counters: Arc<Counters>,
    stop: CancellationToken,
) {
    Counters::inc(&counters.attempted);
    let mut c = match Conn::open(&t).await {
        Ok(c) => c,
        Err(o) => return count(&counters, o),
    };
    let accepted = async {
        let r = c
            .session
            .request_publishing(t.key_with_token(), PublishRequestType::Live)
            .map_err(|_| Outcome::Failed)?;
        c.send(vec![r]).await?;
        c.wait(|e| matches!(e, ClientSessionEvent::PublishRequestAccepted))
            .await
    };
    if let Err(o) = accepted.await {
        return count(&counters, o);
    }
    Counters::inc(&counters.admitted);
    let _ = stream_synthetic(&mut c, &clip, &stop).await;
}

async fn stream_synthetic(
    c: &mut Conn,
    clip: &Clip,
    stop: &CancellationToken,
) -> Result<(), Outcome> {
    let mut meta = StreamMetadata::new();
    meta.video_codec_id = Some(7);
    meta.audio_codec_id = Some(10);
    meta.video_width = Some(320);
    meta.video_height = Some(240);
    meta.video_frame_rate = Some(synth::FPS as f32);
    meta.encoder = Some("streamgate-load".into());
    let mut out = vec![c
        .session
        .publish_metadata(&meta)
        .map_err(|_| Outcome::Failed)?];
    out.push(video(c, clip.avc_header.clone(), 0)?);
    out.push(audio(c, clip.aac_header.clone(), 0)?);
    c.send(out).await?;
    let start = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(synth::FPS)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let (mut seq, mut audio_sent) = (0u32, 0u64);
    loop {
        tokio::select! {
            biased;
            _ = stop.cancelled() => return Ok(()),
            _ = tick.tick() => {
                let ms = (u64::from(seq) * 1000 / u64::from(synth::FPS)) as u32;
                let (body, _) = clip.video_frame(seq);
                let mut out = vec![video(c, body, ms)?];
                seq = seq.wrapping_add(1);
                let due = (start.elapsed().as_secs_f64() * synth::AUDIO_FPS) as u64;
                while audio_sent < due {
                    let ts = (audio_sent as f64 * 1000.0 / synth::AUDIO_FPS) as u32;
                    out.push(audio(c, clip.audio_frame(audio_sent), ts)?);
                    audio_sent += 1;
                }
                c.send(out).await?;
            }
            read = c.read_once() => {
                if !read? {
                    return Ok(());
                }
            }
        }
    }
}

fn video(c: &mut Conn, body: Bytes, ms: u32) -> Result<ClientSessionResult, Outcome> {
    c.session
        .publish_video_data(body, RtmpTimestamp::new(ms), false)
        .map_err(|_| Outcome::Failed)
}

fn audio(c: &mut Conn, body: Bytes, ms: u32) -> Result<ClientSessionResult, Outcome> {
    c.session
        .publish_audio_data(body, RtmpTimestamp::new(ms), false)
        .map_err(|_| Outcome::Failed)
}

/// Plays until `stop` fires or the stream ends, measuring join time, latency, bit rate and gaps.
pub async fn view(
    t: Arc<Target>,
    counters: Arc<Counters>,
    collector: Arc<Collector>,
    stop: CancellationToken,
) {
    Counters::inc(&counters.attempted);
    let started = Instant::now();
    let mut c = match Conn::open(&t).await {
        Ok(c) => c,
        Err(o) => return count(&counters, o),
    };
    let accepted = async {
        let r = c
            .session
            .request_playback(t.key_with_token())
            .map_err(|_| Outcome::Failed)?;
        c.send(vec![r]).await?;
        c.wait(|e| matches!(e, ClientSessionEvent::PlaybackRequestAccepted))
            .await
    };
    if let Err(o) = accepted.await {
        return count(&counters, o);
    }
    Counters::inc(&counters.admitted);
    // Frames sent before the play was accepted come from the server's GOP cache: they count for
    // the join time but not for the relay latency.
    let mut meter = Meter::admitted(started);
    loop {
        for e in c.events.drain(..) {
            let data = match e {
                ClientSessionEvent::VideoDataReceived { data, .. } => data,
                ClientSessionEvent::AudioDataReceived { data, .. } => {
                    meter.bytes(&counters, data.len());
                    continue;
                }
                _ => continue,
            };
            meter.bytes(&counters, data.len());
            if let Some((seq, sent, key)) = synth::read_marker(&data) {
                meter.frame(&counters, seq, sent, key);
            }
        }
        tokio::select! {
            biased;
            _ = stop.cancelled() => break,
            read = c.read_once() => match read {
                Ok(true) => {}
                Ok(false) => break,
                Err(_) => {
                    Counters::inc(&counters.failed);
                    break;
                }
            },
        }
    }
    collector.add(meter.finish());
}
