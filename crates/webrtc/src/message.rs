//! The WebSocket message set (Ant Media's): parsing what a browser sends into a [`Command`],
//! and building what the server sends ([`Reply`]). No IO here.

use serde::Deserialize;
use serde_json::{json, Value};

/// Longest text message accepted from a browser, in bytes. An SDP offer from a browser is
/// 5 to 15 KB; a longer message is answered with the `error` definition
/// [`Definition::MessageTooLarge`] and the socket is closed.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;

/// Longest `streamId` accepted, in bytes (a stream name is shorter still).
pub const MAX_STREAM_ID_BYTES: usize = 512;

/// What a browser asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Publish `stream_id`; the server answers `start`, then the browser sends its offer.
    Publish {
        /// The stream id as sent.
        stream_id: String,
        /// The token, if any.
        token: Option<String>,
    },
    /// Play `stream_id`; the server makes the offer.
    Play {
        /// The stream id as sent.
        stream_id: String,
        /// The token, if any.
        token: Option<String>,
    },
    /// An SDP offer (publish) or answer (play).
    TakeConfiguration {
        /// The session it belongs to.
        stream_id: String,
        /// `offer` or `answer`.
        kind: SdpKind,
        /// The SDP text.
        sdp: String,
    },
    /// A trickled ICE candidate.
    TakeCandidate {
        /// The session it belongs to.
        stream_id: String,
        /// The candidate line (`candidate:...`); empty for end-of-candidates.
        candidate: String,
        /// The m-line index (`label`).
        label: Option<u16>,
        /// The media id (`id`).
        mid: Option<String>,
    },
    /// End a session.
    Stop {
        /// The session to end.
        stream_id: String,
    },
    /// Keep-alive.
    Ping,
    /// Which STUN/TURN servers to use.
    GetIceServerConfig,
    /// What a stream carries.
    GetStreamInfo {
        /// The stream asked about.
        stream_id: String,
    },
}

/// The `type` of a `takeConfiguration`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SdpKind {
    /// An offer.
    Offer,
    /// An answer.
    Answer,
}

impl SdpKind {
    /// The wire string.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Offer => "offer",
            Self::Answer => "answer",
        }
    }
}

/// Why a message could not be understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MessageError {
    /// Longer than [`MAX_MESSAGE_BYTES`].
    #[error("message longer than {MAX_MESSAGE_BYTES} bytes")]
    TooLarge,
    /// Not a JSON object with a string `command`.
    #[error("not a JSON object with a command")]
    Malformed,
    /// A command this server does not implement.
    #[error("unknown command {0:?}")]
    UnknownCommand(String),
    /// A known command without the fields it needs.
    #[error("command {command} lacks or mistypes {field}")]
    MissingField {
        /// The command.
        command: &'static str,
        /// The field.
        field: &'static str,
    },
    /// No `streamId`, or an empty one.
    #[error("no streamId")]
    NoStreamId,
}

impl MessageError {
    /// The `error` definition the browser is sent.
    pub fn definition(&self) -> Definition {
        match self {
            Self::TooLarge => Definition::MessageTooLarge,
            Self::Malformed => Definition::InvalidMessage,
            Self::UnknownCommand(_) => Definition::UnknownCommand,
            Self::MissingField { .. } => Definition::InvalidMessage,
            Self::NoStreamId => Definition::NoStreamNameSpecified,
        }
    }
}

/// The fields of any command; every one optional so that one struct reads them all.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Fields {
    command: Option<String>,
    stream_id: Option<Value>,
    token: Option<Value>,
    #[serde(rename = "type")]
    kind: Option<String>,
    sdp: Option<String>,
    candidate: Option<String>,
    label: Option<Value>,
    id: Option<Value>,
}

