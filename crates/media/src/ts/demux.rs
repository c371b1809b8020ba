//! A transport stream to configs and frames.
//!
//! Bytes go through three stages: [`TsDemuxer::push`] finds packet boundaries (skipping
//! anything that is not a run of sync bytes 188 apart), `mpeg2ts-reader` follows PAT, PMT and
//! PES packets and checks continuity counters, and the assemblers in `es` turn PES payloads
//! into frames. A lost or damaged PES is dropped and counted; nothing in the input can make
//! this code panic or grow without bound.

use mpeg2ts_reader::demultiplex::{
    self, DemuxContext, FilterChangeset, FilterRequest, NullPacketFilter, PatPacketFilter,
    PmtPacketFilter,
};
use mpeg2ts_reader::packet::{Packet, Pid};
use mpeg2ts_reader::pes::{self, PesContents, PesHeader, PtsDts};
use mpeg2ts_reader::StreamType;

use super::es::{AudioAssembler, Unwrapper, VideoAssembler};
use super::{PACKET_LEN, SYNC_BYTE};
use crate::{AacConfig, AvcConfig, Codec, Frame};

/// Largest PES payload assembled, in bytes (a 4K intra frame stays well below); a larger one
/// is dropped and counted.
pub const MAX_PES_LEN: usize = 8 * 1024 * 1024;

/// What the demuxer found.
#[derive(Debug, Clone, PartialEq)]
pub enum TsEvent {
    /// The program map lists a track in this codec (the first of its kind, the one read):
    /// the stream carries it, whether or not its first frame has come.
    Track(Codec),
    /// New H.264 parameter sets (sent before the first frame that needs them).
    VideoConfig(AvcConfig),
    /// A new AAC configuration, from the ADTS headers.
    AudioConfig(AacConfig),
    /// A complete frame, with timestamps unwrapped past 33 bits.
    Frame(Frame),
}

/// Counters of what the demuxer had to skip.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DemuxStats {
    /// Transport-stream packets read.
    pub packets: u64,
    /// Bytes skipped while looking for packet or ADTS boundaries.
    pub resync_bytes: u64,
    /// Gaps in the continuity counters of the H.264 and AAC tracks.
    pub continuity_errors: u64,
    /// Access units dropped: damaged, cut by a gap, too large, or undecodable.
    pub dropped_units: u64,
}

/// Which elementary stream a PES filter feeds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Video,
    Audio,
}

/// Passes one elementary stream's PES pieces to the context's assembler.
pub struct Collector {
    kind: Kind,
}

mpeg2ts_reader::packet_filter_switch! {
    Filter<Context> {
        Pes: pes::PesPacketFilter<Context, Collector>,
        Pat: PatPacketFilter<Context>,
        Pmt: PmtPacketFilter<Context>,
        Null: NullPacketFilter<Context>,
    }
}

/// The demuxer's state that the filters reach: the assemblers and what they produced.
pub struct Context {
    changeset: FilterChangeset<Filter>,
    video_pid: Option<Pid>,
    audio_pid: Option<Pid>,
    clock: Unwrapper,
    video: VideoAssembler,
    audio: AudioAssembler,
    events: Vec<TsEvent>,
    stats: DemuxStats,
}

impl DemuxContext for Context {
    type F = Filter;

    fn filter_changeset(&mut self) -> &mut FilterChangeset<Filter> {
        &mut self.changeset
    }

    fn construct(&mut self, req: FilterRequest<'_, '_>) -> Filter {
        match req {
            FilterRequest::ByPid(mpeg2ts_reader::psi::pat::PAT_PID) => {
                Filter::Pat(PatPacketFilter::default())
            }
            FilterRequest::Pmt {
                pid,
                program_number,
            } => Filter::Pmt(PmtPacketFilter::new(pid, program_number)),
            FilterRequest::ByStream {
                stream_type,
                stream_info,
                ..
            } => {
                let pid = stream_info.elementary_pid();
                // The first track of each kind is taken; any other is ignored.
                let (slot, kind) = match stream_type {
                    StreamType::H264 => (&mut self.video_pid, Kind::Video),
                    StreamType::ADTS => (&mut self.audio_pid, Kind::Audio),
                    _ => return Filter::Null(NullPacketFilter::default()),
                };
                if slot.is_some_and(|p| p != pid) {
                    return Filter::Null(NullPacketFilter::default());
                }
                if slot.is_none() {
                    self.events.push(TsEvent::Track(match kind {
                        Kind::Video => Codec::H264,
                        Kind::Audio => Codec::Aac,
                    }));
                }
                *slot = Some(pid);
                Filter::Pes(pes::PesPacketFilter::new(Collector { kind }))
            }
            FilterRequest::ByPid(_) | FilterRequest::Nit { .. } => {
                Filter::Null(NullPacketFilter::default())
            }
        }
    }
}

