//! Relay and listener figures for `/metrics`.

use std::fmt::Write as _;
use std::sync::Arc;

use streamgate_api::MetricsSource;
use streamgate_auth::ConnectionGate;
use streamgate_relay::Hub;
use streamgate_rtmp::RtmpContext;

use crate::supervise::PanicCount;

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
            (
                "streamgate_stream_oversized_frames_total",
                "counter",
                "Frames refused at ingest for exceeding relay.max_frame_bytes.",
            ),
            (
                "streamgate_stream_buffered_bytes",
                "gauge",
                "Payload bytes the stream keeps for its viewers.",
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
                    "streamgate_stream_oversized_frames_total" => s.oversized,
                    "streamgate_stream_buffered_bytes" => s.buffered_bytes,
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

/// Reports connection caps, RTMP connection ends and panics.
#[derive(Debug)]
pub struct ListenerMetrics {
    /// Each listener's gate, by listener name.
    pub gates: Vec<(&'static str, ConnectionGate)>,
    /// The RTMP listener's counters.
    pub rtmp: Arc<RtmpContext>,
    /// The process's panics.
    pub panics: PanicCount,
}

impl MetricsSource for ListenerMetrics {
    fn write_metrics(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "# HELP streamgate_connections Connections open, per listener (webrtc: sessions)."
        );
        let _ = writeln!(out, "# TYPE streamgate_connections gauge");
        for (name, gate) in &self.gates {
            let _ = writeln!(
                out,
                "streamgate_connections{{listener=\"{name}\"}} {}",
                gate.stats().open
            );
        }
        let _ = writeln!(out, "# HELP streamgate_connections_refused_total Connections refused by a cap, per listener and reason.");
        let _ = writeln!(out, "# TYPE streamgate_connections_refused_total counter");
        for (name, gate) in &self.gates {
            let stats = gate.stats();
            for (reason, n) in [
                ("listener_full", stats.refused_listener_full),
                ("address_full", stats.refused_address_full),
            ] {
                let _ = writeln!(
                    out,
                    "streamgate_connections_refused_total{{listener=\"{name}\",reason=\"{reason}\"}} {n}"
                );
            }
        }
        let _ = writeln!(
            out,
            "# HELP streamgate_rtmp_closed_total RTMP connections ended, per reason."
        );
        let _ = writeln!(out, "# TYPE streamgate_rtmp_closed_total counter");
        for (reason, n) in self.rtmp.stats.closed() {
            let _ = writeln!(
                out,
                "streamgate_rtmp_closed_total{{reason=\"{reason}\"}} {n}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP streamgate_panics_total Panics in the process (each one a bug)."
        );
        let _ = writeln!(out, "# TYPE streamgate_panics_total counter");
        let _ = writeln!(out, "streamgate_panics_total {}", self.panics.get());
    }
}