/// Parses one text message.
pub fn parse(text: &str) -> Result<Command, MessageError> {
    if text.len() > MAX_MESSAGE_BYTES {
        return Err(MessageError::TooLarge);
    }
    let fields: Fields = serde_json::from_str(text).map_err(|_| MessageError::Malformed)?;
    let command = fields.command.clone().ok_or(MessageError::Malformed)?;
    match command.as_str() {
        "publish" => Ok(Command::Publish {
            stream_id: stream_id(&fields)?,
            token: token(&fields),
        }),
        "play" => Ok(Command::Play {
            stream_id: stream_id(&fields)?,
            token: token(&fields),
        }),
        "takeConfiguration" => {
            let kind = match fields.kind.as_deref() {
                Some("offer") => SdpKind::Offer,
                Some("answer") => SdpKind::Answer,
                _ => {
                    return Err(MessageError::MissingField {
                        command: "takeConfiguration",
                        field: "type",
                    })
                }
            };
            let sdp = fields.sdp.clone().ok_or(MessageError::MissingField {
                command: "takeConfiguration",
                field: "sdp",
            })?;
            Ok(Command::TakeConfiguration {
                stream_id: stream_id(&fields)?,
                kind,
                sdp,
            })
        }
        "takeCandidate" => Ok(Command::TakeCandidate {
            stream_id: stream_id(&fields)?,
            candidate: fields.candidate.clone().unwrap_or_default(),
            label: fields
                .label
                .as_ref()
                .and_then(Value::as_u64)
                .and_then(|l| u16::try_from(l).ok()),
            mid: match &fields.id {
                Some(Value::String(s)) => Some(s.clone()),
                Some(Value::Number(n)) => Some(n.to_string()),
                _ => None,
            },
        }),
        "stop" => Ok(Command::Stop {
            stream_id: stream_id(&fields)?,
        }),
        "ping" => Ok(Command::Ping),
        "getIceServerConfig" => Ok(Command::GetIceServerConfig),
        "getStreamInfo" => Ok(Command::GetStreamInfo {
            stream_id: stream_id(&fields)?,
        }),
        _ => Err(MessageError::UnknownCommand(
            command.chars().take(64).collect(),
        )),
    }
}

/// The `streamId`, non-empty and bounded.
fn stream_id(fields: &Fields) -> Result<String, MessageError> {
    match &fields.stream_id {
        Some(Value::String(s)) if !s.is_empty() && s.len() <= MAX_STREAM_ID_BYTES => Ok(s.clone()),
        Some(Value::String(s)) if !s.is_empty() => Err(MessageError::MissingField {
            command: "any",
            field: "streamId",
        }),
        _ => Err(MessageError::NoStreamId),
    }
}

/// The token; an empty string (what the Ant Media SDK sends for none) counts as none.
fn token(fields: &Fields) -> Option<String> {
    match &fields.token {
        Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
        _ => None,
    }
}

/// An `error` or `notification` definition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Definition {
    /// The token does not admit the request.
    UnauthorizedAccess,
    /// The stream is already being published.
    StreamIdInUse,
    /// The stream is not live and the viewer may not wait for it.
    NoStreamExist,
    /// The stream id is not a valid stream name.
    InvalidStreamName,
    /// No stream id was given.
    NoStreamNameSpecified,
    /// The command is not one this server knows.
    UnknownCommand,
    /// The message is not a JSON object with the fields its command needs.
    InvalidMessage,
    /// The message is longer than [`MAX_MESSAGE_BYTES`].
    MessageTooLarge,
    /// The SDP could not be applied.
    NotSetRemoteDescription,
    /// A message for a session that does not exist or is in the wrong state.
    NoSession,
    /// This socket has as many sessions as it may.
    TooManySessions,
    /// The same stream id is already played on this socket.
    AlreadyPlaying,
    /// The server could not set up the peer connection.
    ServerError,
    /// Negotiation or connection did not complete in time.
    Timeout,
    /// Publishing started (notification).
    PublishStarted,
    /// Publishing ended (notification).
    PublishFinished,
    /// Playback started (notification).
    PlayStarted,
    /// Playback ended (notification).
    PlayFinished,
    /// A viewer waits for the stream to go live (notification).
    PlayWaiting,
    /// The stream's H.264 has B-frames, which WebRTC playback cannot carry, and is not
    /// re-encoded (`webrtc.bframes = "refuse"`, or pictures too large to re-encode).
    BFramesUnsupported,
    /// The viewer's browser takes none of the video codecs offered: the session plays the
    /// stream's sound only.
    VideoNotAccepted,
    /// The viewer's browser takes none of the audio codecs offered: the session plays the
    /// stream's video only.
    AudioNotAccepted,
    /// The session has been sent as many ICE candidates as it takes; this one is ignored.
    TooManyCandidates,
    /// The server negotiates as many peer connections as it may at once; try again.
    ServerBusy,
    /// Playing the stream needs work the server has no room for now (an H.264 re-encode
    /// beyond `webrtc.max_video_transcodes`).
    HighResourceUsage,
}

