//! What the WebRTC probes (`bench/str0m-probe`, `bench/rtc-probe`) share, so that both measure
//! the same way: the offers' TCP signaling, the synthetic stream and its clock, and the report
//! every 5 s. Each probe takes it in with `#[path = "../../probe-harness.rs"] mod harness;`.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

/// One signaling message: a 4-byte big-endian length, then the text.
pub fn read_msg(s: &mut TcpStream) -> String {
    let mut len = [0u8; 4];
    s.read_exact(&mut len).unwrap();
    let mut buf = vec![0u8; u32::from_be_bytes(len) as usize];
    s.read_exact(&mut buf).unwrap();
    String::from_utf8(buf).unwrap()
}

/// Writes one signaling message (see [`read_msg`]).
pub fn write_msg(s: &mut TcpStream, m: &str) {
    s.write_all(&(m.len() as u32).to_be_bytes()).unwrap();
    s.write_all(m.as_bytes()).unwrap();
}

/// Takes offers on a thread of its own and hands each (its SDP) to the media loop with the
/// stream to answer on.
pub fn offers(tcp_port: u16) -> std::sync::mpsc::Receiver<(String, TcpStream)> {
    let listener = TcpListener::bind(("127.0.0.1", tcp_port)).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for s in listener.incoming() {
            let mut s = s.unwrap();
            let offer = read_msg(&mut s);
            if tx.send((offer, s)).is_err() {
                return;
            }
        }
    });
    rx
}

/// Resident and anonymous resident memory of this process, in KiB.
fn status() -> (u64, u64) {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    let get = |k: &str| {
        s.lines()
            .find(|l| l.starts_with(k))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (get("VmRSS:"), get("RssAnon:"))
}

/// User and system CPU seconds of this process (clock ticks of 1/100 s, Linux's USER_HZ).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let after_name = stat.rsplit_once(')').unwrap().1;
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    ticks as f64 / 100.0
}

/// The synthetic stream of KBPS kbit/s: H.264 frames at 30 per second with a keyframe every
/// 2 s, and 20 ms Opus frames of 80 bytes (32 kbit/s), each due on a clock from the start.
pub struct Source {
    start: Instant,
    video_bytes: usize,
    frame_no: u64,
    audio_no: u64,
    next_video: Instant,
    next_audio: Instant,
}

/// Video frames a second.
const FPS: u64 = 30;
/// Bytes of an audio frame.
const AUDIO_BYTES: usize = 80;

impl Source {
    pub fn new(kbps: u64, start: Instant) -> Self {
        let audio_rate = AUDIO_BYTES as u64 * 50;
        Self {
            start,
            video_bytes: ((kbps * 1000 / 8).saturating_sub(audio_rate) / FPS) as usize,
            frame_no: 0,
            audio_no: 0,
            next_video: start,
            next_audio: start,
        }
    }

    /// The video frame due at `now`, if one is, with its number (an Annex-B keyframe or
    /// delta frame of filler).
    pub fn video(&mut self, now: Instant) -> Option<(u64, Vec<u8>)> {
        if now < self.next_video {
            return None;
        }
        let n = self.frame_no;
        let key = n.is_multiple_of(2 * FPS);
        let mut data = vec![0x5au8; self.video_bytes.max(8)];
        data[..5].copy_from_slice(&[0, 0, 0, 1, if key { 0x65 } else { 0x41 }]);
        self.frame_no += 1;
        self.next_video = self.start + Duration::from_micros(self.frame_no * 1_000_000 / FPS);
        Some((n, data))
    }

    /// The audio frame due at `now`, if one is, with its number.
    pub fn audio(&mut self, now: Instant) -> Option<(u64, Vec<u8>)> {
        if now < self.next_audio {
            return None;
        }
        let n = self.audio_no;
        self.audio_no += 1;
        self.next_audio = self.start + Duration::from_millis(self.audio_no * 20);
        Some((n, vec![0x33u8; AUDIO_BYTES]))
    }

    /// When the next frame is due.
    pub fn next_due(&self) -> Instant {
        self.next_video.min(self.next_audio)
    }
}

/// The report printed every 5 s: loop iterations, peers, CPU (a share of one core),
/// datagrams sent per second, and the anonymous RSS per connected peer beyond the idle
/// process's.
pub struct Report {
    next: Instant,
    cpu0: f64,
    t0: Instant,
    sent0: u64,
    anon_idle: u64,
    iterations: u64,
}

impl Report {
    /// Starts counting, and prints the idle process's memory.
    pub fn new(start: Instant) -> Self {
        let (rss, anon) = status();
        eprintln!("idle rss {rss} anon {anon} KiB");
        Self {
            next: start + Duration::from_secs(5),
            cpu0: cpu_seconds(),
            t0: Instant::now(),
            sent0: 0,
            anon_idle: anon,
            iterations: 0,
        }
    }

    /// Counts one turn of the media loop.
    pub fn iteration(&mut self) {
        self.iterations += 1;
    }

    /// Prints the report if it is due at `now`, with `peers` peers of which `live()` are
    /// connected (counted only then), and `sent` datagrams sent so far.
    pub fn tick(&mut self, now: Instant, peers: usize, live: impl FnOnce() -> usize, sent: u64) {
        if now < self.next {
            return;
        }
        let live = live();
        let (cpu, t) = (cpu_seconds(), Instant::now());
        let (rss, anon) = status();
        let secs = (t - self.t0).as_secs_f64();
        eprintln!(
            "iterations/s {:.0} peers {} connected {} cpu {:.1}% datagrams/s {:.0} rss {} anon {} KiB (anon/peer {:.1} KiB)",
            self.iterations as f64 / secs,
            peers,
            live,
            100.0 * (cpu - self.cpu0) / secs,
            (sent - self.sent0) as f64 / secs,
            rss,
            anon,
            (anon as f64 - self.anon_idle as f64) / live.max(1) as f64
        );
        (self.cpu0, self.t0, self.sent0) = (cpu, t, sent);
        self.iterations = 0;
        self.next = now + Duration::from_secs(5);
    }

    /// When the next report is due.
    pub fn next_due(&self) -> Instant {
        self.next
    }
}
