//! Counters shared by every client, and the final report.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use serde::Serialize;

use crate::synth;

/// Live counters, updated by every client task.
#[derive(Debug, Default)]
pub struct Counters {
    /// Connections attempted.
    pub attempted: AtomicU64,
    /// Connections the server admitted (publish or play accepted).
    pub admitted: AtomicU64,
    /// Connections the server refused (the request was answered with an error or closed).
    pub refused: AtomicU64,
    /// Connections that failed for another reason (could not connect, broke mid-stream).
    pub failed: AtomicU64,
    /// Media bytes received by viewers.
    pub bytes: AtomicU64,
    /// Video frames received by viewers.
    pub frames: AtomicU64,
    /// Frames viewers found missing (gaps in the sequence numbers).
    pub dropped: AtomicU64,
}

impl Counters {
    /// Adds one.
    pub fn inc(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }
}

/// Samples gathered when a client ends.
#[derive(Debug, Default)]
pub struct Samples {
    /// Connect to first keyframe, µs.
    pub join_us: Vec<u64>,
    /// Send to receive, µs.
    pub latency_us: Vec<u64>,
    /// Received bit rate of each viewer that stayed for the hold, kbit/s.
    pub viewer_kbps: Vec<f64>,
}

/// What one viewer measured.
#[derive(Debug, Default)]
pub struct ViewerResult {
    /// Connect to first keyframe, µs.
    pub join_us: Option<u64>,
    /// Latency samples, µs.
    pub latency_us: Vec<u64>,
    /// Media bytes received and over how many seconds.
    pub bytes: u64,
    /// Seconds between the first and the last frame received.
    pub seconds: f64,
}

/// What one viewer measures of the stamped frames it receives, whatever its protocol: bytes,
/// join time, latency and frames missing from the sequence, into its result and the shared
/// counters.
#[derive(Debug)]
pub struct Meter {
    started: Instant,
    /// Frames sent before this (the server's GOP cache) count for the join, not the latency.
    admitted_us: u64,
    last_seq: Option<u32>,
    first: Option<Instant>,
    last: Option<Instant>,
    result: ViewerResult,
}

impl Meter {
    /// A viewer that started connecting at `started` and is admitted now.
    pub fn admitted(started: Instant) -> Self {
        Self {
            started,
            admitted_us: synth::now_us(),
            last_seq: None,
            first: None,
            last: None,
            result: ViewerResult::default(),
        }
    }

    /// `n` bytes of media received.
    pub fn bytes(&mut self, counters: &Counters, n: usize) {
        self.result.bytes += n as u64;
        counters.bytes.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// A stamped frame received: sequence `seq`, sent at `sent_us`; `joins` if the viewer may
    /// count it as its first picture (a keyframe, where the protocol says which).
    pub fn frame(&mut self, counters: &Counters, seq: u32, sent_us: u64, joins: bool) {
        let now = Instant::now();
        Counters::inc(&counters.frames);
        self.first.get_or_insert(now);
        self.last = Some(now);
        if self.result.join_us.is_none() && joins {
            self.result.join_us = Some(self.started.elapsed().as_micros() as u64);
        }
        if sent_us >= self.admitted_us {
            self.result
                .latency_us
                .push(synth::now_us().saturating_sub(sent_us));
        }
        if let Some(prev) = self.last_seq {
            let gap = seq.wrapping_sub(prev);
            if gap > 1 && gap < u32::MAX / 2 {
                counters
                    .dropped
                    .fetch_add(u64::from(gap - 1), Ordering::Relaxed);
            }
        }
        self.last_seq = Some(seq);
    }

    /// The result, with the time between the first and the last frame.
    pub fn finish(mut self) -> ViewerResult {
        if let (Some(first), Some(last)) = (self.first, self.last) {
            self.result.seconds = last.duration_since(first).as_secs_f64();
        }
        self.result
    }
}

/// The gathered samples, behind a lock taken once per client.
#[derive(Debug, Default)]
pub struct Collector {
    samples: Mutex<Samples>,
}

impl Collector {
    /// Adds one viewer's results.
    pub fn add(&self, v: ViewerResult) {
        let mut s = self.samples.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(j) = v.join_us {
            s.join_us.push(j);
        }
        s.latency_us.extend(v.latency_us);
        if v.seconds >= 1.0 {
            s.viewer_kbps
                .push(v.bytes as f64 * 8.0 / 1000.0 / v.seconds);
        }
    }

