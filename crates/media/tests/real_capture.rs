//! Parsing and rewriting tag bodies cut from a real ffmpeg capture (see fixtures/README.md).

use bytes::Bytes;
use streamgate_media::flv::{self, FlvAudio, FlvVideo};
use streamgate_media::nal::{self, NAL_TYPE_IDR};
use streamgate_media::{ms_to_ticks, parse_adts, AacConfig, Codec, TrackKind};

const AVC_SEQUENCE_HEADER: &[u8] = include_bytes!("fixtures/avc_sequence_header.bin");
const AVC_KEYFRAME: &[u8] = include_bytes!("fixtures/avc_keyframe.bin");
const AVC_P_FRAME: &[u8] = include_bytes!("fixtures/avc_p_frame.bin");
const AVC_B_FRAME: &[u8] = include_bytes!("fixtures/avc_b_frame.bin");
const AAC_SEQUENCE_HEADER: &[u8] = include_bytes!("fixtures/aac_sequence_header.bin");
const AAC_FRAME: &[u8] = include_bytes!("fixtures/aac_frame.bin");
const ADTS_TWO_FRAMES: &[u8] = include_bytes!("fixtures/aac_adts_two_frames.aac");

#[test]
fn avc_sequence_header_parses_and_rewrites_identically() {
    let FlvVideo::Config(config) =
        flv::parse_video(0, Bytes::from_static(AVC_SEQUENCE_HEADER)).unwrap()
    else {
        panic!("not a config");
    };
    assert_eq!(config.profile, 100);
    assert_eq!(config.level, 10);
    assert_eq!(config.nal_length_size, 4);
    assert_eq!(config.sps.len(), 1);
    assert_eq!(config.pps.len(), 1);
    assert_eq!(nal::nal_type(&config.sps[0]), Some(nal::NAL_TYPE_SPS));
    assert_eq!(nal::nal_type(&config.pps[0]), Some(nal::NAL_TYPE_PPS));
    assert_eq!(config.codec_string(), "avc1.64000a");
    assert_eq!(
        &flv::avc_sequence_header_body(&config)[..],
        AVC_SEQUENCE_HEADER
    );

    // Rebuilding from the parameter sets keeps everything but the high-profile extension.
    let rebuilt =
        streamgate_media::AvcConfig::from_parameter_sets(config.sps.clone(), config.pps.clone())
            .unwrap();
    assert_eq!(rebuilt.sps, config.sps);
    assert_eq!(rebuilt.pps, config.pps);
    assert_eq!(rebuilt.profile, config.profile);
    assert!(config.record.starts_with(&rebuilt.record));
}

#[test]
fn video_frames_keep_timestamps_and_bytes() {
    for (body, ts, cts_ms, key) in [
        (AVC_KEYFRAME, 0u32, 80i64, true),
        (AVC_P_FRAME, 40, 160, false),
        (AVC_B_FRAME, 80, 40, false),
    ] {
        let FlvVideo::Frame(frame) = flv::parse_video(ts, Bytes::from_static(body)).unwrap() else {
            panic!("not a frame");
        };
        assert_eq!(frame.track, TrackKind::Video);
        assert_eq!(frame.codec, Codec::H264);
        assert_eq!(frame.keyframe, key);
        assert_eq!(frame.dts, ms_to_ticks(i64::from(ts)));
        assert_eq!(frame.cts(), ms_to_ticks(cts_ms));
        assert_eq!(flv::timestamp_ms(&frame), ts);
        assert_eq!(&flv::video_body(&frame)[..], body);

        let units = nal::split_avcc(&frame.payload, 4).unwrap();
        assert!(!units.is_empty());
        assert_eq!(
            units.iter().any(|u| nal::nal_type(u) == Some(NAL_TYPE_IDR)),
            key
        );
        let annexb = nal::avcc_to_annexb(&frame.payload).unwrap();
        assert_eq!(nal::split_annexb(&annexb).unwrap(), units);
        assert_eq!(nal::annexb_to_avcc(&annexb).unwrap(), frame.payload);
    }
}

