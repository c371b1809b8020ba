//! Accepted connections: a publisher's TS demuxed into the relay, the relay's frames muxed
//! (once per frame, for every viewer) to a viewer.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::{SinkExt as _, StreamExt as _};
use srt_tokio::SrtSocket;
use streamgate_admission::{EndReason, PlaySession, PublishSession};
use streamgate_media::ts::{TsDemuxer, TsEvent, PACKET_LEN};
use streamgate_media::Codec;
use streamgate_relay::{Event, Pick, Selection, SharedConfig, Unavailable, WireFormat};
use tokio_util::sync::CancellationToken;

use crate::feeds::Feed;

/// How long a publisher may send nothing before it is considered gone (SRT's own idle
/// timeout, 5 s, usually notices first).
pub const PUBLISH_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// How long handing data to a viewer's connection may stall before the viewer is dropped.
pub const WRITE_STALL_TIMEOUT: Duration = Duration::from_secs(15);
/// How long closing a connection may take (it flushes and sends the shutdown).
const CLOSE_TIMEOUT: Duration = Duration::from_millis(500);
/// TS packets per SRT message: 7 x 188 = 1316 bytes, the payload size every SRT tool uses.
pub const PACKETS_PER_MESSAGE: usize = 7;

/// Why a session ended (for the log line).
#[derive(Debug)]
pub enum Close {
    /// The peer closed the connection, or SRT timed it out.
    PeerClosed,
    /// The grant was cancelled (token revoked, disabled, deleted or expired).
    Revoked,
    /// The server is shutting down.
    Shutdown,
    /// The publisher sent nothing for [`PUBLISH_READ_TIMEOUT`].
    Idle,
    /// The viewer's stream ended.
    StreamEnded,
    /// The viewer's connection took no data for [`WRITE_STALL_TIMEOUT`].
    Stalled,
    /// The stream's video is in a codec MPEG-TS over SRT does not carry here (a browser
    /// publishing VP8); the viewer is closed rather than fed sound without a picture.
    VideoNotCarried(Codec),
    /// The connection failed.
    Io(std::io::Error),
}

impl Close {
    /// What the admission path records for this close.
    pub fn end_reason(&self) -> EndReason {
        match self {
            Close::PeerClosed => EndReason::ClientClosed,
            // The registry's reason, if it ended the session, stands over this one.
            Close::Revoked => EndReason::ClientClosed,
            Close::Shutdown => EndReason::Shutdown,
            Close::Idle => EndReason::Idle,
            Close::StreamEnded => EndReason::StreamEnded,
            Close::Stalled => EndReason::Stalled,
            Close::VideoNotCarried(_) => EndReason::Unsupported,
            Close::Io(_) => EndReason::ConnectionError,
        }
    }
}

/// Reads a publisher's transport stream into the relay until the connection ends.
pub async fn publish(
    mut socket: SrtSocket,
    session: &PublishSession,
    shutdown: &CancellationToken,
) -> Close {
    let mut demux = TsDemuxer::new();
    let mut events = Vec::new();
    let revoked = session.end_signal().token();
    let publisher = session.publisher();
    let reason = loop {
        let item = tokio::select! {
            _ = revoked.cancelled() => break Close::Revoked,
            _ = shutdown.cancelled() => break Close::Shutdown,
            item = tokio::time::timeout(PUBLISH_READ_TIMEOUT, socket.next()) => item,
        };
        let data = match item {
            Err(_) => break Close::Idle,
            Ok(None) => break Close::PeerClosed,
            Ok(Some(Err(e))) => break Close::Io(e),
            Ok(Some(Ok((_, data)))) => data,
        };
        demux.push(&data, &mut events);
        for event in events.drain(..) {
            match event {
                TsEvent::Track(codec) => publisher.expect(codec),
                TsEvent::VideoConfig(c) => publisher.set_video_config(c),
                TsEvent::AudioConfig(c) => publisher.set_audio_config(c),
                TsEvent::Frame(f) => publisher.push(f),
            }
        }
    };
    let stats = demux.stats();
    if stats.continuity_errors > 0 || stats.dropped_units > 0 || stats.resync_bytes > 0 {
        tracing::info!(
            stream = publisher.name(),
            continuity_errors = stats.continuity_errors,
            dropped_units = stats.dropped_units,
            resync_bytes = stats.resync_bytes,
            "srt publish input had gaps"
        );
    }
    close(socket).await;
    reason
}

