//! Demuxing and remuxing a real ffmpeg MPEG-TS capture (see fixtures/README.md).

use streamgate_media::ts::{TsDemuxer, TsEvent, TsMuxer};
use streamgate_media::{Codec, Frame, StreamConfig};

const CAPTURE: &[u8] = include_bytes!("fixtures/h264_aac_two_seconds.ts");

/// The configuration, the frames and the codecs the program map listed.
fn demux(ts: &[u8], piece: usize) -> (StreamConfig, Vec<Frame>, Vec<Codec>) {
    let mut d = TsDemuxer::new();
    let mut events = Vec::new();
    for p in ts.chunks(piece) {
        d.push(p, &mut events);
    }
    let mut config = StreamConfig::default();
    let mut frames = Vec::new();
    let mut tracks = Vec::new();
    for e in events {
        match e {
            TsEvent::Track(codec) => {
                assert!(frames.is_empty(), "tracks are announced before frames");
                tracks.push(codec);
            }
            TsEvent::VideoConfig(c) => config.video = Some(c),
            TsEvent::AudioConfig(c) => config.audio = Some(c),
            TsEvent::Frame(f) => frames.push(f),
        }
    }
    let stats = d.stats();
    assert_eq!(stats.continuity_errors, 0, "{stats:?}");
    assert_eq!(stats.dropped_units, 0, "{stats:?}");
    (config, frames, tracks)
}

#[test]
fn capture_demuxes_to_every_frame() {
    let (config, frames, tracks) = demux(CAPTURE, 1316);
    assert_eq!(
        tracks,
        [Codec::H264, Codec::Aac],
        "the program map's tracks, once each"
    );
    let video = config.video.as_ref().unwrap();
    assert_eq!(video.profile, 100);
    let audio = config.audio.as_ref().unwrap();
    assert_eq!(
        (audio.object_type, audio.sample_rate, audio.channel_config),
        (2, 44_100, 1)
    );
    let v: Vec<&Frame> = frames.iter().filter(|f| f.codec == Codec::H264).collect();
    let a: Vec<&Frame> = frames.iter().filter(|f| f.codec == Codec::Aac).collect();
    // The last video frame has no following PES to end it.
    assert_eq!(v.len(), 49);
    assert_eq!(a.len(), 88);
    assert!(v[0].keyframe && v[25].keyframe && !v[1].keyframe);
    // B-frames: presentation after decoding, decoding times strictly rising by 40 ms.
    assert!(v.iter().any(|f| f.pts > f.dts));
    for w in v.windows(2) {
        assert_eq!(w[1].dts - w[0].dts, 3600);
    }
    // Audio frames are 1024 samples apart, give or take rounding.
    for w in a.windows(2) {
        let d = w[1].pts - w[0].pts;
        assert!((2089..=2091).contains(&d), "{d}");
    }
}

#[test]
fn remuxed_capture_demuxes_the_same() {
    let (config, frames, _) = demux(CAPTURE, 188 * 7);
    let mut m = TsMuxer::new();
    let ts: Vec<u8> = frames
        .iter()
        .flat_map(|f| m.frame(f, &config).to_vec())
        .collect();
    let (config2, frames2, tracks) = demux(&ts, 1000);
    assert_eq!(tracks, [Codec::H264, Codec::Aac], "our muxer's program map");
    assert_eq!(
        config2.video.as_ref().unwrap().sps,
        config.video.as_ref().unwrap().sps
    );
    assert_eq!(config2.audio, config.audio);
    // Again the last video frame stays open.
    assert_eq!(frames2.len(), frames.len() - 1);
    let offset = streamgate_media::ts::TIMESTAMP_OFFSET;
    let originals: Vec<&Frame> = frames.iter().collect();
    for f in &frames2 {
        let o = originals
            .iter()
            .find(|o| o.codec == f.codec && o.dts + offset == f.dts)
            .unwrap();
        assert_eq!(o.pts + offset, f.pts);
        assert_eq!(o.keyframe, f.keyframe);
        assert_eq!(o.payload, f.payload);
    }
}