    /// Takes the samples out.
    pub fn take(&self) -> Samples {
        std::mem::take(&mut *self.samples.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

/// A distribution summary in milliseconds.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Millis {
    /// Samples.
    pub count: usize,
    /// Median.
    pub p50: Option<f64>,
    /// 99th percentile.
    pub p99: Option<f64>,
    /// Largest.
    pub max: Option<f64>,
}

impl Millis {
    /// Summarises µs samples.
    pub fn of(mut us: Vec<u64>) -> Self {
        us.sort_unstable();
        let at = |q: f64| -> Option<f64> {
            if us.is_empty() {
                return None;
            }
            let i = ((us.len() as f64 - 1.0) * q).round() as usize;
            us.get(i).map(|v| *v as f64 / 1000.0)
        };
        Self {
            count: us.len(),
            p50: at(0.5),
            p99: at(0.99),
            max: at(1.0),
        }
    }
}

/// Connection counts of one role.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Connections {
    /// Attempted.
    pub attempted: u64,
    /// Admitted.
    pub admitted: u64,
    /// Refused by the server.
    pub refused: u64,
    /// Failed otherwise.
    pub failed: u64,
}

impl Connections {
    /// A snapshot of counters.
    pub fn of(c: &Counters) -> Self {
        Self {
            attempted: c.attempted.load(Ordering::Relaxed),
            admitted: c.admitted.load(Ordering::Relaxed),
            refused: c.refused.load(Ordering::Relaxed),
            failed: c.failed.load(Ordering::Relaxed),
        }
    }
}

/// The final report.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The scenario, as run.
    pub scenario: serde_json::Value,
    /// Publishers.
    pub publishers: Connections,
    /// Native viewers.
    pub viewers: Connections,
    /// ffmpeg viewers.
    pub ffmpeg_viewers: Connections,
    /// Native SRT viewers.
    pub srt_viewers: Connections,
    /// Native HLS viewers.
    pub hls_viewers: Connections,
    /// Native WebRTC viewers (WHEP).
    pub webrtc_viewers: Connections,
    /// Native viewers: connect to first keyframe.
    pub join_ms: Millis,
    /// Native viewers: publisher send to viewer receive.
    pub latency_ms: Millis,
    /// Native SRT viewers: connect to first keyframe.
    pub srt_join_ms: Millis,
    /// Native SRT viewers: publisher send to viewer receive (includes SRT's latency window).
    pub srt_latency_ms: Millis,
    /// Native WebRTC viewers: start of the offer to the first stamped frame.
    pub webrtc_join_ms: Millis,
    /// Native WebRTC viewers: publisher send to the arrival of the RTP packet holding the
    /// frame's stamp.
    pub webrtc_latency_ms: Millis,
    /// Native HLS viewers: connect to the first frame fetched.
    pub hls_join_ms: Millis,
    /// Native HLS viewers: publisher send to the arrival of the part (or segment) holding the
    /// frame, which includes the time the frame waited for its part to end.
    pub hls_latency_ms: Millis,
    /// Bytes HLS viewers fetched.
    pub hls_bytes: u64,
    /// Received bit rate per viewer (native viewers, and ffmpeg viewers from their progress).
    pub viewer_kbps: Kbps,
    /// Video frames viewers found missing.
    pub frames_dropped: u64,
    /// Video frames viewers received.
    pub frames_received: u64,
    /// Seconds the scenario ran.
    pub seconds: f64,
}

/// Bit rate summary.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Kbps {
    /// Viewers measured.
    pub count: usize,
    /// Mean.
    pub mean: Option<f64>,
    /// Lowest.
    pub min: Option<f64>,
}

impl Kbps {
    /// Summarises per-viewer rates.
    pub fn of(v: &[f64]) -> Self {
        if v.is_empty() {
            return Self::default();
        }
        let mean = v.iter().sum::<f64>() / v.len() as f64;
        let min = v.iter().copied().fold(f64::INFINITY, f64::min);
        Self {
            count: v.len(),
            mean: Some(mean),
            min: Some(min),
        }
    }
}

fn opt(v: Option<f64>) -> String {
    v.map_or_else(|| "-".into(), |v| format!("{v:.2}"))
}

