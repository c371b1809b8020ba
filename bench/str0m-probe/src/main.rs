//! What a WebRTC viewer costs on str0m (a sans-IO WebRTC stack), for comparison with the
//! server's `webrtc` crate under `scripts/bench --webrtc`.
//!
//! `str0m-probe server PORT [KBPS] [VIDEO_BUFFER]` sends a stream of KBPS kbit/s (H.264
//! frames at 30 per second with a keyframe every 2 s, and 20 ms Opus frames) to every peer that
//! connects: one thread, one UDP socket, ICE lite, frames written through str0m's frame API
//! (it packetizes per peer), VIDEO_BUFFER packets kept for resends per peer (256, as the
//! server keeps). Offers come over TCP on PORT. Every 5 s it prints its CPU (a share of one
//! core), the datagrams it sent per second, and its anonymous RSS per connected peer.
//!
//! `str0m-probe client HOST:PORT N RAMP_SECONDS HOLD_SECONDS` opens N receiving peers over
//! RAMP_SECONDS and prints the bit rate each gets.
//!
//! Outside the workspace (its own lock file), so that str0m's crypto stack is built only here:
//! `cargo run --release --manifest-path bench/str0m-probe/Cargo.toml -- server 47000`.
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};

use str0m::change::{SdpAnswer, SdpOffer};
use str0m::format::Codec;
use str0m::media::{Direction, Frequency, MediaKind, MediaTime, Mid, Pt};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, IceConnectionState, Input, Output, Rtc, RtcConfig};

fn config() -> RtcConfig {
    RtcConfig::new()
        .clear_codecs()
        .enable_h264(true)
        .enable_opus(true, false)
}

fn read_msg(s: &mut TcpStream) -> String {
    let mut len = [0u8; 4];
    s.read_exact(&mut len).unwrap();
    let mut buf = vec![0u8; u32::from_be_bytes(len) as usize];
    s.read_exact(&mut buf).unwrap();
    String::from_utf8(buf).unwrap()
}

fn write_msg(s: &mut TcpStream, m: &str) {
    s.write_all(&(m.len() as u32).to_be_bytes()).unwrap();
    s.write_all(m.as_bytes()).unwrap();
}

struct Peer {
    rtc: Rtc,
    timeout: Instant,
    connected: bool,
    video: Option<(Mid, Pt)>,
    audio: Option<(Mid, Pt)>,
}

fn drain(p: &mut Peer, sock: &UdpSocket, sent: &mut u64) {
    loop {
        match p.rtc.poll_output() {
            Ok(Output::Timeout(t)) => {
                p.timeout = t;
                return;
            }
            Ok(Output::Transmit(t)) => {
                let _ = sock.send_to(&t.contents, t.destination);
                *sent += 1;
            }
            Ok(Output::Event(e)) => match e {
                Event::IceConnectionStateChange(IceConnectionState::Disconnected) => {
                    p.rtc.disconnect();
                }
                Event::Connected => p.connected = true,
                Event::MediaAdded(m) => {
                    let Some(w) = p.rtc.writer(m.mid) else {
                        continue;
                    };
                    let want = if m.kind == MediaKind::Video {
                        Codec::H264
                    } else {
                        Codec::Opus
                    };
                    let pt = w
                        .payload_params()
                        .find(|pp| pp.spec().codec == want)
                        .map(|pp| pp.pt());
                    if let Some(pt) = pt {
                        if m.kind == MediaKind::Video {
                            p.video = Some((m.mid, pt));
                        } else {
                            p.audio = Some((m.mid, pt));
                        }
                    }
                }
                _ => {}
            },
            Err(e) => {
                eprintln!("peer error {e:?}");
                p.rtc.disconnect();
                p.timeout = Instant::now() + Duration::from_secs(3600);
                return;
            }
        }
    }
}

/// Writes one frame to the track `track` picks of every connected peer.
fn write_all(
    peers: &mut [Peer],
    track: impl Fn(&Peer) -> Option<(Mid, Pt)>,
    now: Instant,
    t: MediaTime,
    data: &Arc<[u8]>,
    sock: &UdpSocket,
    sent: &mut u64,
) {
    for p in peers.iter_mut().filter(|p| p.connected) {
        let Some((mid, pt)) = track(p) else { continue };
        if let Some(w) = p.rtc.writer(mid) {
            let _ = w.write(pt, now, t, data.clone());
        }
        drain(p, sock, sent);
    }
}

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