#[test]
fn aac_config_and_frame_round_trip() {
    let FlvAudio::Config(config) =
        flv::parse_audio(0, Bytes::from_static(AAC_SEQUENCE_HEADER)).unwrap()
    else {
        panic!("not a config");
    };
    assert_eq!(config.object_type, 2);
    assert_eq!(config.sample_rate, 44_100);
    assert_eq!(config.channel_config, 1);
    assert_eq!(
        &flv::aac_sequence_header_body(&config)[..],
        AAC_SEQUENCE_HEADER
    );

    let FlvAudio::Frame(frame) = flv::parse_audio(80, Bytes::from_static(AAC_FRAME)).unwrap()
    else {
        panic!("not a frame");
    };
    assert_eq!(frame.codec, Codec::Aac);
    assert!(frame.keyframe);
    assert_eq!(frame.pts, ms_to_ticks(80));
    assert_eq!(frame.payload.len(), AAC_FRAME.len() - 2);
    assert_eq!(&flv::audio_body(&frame)[..], AAC_FRAME);

    // The same frame behind an ADTS header, as MPEG-TS carries it.
    let header = config.adts_header(frame.payload.len()).unwrap();
    let adts = parse_adts(&header).unwrap();
    assert_eq!(adts.frame_len, AAC_FRAME.len() - 2 + 7);
    assert_eq!(adts.config.sample_rate, config.sample_rate);
}

#[test]
fn real_adts_frames() {
    let first = parse_adts(ADTS_TWO_FRAMES).unwrap();
    assert_eq!(first.header_len, 7);
    assert_eq!(first.config, AacConfig::new(2, 4, 1).unwrap());
    let second = parse_adts(&ADTS_TWO_FRAMES[first.frame_len..]).unwrap();
    assert_eq!(first.frame_len + second.frame_len, ADTS_TWO_FRAMES.len());
    // Our header for the same frame is byte-identical to ffmpeg's.
    let payload_len = first.frame_len - first.header_len;
    assert_eq!(
        &first.config.adts_header(payload_len).unwrap()[..],
        &ADTS_TWO_FRAMES[..7]
    );
}

#[test]
fn every_prefix_of_real_bodies_is_handled_without_panic() {
    for body in [AVC_SEQUENCE_HEADER, AVC_KEYFRAME, AVC_P_FRAME, AVC_B_FRAME] {
        for len in 0..body.len() {
            if let Ok(FlvVideo::Frame(frame)) =
                flv::parse_video(0, Bytes::copy_from_slice(&body[..len]))
            {
                // A cut frame keeps its (now inconsistent) lengths; splitting notices.
                let _ = nal::split_avcc(&frame.payload, 4);
                let _ = nal::avcc_to_annexb(&frame.payload);
            }
        }
    }
    // Cut anywhere before the end of its PPS (the last 4 bytes are the optional
    // high-profile extension), the sequence header is refused.
    for len in 0..AVC_SEQUENCE_HEADER.len() - 4 {
        assert!(flv::parse_video(0, Bytes::copy_from_slice(&AVC_SEQUENCE_HEADER[..len])).is_err());
    }
    for body in [AAC_SEQUENCE_HEADER, AAC_FRAME] {
        for len in 0..2 {
            assert!(flv::parse_audio(0, Bytes::copy_from_slice(&body[..len])).is_err());
        }
    }
    for len in 0..ADTS_TWO_FRAMES.len() {
        let _ = parse_adts(&ADTS_TWO_FRAMES[len..]);
        let _ = nal::split_annexb(&AVC_KEYFRAME[..len.min(AVC_KEYFRAME.len())]);
    }
    // A keyframe cut inside its last NAL unit must be refused by the splitter.
    let cut = &AVC_KEYFRAME[5..AVC_KEYFRAME.len() - 1];
    assert!(nal::split_avcc(cut, 4).is_err());
}