impl Definition {
    /// The wire string.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::UnauthorizedAccess => "unauthorized_access",
            Self::StreamIdInUse => "streamIdInUse",
            Self::NoStreamExist => "no_stream_exist",
            Self::InvalidStreamName => "invalidStreamName",
            Self::NoStreamNameSpecified => "noStreamNameSpecified",
            Self::UnknownCommand => "unknownCommand",
            Self::InvalidMessage => "invalidMessage",
            Self::MessageTooLarge => "messageTooLarge",
            Self::NotSetRemoteDescription => "notSetRemoteDescription",
            Self::NoSession => "noSession",
            Self::TooManySessions => "tooManySessions",
            Self::AlreadyPlaying => "already_playing",
            Self::ServerError => "serverError",
            Self::Timeout => "timeout",
            Self::PublishStarted => "publish_started",
            Self::PublishFinished => "publish_finished",
            Self::PlayStarted => "play_started",
            Self::PlayFinished => "play_finished",
            Self::PlayWaiting => "play_waiting",
            Self::BFramesUnsupported => "bframes_not_supported",
            Self::VideoNotAccepted => "video_codec_not_accepted",
            Self::AudioNotAccepted => "audio_codec_not_accepted",
            Self::TooManyCandidates => "tooManyCandidates",
            Self::ServerBusy => "serverBusy",
            Self::HighResourceUsage => "highResourceUsage",
        }
    }
}

/// Messages the server sends, as JSON text.
#[derive(Debug)]
pub struct Reply;

impl Reply {
    /// `error` with a definition, for a stream id if the error concerns one.
    pub fn error(definition: Definition, stream_id: Option<&str>) -> String {
        let mut v = serde_json::Map::new();
        v.insert("command".into(), "error".into());
        v.insert("definition".into(), definition.as_str().into());
        if let Some(id) = stream_id {
            v.insert("streamId".into(), id.into());
        }
        Value::Object(v).to_string()
    }

    /// `notification` with a definition, optionally with a human-readable reason.
    pub fn notification(definition: Definition, stream_id: &str, reason: Option<&str>) -> String {
        let mut v = serde_json::Map::new();
        v.insert("command".into(), "notification".into());
        v.insert("definition".into(), definition.as_str().into());
        v.insert("streamId".into(), stream_id.into());
        if let Some(r) = reason {
            v.insert("reason".into(), r.into());
        }
        Value::Object(v).to_string()
    }

    /// `publish_started` or `play_started`, with `tokenExpiresOn` (Unix milliseconds) when
    /// the session's token expires (the bundled play page shows it).
    pub fn started(
        definition: Definition,
        stream_id: &str,
        token_expires_on: Option<i64>,
    ) -> String {
        let mut v = serde_json::Map::new();
        v.insert("command".into(), "notification".into());
        v.insert("definition".into(), definition.as_str().into());
        v.insert("streamId".into(), stream_id.into());
        if let Some(at) = token_expires_on {
            v.insert("tokenExpiresOn".into(), at.into());
        }
        Value::Object(v).to_string()
    }

    /// `start`: the publisher may send its offer.
    pub fn start(stream_id: &str) -> String {
        json!({"command": "start", "streamId": stream_id}).to_string()
    }

    /// `takeConfiguration` with the server's SDP.
    pub fn configuration(stream_id: &str, kind: SdpKind, sdp: &str) -> String {
        json!({
            "command": "takeConfiguration",
            "streamId": stream_id,
            "type": kind.as_str(),
            "sdp": sdp,
        })
        .to_string()
    }

    /// `takeCandidate` with one of the server's ICE candidates.
    pub fn candidate(stream_id: &str, candidate: &str, label: u16, mid: &str) -> String {
        json!({
            "command": "takeCandidate",
            "streamId": stream_id,
            "candidate": candidate,
            "label": label,
            "id": mid,
        })
        .to_string()
    }

    /// `pong`.
    pub fn pong() -> String {
        json!({"command": "pong"}).to_string()
    }

    /// `iceServerConfig`: the server's TURN server if it has one (Ant Media's message names
    /// one server, its URI and credentials), else its STUN server, else none.
    pub fn ice_server_config(servers: &[crate::IceServer]) -> String {
        let server = servers
            .iter()
            .find(|s| !s.username.is_empty())
            .or_else(|| servers.first());
        json!({
            "command": "iceServerConfig",
            "stunServerUri": server.map_or("", |s| s.url.as_str()),
            "turnServerUsername": server.map_or("", |s| s.username.as_str()),
            "turnServerCredential": server.map_or("", |s| s.credential.as_str()),
        })
        .to_string()
    }