/// Writes the relay's frames to a viewer until the stream ends or the connection does.
pub async fn play(
    mut socket: SrtSocket,
    session: &mut PlaySession,
    feed: Arc<Feed>,
    shutdown: &CancellationToken,
) -> Close {
    let revoked = session.end_signal().token();
    let Some(subscriber) = session.subscriber_mut() else {
        close(socket).await;
        return Close::PeerClosed;
    };
    let mut config: Option<Arc<SharedConfig>> = None;
    let reason = loop {
        let event = tokio::select! {
            _ = revoked.cancelled() => break Close::Revoked,
            _ = shutdown.cancelled() => break Close::Shutdown,
            // A viewer sends no media; this notices the connection ending.
            incoming = socket.next() => match incoming {
                None => break Close::PeerClosed,
                Some(Err(e)) => break Close::Io(e),
                Some(Ok(_)) => continue,
            },
            event = subscriber.recv() => event,
        };
        match event {
            Event::Started(c, selection) => {
                if let Some(refused) = refusal(selection) {
                    tracing::warn!(
                        stream = subscriber.name(),
                        peer = %socket.settings().remote,
                        "srt viewer closed: {VP8_REASON}"
                    );
                    break refused;
                }
                config = Some(c);
            }
            Event::Frame(frame) => {
                let Some(c) = &config else { continue };
                let bytes = frame.encoded(WireFormat::MpegTs, |f| feed.mux(f, &c.config));
                if let Err(reason) = send(&mut socket, &bytes).await {
                    break reason;
                }
            }
            Event::Ended => break Close::StreamEnded,
        }
    };
    close(socket).await;
    reason
}

/// What an SRT viewer of a VP8 stream is closed with, in the server log: SRT has no status
/// message for a connected caller, so the operator reads the reason here.
pub const VP8_REASON: &str = "the stream's video is VP8, which SRT (MPEG-TS) cannot carry; \
     the publisher must send H.264 (publish.html?codec=h264) for SRT and RTMP viewers";

/// Why a viewer must be closed when it is told what it takes of the stream, if it must: a
/// picture MPEG-TS cannot carry (the relay's codec table). A sound it cannot carry (a
/// browser's Opus) is no reason: it gets that sound as AAC, derived.
pub const fn refusal(selection: Selection) -> Option<Close> {
    match selection.video {
        Pick::Unavailable(Unavailable::NotCarried(codec)) => Some(Close::VideoNotCarried(codec)),
        _ => None,
    }
}

/// Hands a frame's packets to the connection, [`PACKETS_PER_MESSAGE`] per message. The
/// messages share the frame's bytes; nothing is copied.
async fn send(socket: &mut SrtSocket, bytes: &Bytes) -> Result<(), Close> {
    if bytes.is_empty() {
        return Ok(());
    }
    let now = Instant::now();
    let step = PACKET_LEN * PACKETS_PER_MESSAGE;
    let feed_all = async {
        let mut at = 0;
        while at < bytes.len() {
            let end = (at + step).min(bytes.len());
            socket.feed((now, bytes.slice(at..end))).await?;
            at = end;
        }
        socket.flush().await
    };
    match tokio::time::timeout(WRITE_STALL_TIMEOUT, feed_all).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::NotConnected => Err(Close::PeerClosed),
        Ok(Err(e)) => Err(Close::Io(e)),
        Err(_) => Err(Close::Stalled),
    }
}

/// Closes the connection (flushing and sending SRT's shutdown), without waiting long.
async fn close(mut socket: SrtSocket) {
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, socket.close()).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use streamgate_media::{Tracks, VideoTrack};

    #[test]
    fn only_a_picture_it_cannot_carry_closes_a_viewer() {
        let tracks = |video, audio| Tracks {
            video: Some(VideoTrack {
                codec: video,
                bframes: true,
            }),
            audio: Some(audio),
        };
        let select = |video, audio| WireFormat::MpegTs.select(&tracks(video, audio));
        assert!(matches!(
            refusal(select(Codec::Vp8, Codec::Opus)),
            Some(Close::VideoNotCarried(Codec::Vp8))
        ));
        assert!(refusal(select(Codec::H264, Codec::Aac)).is_none());
        // A browser publisher's Opus reaches SRT viewers as AAC.
        assert!(refusal(select(Codec::H264, Codec::Opus)).is_none());
    }
}
