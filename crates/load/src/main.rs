//! `streamgate-load`: load-tests a streamgate deployment with publishers and viewers over RTMP,
//! either native in-process clients (thousands of viewers at a small CPU cost, with embedded
//! send times for latency) or stock ffmpeg processes, plus native SRT and HLS viewers, and
//! reports what the viewers saw.

mod ffmpeg;
mod hls;
mod http;
mod rtmp;
mod srt;
mod stats;
mod synth;
mod whep;

use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use tokio_util::sync::CancellationToken;

use crate::stats::{Collector, Connections, Counters, Kbps, Millis, Report};

/// The protocol a native publisher uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
enum Ingest {
    /// RTMP.
    Rtmp,
    /// SRT (MPEG-TS).
    Srt,
}

/// Which clients to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
enum Client {
    /// In-process RTMP clients.
    Native,
    /// Stock ffmpeg processes.
    Ffmpeg,
}

/// Load-tests streamgate: P publishers and V viewers of one stream, ramp-up, hold, ramp-down.
#[derive(Debug, Parser, serde::Serialize)]
#[command(name = "streamgate-load", version)]
struct Args {
    /// REST API base URL, used to mint tokens when none are given
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    api: String,
    /// API secret for minting tokens
    #[arg(long, env = "STREAMGATE_API_SECRET", hide_env_values = true)]
    #[serde(skip)]
    api_secret: Option<String>,
    /// A ready-made publish token (skips minting)
    #[arg(long)]
    #[serde(skip)]
    publish_token: Option<String>,
    /// A ready-made subscribe token for viewers (by default viewers send none)
    #[arg(long)]
    #[serde(skip)]
    play_token: Option<String>,
    /// Mint a subscribe token for the viewers
    #[arg(long)]
    mint_play_token: bool,
    /// RTMP server, host:port
    #[arg(long, default_value = "127.0.0.1:1935")]
    rtmp: String,
    /// SRT server, host:port
    #[arg(long, default_value = "127.0.0.1:9000")]
    srt: std::net::SocketAddr,
    /// Protocol of the native publishers
    #[arg(long, value_enum, default_value = "rtmp")]
    publish_protocol: Ingest,
    /// Native SRT viewers of the first stream, besides the RTMP ones
    #[arg(long, default_value_t = 0)]
    srt_viewers: u32,
    /// Native HLS viewers of the first stream (over the --api address), besides the others
    #[arg(long, default_value_t = 0)]
    hls_viewers: u32,
    /// Native WebRTC viewers of the first stream (WHEP over the --api address), besides the
    /// others
    #[arg(long, default_value_t = 0)]
    webrtc_viewers: u32,
    /// HLS viewers fetch whole segments on a plain reload instead of LL-HLS parts
    #[arg(long)]
    hls_segments: bool,
    /// Stream name, app/key
    #[arg(long, default_value = "live/load")]
    stream: String,
    /// Client kind for publishers and viewers
    #[arg(long, value_enum, default_value = "native")]
    client: Client,
    /// Publishers (each on its own stream name: the first on --stream, the others on --stream-N)
    #[arg(long, default_value_t = 1)]
    publishers: u32,
    /// Viewers of the first stream
    #[arg(long, default_value_t = 10)]
    viewers: u32,
    /// Additional ffmpeg viewers, whatever --client says
    #[arg(long, default_value_t = 0)]
    ffmpeg_viewers: u32,
    /// Published bit rate, kbit/s
    #[arg(long, default_value_t = 1000)]
    bitrate: u32,
    /// Seconds over which viewers connect
    #[arg(long, default_value_t = 2.0)]
    ramp_up: f64,
    /// Seconds every viewer stays once all have connected
    #[arg(long, default_value_t = 10.0)]
    hold: f64,
    /// Seconds over which viewers leave
    #[arg(long, default_value_t = 1.0)]
    ramp_down: f64,
    /// Print the report as JSON
    #[arg(long)]
    json: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    // Every viewer is a socket: a soft limit of 1024 would end the run at a thousand.
    if let Err(e) = rlimit::increase_nofile_limit(u64::MAX) {
        eprintln!("streamgate-load: cannot raise the open file limit: {e}");
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("streamgate-load: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(report) => {
            println!("{report}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("streamgate-load: {e}");
            ExitCode::from(2)
        }
    }
}

fn split_stream(name: &str) -> Result<(String, String), String> {
    name.split_once('/')
        .filter(|(a, k)| !a.is_empty() && !k.is_empty())
        .map(|(a, k)| (a.to_owned(), k.to_owned()))
        .ok_or_else(|| format!("--stream {name:?}: expected app/key"))
}

async fn run(args: Args) -> Result<String, String> {
    let (app, key) = split_stream(&args.stream)?;
    let stream_name = |i: u32| {
        if i == 0 {
            key.clone()
        } else {
            format!("{key}-{i}")
        }
    };
    let secret = args.api_secret.clone();
    let mint = |kind: &'static str, name: String| {
        let api = args.api.clone();
        let secret = secret.clone();
        async move {
            match secret {
                Some(s) => http::mint(&api, &s, kind, &name).await.map(Some),
                None => Ok(None),
            }
        }
    };
    let mut publish_tokens = Vec::new();
    for i in 0..args.publishers {
        let t = match &args.publish_token {
            Some(t) => Some(t.clone()),
            None => mint("publish", format!("{app}/{}", stream_name(i))).await?,
        };
        publish_tokens.push(t);
    }
    let play_token = match (&args.play_token, args.mint_play_token) {
        (Some(t), _) => Some(t.clone()),
        (None, true) => mint("subscribe", args.stream.clone()).await?,
        (None, false) => None,
    };