    /// `streamInformation` for a live stream.
    pub fn stream_information(stream_id: &str, video_codec: Option<&str>, bitrate: u64) -> String {
        json!({
            "command": "streamInformation",
            "streamId": stream_id,
            "streamInfo": [{
                "streamWidth": 0,
                "streamHeight": 0,
                "videoBitrate": bitrate,
                "audioBitrate": 0,
                "videoCodec": video_codec.unwrap_or(""),
            }],
        })
        .to_string()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;

    #[test]
    fn parses_the_sdk_messages() {
        let publish = r#"{"command":"publish","streamId":"cam1","token":"t","subscriberId":"","video":true,"audio":true}"#;
        assert_eq!(
            parse(publish).unwrap(),
            Command::Publish {
                stream_id: "cam1".into(),
                token: Some("t".into())
            }
        );
        let play =
            r#"{"command":"play","streamId":"live/cam1","token":"","room":"","trackList":[]}"#;
        assert_eq!(
            parse(play).unwrap(),
            Command::Play {
                stream_id: "live/cam1".into(),
                token: None
            }
        );
        let cand = r#"{"command":"takeCandidate","streamId":"a","label":0,"id":"0","candidate":"candidate:1 1 udp 1 127.0.0.1 5000 typ host"}"#;
        match parse(cand).unwrap() {
            Command::TakeCandidate { label, mid, .. } => {
                assert_eq!(label, Some(0));
                assert_eq!(mid.as_deref(), Some("0"));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(parse(r#"{"command":"ping"}"#).unwrap(), Command::Ping);
        assert_eq!(
            parse(r#"{"command":"getIceServerConfig"}"#).unwrap(),
            Command::GetIceServerConfig
        );
    }

    #[test]
    fn the_ice_server_config_names_the_turn_server_before_the_stun_server() {
        let reply = |servers: &[crate::IceServer]| -> serde_json::Value {
            serde_json::from_str(&Reply::ice_server_config(servers)).unwrap()
        };
        assert_eq!(reply(&[])["stunServerUri"], "");
        let stun = crate::IceServer {
            url: "stun:stun.example.net:3478".into(),
            username: String::new(),
            credential: String::new(),
        };
        assert_eq!(
            reply(std::slice::from_ref(&stun))["stunServerUri"],
            "stun:stun.example.net:3478"
        );
        let turn = crate::IceServer {
            url: "turn:turn.example.net".into(),
            username: "u".into(),
            credential: "p".into(),
        };
        let r = reply(&[stun, turn]);
        assert_eq!(
            (
                &r["stunServerUri"],
                &r["turnServerUsername"],
                &r["turnServerCredential"]
            ),
            (&"turn:turn.example.net".into(), &"u".into(), &"p".into())
        );
    }

    #[test]
    fn malformed_input_is_an_error_not_a_panic() {
        for bad in [
            "",
            "{",
            "null",
            "[]",
            "42",
            r#"{"command":5}"#,
            r#"{"streamId":"a"}"#,
            "\u{0}\u{1}",
        ] {
            assert_eq!(parse(bad), Err(MessageError::Malformed), "{bad:?}");
        }
        assert_eq!(
            parse(r#"{"command":"publish"}"#),
            Err(MessageError::NoStreamId)
        );
        assert_eq!(
            parse(r#"{"command":"publish","streamId":""}"#),
            Err(MessageError::NoStreamId)
        );
        assert_eq!(
            parse(r#"{"command":"play","streamId":7}"#),
            Err(MessageError::NoStreamId)
        );
        assert!(matches!(
            parse(r#"{"command":"takeConfiguration","streamId":"a","type":"pranswer","sdp":""}"#),
            Err(MessageError::MissingField { .. })
        ));
        assert_eq!(
            parse(r#"{"command":"joinRoom"}"#),
            Err(MessageError::UnknownCommand("joinRoom".into()))
        );
        let huge = format!(
            r#"{{"command":"ping","pad":"{}"}}"#,
            "x".repeat(MAX_MESSAGE_BYTES)
        );
        assert_eq!(parse(&huge), Err(MessageError::TooLarge));
        let long_id = format!(
            r#"{{"command":"play","streamId":"{}"}}"#,
            "a".repeat(MAX_STREAM_ID_BYTES + 1)
        );
        assert!(parse(&long_id).is_err());
    }

    #[test]
    fn replies_are_json_the_sdk_reads() {
        let v: Value =
            serde_json::from_str(&Reply::error(Definition::NoStreamExist, Some("x"))).unwrap();
        assert_eq!(v["command"], "error");
        assert_eq!(v["definition"], "no_stream_exist");
        assert_eq!(v["streamId"], "x");
        let v: Value =
            serde_json::from_str(&Reply::configuration("x", SdpKind::Offer, "v=0")).unwrap();
        assert_eq!(v["type"], "offer");
        let v: Value =
            serde_json::from_str(&Reply::notification(Definition::PlayFinished, "x", None))
                .unwrap();
        assert_eq!(v["definition"], "play_finished");
    }
}
