//! For the hostile battery: a bystander (an ffmpeg publisher and an RTMP viewer that notes
//! every gap), a monitor of the server's memory, CPU and health while an attack runs, and
//! builders of the raw bytes attackers send.

use std::net::{IpAddr, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use socket2::{Domain, Socket, Type};

use crate::ffmpeg::{publish_args, Proc};
use crate::rtmp::{MediaWatch, RtmpClient, WatchReport};
use crate::{cpu_ticks, rss_kib, Server, TempDir};

/// The stream the bystander publishes and watches.
pub const BYSTANDER_STREAM: &str = "live/bystander";

/// An ffmpeg publisher and a native RTMP viewer of [`BYSTANDER_STREAM`], running through an
/// attack.
pub struct Bystander {
    _publisher: Proc,
    viewer: MediaWatch,
}

impl Bystander {
    /// Starts the publisher (with a fresh token) and the viewer, and waits until media flows.
    pub fn start(s: &Server, dir: &TempDir) -> Self {
        let (_, token) = s.create_token(
            "publish",
            serde_json::json!({"label": "bystander", "streams": [{"streamName": BYSTANDER_STREAM}]}),
        );
        let publisher = s.start_publisher(
            dir,
            BYSTANDER_STREAM,
            &publish_args(&s.rtmp_url(BYSTANDER_STREAM, Some(&token)), None),
        );
        let mut viewer = RtmpClient::connect(s.rtmp, "live").expect("bystander connects");
        viewer.play("bystander").expect("bystander plays");
        Self {
            _publisher: publisher,
            viewer: viewer.watch(),
        }
    }

    /// Stops watching; what the viewer received.
    pub fn finish(self) -> WatchReport {
        self.viewer.finish()
    }
}

/// The shortest time a [`Monitor`] watches.
pub const MONITOR_MIN_TIME: Duration = Duration::from_secs(3);

/// The server's resources sampled during an attack.
pub struct Monitor {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<(u64, u32)>>,
    pid: u32,
    ticks: u64,
    start: Instant,
}

/// What the monitor saw.
#[derive(Debug, Clone, Copy)]
pub struct MonitorReport {
    /// Highest resident memory seen, in MiB.
    pub peak_rss_mib: u64,
    /// CPU used, in percent of one core, over the monitored time.
    pub cpu_percent: f64,
    /// `/healthz` checks that did not answer 200.
    pub health_failures: u32,
    /// How long the monitor ran.
    pub seconds: f64,
}

impl Monitor {
    /// Starts sampling the server's memory every 50 ms and its health every 250 ms.
    pub fn start(s: &Server) -> Self {
        let pid = s.pid().expect("running");
        let http = s.http;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let mut peak = 0;
            let mut failures = 0;
            let mut n = 0u32;
            while !flag.load(Ordering::Relaxed) {
                peak = peak.max(rss_kib(pid));
                if n.is_multiple_of(5) {
                    let ok = crate::http::request(http, "GET", "/healthz", &[], None)
                        .is_ok_and(|r| r.status == 200);
                    failures += u32::from(!ok);
                }
                n += 1;
                std::thread::sleep(Duration::from_millis(50));
            }
            (peak, failures)
        });
        Self {
            stop,
            thread: Some(thread),
            pid,
            ticks: cpu_ticks(pid),
            start: Instant::now(),
        }
    }

    /// Stops sampling, once [`MONITOR_MIN_TIME`] has passed since the start (an attack's
    /// late effects count, and the bystander is watched long enough to tell a gap).
    pub fn finish(mut self) -> MonitorReport {
        if let Some(left) = MONITOR_MIN_TIME.checked_sub(self.start.elapsed()) {
            std::thread::sleep(left);
        }
        self.stop.store(true, Ordering::Relaxed);
        let (peak, failures) = self
            .thread
            .take()
            .and_then(|t| t.join().ok())
            .unwrap_or_default();
        let seconds = self.start.elapsed().as_secs_f64();
        let used = cpu_ticks(self.pid).saturating_sub(self.ticks) as f64 / 100.0;
        MonitorReport {
            peak_rss_mib: peak / 1024,
            cpu_percent: 100.0 * used / seconds.max(0.001),
            health_failures: failures,
            seconds,
        }
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Checks what every attack must leave intact and prints the attack's line of the report:
/// the bystander viewer kept receiving (no gap over `max_gap`), `/healthz` stayed 200 (when
/// `health` is true), the memory stayed under `rss_bound_mib`, and nothing panicked.
pub fn assert_unharmed(
    s: &Server,
    class: &str,
    watch: &WatchReport,
    report: &MonitorReport,
    rss_bound_mib: u64,
    health: bool,
) {
    eprintln!(
        "hostile {class}: peak RSS {} MiB, CPU {:.1}% of a core over {:.1} s, bystander {} video / {} audio, longest gap {} ms, /healthz failures {}",
        report.peak_rss_mib,
        report.cpu_percent,
        report.seconds,
        watch.video,
        watch.audio,
        watch.max_gap.as_millis(),
        report.health_failures
    );
    assert!(
        watch.error.is_none(),
        "{class}: the bystander viewer failed: {watch:?}"
    );
    let expected = (report.seconds * 25.0 * 0.6) as u64;
    assert!(
        watch.video >= expected && watch.audio > 0,
        "{class}: the bystander got {} video frames in {:.1} s",
        watch.video,
        report.seconds
    );
    assert!(
        watch.max_gap < Duration::from_millis(1500),
        "{class}: the bystander saw a gap of {:?}",
        watch.max_gap
    );
    if health {
        assert_eq!(report.health_failures, 0, "{class}: /healthz failed");
    }
    assert!(
        report.peak_rss_mib < rss_bound_mib,
        "{class}: RSS reached {} MiB (bound {rss_bound_mib})",
        report.peak_rss_mib
    );
    assert_eq!(s.metric("streamgate_panics_total"), 0.0, "{class}: a panic");
    assert!(s.log_lines_with("panicked").is_empty(), "{class}: a panic");
}

/// Whether the server has closed `socket`, looking without waiting.
pub fn is_closed(socket: &mut TcpStream) -> bool {
    use std::io::Read as _;
    if socket.set_nonblocking(true).is_err() {
        return true;
    }
    let mut buf = [0u8; 512];
    let closed = loop {
        match socket.read(&mut buf) {
            Ok(0) => break true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break false,
            Err(_) => break true,
        }
    };
    let _ = socket.set_nonblocking(false);
    closed
}

/// A TCP connection to `to` from `from` (any 127.0.0.0/8 address works on loopback), so that
/// a test can act as several source addresses.
pub fn connect_from(from: IpAddr, to: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = Socket::new(Domain::for_address(to), Type::STREAM, None)?;
    socket.bind(&SocketAddr::new(from, 0).into())?;
    socket.connect_timeout(&to.into(), Duration::from_secs(5))?;
    Ok(socket.into())
}

/// AMF0 encodings of the few values attackers need.
pub mod amf0 {
    /// A string.
    pub fn string(s: &str) -> Vec<u8> {
        let mut out = vec![0x02];
        out.extend_from_slice(&u16::try_from(s.len()).unwrap_or(0).to_be_bytes());
        out.extend_from_slice(s.as_bytes());
        out
    }

    /// A number.
    pub fn number(n: f64) -> Vec<u8> {
        let mut out = vec![0x00];
        out.extend_from_slice(&n.to_be_bytes());
        out
    }

    /// Null.
    pub const NULL: u8 = 0x05;

    /// A command: name, transaction id, null command object, then `args` (encoded).
    pub fn command(name: &str, txn: f64, args: &[u8]) -> Vec<u8> {
        let mut out = string(name);
        out.extend(number(txn));
        out.push(NULL);
        out.extend_from_slice(args);
        out
    }
}

/// Message type ids attackers use.
pub mod msg {
    /// Set Chunk Size.
    pub const SET_CHUNK_SIZE: u8 = 1;
    /// Video.
    pub const VIDEO: u8 = 9;
    /// AMF0 data.
    pub const DATA: u8 = 18;
    /// AMF0 command.
    pub const COMMAND: u8 = 20;
}

/// One message as chunks of `chunk_size` (type 0 header, then type 3 ones).
pub fn chunks(csid: u8, type_id: u8, stream_id: u32, payload: &[u8], chunk_size: usize) -> Vec<u8> {
    let len = u32::try_from(payload.len())
        .unwrap_or(u32::MAX)
        .to_be_bytes();
    let mut out = vec![csid & 0x3F, 0, 0, 0, len[1], len[2], len[3], type_id];
    out.extend_from_slice(&stream_id.to_le_bytes());
    for (i, piece) in payload.chunks(chunk_size.max(1)).enumerate() {
        if i > 0 {
            out.push(0xC0 | (csid & 0x3F));
        }
        out.extend_from_slice(piece);
    }
    out
}

/// A connect command for `app`, as one message at the initial chunk size.
pub fn connect_message(app: &str) -> Vec<u8> {
    let mut obj = vec![0x03];
    obj.extend_from_slice(&3u16.to_be_bytes());
    obj.extend_from_slice(b"app");
    obj.extend(amf0::string(app));
    obj.extend_from_slice(&[0, 0, 0x09]);
    let mut payload = amf0::string("connect");
    payload.extend(amf0::number(1.0));
    payload.extend(obj);
    chunks(3, msg::COMMAND, 0, &payload, 128)
}

/// A video message body: an H.264 keyframe of about `len` bytes, as FLV carries it.
pub fn keyframe_body(len: usize) -> Vec<u8> {
    let nal_len = u32::try_from(len.max(2)).unwrap_or(u32::MAX);
    let mut out = vec![0x17, 1, 0, 0, 0];
    out.extend_from_slice(&nal_len.to_be_bytes());
    out.push(0x65);
    out.resize(out.len() + nal_len as usize - 1, 0x5a);
    out
}

impl Server {
    /// The value of the `/metrics` line that starts with `series` (0 when absent).
    pub fn metric(&self, series: &str) -> f64 {
        self.metrics_text()
            .lines()
            .find_map(|l| l.strip_prefix(series).and_then(|v| v.strip_prefix(' ')))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0.0)
    }

    /// The sum of every `/metrics` line that starts with `prefix` (a series and the first of
    /// its labels, say): 0 when none does.
    pub fn metric_sum(&self, prefix: &str) -> f64 {
        self.metrics_text()
            .lines()
            .filter(|l| l.starts_with(prefix))
            .filter_map(|l| l.rsplit(' ').next()?.trim().parse::<f64>().ok())
            .sum()
    }
}
