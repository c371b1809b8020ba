//! Accepted connections: a publisher's TS demuxed into the relay, the relay's frames muxed
//! (once per frame, for every viewer) to a viewer.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use streamgate_admission::{EndReason, PlaySession, PublishSession};
use streamgate_media::ts::{TsDemuxer, TsEvent};
use streamgate_media::Codec;
use streamgate_relay::{Event, Pick, Selection, SharedConfig, Unavailable, WireFormat};
use tokio_util::sync::CancellationToken;

use crate::engine::SrtConn;
use crate::feeds::Feed;

/// How long a publisher may send nothing before it is considered gone (SRT's own idle
/// timeout, 5 s, usually notices first).
pub const PUBLISH_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// How long handing data to a viewer's connection may stall before the viewer is dropped.
pub const WRITE_STALL_TIMEOUT: Duration = Duration::from_secs(15);
/// TS packets per SRT message: 7 x 188 = 1316 bytes, the payload size every SRT tool uses
/// (the engine cuts what a viewer is sent into messages of this size).
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
    /// The connection was closed under the session (the engine ended it).
    Io(crate::engine::Closed),
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
    mut conn: SrtConn,
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
            item = tokio::time::timeout(PUBLISH_READ_TIMEOUT, conn.recv()) => item,
        };
        let data = match item {
            Err(_) => break Close::Idle,
            Ok(None) => break Close::PeerClosed,
            Ok(Some(data)) => data,
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
    // Dropping the connection closes it (the engine flushes and sends the shutdown).
    drop(conn);
    reason
}

/// Writes the relay's frames to a viewer until the stream ends or the connection does.
pub async fn play(
    conn: SrtConn,
    session: &mut PlaySession,
    feed: Arc<Feed>,
    shutdown: &CancellationToken,
) -> Close {
    let revoked = session.end_signal().token();
    let Some(subscriber) = session.subscriber_mut() else {
        return Close::PeerClosed;
    };
    let closed = conn.closed().clone();
    let mut config: Option<Arc<SharedConfig>> = None;
    let reason = loop {
        // What is ready is taken without a wait (the stops are looked at all the same).
        let ready = if revoked.is_cancelled() {
            break Close::Revoked;
        } else if shutdown.is_cancelled() {
            break Close::Shutdown;
        } else if closed.is_cancelled() {
            break Close::PeerClosed;
        } else {
            subscriber.try_recv()
        };
        let event = match ready {
            Some(event) => event,
            None => tokio::select! {
                _ = revoked.cancelled() => break Close::Revoked,
                _ = shutdown.cancelled() => break Close::Shutdown,
                // A viewer sends no media; the engine says when its connection ends.
                _ = closed.cancelled() => break Close::PeerClosed,
                event = subscriber.recv() => event,
            },
        };
        match event {
            Event::Started(c, selection) => {
                if let Some(refused) = refusal(selection) {
                    tracing::warn!(
                        stream = subscriber.name(),
                        peer = %conn.peer(),
                        "srt viewer closed: {VP8_REASON}"
                    );
                    break refused;
                }
                config = Some(c);
            }
            Event::Frame(frame) => {
                let Some(c) = &config else { continue };
                let bytes = frame.encoded(WireFormat::MpegTs, |f| feed.mux(f, &c.config));
                if let Err(reason) = send(&conn, bytes).await {
                    break reason;
                }
            }
            Event::Ended => break Close::StreamEnded,
        }
    };
    drop(conn);
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

/// Hands a frame's transport stream to the connection (the engine cuts it into messages;
/// the bytes are shared, not copied), waiting at most [`WRITE_STALL_TIMEOUT`] for room when
/// the engine's queue is full.
async fn send(conn: &SrtConn, bytes: Bytes) -> Result<(), Close> {
    if bytes.is_empty() {
        return Ok(());
    }
    let bytes = match conn.try_send(bytes) {
        Ok(None) => return Ok(()),
        Ok(Some(bytes)) => bytes,
        Err(closed) => return Err(Close::Io(closed)),
    };
    match tokio::time::timeout(WRITE_STALL_TIMEOUT, conn.send(bytes)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(closed)) => Err(Close::Io(closed)),
        Err(_) => Err(Close::Stalled),
    }
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
