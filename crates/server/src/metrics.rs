//! Relay and listener figures for `/metrics`.

use std::fmt::Write as _;
use std::sync::Arc;

use streamgate_admission::{Admission, LATENCY_BUCKETS_MICROS};
use streamgate_api::MetricsSource;
use streamgate_auth::ConnectionGate;
use streamgate_relay::{Derivation, Hub};
use streamgate_rtmp::RtmpContext;
use streamgate_transcode::Transcoders;

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
    /// The relay's derived tracks (transcodes).
    pub transcoders: Arc<Transcoders>,
    /// The process's panics.
    pub panics: PanicCount,
    /// The SRT engine's counts.
    pub srt: streamgate_srt::StatsSource,
}

impl MetricsSource for ListenerMetrics {
    fn write_metrics(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "# HELP streamgate_connections Connections open, per listener (webrtc, hls: sessions)."
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
            "# HELP streamgate_transcodes Transcodes running (the relay's derived tracks), one per stream and kind at most."
        );
        let _ = writeln!(out, "# TYPE streamgate_transcodes gauge");
        for derivation in Derivation::ALL {
            let _ = writeln!(
                out,
                "streamgate_transcodes{{kind=\"{}\"}} {}",
                derivation.name(),
                self.transcoders.running(derivation)
            );
        }
        if let Some(srt) = self.srt.get() {
            let load =
                |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
            let gauge =
                |a: &std::sync::atomic::AtomicUsize| a.load(std::sync::atomic::Ordering::Relaxed);
            let rows: [(&str, &str, &str, u64); 9] = [
                ("streamgate_srt_connections", "gauge", "SRT connections open.", gauge(&srt.connections) as u64),
                ("streamgate_srt_pending_handshakes", "gauge", "SRT handshakes waiting for their admission decision.", gauge(&srt.pending) as u64),
                ("streamgate_srt_datagrams_total", "counter", "Datagrams the SRT socket read.", load(&srt.datagrams)),
                ("streamgate_srt_dropped_datagrams_total", "counter", "Datagrams dropped: unreadable handshakes, packets kept from srt-protocol, packets for no connection or from the wrong address.", load(&srt.dropped)),
                ("streamgate_srt_bad_cookies_total", "counter", "SRT conclusions with a cookie the listener did not give (spoofed or stale).", load(&srt.bad_cookies)),
                ("streamgate_srt_overloaded_total", "counter", "SRT handshakes refused because too many were waiting (in all or from one address).", load(&srt.overloaded)),
                ("streamgate_srt_connection_panics_total", "counter", "SRT connections ended by a panic in srt-protocol (each one a bug, also in streamgate_panics_total).", load(&srt.panics)),
                ("streamgate_srt_publish_dropped_total", "counter", "SRT publisher messages dropped because the session did not keep up.", load(&srt.publish_dropped)),
                ("streamgate_srt_viewer_dropped_bytes_total", "counter", "Bytes SRT viewers lost because they took less than the stream.", load(&srt.backlog_dropped)),
            ];
            for (name, kind, help, value) in rows {
                let _ = writeln!(out, "# HELP {name} {help}");
                let _ = writeln!(out, "# TYPE {name} {kind}");
                let _ = writeln!(out, "{name} {value}");
            }
        }
        let _ = writeln!(
            out,
            "# HELP streamgate_panics_total Panics in the process (each one a bug)."
        );
        let _ = writeln!(out, "# TYPE streamgate_panics_total counter");
        let _ = writeln!(out, "streamgate_panics_total {}", self.panics.get());
    }
}

/// Reports the admission path: refusals, admissions, ended sessions and latency.
#[derive(Debug)]
pub struct AdmissionMetrics(pub Arc<Admission>);

impl MetricsSource for AdmissionMetrics {
    fn write_metrics(&self, out: &mut String) {
        let stats = self.0.stats();
        let _ = writeln!(out, "# HELP streamgate_refusals_total Publish and play requests refused, by protocol and reason.");
        let _ = writeln!(out, "# TYPE streamgate_refusals_total counter");
        for (protocol, reason, n) in stats.refusals() {
            let _ = writeln!(
                out,
                "streamgate_refusals_total{{protocol=\"{protocol}\",reason=\"{reason}\"}} {n}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP streamgate_admissions_total Sessions admitted, by protocol and action."
        );
        let _ = writeln!(out, "# TYPE streamgate_admissions_total counter");
        for (protocol, action, n) in stats.admissions() {
            let _ = writeln!(
                out,
                "streamgate_admissions_total{{protocol=\"{protocol}\",action=\"{action}\"}} {n}"
            );
        }
        let _ = writeln!(out, "# HELP streamgate_sessions_ended_total Admitted sessions ended, by protocol, action and reason.");
        let _ = writeln!(out, "# TYPE streamgate_sessions_ended_total counter");
        for (protocol, action, reason, n) in stats.ends() {
            let _ = writeln!(
                out,
                "streamgate_sessions_ended_total{{protocol=\"{protocol}\",action=\"{action}\",reason=\"{reason}\"}} {n}"
            );
        }
        let (buckets, count, sum_micros) = stats.latency();
        let name = "streamgate_admission_duration_seconds";
        let _ = writeln!(out, "# HELP {name} Time to decide a publish or play and attach it to the relay (without a failure's delay).");
        let _ = writeln!(out, "# TYPE {name} histogram");
        for (bound, n) in LATENCY_BUCKETS_MICROS.iter().zip(&buckets) {
            let le = *bound as f64 / 1e6;
            let _ = writeln!(out, "{name}_bucket{{le=\"{le}\"}} {n}");
        }
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(out, "{name}_sum {}", sum_micros as f64 / 1e6);
        let _ = writeln!(out, "{name}_count {count}");
    }
}