/// Takes offers on a thread of its own and hands each to the media loop with the stream to
/// answer on.
fn offers(tcp_port: u16) -> std::sync::mpsc::Receiver<(SdpOffer, TcpStream)> {
    let listener = TcpListener::bind(("127.0.0.1", tcp_port)).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for s in listener.incoming() {
            let mut s = s.unwrap();
            let offer = SdpOffer::from_sdp_string(&read_msg(&mut s)).unwrap();
            if tx.send((offer, s)).is_err() {
                return;
            }
        }
    });
    rx
}

fn server(tcp_port: u16, kbps: u64, video_buffer: usize) {
    let offers = offers(tcp_port);
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let local = sock.local_addr().unwrap();
    eprintln!("udp {local}");
    let mut peers: Vec<Peer> = Vec::new();
    let mut by_addr: HashMap<SocketAddr, usize> = HashMap::new();
    let mut buf = vec![0u8; 2000];
    let mut sent = 0u64;
    let start = Instant::now();
    let fps = 30u64;
    let audio_bytes = 80usize; // 32 kbit/s Opus, 20 ms frames
    let video_bytes = ((kbps * 1000 / 8).saturating_sub(audio_bytes as u64 * 50) / fps) as usize;
    let mut frame_no = 0u64;
    let mut audio_no = 0u64;
    let mut next_video = start;
    let mut next_audio = start;
    let mut next_report = start + Duration::from_secs(5);
    let (mut cpu0, mut t0, mut sent0) = (cpu_seconds(), Instant::now(), 0u64);
    let rss_idle = status();
    eprintln!("idle rss {} anon {} KiB", rss_idle.0, rss_idle.1);
    let mut iterations = 0u64;
    loop {
        iterations += 1;
        let now = Instant::now();
        // New offers.
        while let Ok((offer, mut s)) = offers.try_recv() {
            let mut rtc = config()
                .set_ice_lite(true)
                .set_send_buffer_video(video_buffer)
                .build(now);
            rtc.add_local_candidate(Candidate::host(local, "udp").unwrap());
            let answer = rtc.sdp_api().accept_offer(offer).unwrap();
            write_msg(&mut s, &answer.to_sdp_string());
            let mut p = Peer {
                rtc,
                timeout: now,
                connected: false,
                video: None,
                audio: None,
            };
            drain(&mut p, &sock, &mut sent);
            peers.push(p);
        }
        let now = Instant::now();
        for p in peers.iter_mut() {
            if p.timeout <= now
                && p.rtc.is_alive()
                && p.rtc.handle_input(Input::Timeout(now)).is_ok()
            {
                drain(p, &sock, &mut sent);
            }
        }
        if now >= next_video {
            let key = frame_no.is_multiple_of(2 * fps);
            let mut data = vec![0x5au8; video_bytes.max(8)];
            data[..5].copy_from_slice(&[0, 0, 0, 1, if key { 0x65 } else { 0x41 }]);
            let data: Arc<[u8]> = data.into();
            let t = MediaTime::new(frame_no * 3000, Frequency::NINETY_KHZ);
            write_all(&mut peers, |p| p.video, now, t, &data, &sock, &mut sent);
            frame_no += 1;
            next_video = start + Duration::from_micros(frame_no * 1_000_000 / fps);
        }
        if now >= next_audio {
            let data: Arc<[u8]> = vec![0x33u8; audio_bytes].into();
            let t = MediaTime::new(audio_no * 960, Frequency::FORTY_EIGHT_KHZ);
            write_all(&mut peers, |p| p.audio, now, t, &data, &sock, &mut sent);
            audio_no += 1;
            next_audio = start + Duration::from_millis(audio_no * 20);
        }
        if now >= next_report {
            let (cpu, t) = (cpu_seconds(), Instant::now());
            let (rss, anon) = status();
            let live = peers
                .iter()
                .filter(|p| p.connected && p.rtc.is_alive())
                .count();
            eprintln!(
                "iterations/s {:.0} peers {} connected {} cpu {:.1}% datagrams/s {:.0} rss {} anon {} KiB (anon/peer {:.1} KiB)",
                iterations as f64 / (t - t0).as_secs_f64(),
                peers.len(),
                live,
                100.0 * (cpu - cpu0) / (t - t0).as_secs_f64(),
                (sent - sent0) as f64 / (t - t0).as_secs_f64(),
                rss,
                anon,
                (anon as f64 - rss_idle.1 as f64) / live.max(1) as f64
            );
            (cpu0, t0, sent0) = (cpu, t, sent);
            iterations = 0;
            next_report = now + Duration::from_secs(5);
        }
        // Wait for a datagram or the next deadline (offers wait at most 20 ms, the audio
        // interval).
        let mut due = next_video.min(next_audio).min(next_report);
        for p in &peers {
            if p.rtc.is_alive() {
                due = due.min(p.timeout);
            }
        }
        let wait = due.saturating_duration_since(Instant::now());
        if wait.is_zero() {
            continue;
        }
        sock.set_read_timeout(Some(wait)).unwrap();
        if let Ok((n, from)) = sock.recv_from(&mut buf) {
            let Ok(r) = Receive::new(Protocol::Udp, from, local, &buf[..n]) else {
                continue;
            };
            let input = Input::Receive(Instant::now(), r);
            let idx = match by_addr.get(&from) {
                Some(&i) => Some(i),
                None => {
                    let i = peers.iter().position(|p| p.rtc.accepts(&input));
                    if let Some(i) = i {
                        by_addr.insert(from, i);
                    }
                    i
                }
            };
            if let Some(i) = idx {
                let p = &mut peers[i];
                if p.rtc.handle_input(input).is_ok() {
                    drain(p, &sock, &mut sent);
                }
            }
        }
    }
}

