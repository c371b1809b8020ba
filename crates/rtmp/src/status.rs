//! RTMP command answers: `_result`, `onStatus` and the codes for denials, and the stream
//! metadata in both directions (`onMetaData`).

use std::collections::HashMap;

use bytes::Bytes;
use rml_amf0::Amf0Value;
use streamgate_auth::Denial;
use streamgate_media::{flv, Codec, Metadata, StreamConfig};

use crate::chunk::{encode_message, msg_type, DATA_CSID};

/// Chunk stream of the server's command answers on the connection (message stream 0).
pub const COMMAND_CSID: u8 = 3;
/// The server version announced in the connect answer.
const FMS_VERSION: &str = "FMS/3,0,1,123";
/// Longest encoder name kept from a publisher's metadata, in bytes.
pub const MAX_ENCODER_LEN: usize = 256;

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

/// An AMF0 message of `type_id` with `values`, on chunk stream `csid`.
pub(crate) fn amf0_message(csid: u8, type_id: u8, stream_id: u32, values: &[Amf0Value]) -> Bytes {
    // Serialising values built here cannot fail, and they are far below the size limit.
    let payload = rml_amf0::serialize(&values.to_vec()).unwrap_or_default();
    encode_message(csid, 0, type_id, stream_id, &payload).unwrap_or_default()
}

pub(crate) fn text(s: &str) -> Amf0Value {
    Amf0Value::Utf8String(s.to_owned())
}

fn status_object(level: &str, code: &str, description: &str) -> HashMap<String, Amf0Value> {
    HashMap::from([
        ("level".to_owned(), text(level)),
        ("code".to_owned(), text(code)),
        ("description".to_owned(), text(description)),
    ])
}

/// `_result` for transaction `txn` on the connection.
pub fn result(txn: f64, command_object: Amf0Value, argument: Amf0Value) -> Bytes {
    amf0_message(
        COMMAND_CSID,
        msg_type::COMMAND_AMF0,
        0,
        &[
            text("_result"),
            Amf0Value::Number(txn),
            command_object,
            argument,
        ],
    )
}

/// The answer to `connect`.
pub fn connect_result(txn: f64, object_encoding: f64) -> Bytes {
    let properties = HashMap::from([
        ("fmsVer".to_owned(), text(FMS_VERSION)),
        ("capabilities".to_owned(), Amf0Value::Number(31.0)),
    ]);
    let mut info = status_object(
        "status",
        "NetConnection.Connect.Success",
        "Connection succeeded.",
    );
    info.insert(
        "objectEncoding".to_owned(),
        Amf0Value::Number(object_encoding),
    );
    result(txn, Amf0Value::Object(properties), Amf0Value::Object(info))
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
    amf0_message(
        DATA_CSID,
        msg_type::COMMAND_AMF0,
        stream_id,
        &[
            text("onStatus"),
            Amf0Value::Number(0.0),
            Amf0Value::Null,
            Amf0Value::Object(status_object(level, code, description)),
        ],
    )
}

/// The data messages a player expects after `NetStream.Play.Start`.
pub fn play_data_start(stream_id: u32) -> [Bytes; 2] {
    let access = [
        text("|RtmpSampleAccess"),
        Amf0Value::Boolean(false),
        Amf0Value::Boolean(false),
    ];
    let start = [
        text("onStatus"),
        Amf0Value::Object(HashMap::from([(
            "code".to_owned(),
            text("NetStream.Data.Start"),
        )])),
    ];
    [
        amf0_message(DATA_CSID, msg_type::DATA_AMF0, stream_id, &access),
        amf0_message(DATA_CSID, msg_type::DATA_AMF0, stream_id, &start),
    ]
}

