//! Benchmark, not a test: CPU time of one AAC -> Opus and one Opus -> AAC transcode over a
//! minute of audio, and how far the output timeline ends from the input's (A/V drift: video
//! keeps the input timestamps, so this is the audio's drift against it).
//!
//! Input: an ADTS AAC-LC file (e.g. `ffmpeg -f lavfi -i sine=frequency=440:sample_rate=44100
//! -t 60 -ac 2 -c:a aac -b:a 128k tone.aac`). Run in release:
//! `cargo run --release -p streamgate-transcode --example transcode_speed -- tone.aac`

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::time::Instant;

use bytes::Bytes;
use streamgate_media::{parse_adts, Codec, Frame, TrackKind, CLOCK_HZ};
use streamgate_transcode::{samples_to_ticks, AacToOpus, OpusToAac};

fn main() {
    let path = std::env::args().nth(1).expect("an ADTS file");
    let data = std::fs::read(path).expect("readable file");
    let mut frames = Vec::new();
    let mut config = None;
    let mut rest = &data[..];
    let mut n: u64 = 0;
    while let Ok(h) = parse_adts(rest) {
        let rate = h.config.sample_rate;
        let pts = samples_to_ticks(n * 1024, rate);
        frames.push(Frame {
            track: TrackKind::Audio,
            codec: Codec::Aac,
            pts,
            dts: pts,
            keyframe: true,
            payload: Bytes::copy_from_slice(&rest[h.header_len..h.frame_len]),
        });
        config.get_or_insert(h.config);
        n += 1;
        rest = &rest[h.frame_len..];
    }
    let config = config.expect("at least one ADTS frame");
    let seconds = n as f64 * 1024.0 / f64::from(config.sample_rate);
    let input_end = samples_to_ticks(n * 1024, config.sample_rate);

    let mut to_opus = AacToOpus::new(&config).unwrap();
    let t = Instant::now();
    let mut opus = Vec::new();
    for f in &frames {
        opus.extend(to_opus.push(f).unwrap());
    }
    let took = t.elapsed().as_secs_f64();
    let opus_end = opus.last().map_or(0, |f| f.pts + 1800);
    println!(
        "AAC -> Opus: {seconds:.1} s of {} Hz audio in {took:.3} s = {:.2}% of one core; \
         output ends {:.1} ms from the input (under one 20 ms frame is the frame still buffered)",
        config.sample_rate,
        100.0 * took / seconds,
        (input_end - opus_end) as f64 * 1000.0 / CLOCK_HZ as f64
    );

    // Drift: the gap between input and output ends, after 10 s and after the whole input.
    // A constant gap is latency (samples still buffered); a growing one would be drift.
    for secs in [10.0, seconds] {
        let k = ((secs * f64::from(config.sample_rate) / 1024.0) as usize).min(frames.len());
        let mut t = AacToOpus::new(&config).unwrap();
        let mut last = 0;
        for f in &frames[..k] {
            if let Some(o) = t.push(f).unwrap().last() {
                last = o.pts + 1800;
            }
        }
        let mut back = OpusToAac::new().unwrap();
        let mut aac_last = 0;
        for o in opus.iter().take_while(|o| o.pts < last) {
            if let Some(a) = back.push(o).unwrap().last() {
                aac_last = a.pts + 1920;
            }
        }
        // Without real-time pacing, frames queue for the encoder's thread: take them too.
        if let Some(a) = back.finish().unwrap().last() {
            aac_last = a.pts + 1920;
        }
        let end = samples_to_ticks(k as u64 * 1024, config.sample_rate);
        println!(
            "after {secs:.0} s: AAC -> Opus ends {:.2} ms behind its input, Opus -> AAC {:.2} ms behind its input",
            (end - last) as f64 * 1000.0 / CLOCK_HZ as f64,
            (last - aac_last) as f64 * 1000.0 / CLOCK_HZ as f64
        );
    }

    let mut to_aac = OpusToAac::new().unwrap();
    // CPU time, not wall time: the AAC encoder works on a thread of its own.
    let before = cpu_seconds();
    let mut aac = Vec::new();
    for f in &opus {
        aac.extend(to_aac.push(f).unwrap());
    }
    let took = cpu_seconds() - before;
    let in_flight = to_aac.finish().unwrap().len();
    let aac_end = aac.last().map_or(0, |f| f.pts + 1920);
    println!(
        "Opus -> AAC: {seconds:.1} s in {took:.3} s of CPU = {:.2}% of one core; output ends {:.1} ms \
         from the input ({in_flight} frames of 21 ms still in the encoder at the end)",
        100.0 * took / seconds,
        (opus_end - aac_end) as f64 * 1000.0 / CLOCK_HZ as f64
    );
}

/// CPU time of the whole process, in seconds (user and system; USER_HZ is 100 on Linux).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let rest = stat.rsplit_once(')').unwrap().1;
    let fields: Vec<u64> = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .map(|f| f.parse().unwrap())
        .collect();
    fields.iter().sum::<u64>() as f64 / 100.0
}
