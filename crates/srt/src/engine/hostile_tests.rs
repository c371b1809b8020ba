//! The engine's defenses against srt-protocol itself: real and mutated packets go through
//! the handshake reader and the guard as the engine routes them, and whatever they let
//! through must not make srt-protocol panic, neither parsing it nor in an open connection
//! that takes it (plain and encrypted, with data in its buffers).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::io::Cursor;
use std::net::SocketAddr;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Once;
use std::time::{Duration, Instant};

use srt_protocol::connection::DuplexConnection;
use srt_protocol::options::Passphrase;
use srt_protocol::packet::Packet;
use srt_protocol::settings::KeySettings;

use super::fuzzing::{CALLER, LOCAL_ID, PASSPHRASE as PASS};
use super::guard;
use super::handshake::{self, Role};

/// Extension blocks the reader takes from one handshake.
const MAX_EXTENSION_BLOCKS: usize = 8;

// ---- what srt-protocol does with a datagram ----

thread_local! {
    static QUIET: Cell<bool> = const { Cell::new(false) };
    static WHERE: RefCell<String> = const { RefCell::new(String::new()) };
}

/// srt-protocol's sources, as panic locations show them.
const CRATE: &str = "srt-protocol-0.4.4/";

/// Panics inside `f` are not printed, and their location is returned.
fn panic_site(f: impl FnOnce()) -> Option<String> {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if QUIET.with(Cell::get) {
                let at = info
                    .location()
                    .map(|l| format!("{}:{}", l.file(), l.line()))
                    .unwrap_or_default();
                let at = if at.contains(CRATE) {
                    at
                } else {
                    // A panic in a dependency (bytes): name srt-protocol's line that called it.
                    let trace = std::backtrace::Backtrace::force_capture().to_string();
                    let caller = trace
                        .lines()
                        .find(|l| l.contains(CRATE))
                        .map(|l| l.trim().trim_start_matches("at ").to_owned());
                    format!("{at} from {}", caller.unwrap_or_default())
                };
                let short = |s: &str| s.split(CRATE).last().unwrap_or(s).to_owned();
                let at = at
                    .split(" from ")
                    .map(short)
                    .collect::<Vec<_>>()
                    .join(" from ");
                WHERE.with(|w| *w.borrow_mut() = at);
            } else {
                default(info);
            }
        }));
    });
    QUIET.with(|q| q.set(true));
    let r = catch_unwind(AssertUnwindSafe(f));
    QUIET.with(|q| q.set(false));
    r.err().map(|_| WHERE.with(|w| w.borrow().clone()))
}

/// Where srt-protocol panics parsing `srt` as the listener task does, or printing it (as
/// srt-tokio does with its debug log on).
fn parse_panic(srt: &[u8]) -> Option<String> {
    panic_site(|| {
        if let Ok(p) = Packet::parse(&mut Cursor::new(srt), false) {
            let _ = format!("{p:?}");
        }
    })
}

fn key_settings() -> KeySettings {
    super::fuzzing::key_settings().unwrap()
}

fn parse(b: &[u8]) -> Packet {
    Packet::parse(&mut Cursor::new(b), false).unwrap()
}

/// The induction and conclusion an srt-tokio caller sends, with a passphrase or not.
pub(super) fn srt_tokio_handshake(key: Option<KeySettings>) -> (Vec<u8>, Vec<u8>) {
    let (induction, conclusion) = super::fuzzing::caller_handshake(key, Instant::now()).unwrap();
    (induction.to_vec(), conclusion.to_vec())
}

// ---- packets built by hand, as libsrt sends them ----

/// An HSv5 (or `version`) handshake of `kind` carrying `blocks`.
fn handshake(version: u32, kind: u32, blocks: &[u8]) -> Vec<u8> {
    let mut p = Vec::new();
    p.extend_from_slice(&0x8000_0000u32.to_be_bytes());
    p.extend_from_slice(&[0; 12]);
    p.extend_from_slice(&version.to_be_bytes());
    p.extend_from_slice(&0x0005u32.to_be_bytes()); // no key, HSREQ | CONFIG
    p.extend_from_slice(&[0, 0, 0, 7, 0, 0, 0x05, 0xdc, 0, 0, 0x20, 0]);
    p.extend_from_slice(&kind.to_be_bytes());
    p.extend_from_slice(&LOCAL_ID.to_be_bytes());
    p.extend_from_slice(&[0; 4]); // cookie
    p.extend_from_slice(&[1, 0, 0, 127]);
    p.extend_from_slice(&[0; 12]);
    p.extend_from_slice(blocks);
    p
}

