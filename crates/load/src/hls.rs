//! Native HLS viewers: HTTP/1.1 clients, one keep-alive connection each, that open a
//! playback with the master playlist and then follow the media playlist as a player does,
//! fetching every part (LL-HLS: blocking reloads on the preload hint) or every segment, and
//! reading the stamped frames in what they fetch for latency and gaps.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use crate::stats::{Collector, Counters, Meter};
use crate::synth;

/// Largest response head and body a viewer reads.
const MAX_HEAD: usize = 64 * 1024;
const MAX_BODY: usize = 64 * 1024 * 1024;
/// Longest wait for one response (a blocking reload waits up to three target durations).
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(20);

/// What HLS viewers play.
#[derive(Debug)]
pub struct Target {
    /// The HTTP server, host:port.
    pub addr: String,
    /// `app/key`.
    pub stream: String,
    /// A subscribe token, if viewers need one.
    pub token: Option<String>,
    /// Follow parts with blocking reloads (LL-HLS), or whole segments.
    pub low_latency: bool,
}

/// One response.
struct Response {
    status: u16,
    body: Bytes,
}

/// A keep-alive HTTP/1.1 connection.
struct Conn {
    io: BufReader<TcpStream>,
    host: String,
}

impl Conn {
    async fn open(addr: &str) -> std::io::Result<Self> {
        let s = TcpStream::connect(addr).await?;
        s.set_nodelay(true)?;
        Ok(Self {
            io: BufReader::new(s),
            host: addr.to_owned(),
        })
    }

    async fn get(&mut self, path: &str) -> Result<Response, String> {
        tokio::time::timeout(RESPONSE_TIMEOUT, self.exchange(path))
            .await
            .map_err(|_| format!("GET {path}: no answer in time"))?
    }

    async fn exchange(&mut self, path: &str) -> Result<Response, String> {
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {}\r\nUser-Agent: streamgate-load\r\n\r\n",
            self.host
        );
        let e = |e: std::io::Error| e.to_string();
        self.io
            .get_mut()
            .write_all(request.as_bytes())
            .await
            .map_err(e)?;
        let mut head = Vec::new();
        loop {
            let n = self.io.read_until(b'\n', &mut head).await.map_err(e)?;
            if n == 0 {
                return Err("connection closed".into());
            }
            if head.ends_with(b"\r\n\r\n") {
                break;
            }
            if head.len() > MAX_HEAD {
                return Err("response head too large".into());
            }
        }
        let head = String::from_utf8_lossy(&head);
        let mut lines = head.lines();
        let status = lines
            .next()
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|s| s.parse().ok())
            .ok_or("malformed status line")?;
        let (mut length, mut chunked) = (None, false);
        for l in lines {
            let Some((name, value)) = l.split_once(':') else {
                continue;
            };
            let value = value.trim();
            if name.eq_ignore_ascii_case("content-length") {
                length = value.parse::<usize>().ok();
            } else if name.eq_ignore_ascii_case("transfer-encoding") && value.contains("chunked") {
                chunked = true;
            }
        }
        let body = if chunked {
            self.chunked().await?
        } else {
            let n = length.unwrap_or(0);
            if n > MAX_BODY {
                return Err("response body too large".into());
            }
            let mut body = BytesMut::zeroed(n);
            self.io.read_exact(&mut body).await.map_err(e)?;
            body.freeze()
        };
        Ok(Response { status, body })
    }

    async fn chunked(&mut self) -> Result<Bytes, String> {
        let e = |e: std::io::Error| e.to_string();
        let mut body = BytesMut::new();
        loop {
            let mut line = String::new();
            self.io.read_line(&mut line).await.map_err(e)?;
            let size = usize::from_str_radix(line.trim(), 16).map_err(|_| "bad chunk size")?;
            if body.len() + size > MAX_BODY {
                return Err("response body too large".into());
            }
            let at = body.len();
            body.resize(at + size + 2, 0);
            self.io
                .read_exact(body.get_mut(at..).unwrap_or_default())
                .await
                .map_err(e)?;
            body.truncate(at + size);
            if size == 0 {
                return Ok(body.freeze());
            }
        }
    }
}

