#!/usr/bin/env python3
"""Writes the seed corpus of every fuzz target into fuzz/seeds/<target>/, from the captures the
tests use (see crates/*/tests/fixtures/README.md) and fuzz/seeds/chromium-offer.json (an offer
made by Debian's Chromium 156). Run from anywhere; it rewrites the seeds each time."""

import json
import os
import struct

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SEEDS = os.path.join(ROOT, "fuzz", "seeds")
MEDIA = os.path.join(ROOT, "crates", "media", "tests", "fixtures")
RTMP = os.path.join(ROOT, "crates", "rtmp", "tests", "fixtures")


def read(*path):
    with open(os.path.join(*path), "rb") as f:
        return f.read()


def write(target, name, data):
    os.makedirs(os.path.join(SEEDS, target), exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(SEEDS, target, name), "wb") as f:
        f.write(data)


def main():
    publish, play = read(RTMP, "ffmpeg_publish.bin"), read(RTMP, "ffmpeg_play.bin")
    write("rtmp_session", "ffmpeg-publish-and-play", struct.pack(">I", len(publish)) + publish + play)
    write("rtmp_session", "ffmpeg-publish-only", struct.pack(">I", len(publish)) + publish)
    # The raw form: a handshake (C0, C1, C2) in front of the client's messages.
    raw = b"\x03" + bytes(1536) + bytes(1536) + publish[:2000]
    write("rtmp_session", "raw-handshake", struct.pack(">I", 0x80000000 | len(raw)) + raw)

    # What an origin sends an edge's pull once the stream plays (the driver plays the answers
    # before it when the first byte's lowest bit is set; the other bits size the pieces): real
    # FLV tag bodies as RTMP messages on message stream 1, in chunks of 4096 bytes.
    def message(type_id, ts, body):
        out = bytes([9]) + ts.to_bytes(3, "big") + len(body).to_bytes(3, "big") + bytes([type_id])
        out += struct.pack("<I", 1)
        for i in range(0, max(len(body), 1), 4096):
            out += (b"" if i == 0 else bytes([0xC0 | 9])) + body[i:i + 4096]
        return out

    media = [(9, "avc_sequence_header.bin"), (8, "aac_sequence_header.bin"), (9, "avc_keyframe.bin"),
             (8, "aac_frame.bin"), (9, "avc_p_frame.bin"), (8, "aac_frame.bin"), (9, "avc_b_frame.bin")]
    stream = b"".join(message(t, 40 * i, read(MEDIA, name)) for i, (t, name) in enumerate(media))
    write("rtmp_pull", "origin-media", bytes([1 | (61 << 1)]) + stream)
    write("rtmp_pull", "origin-media-whole", bytes([1 | (127 << 1)]) + stream)

    tags = ["avc_sequence_header.bin", "avc_keyframe.bin", "avc_p_frame.bin", "avc_b_frame.bin",
            "aac_sequence_header.bin", "aac_frame.bin"]
    for t in tags:
        write("flv_tags", t, read(MEDIA, t))
    write("codec_config", "avc-record", read(MEDIA, "avc_sequence_header.bin")[5:])
    write("codec_config", "aac-config", read(MEDIA, "aac_sequence_header.bin")[2:])
    write("codec_config", "adts", read(MEDIA, "aac_adts_two_frames.aac"))
    write("codec_config", "avcc-keyframe", read(MEDIA, "avc_keyframe.bin")[5:])
    ts = read(MEDIA, "h264_aac_two_seconds.ts")
    write("mpegts_demux", "two-seconds", b"\x17" + ts)
    write("mpegts_demux", "first-packets", b"\x00" + ts[: 188 * 20])

    for i, sid in enumerate([
        "live/cam1,token=sgp_abcdefghijklmnop,mode=publish",
        "#!::r=live/cam1,m=publish,s=sgp_abcdefghijklmnop",
        "%23!%3A%3Ar%3Dlive%2Fcam1%2Cm%3Drequest",
        "live/cam1,mode=request",
    ]):
        write("srt_streamid", f"streamid-{i}", sid)

    # SRT datagrams as libsrt sends them to a listener, each as two bytes of length and its
    # bytes, after one byte of options (1: the connection is encrypted).
    def srt_data(seq, msg, ts, payload, key=0):
        # first and last packet of its message (PP = 11), in order, key flags `key`
        word1 = (0b11 << 30) | (1 << 29) | (key << 27) | msg
        return struct.pack(">IIII", seq, word1, ts, 0x12345678) + payload

    def srt_control(kind, info, ts, body=b""):
        return struct.pack(">IIII", 0x80000000 | (kind << 16), info, ts, 0x12345678) + body

    def datagrams(options, *items):
        return bytes([options]) + b"".join(struct.pack(">H", len(d)) + d for d in items)

    ts_packets = ts[: 188 * 7]
    ack = srt_control(2, 1, 10_000, struct.pack(">IIIIIII", 9, 300, 100, 8000, 900, 10_000, 1_200_000))
    write("srt_datagrams", "viewer-acks", datagrams(
        0, ack, srt_control(2, 2, 20_000, struct.pack(">IIIIIII", 10, 320, 90, 8000, 900, 10_000, 1_200_000)),
        srt_control(2, 0, 25_000, struct.pack(">I", 11)),  # light ACK
        srt_control(3, 0, 30_000, struct.pack(">II", 0x80000007, 9)),  # NAK of a range
        srt_control(1, 0, 40_000), srt_control(5, 0, 50_000)))
    write("srt_datagrams", "publisher-data", datagrams(
        0, *[srt_data(7 + n, n + 1, 1000 * n, ts_packets) for n in range(6)],
        srt_control(6, 1, 7_000), srt_control(1, 0, 8_000)))
    write("srt_datagrams", "encrypted-data", datagrams(
        1, srt_data(7, 1, 1000, ts_packets, key=1), srt_data(8, 2, 2000, ts_packets, key=2), ack))
    # version 4, extension field 2, initial sequence number, MSS, flow window, type 1
    # (induction), the caller's socket id, no cookie yet, the peer's address
    induction = struct.pack(">IIII", 0x80000000, 0, 0, 0) + struct.pack(
        ">IIIIIIII", 4, 2, 7, 1500, 8192, 1, 0x1111, 0) + bytes([127, 0, 0, 1]) + bytes(12)
    write("srt_datagrams", "induction", datagrams(0, induction))

    offer = json.load(open(os.path.join(SEEDS, "chromium-offer.json")))["sdp"]
    candidate = "candidate:1467250027 1 udp 2122260223 192.168.1.2 46243 typ host generation 0 ufrag uuli network-id 1"
    messages = [
        {"command": "publish", "streamId": "cam1", "token": "sgp_x", "video": True, "audio": True},
        {"command": "play", "streamId": "live/cam1", "token": "", "room": "", "trackList": []},
        {"command": "takeConfiguration", "streamId": "cam1", "type": "offer", "sdp": offer},
        {"command": "takeCandidate", "streamId": "cam1", "label": 0, "id": "0", "candidate": candidate},
        {"command": "stop", "streamId": "cam1"},
        {"command": "ping"},
        {"command": "getIceServerConfig"},
        {"command": "getStreamInfo", "streamId": "cam1"},
    ]
    for m in messages:
        write("ws_message", m["command"], json.dumps(m))
    write("sdp", "chromium-offer", b"\x00" + offer.encode())
    write("sdp", "host-candidate", b"\x01" + candidate.encode())
    write("sdp", "srflx-candidate", b"\x01candidate:842163049 1 udp 1677729535 203.0.113.7 50000 typ srflx raddr 192.168.1.2 rport 46243 generation 0 ufrag uuli network-id 1")

    # RTP: H.264 from the capture, SPS and PPS as single NAL units, the keyframe in FU-A
    # fragments of at most 200 bytes; Opus packets.
    record = read(MEDIA, "avc_sequence_header.bin")[5:]
    sps_len = struct.unpack(">H", record[6:8])[0]
    sps = record[8:8 + sps_len]
    pps_len = struct.unpack(">H", record[9 + sps_len:11 + sps_len])[0]
    pps = record[11 + sps_len:11 + sps_len + pps_len]
    avcc = read(MEDIA, "avc_keyframe.bin")[5:]
    nals, at = [], 0
    while at + 4 <= len(avcc):
        n = struct.unpack(">I", avcc[at:at + 4])[0]
        nals.append(avcc[at + 4:at + 4 + n])
        at += 4 + n
    packets = [sps, pps]
    for nal in nals:
        if len(nal) <= 200:
            packets.append(nal)
            continue
        header, body = nal[0], nal[1:]
        pieces = [body[i:i + 200] for i in range(0, len(body), 200)]
        for i, piece in enumerate(pieces):
            fu = (0x80 if i == 0 else 0) | (0x40 if i == len(pieces) - 1 else 0) | (header & 0x1F)
            packets.append(bytes([(header & 0xE0) | 28, fu]) + piece)
    out = bytearray([0])
    for seq, p in enumerate(packets):
        out += bytes([seq & 0xFF, 2 | (1 if seq == len(packets) - 1 else 0), len(p)]) + p
    write("rtp_reassembly", "h264-keyframe", bytes(out))
    opus = bytearray([2])
    for seq in range(5):
        opus += bytes([seq, (seq * 2) << 1 | 1, 3, 0xFC, 0xFF, 0xFE])
    write("rtp_reassembly", "opus", bytes(opus))
    # A crash this target found (a STAP-A whose last size field is cut), kept as a seed.
    write("rtp_reassembly", "regression-cut-stap-a",
          bytes.fromhex("000103fc18000800 03fcfffe02ffb5fe".replace(" ", "")))

    requests = [
        b"\x09/api/publish_token\n{\"label\":\"cam\",\"streams\":[{\"streamName\":\"live/cam1\"}],\"expires\":86400,\"allowedIpAddresses\":[\"10.0.0.0/8\"],\"maxUses\":2}",
        b"\x09/api/subscribe_token\n{\"label\":\"v\",\"streams\":[{\"streamName\":\"live/.*\",\"isRegex\":true}],\"allowedOrigins\":[\"*.example.com\"]}",
        b"\x08/api/publish_token/list?page=1&itemsOnPage=10&sortBy=AddedOn&isDescending=true&tag=x\n",
        b"\x0a/api/publish_token/1\n{\"isActive\":false,\"addTokenStreams\":[{\"streamName\":\"a/b\"}],\"refreshToken\":true}",
        b"\x09/api/revoked_jti\n{\"jti\":\"abc\",\"expiresOn\":4102444800}",
        b"\x08/LiveApp/rest/v2/broadcasts/cam1/token?expireDate=4102444800&type=publish\n",
        b"\x08/LiveApp/rest/v2/broadcasts/cam1/jwt-token?expireDate=4102444800&type=play\n",
        b"\x01/api/access/issue?id=live/cam1&type=live&token=fuzzing-api-secret-0123456789&ip=1.2.3.4&time_limit=60\n",
    ]
    for i, r in enumerate(requests):
        write("rest_api", f"request-{i}", r)

    write("auth_decision", "stored", "sgp_0123456789abcdefghijklmnopqrstuv\nlive/cam1\nhttps://a.example.com")
    write("auth_decision", "jwt", "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJ0eXBlIjoicHVibGlzaCIsInN0cmVhbUlkIjoibGl2ZS9jYW0xIiwiZXhwIjo0MTAyNDQ0ODAwfQ.c2lnbmF0dXJl\nlive/cam1\nOBS/30")


if __name__ == "__main__":
    main()