const CONCLUSION: u32 = 0xffff_ffff;

fn block(kind: u16, words: u16, body: &[u8]) -> Vec<u8> {
    let mut b = kind.to_be_bytes().to_vec();
    b.extend_from_slice(&words.to_be_bytes());
    b.extend_from_slice(body);
    b
}

/// A block of `kind` whose `words` of body repeat `fill`.
fn filled(kind: u16, words: u16, fill: &[u8; 4]) -> Vec<u8> {
    block(kind, words, &fill.repeat(usize::from(words)))
}

/// libsrt's HSREQ: version 1.4.4, its usual flags, 120 ms each way.
fn hsreq() -> Vec<u8> {
    block(1, 3, &[0, 1, 4, 4, 0, 0, 0, 0xbf, 0, 120, 0, 120])
}

/// A stream id block: 32-bit words, each little-endian.
fn sid(s: &str) -> Vec<u8> {
    let mut b = s.as_bytes().to_vec();
    b.resize(b.len().div_ceil(4) * 4, 0);
    let body: Vec<u8> = b.chunks(4).flat_map(|w| w.iter().rev().copied()).collect();
    block(5, u16::try_from(body.len() / 4).unwrap(), &body)
}

/// A keying-material block: `flags` key flags, `salt` and `key` lengths in words, `kind`
/// 3 (KMREQ) or 4 (KMRSP), and `slack` extra words after what the message says it holds.
fn km(kind: u16, flags: u8, salt: u8, key: u8, slack: usize) -> Vec<u8> {
    let keys = usize::from(key) * (flags.count_ones() as usize);
    let mut body = vec![
        0x12, 0x20, 0x29, flags, 0, 0, 0, 0, 2, 0, 2, 0, 0, 0, salt, key,
    ];
    body.extend(std::iter::repeat_n(
        0x5a,
        usize::from(salt) * 4 + keys * 4 + 8,
    ));
    body.extend(std::iter::repeat_n(0, slack * 4));
    block(kind, u16::try_from(body.len() / 4).unwrap(), &body)
}

fn control(kind: u16, reserved: u16, info: u32, body: &[u8]) -> Vec<u8> {
    let mut p = (0x8000 | kind).to_be_bytes().to_vec();
    p.extend_from_slice(&reserved.to_be_bytes());
    p.extend_from_slice(&info.to_be_bytes());
    p.extend_from_slice(&[0, 0, 0, 1, 0x12, 0x34, 0x56, 0x78]);
    p.extend_from_slice(body);
    p
}

fn words(w: &[u32]) -> Vec<u8> {
    w.iter().flat_map(|w| w.to_be_bytes()).collect()
}

/// What every SRT library sends: these must all pass.
fn normal_packets() -> Vec<(&'static str, Vec<u8>)> {
    let (plain_induction, plain) = srt_tokio_handshake(None);
    let (_, encrypted) = srt_tokio_handshake(Some(key_settings()));
    let data = {
        let mut d = vec![0, 0, 0, 9, 0xe0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3];
        d.extend_from_slice(&[0x47; 1316]);
        d
    };
    vec![
        ("srt-tokio induction", plain_induction),
        ("srt-tokio conclusion", plain),
        ("srt-tokio conclusion with a passphrase", encrypted),
        ("HSv4 induction", handshake(4, 1, &[])),
        ("HSv5 induction", handshake(5, 1, &[])),
        (
            "libsrt HSREQ + SID",
            handshake(5, CONCLUSION, &[hsreq(), sid("live/x")].concat()),
        ),
        (
            "libsrt HSREQ + KMREQ + SID",
            handshake(
                5,
                CONCLUSION,
                &[hsreq(), km(3, 1, 4, 4, 0), sid("live/x")].concat(),
            ),
        ),
        (
            "libsrt HSREQ + KMREQ (both keys, AES-256) + SID",
            handshake(
                5,
                CONCLUSION,
                &[hsreq(), km(3, 3, 4, 8, 0), sid("a/b")].concat(),
            ),
        ),
        ("libsrt HSREQ only", handshake(5, CONCLUSION, &hsreq())),
        ("data", data),
        ("keepalive", control(1, 0, 0, &[0; 4])),
        ("light ACK", control(2, 0, 0, &words(&[5]))),
        (
            "full ACK",
            control(2, 0, 3, &words(&[5, 100, 50, 8192, 10, 1000, 200])),
        ),
        ("ACK2", control(6, 0, 3, &[0; 4])),
        ("NAK", control(3, 0, 0, &words(&[4, 0x8000_0006, 9, 12]))),
        ("shutdown", control(5, 0, 0, &[0; 4])),
        ("drop request", control(7, 0, 2, &words(&[4, 6]))),
        ("KM refresh", control(0x7fff, 3, 0, &km(3, 2, 4, 4, 0)[4..])),
    ]
}