/// `uri` resolved against the path `base`.
fn resolve(base: &str, uri: &str) -> String {
    if uri.starts_with('/') {
        return uri.to_owned();
    }
    let dir = base.split('?').next().unwrap_or(base);
    let dir = dir.get(..dir.rfind('/').map_or(0, |i| i + 1)).unwrap_or("");
    format!("{dir}{uri}")
}

/// What a media playlist lists: parts (segment, index, URI, independent), complete segments
/// (number, URI), the preload hint (segment, index), the target duration.
#[derive(Debug, Default)]
struct Playlist {
    parts: Vec<(u64, u64, String, bool)>,
    segments: Vec<(u64, String)>,
    hint: Option<(u64, u64)>,
    target: f64,
    ended: bool,
}

/// `part-M.N.m4s...` -> (M, N); `seg-M.m4s...` -> M.
fn part_number(uri: &str) -> Option<(u64, u64)> {
    let name = uri.strip_prefix("part-")?.split(".m4s").next()?;
    let (m, n) = name.split_once('.')?;
    Some((m.parse().ok()?, n.parse().ok()?))
}

fn segment_number(uri: &str) -> Option<u64> {
    uri.strip_prefix("seg-")?.split(".m4s").next()?.parse().ok()
}

fn quoted_uri(line: &str) -> Option<&str> {
    let start = line.find("URI=\"")? + 5;
    let len = line.get(start..)?.find('"')?;
    line.get(start..start + len)
}

fn parse(text: &str) -> Playlist {
    let mut p = Playlist {
        target: 2.0,
        ..Playlist::default()
    };
    for line in text.lines().map(str::trim) {
        if let Some(v) = line.strip_prefix("#EXT-X-TARGETDURATION:") {
            p.target = v.parse().unwrap_or(2.0);
        } else if line.starts_with("#EXT-X-PART:") {
            if let Some(uri) = quoted_uri(line) {
                if let Some((m, n)) = part_number(uri) {
                    p.parts
                        .push((m, n, uri.to_owned(), line.contains("INDEPENDENT=YES")));
                }
            }
        } else if line.starts_with("#EXT-X-PRELOAD-HINT:") {
            p.hint = quoted_uri(line).and_then(part_number);
        } else if line == "#EXT-X-ENDLIST" {
            p.ended = true;
        } else if !line.is_empty() && !line.starts_with('#') {
            if let Some(m) = segment_number(line) {
                p.segments.push((m, line.to_owned()));
            }
        }
    }
    p
}

/// What a viewer made of the media it fetched.
struct Reading<'a> {
    counters: &'a Counters,
    meter: Meter,
}

impl Reading<'_> {
    fn media(&mut self, body: &Bytes) {
        self.meter.bytes(self.counters, body.len());
        for (seq, sent) in synth::find_markers(body) {
            self.meter.frame(self.counters, seq, sent, true);
        }
    }
}

/// Plays until `stop` fires or the stream ends, measuring join time, latency, bytes and gaps.
pub async fn view(
    t: Arc<Target>,
    counters: Arc<Counters>,
    collector: Arc<Collector>,
    stop: CancellationToken,
) {
    Counters::inc(&counters.attempted);
    let started = Instant::now();
    let mut conn = match Conn::open(&t.addr).await {
        Ok(c) => c,
        Err(_) => return Counters::inc(&counters.failed),
    };
    let (app, key) = t.stream.split_once('/').unwrap_or(("live", &t.stream));
    let master = match &t.token {
        Some(token) => format!("/{app}/streams/{key}.m3u8?token={token}"),
        None => format!("/{app}/streams/{key}.m3u8"),
    };
    let media = match conn.get(&master).await {
        Ok(r) if r.status == 200 => {
            let text = String::from_utf8_lossy(&r.body).into_owned();
            match text
                .lines()
                .map(str::trim)
                .find(|l| !l.is_empty() && !l.starts_with('#'))
            {
                Some(uri) => resolve(&master, uri),
                None => return Counters::inc(&counters.failed),
            }
        }
        Ok(r) if matches!(r.status, 403 | 404 | 503) => return Counters::inc(&counters.refused),
        _ => return Counters::inc(&counters.failed),
    };
    Counters::inc(&counters.admitted);
    let mut reading = Reading {
        counters: &counters,
        // Frames already made when the viewer came count for its join, not its latency.
        meter: Meter::admitted(started),
    };
    let outcome = tokio::select! {
        _ = stop.cancelled() => Ok(()),
        r = follow(&mut conn, &media, t.low_latency, &mut reading) => r,
    };
    if outcome.is_err() {
        Counters::inc(&counters.failed);
    }
    collector.add(reading.meter.finish());
}