async fn client_peer(server: String, stats: Arc<std::sync::atomic::AtomicU64>) {
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let local = sock.local_addr().unwrap();
    let mut rtc = config().build(Instant::now());
    rtc.add_local_candidate(Candidate::host(local, "udp").unwrap());
    let mut api = rtc.sdp_api();
    api.add_media(MediaKind::Video, Direction::RecvOnly, None, None, None);
    api.add_media(MediaKind::Audio, Direction::RecvOnly, None, None, None);
    let (offer, pending) = api.apply().unwrap();
    let answer = tokio::task::spawn_blocking(move || {
        let mut s = TcpStream::connect(server).unwrap();
        write_msg(&mut s, &offer.to_sdp_string());
        read_msg(&mut s)
    })
    .await
    .unwrap();
    rtc.sdp_api()
        .accept_answer(pending, SdpAnswer::from_sdp_string(&answer).unwrap())
        .unwrap();
    let mut buf = vec![0u8; 2000];
    loop {
        let timeout = loop {
            match rtc.poll_output() {
                Ok(Output::Timeout(t)) => break t,
                Ok(Output::Transmit(t)) => {
                    let _ = sock.send_to(&t.contents, t.destination).await;
                }
                Ok(Output::Event(Event::MediaData(d))) => {
                    stats.fetch_add(d.data.len() as u64, std::sync::atomic::Ordering::Relaxed);
                }
                Ok(Output::Event(_)) => {}
                Err(e) => {
                    eprintln!("client error {e:?}");
                    return;
                }
            }
        };
        let wait = timeout.saturating_duration_since(Instant::now());
        tokio::select! {
            r = sock.recv_from(&mut buf) => {
                let (n, from) = r.unwrap();
                if let Ok(rcv) = Receive::new(Protocol::Udp, from, local, &buf[..n]) {
                    let _ = rtc.handle_input(Input::Receive(Instant::now(), rcv));
                }
            }
            _ = tokio::time::sleep(wait) => {
                let _ = rtc.handle_input(Input::Timeout(Instant::now()));
            }
        }
    }
}

fn client(server: String, n: usize, ramp_secs: f64, hold: u64) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let stats = Arc::new(std::sync::atomic::AtomicU64::new(0));
        for _ in 0..n {
            tokio::spawn(client_peer(server.clone(), Arc::clone(&stats)));
            tokio::time::sleep(Duration::from_secs_f64(ramp_secs / n as f64)).await;
        }
        let mut last = 0;
        for _ in 0..hold / 5 {
            tokio::time::sleep(Duration::from_secs(5)).await;
            let b = stats.load(std::sync::atomic::Ordering::Relaxed);
            eprintln!(
                "client: {:.0} kbit/s per peer",
                (b - last) as f64 * 8.0 / 5.0 / 1000.0 / n as f64
            );
            last = b;
        }
    });
}

fn main() {
    str0m::crypto::from_feature_flags().install_process_default();
    let args: Vec<String> = std::env::args().collect();
    match args[1].as_str() {
        "server" => server(
            args[2].parse().unwrap(),
            args.get(3).map_or(1000, |a| a.parse().unwrap()),
            args.get(4).map_or(256, |a| a.parse().unwrap()),
        ),
        _ => client(
            args[2].clone(),
            args[3].parse().unwrap(),
            args[4].parse().unwrap(),
            args[5].parse().unwrap(),
        ),
    }
}