/// Datagrams built to reach every branch of the parser and of the listener's handshake code.
fn mutations() -> Vec<Vec<u8>> {
    let fills: [&[u8; 4]; 5] = [b"\0\0\0\0", &[0xab; 4], b"b:a\0", b"evil", &[0xff; 4]];
    let mut out = Vec::new();
    let bases = [
        vec![hsreq(), sid("live/x")],
        vec![hsreq(), km(3, 1, 4, 4, 0), sid("live/x")],
        vec![],
    ];
    for base in &bases {
        for kind in 0..=10u16 {
            for w in 0..=4u16 {
                for fill in fills {
                    for at in 0..=base.len() {
                        let mut blocks = base.clone();
                        blocks.insert(at, filled(kind, w, fill));
                        for (v, hs) in [
                            (5, CONCLUSION),
                            (5, 0),
                            (5, 0xffff_fffe),
                            (5, 1003),
                            (5, 1),
                            (4, CONCLUSION),
                        ] {
                            out.push(handshake(v, hs, &blocks.concat()));
                        }
                    }
                }
            }
        }
    }
    // Blocks hidden in the slack of a block whose parser reads less than its declared size.
    for kind in 0..=10u16 {
        for w in 0..=2u16 {
            let hidden = filled(kind, w, b"live");
            let mut hs = hsreq();
            hs[3] += u8::try_from(hidden.len() / 4).unwrap();
            hs.extend_from_slice(&hidden);
            out.push(handshake(5, CONCLUSION, &[hs, sid("live/x")].concat()));
            let mut k = km(3, 1, 4, 4, 0);
            k[3] += u8::try_from(hidden.len() / 4).unwrap();
            k.extend_from_slice(&hidden);
            out.push(handshake(
                5,
                CONCLUSION,
                &[hsreq(), k, sid("live/x")].concat(),
            ));
        }
    }
    // Keying material of every shape.
    for kind in [3, 4] {
        for flags in 0..=3 {
            for salt in [0, 1, 4, 5] {
                for key in [0, 3, 4, 6, 8, 9] {
                    for slack in [0, 1] {
                        let blocks = [hsreq(), km(kind, flags, salt, key, slack), sid("a")];
                        out.push(handshake(5, CONCLUSION, &blocks.concat()));
                    }
                }
            }
        }
    }
    // More blocks than the program vets, the last one bad or not.
    for n in MAX_EXTENSION_BLOCKS - 1..=MAX_EXTENSION_BLOCKS + 1 {
        for last in [sid("x"), filled(6, 1, b"live")] {
            let mut blocks = vec![hsreq(); n];
            blocks.push(last);
            out.push(handshake(5, CONCLUSION, &blocks.concat()));
        }
    }
    // A trailing block header with nothing after it, and odd trailing bytes.
    for tail in [
        &[0, 6, 0, 0][..],
        &[0, 6, 0, 0, 0],
        &[0, 5],
        &[0, 8, 0, 1, 0],
    ] {
        out.push(handshake(
            5,
            CONCLUSION,
            &[hsreq(), sid("x"), tail.to_vec()].concat(),
        ));
    }
    // Every control type and SRT subtype with short bodies.
    for kind in (0..=8).chain([9, 0x7ffe, 0x7fff]) {
        for reserved in 0..=10 {
            for len in 0..=12 {
                for fill in [0u8, 0xff, 0x80] {
                    out.push(control(kind, reserved, 1, &vec![fill; len]));
                }
            }
        }
    }
    // NAKs of every shape of up to four words and some trailing bytes.
    for n in 0..=4u32 {
        for bits in 0..(1u32 << n) {
            let list: Vec<u32> = (0..n)
                .map(|i| {
                    if bits >> i & 1 == 1 {
                        0x8000_0000 | i
                    } else {
                        i
                    }
                })
                .collect();
            for trailing in 0..=3 {
                let mut body = words(&list);
                body.extend(std::iter::repeat_n(0x80, trailing));
                out.push(control(3, 0, 0, &body));
            }
        }
    }
    // Every truncation of the normal packets.
    for (_, p) in normal_packets() {
        for n in 0..p.len().min(200) {
            out.push(p[..n].to_vec());
        }
    }
    out
}