    let stop = CancellationToken::new();
    let pub_counters = Arc::new(Counters::default());
    let view_counters = Arc::new(Counters::default());
    let ff_counters = Arc::new(Counters::default());
    let srt_counters = Arc::new(Counters::default());
    let collector = Arc::new(Collector::default());
    let srt_collector = Arc::new(Collector::default());
    let hls_counters = Arc::new(Counters::default());
    let hls_collector = Arc::new(Collector::default());
    let webrtc_counters = Arc::new(Counters::default());
    let webrtc_collector = Arc::new(Collector::default());
    let webrtc_api = if args.webrtc_viewers > 0 {
        Some(Arc::new(whep::api()?))
    } else {
        None
    };
    let mut tasks = tokio::task::JoinSet::new();
    let started = Instant::now();
    let clip = Arc::new(synth::Clip::load(args.bitrate)?);

    for (i, token) in publish_tokens.into_iter().enumerate() {
        let target = Arc::new(rtmp::Target {
            addr: args.rtmp.clone(),
            app: app.clone(),
            key: stream_name(i as u32),
            token,
        });
        let (c, s) = (Arc::clone(&pub_counters), stop.clone());
        match (args.client, args.publish_protocol) {
            (Client::Native, Ingest::Srt) => {
                let name = format!("{}/{}", target.app, target.key);
                let id = srt::streamid(&name, "publish", target.token.as_deref());
                tasks.spawn(srt::publish(args.srt, id, Arc::clone(&clip), c, s));
            }
            (Client::Native, Ingest::Rtmp) => {
                tasks.spawn(rtmp::publish(target, Arc::clone(&clip), c, s));
            }
            (Client::Ffmpeg, _) => {
                tasks.spawn(ffmpeg::publish(url(&target), args.bitrate, c, s));
            }
        }
    }
    // Give the publishers a moment to go live before viewers arrive.
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let view_target = Arc::new(rtmp::Target {
        addr: args.rtmp.clone(),
        app: app.clone(),
        key: key.clone(),
        token: play_token,
    });
    let hls_target = Arc::new(hls::Target {
        addr: args
            .api
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_owned(),
        stream: args.stream.clone(),
        token: view_target.token.clone(),
        low_latency: !args.hls_segments,
    });
    let webrtc_target = Arc::new(whep::Target {
        addr: hls_target.addr.clone(),
        stream: args.stream.clone(),
        token: view_target.token.clone(),
    });
    let before_webrtc = args.viewers + args.ffmpeg_viewers + args.srt_viewers + args.hls_viewers;
    let total = before_webrtc + args.webrtc_viewers;
    let srt_view_id = srt::streamid(&args.stream, "request", view_target.token.as_deref());
    let mut viewer_stops = Vec::new();
    let spacing = if total > 0 {
        args.ramp_up / f64::from(total)
    } else {
        0.0
    };
    let progress_stop = stop.clone();
    let progress = tokio::spawn(progress_line(
        Arc::clone(&pub_counters),
        Arc::clone(&view_counters),
        Arc::clone(&ff_counters),
        Arc::clone(&srt_counters),
        Arc::clone(&hls_counters),
        Arc::clone(&webrtc_counters),
        progress_stop,
    ));
    let interrupted = CancellationToken::new();
    {
        let i = interrupted.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                i.cancel();
            }
        });
    }
    for n in 0..total {
        if interrupted.is_cancelled() {
            break;
        }
        let vs = stop.child_token();
        viewer_stops.push(vs.clone());
        let native = n < args.viewers && args.client == Client::Native;
        if let (true, Some(api)) = (n >= before_webrtc, &webrtc_api) {
            tasks.spawn(whep::view(
                Arc::clone(api),
                Arc::clone(&webrtc_target),
                Arc::clone(&webrtc_counters),
                Arc::clone(&webrtc_collector),
                vs,
            ));
        } else if n >= args.viewers + args.ffmpeg_viewers + args.srt_viewers {
            tasks.spawn(hls::view(
                Arc::clone(&hls_target),
                Arc::clone(&hls_counters),
                Arc::clone(&hls_collector),
                vs,
            ));
        } else if n >= args.viewers + args.ffmpeg_viewers {
            tasks.spawn(srt::view(
                args.srt,
                srt_view_id.clone(),
                Arc::clone(&srt_counters),
                Arc::clone(&srt_collector),
                vs,
            ));
        } else if native {
            tasks.spawn(rtmp::view(
                Arc::clone(&view_target),
                Arc::clone(&view_counters),
                Arc::clone(&collector),
                vs,
            ));
        } else {
            let counters = if n < args.viewers {
                Arc::clone(&view_counters)
            } else {
                Arc::clone(&ff_counters)
            };
            tasks.spawn(ffmpeg::view(
                url(&view_target),
                counters,
                Arc::clone(&collector),
                vs,
            ));
        }
        if spacing > 0.0 {
            tokio::time::sleep(Duration::from_secs_f64(spacing)).await;
        }
    }
    tokio::select! {
        _ = tokio::time::sleep(Duration::from_secs_f64(args.hold)) => {}
        _ = interrupted.cancelled() => {}
    }
    let down = if viewer_stops.is_empty() {
        0.0
    } else {
        args.ramp_down / viewer_stops.len() as f64
    };
    for vs in viewer_stops {
        vs.cancel();
        if down > 0.0 && !interrupted.is_cancelled() {
            tokio::time::sleep(Duration::from_secs_f64(down)).await;
        }
    }
    stop.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(10), async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    let _ = progress.await;
    eprintln!();

    let samples = collector.take();
    let srt_samples = srt_collector.take();
    let hls_samples = hls_collector.take();
    let webrtc_samples = webrtc_collector.take();
    let all_kbps: Vec<f64> = samples
        .viewer_kbps
        .iter()
        .chain(&srt_samples.viewer_kbps)
        .chain(&hls_samples.viewer_kbps)
        .chain(&webrtc_samples.viewer_kbps)
        .copied()
        .collect();
    let report = Report {
        scenario: serde_json::to_value(&args).unwrap_or_default(),
        publishers: Connections::of(&pub_counters),
        viewers: Connections::of(&view_counters),
        ffmpeg_viewers: Connections::of(&ff_counters),
        srt_viewers: Connections::of(&srt_counters),
        hls_viewers: Connections::of(&hls_counters),
        webrtc_viewers: Connections::of(&webrtc_counters),
        join_ms: Millis::of(samples.join_us),
        latency_ms: Millis::of(samples.latency_us),
        srt_join_ms: Millis::of(srt_samples.join_us),
        srt_latency_ms: Millis::of(srt_samples.latency_us),
        webrtc_join_ms: Millis::of(webrtc_samples.join_us),
        webrtc_latency_ms: Millis::of(webrtc_samples.latency_us),
        hls_join_ms: Millis::of(hls_samples.join_us),
        hls_latency_ms: Millis::of(hls_samples.latency_us),
        hls_bytes: hls_counters.bytes.load(Ordering::Relaxed),
        viewer_kbps: Kbps::of(&all_kbps),
        frames_dropped: view_counters.dropped.load(Ordering::Relaxed)
            + srt_counters.dropped.load(Ordering::Relaxed)
            + hls_counters.dropped.load(Ordering::Relaxed)
            + webrtc_counters.dropped.load(Ordering::Relaxed),
        frames_received: view_counters.frames.load(Ordering::Relaxed)
            + srt_counters.frames.load(Ordering::Relaxed)
            + hls_counters.frames.load(Ordering::Relaxed)
            + webrtc_counters.frames.load(Ordering::Relaxed),
        seconds: started.elapsed().as_secs_f64(),
    };
    if args.json {
        serde_json::to_string_pretty(&report).map_err(|e| e.to_string())
    } else {
        Ok(report.table())
    }
}

