//! RTMP status answers: the codes for denials, and onStatus/metadata messages built here.

use std::collections::HashMap;

use bytes::Bytes;
use rml_amf0::Amf0Value;
use rml_rtmp::sessions::StreamMetadata;
use streamgate_auth::Denial;
use streamgate_media::{Metadata, StreamConfig};

use crate::chunk::{encode_message, msg_type, DATA_CSID};

/// The status code and description sent when a publish is refused.
pub fn publish_denied(d: Denial) -> (&'static str, String) {
    match d {
        Denial::StreamInUse => (
            "NetStream.Publish.BadName",
            "stream is already being published".into(),
        ),
        other => (
            "NetStream.Publish.Unauthorized",
            format!("publish refused: {other}"),
        ),
    }
}

/// Why an RTMP viewer cannot play a VP8 stream (a browser publishing VP8).
pub const VP8_NOT_PLAYABLE: &str =
    "the stream's video is VP8, which RTMP cannot carry; the publisher must send H.264";

/// The status code and description sent when a play is refused.
pub fn play_denied(d: Denial) -> (&'static str, String) {
    match d {
        Denial::StreamNotLive => ("NetStream.Play.StreamNotFound", "stream is not live".into()),
        other => ("NetStream.Play.Failed", format!("play refused: {other}")),
    }
}

/// An `onStatus` command with level `status` on message stream `stream_id`.
pub fn on_status(stream_id: u32, code: &str, description: &str) -> Bytes {
    status_message(stream_id, "status", code, description)
}

/// An `onStatus` command with level `error` (players stop and report the description).
pub fn on_error_status(stream_id: u32, code: &str, description: &str) -> Bytes {
    status_message(stream_id, "error", code, description)
}

fn status_message(stream_id: u32, level: &str, code: &str, description: &str) -> Bytes {
    let mut info = HashMap::new();
    info.insert("level".to_owned(), Amf0Value::Utf8String(level.into()));
    info.insert("code".to_owned(), Amf0Value::Utf8String(code.into()));
    info.insert(
        "description".to_owned(),
        Amf0Value::Utf8String(description.into()),
    );
    let values = vec![
        Amf0Value::Utf8String("onStatus".into()),
        Amf0Value::Number(0.0),
        Amf0Value::Null,
        Amf0Value::Object(info),
    ];
    // Serialising these values cannot fail, and the message is far below the size limit.
    let payload = rml_amf0::serialize(&values).unwrap_or_default();
    encode_message(DATA_CSID, 0, msg_type::COMMAND_AMF0, stream_id, &payload).unwrap_or_default()
}

/// The publisher's metadata in our types.
pub fn metadata_from_rtmp(m: &StreamMetadata) -> Metadata {
    Metadata {
        width: m.video_width,
        height: m.video_height,
        frame_rate: m.video_frame_rate.map(f64::from),
        video_data_rate: m.video_bitrate_kbps.map(f64::from),
        audio_data_rate: m.audio_bitrate_kbps.map(f64::from),
        audio_sample_rate: m.audio_sample_rate,
        audio_channels: m.audio_channels.and_then(|c| u8::try_from(c).ok()),
        encoder: m.encoder.clone(),
    }
}

/// The onMetaData a viewer gets: the publisher's, with codec ids from the configs.
pub fn metadata_for_viewer(c: &StreamConfig) -> StreamMetadata {
    let mut m = StreamMetadata::new();
    if let Some(meta) = &c.metadata {
        m.video_width = meta.width;
        m.video_height = meta.height;
        m.video_frame_rate = meta.frame_rate.map(|f| f as f32);
        m.video_bitrate_kbps = meta.video_data_rate.map(|r| r as u32);
        m.audio_bitrate_kbps = meta.audio_data_rate.map(|r| r as u32);
        m.audio_sample_rate = meta.audio_sample_rate;
        m.audio_channels = meta.audio_channels.map(u32::from);
        m.encoder = Some("streamgate".into());
    }
    if c.video.is_some() {
        m.video_codec_id = Some(u32::from(streamgate_media::flv::CODEC_ID_AVC));
    }
    if let Some(a) = &c.audio {
        m.audio_codec_id = Some(u32::from(streamgate_media::flv::SOUND_FORMAT_AAC));
        m.audio_sample_rate = m.audio_sample_rate.or(Some(a.sample_rate));
        m.audio_channels = m.audio_channels.or(Some(u32::from(a.channel_config)));
        m.audio_is_stereo = m.audio_channels.map(|c| c >= 2);
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn denial_codes() {
        assert_eq!(
            publish_denied(Denial::StreamInUse).0,
            "NetStream.Publish.BadName"
        );
        assert_eq!(
            publish_denied(Denial::Unknown).0,
            "NetStream.Publish.Unauthorized"
        );
        assert_eq!(
            play_denied(Denial::StreamNotLive).0,
            "NetStream.Play.StreamNotFound"
        );
        assert_eq!(play_denied(Denial::Missing).0, "NetStream.Play.Failed");
    }

    fn decoded_info(bytes: &[u8]) -> HashMap<String, Amf0Value> {
        let mut d = rml_rtmp::chunk_io::ChunkDeserializer::new();
        d.set_max_chunk_size(crate::chunk::OUT_CHUNK_SIZE as usize)
            .unwrap();
        let m = d.get_next_message(bytes).unwrap().unwrap();
        assert_eq!(m.type_id, msg_type::COMMAND_AMF0);
        let values = rml_amf0::deserialize(&mut std::io::Cursor::new(&m.data[..])).unwrap();
        assert_eq!(values[0], Amf0Value::Utf8String("onStatus".into()));
        let Amf0Value::Object(info) = &values[3] else {
            panic!("no info object")
        };
        info.clone()
    }

    #[test]
    fn on_status_decodes() {
        let info = decoded_info(&on_status(1, "NetStream.Play.UnpublishNotify", "ended"));
        assert_eq!(
            info["code"],
            Amf0Value::Utf8String("NetStream.Play.UnpublishNotify".into())
        );
        assert_eq!(info["level"], Amf0Value::Utf8String("status".into()));
        let info = decoded_info(&on_error_status(
            1,
            "NetStream.Play.Failed",
            VP8_NOT_PLAYABLE,
        ));
        assert_eq!(info["level"], Amf0Value::Utf8String("error".into()));
        assert_eq!(
            info["description"],
            Amf0Value::Utf8String(VP8_NOT_PLAYABLE.into())
        );
    }
}