// ---- the tests ----

/// An open connection on the listener's side of `conclusion` (plain, or encrypted with
/// `key`), with a few data packets from the caller in its receive buffer.
pub(super) fn open_connection(
    conclusion: &[u8],
    key: Option<KeySettings>,
    role: Role,
) -> DuplexConnection {
    let now = Instant::now();
    let mut conn = super::fuzzing::open_connection(conclusion, key, role, now).unwrap();
    for n in 0..4u32 {
        let mut d = vec![0u8; 16];
        d[0..4].copy_from_slice(&(7 + n).to_be_bytes());
        d[4..8].copy_from_slice(&(0xe000_0000u32 | (n + 1)).to_be_bytes());
        d[12..16].copy_from_slice(&LOCAL_ID.to_be_bytes());
        d.extend_from_slice(&[0x47; 188]);
        conn.handle_packet_input(now, Ok((parse(&d), CALLER)));
    }
    conn
}

/// Where an open connection panics on `packet` (sent to it, as the engine would), then on
/// running its timers and handing out what it made.
fn connection_panic(conn: &mut DuplexConnection, packet: &[u8]) -> Option<String> {
    let mut p = packet.to_vec();
    if p.len() >= 16 {
        p[12..16].copy_from_slice(&LOCAL_ID.to_be_bytes());
    }
    let now = Instant::now() + Duration::from_millis(20);
    panic_site(|| {
        if let Ok(packet) = Packet::parse(&mut Cursor::new(&p[..]), false) {
            let _ = format!("{packet:?}");
            conn.handle_packet_input(now, Ok((packet, CALLER)));
            conn.check_timers(now);
            while conn.next_packet(now).is_some() {}
            while conn.next_data(now).is_some() {}
            conn.handle_data_input(now, Some((now, bytes::Bytes::from_static(&[0x47; 188]))));
            conn.check_timers(now + Duration::from_millis(50));
            while conn.next_packet(now).is_some() {}
        }
    })
}

#[test]
fn what_srt_libraries_send_is_taken() {
    for (what, p) in normal_packets() {
        if handshake::is_handshake(&p) {
            assert!(
                handshake::read(&p).is_ok(),
                "{what}: {:?}",
                handshake::read(&p)
            );
        } else {
            assert!(guard::check(&p).is_ok(), "{what}: {:?}", guard::check(&p));
        }
    }
}

#[test]
fn srt_protocol_panics_on_packets_the_guard_keeps_from_it() {
    // The dangers are real: each of these panics srt-protocol when it sees it.
    let (_, plain) = srt_tokio_handshake(None);
    let mut conn = open_connection(&plain, None, Role::Sender);
    let dangers = [
        ("congestion warning", control(4, 0, 0, &[0; 4])),
        ("peer error", control(8, 0, 0, &[0; 4])),
        ("open NAK range", control(3, 0, 0, &words(&[0x8000_0004]))),
        (
            "drop request backwards",
            control(7, 0, 1, &words(&[0x7fff_ffff, 0])),
        ),
    ];
    let mut panicked = 0;
    for (what, p) in &dangers {
        if connection_panic(&mut conn, p).is_some() {
            panicked += 1;
            assert!(guard::check(p).is_err(), "{what} passes the guard");
        }
        conn = open_connection(&plain, None, Role::Sender);
    }
    assert!(
        panicked >= 2,
        "srt-protocol no longer panics on these: recheck the guard"
    );
}

#[test]
fn no_datagram_the_engine_passes_on_panics_srt_protocol() {
    let (_, plain) = srt_tokio_handshake(None);
    let (_, encrypted) = srt_tokio_handshake(Some(key_settings()));
    let mut receiver = open_connection(&plain, None, Role::Receiver);
    let mut sender = open_connection(&plain, None, Role::Sender);
    let mut secret = open_connection(&encrypted, Some(key_settings()), Role::Receiver);
    let mut refused: BTreeMap<&str, usize> = BTreeMap::new();
    let (mut total, mut passed) = (0, 0);
    for p in mutations() {
        total += 1;
        if handshake::is_handshake(&p) {
            // Handshakes never reach srt-protocol's parser: the engine reads them itself,
            // and reading must not panic either.
            let read = panic_site(|| {
                let _ = handshake::read(&p);
            });
            assert_eq!(read, None, "the handshake reader panicked: {p:02x?}");
            *refused.entry("handshake").or_default() += usize::from(handshake::read(&p).is_err());
            continue;
        }
        if guard::check(&p).is_err() {
            *refused.entry("guard").or_default() += 1;
            continue;
        }
        passed += 1;
        assert_eq!(
            parse_panic(&p),
            None,
            "passed a datagram the parser panics on: {p:02x?}"
        );
        for conn in [&mut receiver, &mut sender, &mut secret] {
            if let Some(at) = connection_panic(conn, &p) {
                panic!("passed a packet an open connection panics on at {at}: {p:02x?}");
            }
        }
    }
    eprintln!("{total} datagrams, {passed} passed to connections, refused {refused:?}");
    assert!(passed > 100);
}

