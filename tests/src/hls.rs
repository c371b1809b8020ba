//! HLS and DASH from the client's side: following playlists as a player does, and what a
//! page playing with hls.js is asked to measure (sound energy, latency from stamped frames).

use std::time::Duration;

use crate::http::{request, HttpResponse};
use crate::Server;

/// GET `path` with `headers`; panics if no response came.
pub fn get_with(s: &Server, path: &str, headers: &[(&str, &str)]) -> HttpResponse {
    request(s.http, "GET", path, headers, None).unwrap_or_else(|e| panic!("GET {path}: {e}"))
}

/// GET `path`; panics if no response came.
pub fn get(s: &Server, path: &str) -> HttpResponse {
    get_with(s, path, &[])
}

/// The master playlist's path of `stream` (`app/name`), with `?token=` when given.
pub fn master_path(stream: &str, token: Option<&str>) -> String {
    let (app, name) = stream.split_once('/').unwrap_or(("live", stream));
    match token {
        Some(t) => format!("/{app}/streams/{name}.m3u8?token={t}"),
        None => format!("/{app}/streams/{name}.m3u8"),
    }
}

/// The MPD's path of `stream`, with `?token=` when given.
pub fn mpd_path(stream: &str, token: Option<&str>) -> String {
    let (app, name) = stream.split_once('/').unwrap_or(("live", stream));
    match token {
        Some(t) => format!("/{app}/streams/{name}/{name}.mpd?token={t}"),
        None => format!("/{app}/streams/{name}/{name}.mpd"),
    }
}

/// `uri` resolved against the path `base` (relative URIs as playlists write them).
pub fn resolve(base: &str, uri: &str) -> String {
    if uri.starts_with('/') {
        return uri.to_owned();
    }
    let dir = base.split('?').next().unwrap_or(base);
    let dir = &dir[..dir.rfind('/').map_or(0, |i| i + 1)];
    format!("{dir}{uri}")
}

/// The URI lines of a playlist.
pub fn uris(playlist: &str) -> Vec<String> {
    playlist
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_owned)
        .collect()
}

/// The value of `URI="..."` in a tag line.
pub fn tag_uri(line: &str) -> Option<String> {
    let start = line.find("URI=\"")? + 5;
    let end = line[start..].find('"')? + start;
    Some(line[start..end].to_owned())
}

/// Opens a playback: the master playlist, then the path of its media playlist; the status
/// of the master's refusal otherwise.
pub fn open(s: &Server, stream: &str, token: Option<&str>) -> Result<String, u16> {
    let master = master_path(stream, token);
    let r = get(s, &master);
    if r.status != 200 {
        return Err(r.status);
    }
    let uri = uris(&r.body).into_iter().next().expect("a variant URI");
    Ok(resolve(&master, &uri))
}

/// The ISO BMFF box type at the start of `bytes`.
pub fn first_box(bytes: &[u8]) -> String {
    bytes
        .get(4..8)
        .map(|t| String::from_utf8_lossy(t).into_owned())
        .unwrap_or_default()
}

/// Runs in a page with a `#remote` video: routes its sound through an analyser (once) and
/// returns `[blocks, energy]` so far (energy zero for silence).
pub const AUDIO_ENERGY: &str = "(() => { const v = document.querySelector('#remote'); \
     if (!window.__energy) { const ctx = new AudioContext(); \
     const src = ctx.createMediaElementSource(v); const an = ctx.createAnalyser(); \
     an.fftSize = 2048; src.connect(an); an.connect(ctx.destination); ctx.resume(); \
     const buf = new Float32Array(an.fftSize); window.__energy = { n: 0, e: 0 }; \
     setInterval(() => { an.getFloatTimeDomainData(buf); let s = 0; \
     for (const x of buf) s += x * x; window.__energy.n += 1; window.__energy.e += s / buf.length; }, 100); } \
     return [window.__energy.n, window.__energy.e]; })()";

/// Runs in the play page once its hls.js instance exists: from then on, every fragment or
/// part hls.js loads passes through a loader that notes the send time stamped in its first
/// video frame (`streamgate-load`'s marker) before hls.js reads it; and every 200 ms, how long
/// ago the frame on screen was sent. Returns whether it is installed.
pub const LATENCY_PROBE: &str = "(() => { const hls = window.streamgate.state.hls; \
     if (!hls) return false; if (window.__lat) return true; \
     const lat = { stamps: [], samples: [] }; window.__lat = lat; \
     const note = (data, ref) => { const b = new Uint8Array(data); \
       for (let i = 0; i + 28 <= b.length; i++) { \
         if (b[i] === 83 && b[i + 1] === 71 && b[i + 2] === 76 && b[i + 3] === 84) { \
           const text = String.fromCharCode(...b.subarray(i + 4, i + 28)); \
           lat.stamps.push({ ref, us: parseInt(text.slice(8), 16) }); break; } } \
       if (lat.stamps.length > 200) lat.stamps.shift(); }; \
     const Base = hls.config.loader; \
     hls.config.fLoader = class extends Base { load(context, config, callbacks) { \
       const done = callbacks.onSuccess; \
       callbacks.onSuccess = (response, stats, ctx, details) => { \
         try { note(response.data, ctx.part || ctx.frag); } catch (e) {} \
         done(response, stats, ctx, details); }; \
       super.load(context, config, callbacks); } }; \
     setInterval(() => { const v = document.querySelector('#remote'); \
       if (v.paused || v.readyState < 3) return; const t = v.currentTime; let best = null; \
       for (const s of lat.stamps) { const start = s.ref.start; \
         if (start <= t && (!best || start > best.start)) best = { start, us: s.us }; } \
       if (!best || t - best.start > 3) return; \
       lat.samples.push(Date.now() - (best.us / 1000 + (t - best.start) * 1000)); }, 200); \
     return true; })()";

/// The latency samples (ms) the probe has taken.
pub const LATENCY_SAMPLES: &str = "window.__lat ? window.__lat.samples : []";

/// The median of `samples`.
pub fn median(samples: &mut [f64]) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples.get(samples.len() / 2).copied().unwrap_or(f64::NAN)
}

/// How long a test waits for a page to start playing over HLS.
pub const PLAY_WAIT: Duration = Duration::from_secs(30);
