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
//! `cargo run --release --manifest-path bench/str0m-probe/Cargo.toml -- server 47000`. The
//! signaling, the stream and the report are `bench/probe-harness.rs`, shared with the rtc probe.
use std::collections::HashMap;
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[path = "../../probe-harness.rs"]
mod harness;

use harness::{read_msg, write_msg, Report, Source};

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

fn server(tcp_port: u16, kbps: u64, video_buffer: usize) {
    let offers = harness::offers(tcp_port);
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let local = sock.local_addr().unwrap();
    eprintln!("udp {local}");
    let mut peers: Vec<Peer> = Vec::new();
    let mut by_addr: HashMap<SocketAddr, usize> = HashMap::new();
    let mut buf = vec![0u8; 2000];
    let mut sent = 0u64;
    let start = Instant::now();
    let mut source = Source::new(kbps, start);
    let mut report = Report::new(start);
    loop {
        report.iteration();
        let now = Instant::now();
        // New offers.
        while let Ok((offer, mut s)) = offers.try_recv() {
            let offer = SdpOffer::from_sdp_string(&offer).unwrap();
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
        if let Some((n, data)) = source.video(now) {
            let data: Arc<[u8]> = data.into();
            let t = MediaTime::new(n * 3000, Frequency::NINETY_KHZ);
            write_all(&mut peers, |p| p.video, now, t, &data, &sock, &mut sent);
        }
        if let Some((n, data)) = source.audio(now) {
            let data: Arc<[u8]> = data.into();
            let t = MediaTime::new(n * 960, Frequency::FORTY_EIGHT_KHZ);
            write_all(&mut peers, |p| p.audio, now, t, &data, &sock, &mut sent);
        }
        let live = || {
            peers
                .iter()
                .filter(|p| p.connected && p.rtc.is_alive())
                .count()
        };
        report.tick(now, peers.len(), live, sent);
        // Wait for a datagram or the next deadline (offers wait at most 20 ms, the audio
        // interval).
        let mut due = source.next_due().min(report.next_due());
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