/// The metadata of a publisher's `@setDataFrame` / `onMetaData` data message, if it is one.
pub fn metadata_from_amf(values: Vec<Amf0Value>) -> Option<Metadata> {
    let mut it = values.into_iter().peekable();
    if matches!(it.peek(), Some(Amf0Value::Utf8String(s)) if s == "@setDataFrame") {
        it.next();
    }
    if !matches!(it.next(), Some(Amf0Value::Utf8String(s)) if s == "onMetaData") {
        return None;
    }
    let Some(Amf0Value::Object(props)) = it.next() else {
        return None;
    };
    let number = |key: &str| match props.get(key) {
        Some(Amf0Value::Number(n)) if n.is_finite() && *n >= 0.0 => Some(*n),
        _ => None,
    };
    let whole = |key: &str| {
        number(key)
            .filter(|n| *n <= f64::from(u32::MAX))
            .map(|n| n as u32)
    };
    let channels = match props.get("stereo") {
        Some(Amf0Value::Boolean(true)) => Some(2),
        Some(Amf0Value::Boolean(false)) => Some(1),
        _ => whole("audiochannels").and_then(|c| u8::try_from(c).ok()),
    };
    let encoder = match props.get("encoder") {
        Some(Amf0Value::Utf8String(s)) => Some(truncate(s, MAX_ENCODER_LEN).to_owned()),
        _ => None,
    };
    // A codec id is FLV's number or, from some encoders, a FourCC.
    let announced = |key: &str, id: u8, fourcc: &str, codec: Codec| match props.get(key) {
        Some(Amf0Value::Number(n)) if *n == f64::from(id) => Some(codec),
        Some(Amf0Value::Utf8String(s)) if s == fourcc => Some(codec),
        _ => None,
    };
    Some(Metadata {
        width: whole("width"),
        height: whole("height"),
        frame_rate: number("framerate"),
        video_data_rate: number("videodatarate"),
        audio_data_rate: number("audiodatarate"),
        audio_sample_rate: whole("audiosamplerate"),
        audio_channels: channels,
        encoder,
        video_codec: announced("videocodecid", flv::CODEC_ID_AVC, "avc1", Codec::H264),
        audio_codec: announced("audiocodecid", flv::SOUND_FORMAT_AAC, "mp4a", Codec::Aac),
    })
}

/// `s` cut to at most `max` bytes, at a character boundary.
fn truncate(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.get(..end).unwrap_or_default()
}