impl Context {
    /// The unwrapped `(pts, dts)` of a PES header, if it has a PTS.
    fn times(&mut self, header: &PesHeader<'_>) -> Option<(i64, i64)> {
        let PesContents::Parsed(Some(parsed)) = header.contents() else {
            return None;
        };
        match parsed.pts_dts() {
            Ok(PtsDts::PtsOnly(Ok(pts))) => {
                let pts = self.clock.unwrap(pts.value());
                Some((pts, pts))
            }
            Ok(PtsDts::Both {
                pts: Ok(pts),
                dts: Ok(dts),
            }) => {
                let unwrapped_dts = self.clock.unwrap(dts.value());
                // The PTS is placed nearest to the DTS, without moving the clock's reference.
                let offset = offset_33(pts.value(), dts.value());
                Some((unwrapped_dts + offset, unwrapped_dts))
            }
            _ => None,
        }
    }
}

/// `a - b` for two 33-bit timestamps, taken in -2^32..2^32.
fn offset_33(a: u64, b: u64) -> i64 {
    let m = super::TIMESTAMP_MODULUS;
    let a = i64::try_from(a).unwrap_or(0) & (m - 1);
    let b = i64::try_from(b).unwrap_or(0) & (m - 1);
    (a - b + m / 2).rem_euclid(m) - m / 2
}

impl pes::ElementaryStreamConsumer<Context> for Collector {
    fn start_stream(&mut self, _ctx: &mut Context) {}

    fn begin_packet(&mut self, ctx: &mut Context, header: PesHeader<'_>) {
        let times = ctx.times(&header);
        let payload = match header.contents() {
            PesContents::Parsed(Some(parsed)) => parsed.payload(),
            PesContents::Parsed(None) => &[],
            PesContents::Payload(p) => p,
        };
        let Context {
            video,
            audio,
            events,
            stats,
            ..
        } = ctx;
        match self.kind {
            Kind::Video => video.begin(times, payload, stats),
            Kind::Audio => audio.begin(times.map(|t| t.0), payload, events, stats),
        }
    }

    fn continue_packet(&mut self, ctx: &mut Context, data: &[u8]) {
        let Context {
            video,
            audio,
            events,
            stats,
            ..
        } = ctx;
        match self.kind {
            Kind::Video => video.data(data, stats),
            Kind::Audio => audio.data(data, events, stats),
        }
    }

    fn end_packet(&mut self, ctx: &mut Context) {
        let Context {
            video,
            audio,
            events,
            stats,
            ..
        } = ctx;
        match self.kind {
            Kind::Video => video.end(events, stats),
            Kind::Audio => audio.end(stats),
        }
    }

    fn continuity_error(&mut self, ctx: &mut Context) {
        ctx.stats.continuity_errors += 1;
        match self.kind {
            Kind::Video => ctx.video.lost(&mut ctx.stats),
            Kind::Audio => ctx.audio.lost(&mut ctx.stats),
        }
    }
}

/// A transport stream in, [`TsEvent`]s out. Feed it the bytes as they arrive, in any
/// pieces.
pub struct TsDemuxer {
    ctx: Context,
    demux: demultiplex::Demultiplex<Context>,
    /// Bytes of a packet not yet complete.
    partial: Vec<u8>,
}

impl std::fmt::Debug for TsDemuxer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TsDemuxer")
            .field("stats", &self.ctx.stats)
            .finish_non_exhaustive()
    }
}

impl Default for TsDemuxer {
    fn default() -> Self {
        Self::new()
    }
}

impl TsDemuxer {
    /// A demuxer waiting for its first PAT.
    pub fn new() -> Self {
        let mut ctx = Context {
            changeset: FilterChangeset::default(),
            video_pid: None,
            audio_pid: None,
            clock: Unwrapper::default(),
            video: VideoAssembler::default(),
            audio: AudioAssembler::default(),
            events: Vec::new(),
            stats: DemuxStats::default(),
        };
        let demux = demultiplex::Demultiplex::new(&mut ctx);
        Self {
            ctx,
            demux,
            partial: Vec::with_capacity(PACKET_LEN),
        }
    }

    /// Counters so far.
    pub fn stats(&self) -> DemuxStats {
        self.ctx.stats
    }

