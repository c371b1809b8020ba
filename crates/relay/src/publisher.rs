//! The publishing side of a stream.

use std::sync::Arc;

use streamgate_media::{AacConfig, AvcConfig, Codec, Frame, Metadata, StreamConfig};

use crate::hub::{HubInner, StreamEntry};
use crate::session::Session;
use crate::{SharedConfig, SharedFrame};

/// The one publisher of a live stream. Dropping it ends the stream: subscribers receive
/// [`crate::Event::Ended`] after the frames already pushed, and stay subscribed for the next
/// publish of the same name.
#[derive(Debug)]
pub struct Publisher {
    hub: Arc<HubInner>,
    entry: Arc<StreamEntry>,
    session: Arc<Session>,
}

impl Publisher {
    /// Wraps a freshly attached session.
    pub(crate) fn new(hub: Arc<HubInner>, entry: Arc<StreamEntry>, session: Arc<Session>) -> Self {
        Self {
            hub,
            entry,
            session,
        }
    }

    /// The stream name.
    pub fn name(&self) -> &str {
        self.entry.name()
    }

    /// Says that the stream carries a track in `codec`, as soon as the listener knows (from
    /// RTMP's `onMetaData` or sequence headers, MPEG-TS's program map, the browser's SDP):
    /// the publish's first frames are held until a frame of every such track has come, so
    /// that viewers start knowing what the stream carries (see [`crate::settle`]).
    pub fn expect(&self, codec: Codec) {
        self.session.expect(codec);
    }

    /// Replaces the whole configuration (the tracks stay the relay's).
    pub fn set_config(&self, config: StreamConfig) {
        self.session.update_config(|c| *c = config);
    }

    /// Sets the H.264 configuration (an RTMP AVC sequence header, or SPS/PPS seen in-band).
    pub fn set_video_config(&self, video: AvcConfig) {
        self.session.update_config(|c| c.video = Some(video));
    }

    /// Sets the AAC configuration.
    pub fn set_audio_config(&self, audio: AacConfig) {
        self.session.update_config(|c| c.audio = Some(audio));
    }

    /// Sets the encoder-announced metadata.
    pub fn set_metadata(&self, metadata: Metadata) {
        self.session.update_config(|c| c.metadata = Some(metadata));
    }

    /// The configuration in force.
    pub fn config(&self) -> Arc<SharedConfig> {
        self.session.config()
    }

    /// Hands a frame to every subscriber. Never waits: the cost is one allocation for the
    /// shared frame, one short lock and a wake-up of the subscribers waiting for data,
    /// however far behind they are. A frame larger than the hub's
    /// [`crate::RelayLimits::max_frame_bytes`] is dropped and counted instead.
    ///
    /// A configuration change made before this call is announced to each subscriber right
    /// before this frame.
    pub fn push(&self, frame: Frame) {
        self.push_all([frame]);
    }

    /// Hands several frames to every subscriber, in order, with one wake-up for all of them:
    /// for frames that arrived together (one socket read), so that each subscriber is woken,
    /// and writes, once. Never waits; frames over the size limit are dropped and counted.
    pub fn push_all(&self, frames: impl IntoIterator<Item = Frame>) {
        let max = self.hub.limits.max_frame_bytes;
        let mut bytes = 0;
        let mut oversized = 0;
        let shared: Vec<Arc<SharedFrame>> = frames
            .into_iter()
            .filter(|frame| {
                let fits = frame.payload.len() <= max;
                oversized += u64::from(!fits);
                fits
            })
            .map(|frame| {
                bytes += frame.payload.len();
                Arc::new(SharedFrame::new(frame))
            })
            .collect();
        if oversized > 0 {
            self.entry.count_oversized(oversized);
        }
        if shared.is_empty() {
            return;
        }
        let count = shared.len() as u64;
        let appended = self.session.push_all(shared);
        self.entry.count_in(count, bytes);
        if appended {
            self.entry.signal.wake_all();
        }
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        self.hub.detach_publisher(&self.entry, &self.session);
    }
}