#[test]
fn every_keying_material_is_answered_without_a_panic() {
    let (_, plain) = srt_tokio_handshake(None);
    let head = &plain[..64];
    let mut outcomes: BTreeMap<String, usize> = BTreeMap::new();
    for kind in [3, 4] {
        for flags in 0..=3 {
            for (salt, key) in [(4, 4), (4, 6), (4, 8), (4, 0), (0, 4), (5, 4)] {
                for announced in [0x0000_0007u32, 0x0002_0007, 0x0003_0007, 0x0004_0007] {
                    let blocks = [hsreq(), km(kind, flags, salt, key, 0), sid("live/x")].concat();
                    let mut p = head.to_vec();
                    p.extend_from_slice(&blocks);
                    p[20..24].copy_from_slice(&announced.to_be_bytes());
                    let site = panic_site(|| {
                        let outcome = match handshake::read(&p) {
                            Err(e) => format!("unread: {e}"),
                            Ok(hs) => {
                                let keys = hs.key_size().map(|key_size| KeySettings {
                                    key_size,
                                    passphrase: key_settings().passphrase,
                                });
                                match handshake::cipher(&hs, keys.as_ref()) {
                                    Ok(c) => {
                                        let a = handshake::accept(
                                            &hs,
                                            CALLER,
                                            9,
                                            c,
                                            Role::Sender,
                                            Instant::now(),
                                        );
                                        let _ = DuplexConnection::new(a.connection);
                                        "accepted".to_owned()
                                    }
                                    Err(r) => format!("rejected: {r:?}"),
                                }
                            }
                        };
                        *outcomes.entry(outcome).or_default() += 1;
                    });
                    assert_eq!(site, None, "panicked answering {p:02x?}");
                }
            }
        }
    }
    eprintln!("{outcomes:?}");
    assert!(outcomes.keys().any(|o| o.starts_with("rejected")));
    assert!(outcomes.keys().any(|o| o.starts_with("unread")));
}

#[test]
fn a_caller_with_the_passphrase_is_accepted_and_one_without_is_told_why() {
    let (_, encrypted) = srt_tokio_handshake(Some(key_settings()));
    let (_, plain) = srt_tokio_handshake(None);
    let hs = handshake::read(&encrypted).unwrap();
    assert!(hs.km.is_some());
    let keys = |pass: &str| KeySettings {
        key_size: hs.key_size().unwrap(),
        passphrase: Passphrase::try_from(pass.to_owned()).unwrap(),
    };
    assert!(handshake::cipher(&hs, Some(&keys(PASS))).unwrap().is_some());
    let wrong = handshake::cipher(&hs, Some(&keys("another passphrase"))).unwrap_err();
    assert_eq!(
        srt_protocol::packet::CoreRejectReason::BadSecret,
        match wrong {
            srt_protocol::packet::RejectReason::Core(c) => c,
            r => panic!("{r:?}"),
        }
    );
    let plain = handshake::read(&plain).unwrap();
    assert!(
        handshake::cipher(&plain, Some(&keys(PASS))).is_err(),
        "no keying material"
    );
    assert!(
        handshake::cipher(&hs, None).is_err(),
        "keying material to a plain stream"
    );
    assert_eq!(handshake::cipher(&plain, None).unwrap().map(|_| ()), None);
}