impl Report {
    /// A human-readable table.
    pub fn table(&self) -> String {
        let row = |name: &str, c: &Connections| {
            format!(
                "{name:<16} {:>9} {:>9} {:>9} {:>9}\n",
                c.attempted, c.admitted, c.refused, c.failed
            )
        };
        let mut s = String::new();
        s.push_str(&format!(
            "{:<16} {:>9} {:>9} {:>9} {:>9}\n",
            "connections", "attempted", "admitted", "refused", "failed"
        ));
        s.push_str(&row("publishers", &self.publishers));
        s.push_str(&row("viewers", &self.viewers));
        s.push_str(&row("srt viewers", &self.srt_viewers));
        s.push_str(&row("hls viewers", &self.hls_viewers));
        s.push_str(&row("webrtc viewers", &self.webrtc_viewers));
        s.push_str(&row("ffmpeg viewers", &self.ffmpeg_viewers));
        s.push_str(&format!(
            "join time (ms)     p50 {} p99 {} ({} viewers)\n",
            opt(self.join_ms.p50),
            opt(self.join_ms.p99),
            self.join_ms.count
        ));
        s.push_str(&format!(
            "relay latency (ms) p50 {} p99 {} max {} ({} frames)\n",
            opt(self.latency_ms.p50),
            opt(self.latency_ms.p99),
            opt(self.latency_ms.max),
            self.latency_ms.count
        ));
        if self.srt_viewers.attempted > 0 {
            s.push_str(&format!(
                "SRT join time (ms) p50 {} p99 {}; SRT latency (ms) p50 {} p99 {} max {} ({} frames)\n",
                opt(self.srt_join_ms.p50),
                opt(self.srt_join_ms.p99),
                opt(self.srt_latency_ms.p50),
                opt(self.srt_latency_ms.p99),
                opt(self.srt_latency_ms.max),
                self.srt_latency_ms.count
            ));
        }
        if self.webrtc_viewers.attempted > 0 {
            s.push_str(&format!(
                "WebRTC join time (ms) p50 {} p99 {}; WebRTC latency (ms) p50 {} p99 {} max {} ({} frames)\n",
                opt(self.webrtc_join_ms.p50),
                opt(self.webrtc_join_ms.p99),
                opt(self.webrtc_latency_ms.p50),
                opt(self.webrtc_latency_ms.p99),
                opt(self.webrtc_latency_ms.max),
                self.webrtc_latency_ms.count
            ));
        }
        if self.hls_viewers.attempted > 0 {
            s.push_str(&format!(
                "HLS join time (ms) p50 {} p99 {}; HLS latency (ms) p50 {} p99 {} max {} ({} frames); {} bytes fetched\n",
                opt(self.hls_join_ms.p50),
                opt(self.hls_join_ms.p99),
                opt(self.hls_latency_ms.p50),
                opt(self.hls_latency_ms.p99),
                opt(self.hls_latency_ms.max),
                self.hls_latency_ms.count,
                self.hls_bytes
            ));
        }
        s.push_str(&format!(
            "bit rate per viewer (kbit/s) mean {} min {} ({} viewers)\n",
            opt(self.viewer_kbps.mean),
            opt(self.viewer_kbps.min),
            self.viewer_kbps.count
        ));
        s.push_str(&format!(
            "frames received {} dropped {} in {:.1} s\n",
            self.frames_received, self.frames_dropped, self.seconds
        ));
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles() {
        let m = Millis::of((1..=100).map(|v| v * 1000).collect());
        assert_eq!((m.p50, m.p99, m.max), (Some(51.0), Some(99.0), Some(100.0)));
        assert_eq!(Millis::of(Vec::new()).p50, None);
        let k = Kbps::of(&[100.0, 300.0]);
        assert_eq!((k.mean, k.min), (Some(200.0), Some(100.0)));
    }

    #[test]
    fn the_meter_counts_gaps_joins_and_only_fresh_latency() {
        let counters = Counters::default();
        let mut meter = Meter::admitted(Instant::now());
        let fresh = synth::now_us();
        meter.bytes(&counters, 1000);
        // From the GOP cache: no latency sample, and not a join until a keyframe.
        meter.frame(&counters, 7, fresh - 5_000_000, false);
        meter.frame(&counters, 8, fresh, true);
        meter.frame(&counters, 11, fresh, false);
        meter.frame(&counters, 11, fresh, false);
        assert_eq!(counters.frames.load(Ordering::Relaxed), 4);
        assert_eq!(counters.dropped.load(Ordering::Relaxed), 2, "9 and 10");
        assert_eq!(counters.bytes.load(Ordering::Relaxed), 1000);
        let r = meter.finish();
        assert_eq!(r.bytes, 1000);
        assert_eq!(r.latency_us.len(), 3);
        assert!(r.join_us.is_some());
    }
}