    /// Reads `data` and appends what it completes to `out`.
    pub fn push(&mut self, data: &[u8], out: &mut Vec<TsEvent>) {
        let mut data = data;
        // Complete a packet begun by the previous call.
        if !self.partial.is_empty() {
            let need = PACKET_LEN - self.partial.len();
            let (head, tail) = data.split_at(need.min(data.len()));
            self.partial.extend_from_slice(head);
            data = tail;
            if self.partial.len() < PACKET_LEN {
                return;
            }
            let packet = std::mem::take(&mut self.partial);
            self.packets(&packet);
            self.partial = packet;
            self.partial.clear();
        }
        while !data.is_empty() {
            let start = aligned_run_start(data);
            self.ctx.stats.resync_bytes += start as u64;
            data = data.get(start..).unwrap_or_default();
            let whole = data.len() / PACKET_LEN * PACKET_LEN;
            let run = run_length(data.get(..whole).unwrap_or_default());
            if run == 0 {
                // A sync byte with less than a packet after it: keep it for the next call.
                self.partial.extend_from_slice(data);
                break;
            }
            let (packets, rest) = data.split_at(run);
            self.packets(packets);
            data = rest;
        }
        out.append(&mut self.ctx.events);
    }

    /// Feeds whole packets, each starting with a sync byte.
    fn packets(&mut self, packets: &[u8]) {
        self.ctx.stats.packets += (packets.len() / PACKET_LEN) as u64;
        for packet in packets.chunks_exact(PACKET_LEN) {
            // Packets are fed one at a time: the reader stops a batch at the first one it
            // cannot use.
            if Packet::try_new(packet).is_some() {
                self.demux.push(&mut self.ctx, packet);
            }
        }
    }
}

/// Where the first plausible packet in `data` starts: a sync byte that is followed by another
/// one packet later, or that begins the last (incomplete) packet. `data.len()` if none.
fn aligned_run_start(data: &[u8]) -> usize {
    for (i, &b) in data.iter().enumerate() {
        if b != SYNC_BYTE {
            continue;
        }
        match data.get(i + PACKET_LEN) {
            Some(&next) if next == SYNC_BYTE => return i,
            Some(_) => continue,
            None => return i,
        }
    }
    data.len()
}