#[test]
fn handshakes_are_read_and_answered() {
    let (induction, conclusion) = srt_tokio_handshake(None);
    let ind = handshake::read(&induction).unwrap();
    assert!(ind.induction);
    let cookies = handshake::Cookies::new([5; 32]);
    // At the start of a cookie period (30 s), so that 31 s later is the next one: from the
    // clock, a cookie made in a period's last second would be two periods old by then.
    let now = std::time::UNIX_EPOCH + Duration::from_secs(30 * 58_000_000);
    let cookie = cookies.make(CALLER, now);
    assert!(cookies.check(CALLER, cookie, now));
    assert!(cookies.check(CALLER, cookie, now + Duration::from_secs(31)));
    assert!(!cookies.check(CALLER, cookie, now + Duration::from_secs(95)));
    let other: SocketAddr = "127.0.0.1:40001".parse().unwrap();
    assert!(!cookies.check(other, cookie, now));
    // The answer is an HSv5 induction a caller takes: srt-protocol's caller concludes.
    let answer = handshake::induction_response(&ind, CALLER, 77, cookie);
    assert_eq!(parse(&answer).dest_sockid().0, ind.socket_id);
    let hs = handshake::read(&conclusion).unwrap();
    assert!(!hs.induction);
    assert_eq!(hs.stream_id, Some(Ok("live/cam1,token=t".to_owned())));
    assert!(hs.hsreq.is_some() && hs.km.is_none() && hs.refused_extension.is_none());
    let accepted = handshake::accept(&hs, CALLER, 5, None, Role::Sender, Instant::now());
    let settings = &accepted.connection.settings;
    assert_eq!(settings.max_packet_size.0, handshake::PAYLOAD);
    assert_eq!(settings.recv_tsbpd_latency, handshake::LATENCY);
    assert_eq!(parse(&accepted.response).dest_sockid().0, hs.socket_id);
    // libsrt's file mode, packet filters and groups are refused; an HSv4 conclusion is not read.
    let file = handshake(
        5,
        CONCLUSION,
        &[hsreq(), sid("a/b"), block(6, 1, b"elif")].concat(),
    );
    assert!(handshake::read(&file).unwrap().refused_extension.is_some());
    assert!(handshake::read(&handshake(4, CONCLUSION, &hsreq())).is_err());
    // A 700-byte stream id is read whole, for the stream id parser to refuse it.
    let long = handshake(5, CONCLUSION, &[hsreq(), sid(&"x".repeat(700))].concat());
    assert_eq!(
        handshake::read(&long)
            .unwrap()
            .stream_id
            .unwrap()
            .unwrap()
            .len(),
        700
    );
    // Peer latencies and sizes are clamped.
    let mut greedy = handshake(
        5,
        CONCLUSION,
        &[
            block(1, 3, &[0, 1, 4, 4, 0, 0, 0, 0xbf, 0xff, 0xff, 0xff, 0xff]),
            sid("a/b"),
        ]
        .concat(),
    );
    greedy[28..32].copy_from_slice(&0u32.to_be_bytes()); // MSS 0
    let g = handshake::read(&greedy).unwrap();
    let a = handshake::accept(&g, CALLER, 6, None, Role::Receiver, Instant::now());
    assert!(a.connection.settings.max_packet_size.0 >= 188);
    assert_eq!(
        a.connection.settings.recv_tsbpd_latency,
        handshake::MAX_LATENCY
    );
}

#[test]
fn the_fuzz_driver_takes_every_known_packet_and_mutation() {
    let mut datagrams: Vec<Vec<u8>> = normal_packets().into_iter().map(|(_, p)| p).collect();
    datagrams.extend(mutations());
    for options in [0u8, 1] {
        for chunk in datagrams.chunks(64) {
            let mut input = vec![options];
            for d in chunk {
                input.extend_from_slice(&u16::try_from(d.len()).unwrap().to_be_bytes());
                input.extend_from_slice(d);
            }
            let site = panic_site(|| super::fuzzing::datagrams(&input));
            assert_eq!(site, None, "the fuzz driver panicked");
        }
    }
}

/// The srt_datagrams fuzz target's find: a NAK range whose end is its start, after which
/// srt-protocol counts through every 32-bit number (half a minute of the engine's thread). The
/// guard refuses it, and the engine's path takes the datagrams at once.
#[test]
fn a_nak_range_that_ends_where_it_starts_is_kept_from_srt_protocol() {
    let nak = control(
        3,
        0,
        0,
        &words(&[0x8000_0007, 9, 0x8101_0101, 0x0101_0101, 5]),
    );
    assert_eq!(guard::check(&nak), Err(guard::Refused::Numbers));
    let mut input = vec![0u8];
    for d in [&nak[..], &nak[..]] {
        input.extend_from_slice(&u16::try_from(d.len()).unwrap().to_be_bytes());
        input.extend_from_slice(d);
    }
    let started = Instant::now();
    super::fuzzing::datagrams(&input);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the NAK reached srt-protocol"
    );
}
