//! Relay figures for `/metrics`.

use std::fmt::Write as _;

use streamgate_api::MetricsSource;
use streamgate_relay::Hub;

/// Reports per-stream relay counters.
#[derive(Debug)]
pub struct RelayMetrics(pub Hub);

impl MetricsSource for RelayMetrics {
    fn write_metrics(&self, out: &mut String) {
        let stats = self.0.stats();
        let families = [
            (
                "streamgate_stream_subscribers",
                "gauge",
                "Viewers attached to the stream.",
            ),
            (
                "streamgate_stream_frames_total",
                "counter",
                "Frames pushed by the publisher.",
            ),
            (
                "streamgate_stream_bytes_total",
                "counter",
                "Payload bytes pushed by the publisher.",
            ),
            (
                "streamgate_stream_dropped_frames_total",
                "counter",
                "Frames skipped by viewers that fell behind.",
            ),
        ];
        for (name, kind, help) in families {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} {kind}");
            for s in &stats {
                let value = match name {
                    "streamgate_stream_subscribers" => s.subscribers as u64,
                    "streamgate_stream_frames_total" => s.frames_in,
                    "streamgate_stream_bytes_total" => s.bytes_in,
                    _ => s.dropped,
                };
                let _ = writeln!(
                    out,
                    "{name}{{stream=\"{}\",live=\"{}\"}} {value}",
                    s.name, s.live
                );
            }
        }
    }
}