/// The `onMetaData` a viewer gets: the publisher's, with codec ids from the configs.
pub fn metadata_message(stream_id: u32, c: &StreamConfig) -> Bytes {
    let mut m: HashMap<String, Amf0Value> = HashMap::new();
    let mut num = |key: &str, v: Option<f64>| {
        if let Some(v) = v {
            m.insert(key.to_owned(), Amf0Value::Number(v));
        }
    };
    let meta = c.metadata.clone().unwrap_or_default();
    num("width", meta.width.map(f64::from));
    num("height", meta.height.map(f64::from));
    num("framerate", meta.frame_rate);
    num("videodatarate", meta.video_data_rate);
    num("audiodatarate", meta.audio_data_rate);
    let sample_rate = meta
        .audio_sample_rate
        .or(c.audio.as_ref().map(|a| a.sample_rate));
    num("audiosamplerate", sample_rate.map(f64::from));
    let channels = meta
        .audio_channels
        .or(c.audio.as_ref().map(|a| a.channel_config));
    num("audiochannels", channels.map(f64::from));
    if c.video.is_some() {
        num("videocodecid", Some(f64::from(flv::CODEC_ID_AVC)));
    }
    if c.audio.is_some() {
        num("audiocodecid", Some(f64::from(flv::SOUND_FORMAT_AAC)));
    }
    if let Some(ch) = channels {
        m.insert("stereo".to_owned(), Amf0Value::Boolean(ch >= 2));
    }
    if c.metadata.is_some() {
        m.insert("encoder".to_owned(), text("streamgate"));
    }
    amf0_message(
        DATA_CSID,
        msg_type::DATA_AMF0,
        stream_id,
        &[text("onMetaData"), Amf0Value::Object(m)],
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::amf0::decode_all;
    use crate::dechunk::{Dechunker, MessageLimits};

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

    fn decoded(bytes: &[u8]) -> Vec<Amf0Value> {
        let mut d = Dechunker::new(MessageLimits {
            max_media_bytes: 1024,
        });
        d.push(&crate::control::set_chunk_size(
            crate::chunk::OUT_CHUNK_SIZE,
        ));
        d.push(bytes);
        d.next_message().unwrap().unwrap();
        let m = d.next_message().unwrap().unwrap();
        decode_all(&m.payload).unwrap()
    }

    fn info(values: &[Amf0Value]) -> HashMap<String, Amf0Value> {
        let Some(Amf0Value::Object(info)) = values.last() else {
            panic!("no info object: {values:?}")
        };
        info.clone()
    }

    #[test]
    fn status_messages_decode() {
        let v = decoded(&on_status(1, "NetStream.Play.UnpublishNotify", "ended"));
        assert_eq!(v[0], text("onStatus"));
        let i = info(&v);
        assert_eq!(i["code"], text("NetStream.Play.UnpublishNotify"));
        assert_eq!(i["level"], text("status"));
        let i = info(&decoded(&on_error_status(
            1,
            "NetStream.Play.Failed",
            VP8_NOT_PLAYABLE,
        )));
        assert_eq!(i["level"], text("error"));
        assert_eq!(i["description"], text(VP8_NOT_PLAYABLE));
        let v = decoded(&connect_result(1.0, 0.0));
        assert_eq!(v[0], text("_result"));
        assert_eq!(info(&v)["code"], text("NetConnection.Connect.Success"));
    }

    #[test]
    fn metadata_in_and_out() {
        let props = HashMap::from([
            ("width".to_owned(), Amf0Value::Number(1920.0)),
            ("height".to_owned(), Amf0Value::Number(1080.0)),
            ("framerate".to_owned(), Amf0Value::Number(30.0)),
            ("stereo".to_owned(), Amf0Value::Boolean(true)),
            ("encoder".to_owned(), text(&"é".repeat(200))),
            ("videodatarate".to_owned(), Amf0Value::Number(f64::NAN)),
        ]);
        let m = metadata_from_amf(vec![
            text("@setDataFrame"),
            text("onMetaData"),
            Amf0Value::Object(props),
        ])
        .unwrap();
        assert_eq!(
            (m.width, m.height, m.audio_channels),
            (Some(1920), Some(1080), Some(2))
        );
        assert_eq!(m.video_data_rate, None, "NaN is no rate");
        assert_eq!(
            (m.video_codec, m.audio_codec),
            (None, None),
            "none announced"
        );
        assert_eq!(m.encoder.as_deref().map(str::len), Some(MAX_ENCODER_LEN));
        // Codec ids as ffmpeg and OBS send them (FLV's numbers), as FourCCs, and ones not
        // taken here (VP6, MP3).
        let codecs = |video: Amf0Value, audio: Amf0Value| {
            let props = HashMap::from([
                ("videocodecid".to_owned(), video),
                ("audiocodecid".to_owned(), audio),
            ]);
            let m = metadata_from_amf(vec![text("onMetaData"), Amf0Value::Object(props)]).unwrap();
            (m.video_codec, m.audio_codec)
        };
        let both = (Some(Codec::H264), Some(Codec::Aac));
        assert_eq!(
            codecs(Amf0Value::Number(7.0), Amf0Value::Number(10.0)),
            both
        );
        assert_eq!(codecs(text("avc1"), text("mp4a")), both);
        assert_eq!(
            codecs(Amf0Value::Number(4.0), Amf0Value::Number(2.0)),
            (None, None)
        );
        assert!(metadata_from_amf(vec![text("@setDataFrame")]).is_none());
        assert!(metadata_from_amf(vec![text("onCuePoint"), Amf0Value::Null]).is_none());

        let config = StreamConfig {
            metadata: Some(m),
            ..StreamConfig::default()
        };
        let out = decoded(&metadata_message(1, &config));
        assert_eq!(out[0], text("onMetaData"));
        let Amf0Value::Object(o) = &out[1] else {
            panic!("{out:?}")
        };
        assert_eq!(o["width"], Amf0Value::Number(1920.0));
        assert_eq!(o["encoder"], text("streamgate"));
    }
}