/// Length of the run of whole packets at the start of `data` (which starts with a sync byte):
/// each must start with a sync byte and be followed by another one (or by the end of
/// `data`), so that garbage which happens to start with a sync byte ends the run.
fn run_length(data: &[u8]) -> usize {
    let mut len = 0;
    while data.get(len) == Some(&SYNC_BYTE) && len + PACKET_LEN <= data.len() {
        match data.get(len + PACKET_LEN) {
            Some(&b) if b != SYNC_BYTE => break,
            _ => len += PACKET_LEN,
        }
    }
    len
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ts::TsMuxer;
    use crate::{AacConfig, AvcConfig, Codec, StreamConfig, TrackKind};
    use bytes::Bytes;

    fn config() -> StreamConfig {
        StreamConfig {
            video: Some(
                AvcConfig::from_parameter_sets(
                    vec![Bytes::from_static(&[0x67, 66, 0xc0, 30])],
                    vec![Bytes::from_static(&[0x68, 0xce])],
                )
                .unwrap(),
            ),
            audio: Some(AacConfig::new(2, 4, 2).unwrap()),
            ..StreamConfig::default()
        }
    }

    /// Ten video frames (keyframe first, then every fifth) interleaved with audio.
    fn frames() -> Vec<Frame> {
        let mut out = Vec::new();
        for i in 0..10i64 {
            let len = 100 + (i as usize) * 400;
            let mut payload = (len as u32).to_be_bytes().to_vec();
            payload.push(if i % 5 == 0 { 0x65 } else { 0x41 });
            payload.extend((1..len).map(|n| (n % 251) as u8 | 1));
            out.push(Frame {
                track: TrackKind::Video,
                codec: Codec::H264,
                pts: i * 3600 + 7200,
                dts: i * 3600,
                keyframe: i % 5 == 0,
                payload: payload.into(),
            });
            out.push(Frame {
                track: TrackKind::Audio,
                codec: Codec::Aac,
                pts: i * 3600,
                dts: i * 3600,
                keyframe: true,
                payload: Bytes::from(vec![0x21; 150 + i as usize]),
            });
        }
        out
    }

    fn muxed() -> Vec<u8> {
        let mut m = TsMuxer::new();
        let c = config();
        frames()
            .iter()
            .flat_map(|f| m.frame(f, &c).to_vec())
            .collect()
    }

    fn demux_all(pieces: &[&[u8]]) -> (Vec<TsEvent>, DemuxStats) {
        let mut d = TsDemuxer::new();
        let mut out = Vec::new();
        for p in pieces {
            d.push(p, &mut out);
        }
        (out, d.stats())
    }

    fn frames_of(events: &[TsEvent]) -> Vec<&Frame> {
        events
            .iter()
            .filter_map(|e| match e {
                TsEvent::Frame(f) => Some(f),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn round_trip_in_any_pieces() {
        let ts = muxed();
        let expected = frames();
        for piece in [188 * 7, 1316, 1000, 1, 187, ts.len()] {
            let pieces: Vec<&[u8]> = ts.chunks(piece).collect();
            let (events, stats) = demux_all(&pieces);
            assert!(matches!(
                &events[..3],
                [
                    TsEvent::Track(Codec::H264),
                    TsEvent::Track(Codec::Aac),
                    TsEvent::AudioConfig(_) | TsEvent::VideoConfig(_)
                ]
            ));
            let got = frames_of(&events);
            // The last video frame waits for a following PES to end it.
            let want: Vec<&Frame> = expected
                .iter()
                .filter(|f| !(f.codec == Codec::H264 && f.dts == 9 * 3600))
                .collect();
            let mut got_sorted = got.clone();
            got_sorted.sort_by_key(|f| (f.dts, f.codec == Codec::H264));
            let mut want_sorted = want.clone();
            want_sorted.sort_by_key(|f| (f.dts, f.codec == Codec::H264));
            // Timestamps come back with the muxer's offset.
            for (g, w) in got_sorted.iter().zip(&want_sorted) {
                assert_eq!(g.codec, w.codec);
                assert_eq!(g.keyframe, w.keyframe);
                assert_eq!(g.pts - w.pts, crate::ts::TIMESTAMP_OFFSET);
                assert_eq!(g.dts - w.dts, crate::ts::TIMESTAMP_OFFSET);
                assert_eq!(g.payload, w.payload, "piece {piece}");
            }
            assert_eq!(got.len(), want.len(), "piece {piece}");
            assert_eq!(stats.continuity_errors, 0);
            assert_eq!(stats.dropped_units, 0);
        }
    }

    #[test]
    fn garbage_between_packets_is_skipped() {
        let ts = muxed();
        let mut dirty = b"\x47garbage\x47\x47 not a packet".to_vec();
        for (i, p) in ts.chunks(PACKET_LEN).enumerate() {
            dirty.extend_from_slice(p);
            if i % 7 == 3 {
                dirty.extend_from_slice(&[0x47, 1, 2, 3, 0x47]);
            }
        }
        let (clean_events, _) = demux_all(&[&ts]);
        let (events, stats) = demux_all(&[&dirty]);
        assert_eq!(frames_of(&events), frames_of(&clean_events));
        assert!(stats.resync_bytes > 0);
    }

    #[test]
    fn a_lost_packet_drops_only_its_frame() {
        let ts = muxed();
        let packets: Vec<&[u8]> = ts.chunks(PACKET_LEN).collect();
        // Drop the tenth video packet that does not start a PES.
        let victim = packets
            .iter()
            .enumerate()
            .filter(|(_, p)| p[1] == 0x01 && p[2] == 0x00)
            .nth(10)
            .unwrap()
            .0;
        let mut lossy = Vec::new();
        for (i, p) in packets.iter().enumerate() {
            if i != victim {
                lossy.extend_from_slice(p);
            }
        }
        let (clean, _) = demux_all(&[&ts]);
        let (events, stats) = demux_all(&[&lossy]);
        assert_eq!(stats.continuity_errors, 1);
        assert_eq!(frames_of(&events).len(), frames_of(&clean).len() - 1);
    }

    #[test]
    fn random_input_never_panics() {
        let mut seed = 0x1234_5678u32;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            seed
        };
        let ts = muxed();
        for round in 0..300 {
            let mut bytes = if round % 2 == 0 {
                ts.clone()
            } else {
                (0..4000).map(|_| next() as u8).collect()
            };
            // Flip bytes, favouring the header bytes that steer the parsers.
            for _ in 0..(next() % 64) {
                let at = next() as usize % bytes.len();
                bytes[at] = next() as u8;
            }
            for _ in 0..(next() % 8) {
                let at = (next() as usize % (bytes.len() / PACKET_LEN)) * PACKET_LEN;
                bytes[at] = SYNC_BYTE;
                if at + 3 < bytes.len() {
                    bytes[at + 1] = (next() as u8) & 0x5f;
                    bytes[at + 3] = next() as u8;
                }
            }
            let piece = 1 + next() as usize % 1500;
            let pieces: Vec<&[u8]> = bytes.chunks(piece).collect();
            let _ = demux_all(&pieces);
        }
    }
}