fn url(t: &rtmp::Target) -> String {
    match &t.token {
        Some(tok) => format!("rtmp://{}/{}/{}?token={tok}", t.addr, t.app, t.key),
        None => format!("rtmp://{}/{}/{}", t.addr, t.app, t.key),
    }
}

/// One status line a second on stderr until `stop`.
async fn progress_line(
    p: Arc<Counters>,
    v: Arc<Counters>,
    f: Arc<Counters>,
    sv: Arc<Counters>,
    hv: Arc<Counters>,
    wv: Arc<Counters>,
    stop: CancellationToken,
) {
    let start = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut last_bytes = 0u64;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {
                let bytes = v.bytes.load(Ordering::Relaxed)
                    + sv.bytes.load(Ordering::Relaxed)
                    + hv.bytes.load(Ordering::Relaxed)
                    + wv.bytes.load(Ordering::Relaxed);
                let kbps = (bytes - last_bytes) as f64 * 8.0 / 1000.0;
                last_bytes = bytes;
                let c = |x: &Counters| Connections::of(x);
                let (pc, vc, fc, sc, hc, wc) = (c(&p), c(&v), c(&f), c(&sv), c(&hv), c(&wv));
                eprint!(
                    "\r{:>5.0}s publishers {}/{} viewers {}/{} srt {}/{} hls {}/{} webrtc {}/{} ffmpeg {}/{} refused {} failed {} dropped {} | {:.0} kbit/s in all   ",
                    start.elapsed().as_secs_f64(),
                    pc.admitted, pc.attempted, vc.admitted, vc.attempted, sc.admitted, sc.attempted,
                    hc.admitted, hc.attempted, wc.admitted, wc.attempted, fc.admitted, fc.attempted,
                    pc.refused + vc.refused + fc.refused + sc.refused + hc.refused + wc.refused,
                    pc.failed + vc.failed + fc.failed + sc.failed + hc.failed + wc.failed,
                    v.dropped.load(Ordering::Relaxed)
                        + sv.dropped.load(Ordering::Relaxed)
                        + hv.dropped.load(Ordering::Relaxed)
                        + wv.dropped.load(Ordering::Relaxed),
                    kbps
                );
            }
        }
    }
}