/// Follows the media playlist at `media`, fetching what it lists, until the stream ends.
async fn follow(
    conn: &mut Conn,
    media: &str,
    low_latency: bool,
    reading: &mut Reading<'_>,
) -> Result<(), String> {
    // The last part or segment fetched.
    let mut done_part: Option<(u64, u64)> = None;
    let mut done_segment: Option<u64> = None;
    let mut blocking: Option<(u64, u64)> = None;
    loop {
        let path = match blocking {
            Some((m, n)) => format!("{media}&_HLS_msn={m}&_HLS_part={n}"),
            None => media.to_owned(),
        };
        let r = conn.get(&path).await?;
        if r.status != 200 {
            return Err(format!("media playlist: {}", r.status));
        }
        let p = parse(&String::from_utf8_lossy(&r.body));
        if low_latency && !p.parts.is_empty() {
            // Start at the newest independent part, as players at the live edge do.
            let from = match done_part {
                Some(d) => p.parts.iter().position(|x| (x.0, x.1) > d),
                None => p.parts.iter().rposition(|x| x.3),
            };
            for (m, n, uri, _) in p.parts.iter().skip(from.unwrap_or(p.parts.len())) {
                let r = conn.get(&resolve(media, uri)).await?;
                if r.status == 200 {
                    reading.media(&r.body);
                }
                done_part = Some((*m, *n));
            }
            blocking = p.hint;
        } else {
            let from = match done_segment {
                Some(d) => p.segments.iter().position(|x| x.0 > d),
                None => p.segments.len().checked_sub(1),
            };
            for (m, uri) in p.segments.iter().skip(from.unwrap_or(p.segments.len())) {
                let r = conn.get(&resolve(media, uri)).await?;
                if r.status == 200 {
                    reading.media(&r.body);
                }
                done_segment = Some(*m);
            }
            if !p.ended {
                tokio::time::sleep(Duration::from_secs_f64((p.target / 2.0).max(0.2))).await;
            }
        }
        if p.ended {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn playlists_are_read_as_players_read_them() {
        let text = "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-MAP:URI=\"init-1.mp4?sid=s\"\n\
            #EXT-X-PART:DURATION=0.32000,URI=\"part-4.0.m4s?sid=s\",INDEPENDENT=YES\n\
            #EXT-X-PART:DURATION=0.32000,URI=\"part-4.1.m4s?sid=s\"\n#EXTINF:2.0,\nseg-4.m4s?sid=s\n\
            #EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"part-5.0.m4s?sid=s\"\n";
        let p = parse(text);
        assert_eq!(p.parts.len(), 2);
        assert_eq!((p.parts[0].0, p.parts[0].1, p.parts[0].3), (4, 0, true));
        assert!(!p.parts[1].3);
        assert_eq!(p.segments, vec![(4, "seg-4.m4s?sid=s".to_owned())]);
        assert_eq!(p.hint, Some((5, 0)));
        assert_eq!(p.target, 2.0);
        assert!(!p.ended);
        assert_eq!(
            resolve("/live/streams/a/media.m3u8?sid=s", "part-1.0.m4s?sid=s"),
            "/live/streams/a/part-1.0.m4s?sid=s"
        );
        assert_eq!(
            resolve("/live/streams/a.m3u8?token=t", "a/media.m3u8?sid=s"),
            "/live/streams/a/media.m3u8?sid=s"
        );
    }
}
