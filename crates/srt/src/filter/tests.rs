//! The filter against srt-protocol itself: a cBPF interpreter runs the program on real and
//! mutated packets, and every packet that makes srt-protocol panic (parsing it, printing it,
//! or accepting the handshake it carries) must be one the program drops. A last test attaches
//! the program to a socket to check what the kernel shows a UDP socket's filter.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::io::Cursor;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Once;
use std::time::{Duration, Instant};

use srt_protocol::options::{KeySize, Passphrase};
use srt_protocol::packet::{Packet, SeqNumber};
use srt_protocol::protocol::pending_connection::connect::Connect;
use srt_protocol::protocol::pending_connection::listen::Listen;
use srt_protocol::protocol::pending_connection::{AccessControlResponse, ConnectionResult};
use srt_protocol::settings::{ConnInitSettings, KeySettings};

use super::*;

// ---- a classic BPF interpreter, for the instructions the program uses ----

/// Runs `prog` on `datagram` (UDP header included) as the kernel does: a load past the end
/// drops the datagram. True if it is kept.
fn run(prog: &[sock_filter], datagram: &[u8]) -> bool {
    let (mut a, mut x, mut mem, mut pc) = (0u32, 0u32, [0u32; 16], 0usize);
    let load = |at: u32, n: usize| -> Option<u32> {
        let at = usize::try_from(at).ok()?;
        let bytes = datagram.get(at..at.checked_add(n)?)?;
        Some(bytes.iter().fold(0, |v, &b| (v << 8) | u32::from(b)))
    };
    loop {
        let i = prog[pc];
        pc += 1;
        let jump = |cond: bool| usize::from(if cond { i.jt } else { i.jf });
        match i.code {
            op::LD_IMM => a = i.k,
            op::LD_W_ABS | op::LD_H_ABS | op::LD_W_IND | op::LD_H_IND | op::LD_B_IND => {
                let base = if i.code & 0x40 != 0 { x } else { 0 };
                let n = match i.code & 0x18 {
                    0x00 => 4,
                    0x08 => 2,
                    _ => 1,
                };
                match base.checked_add(i.k).and_then(|at| load(at, n)) {
                    Some(v) => a = v,
                    None => return false,
                }
            }
            op::LD_LEN => a = u32::try_from(datagram.len()).unwrap(),
            op::LDX_IMM => x = i.k,
            op::LDX_MEM => x = mem[i.k as usize],
            op::ST => mem[i.k as usize] = a,
            op::STX => mem[i.k as usize] = x,
            op::ADD_K => a = a.wrapping_add(i.k),
            op::ADD_X => a = a.wrapping_add(x),
            op::SUB_K => a = a.wrapping_sub(i.k),
            op::SUB_X => a = a.wrapping_sub(x),
            op::AND_K => a &= i.k,
            op::LSH_K => a <<= i.k,
            op::TAX => x = a,
            op::JA => pc += i.k as usize,
            op::JEQ_K => pc += jump(a == i.k),
            op::JGT_K => pc += jump(a > i.k),
            op::JGE_K => pc += jump(a >= i.k),
            op::JSET_K => pc += jump(a & i.k != 0),
            op::RET_K => return i.k != 0,
            other => panic!("opcode {other:#x} not interpreted"),
        }
    }
}

fn kept(srt: &[u8]) -> bool {
    let mut d = vec![0u8; UDP_HEADER_LEN as usize];
    d.extend_from_slice(srt);
    run(&srt_listener_filter(), &d)
}

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

const CALLER: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 40_000);
const LISTENER: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 9_000);
const PASS: &str = "correct horse battery";

fn key_settings() -> KeySettings {
    KeySettings {
        key_size: KeySize::AES128,
        passphrase: Passphrase::try_from(PASS.to_owned()).unwrap(),
    }
}

fn bytes(p: &Packet) -> Vec<u8> {
    let mut v = Vec::new();
    p.serialize(&mut v);
    v
}

fn parse(b: &[u8]) -> Packet {
    Packet::parse(&mut Cursor::new(b), false).unwrap()
}

/// The induction and conclusion an srt-tokio caller sends, with a passphrase or not.
fn srt_tokio_handshake(key: Option<KeySettings>) -> (Vec<u8>, Vec<u8>) {
    let now = Instant::now();
    let settings = ConnInitSettings {
        key_settings: key,
        ..ConnInitSettings::default()
    };
    let mut caller = Connect::new(
        LISTENER,
        CALLER.ip(),
        settings,
        Some("live/cam1,token=t".to_owned()),
        SeqNumber::new_truncate(7),
    );
    let ConnectionResult::SendPacket((induction, _)) = caller.handle_tick(now) else {
        panic!("no induction");
    };
    let mut listen = Listen::new(ConnInitSettings::default(), true);
    let ConnectionResult::SendPacket(answer) =
        listen.handle_packet(now, Ok((induction.clone(), CALLER)))
    else {
        panic!("no induction answer");
    };
    let ConnectionResult::SendPacket((conclusion, _)) =
        caller.handle_packet(Ok((answer.0, LISTENER)), now)
    else {
        panic!("no conclusion");
    };
    (bytes(&induction), bytes(&conclusion))
}

/// Where srt-protocol panics when a listener sees `induction`, then `conclusion` (its cookie
/// replaced by the one this listener gave), and accepts it with `key`.
fn accept_panic(induction: &[u8], conclusion: &[u8], key: Option<KeySettings>) -> Option<String> {
    let now = Instant::now();
    let mut listen = Listen::new(ConnInitSettings::default(), true);
    let ConnectionResult::SendPacket((answer, _)) =
        listen.handle_packet(now, Ok((parse(induction), CALLER)))
    else {
        panic!("no induction answer");
    };
    let answer = bytes(&answer);
    let mut conclusion = conclusion.to_vec();
    conclusion[44..48].copy_from_slice(&answer[44..48]);
    let Ok(packet) = Packet::parse(&mut Cursor::new(&conclusion[..]), false) else {
        return None;
    };
    panic_site(|| {
        if let ConnectionResult::RequestAccess(_) = listen.handle_packet(now, Ok((packet, CALLER)))
        {
            let _ =
                listen.handle_access_control_response(now, AccessControlResponse::Accepted(key));
        }
    })
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
    p.extend_from_slice(&0x1234_5678u32.to_be_bytes());
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

#[test]
fn the_program_is_one_the_kernel_takes() {
    let prog = srt_listener_filter();
    assert!(!prog.is_empty());
    assert!(prog.len() <= 4096);
    assert_eq!(prog.last().map(|i| i.code), Some(op::RET_K));
}

#[test]
fn what_srt_libraries_send_passes() {
    for (name, p) in normal_packets() {
        assert_eq!(parse_panic(&p), None, "{name} panics srt-protocol");
        assert!(kept(&p), "{name} was dropped");
    }
}

#[test]
fn libsrt_with_file_transtype_is_dropped() {
    let congestion = block(6, 1, b"elif");
    let p = handshake(
        5,
        CONCLUSION,
        &[hsreq(), congestion, sid("live/x")].concat(),
    );
    assert!(parse_panic(&p).is_some());
    assert!(!kept(&p));
}

#[test]
fn a_block_hidden_in_the_slack_of_an_hsreq_is_found() {
    // An HSREQ block of 5 words: the parser reads 12 bytes of it and takes the rest for the
    // next block, a congestion block.
    let mut hs = hsreq();
    hs[3] = 5;
    hs.extend_from_slice(&block(6, 1, b"evil"));
    let p = handshake(5, CONCLUSION, &[hs, sid("live/x")].concat());
    assert!(parse_panic(&p).is_some());
    assert!(!kept(&p));
}

#[test]
fn every_datagram_that_panics_the_parser_is_dropped() {
    let mut sites: BTreeMap<String, (usize, String)> = BTreeMap::new();
    let (mut total, mut dropped) = (0, 0);
    for p in mutations() {
        total += 1;
        let keep = kept(&p);
        dropped += usize::from(!keep);
        if let Some(at) = parse_panic(&p) {
            assert!(
                !keep,
                "kept a datagram that panics srt-protocol at {at}: {p:02x?}"
            );
            let entry = sites
                .entry(at)
                .or_insert_with(|| (0, format!("{:02x?}", &p[..p.len().min(80)])));
            entry.0 += 1;
        }
    }
    eprintln!("{total} datagrams, {dropped} dropped; panics in srt-protocol:");
    for (at, (n, example)) in &sites {
        eprintln!("  {at}: {n} datagrams, e.g. {example}");
    }
    assert!(!sites.is_empty());
}

#[test]
fn every_conclusion_that_panics_the_accepting_listener_is_dropped() {
    let (induction, plain) = srt_tokio_handshake(None);
    let (_, encrypted) = srt_tokio_handshake(Some(key_settings()));
    // The untouched handshakes are accepted without a panic.
    assert_eq!(accept_panic(&induction, &plain, None), None);
    assert_eq!(
        accept_panic(&induction, &encrypted, Some(key_settings())),
        None
    );

    let head = &plain[..64];
    let mut sites: BTreeMap<String, usize> = BTreeMap::new();
    for kind in [3, 4] {
        for flags in 0..=3 {
            for (salt, key) in [(4, 4), (4, 6), (4, 8), (4, 0), (0, 4)] {
                let blocks = [hsreq(), km(kind, flags, salt, key, 0), sid("live/x")].concat();
                let mut p = head.to_vec();
                p.extend_from_slice(&blocks);
                // Key size field: AES-128, as announced; KMREQ flag set.
                p[20..24].copy_from_slice(&0x0002_0007u32.to_be_bytes());
                if let Some(at) = accept_panic(&induction, &p, Some(key_settings())) {
                    assert!(!kept(&p), "kept a conclusion that panics at {at}: {p:02x?}");
                    *sites.entry(at).or_default() += 1;
                }
            }
        }
    }
    eprintln!("panics accepting a conclusion with a passphrase: {sites:?}");
    assert!(!sites.is_empty());
}

/// What a UDP socket's filter sees at offset 0, on this kernel: the UDP header (its first
/// half-word is the source port), and a length that counts it.
#[test]
fn a_udp_socket_filter_sees_the_udp_header_first() {
    let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = u32::from(sender.local_addr().unwrap().port());
    let payload = [0xee_u8; 20];
    let ret = |k| sock_filter {
        code: op::RET_K,
        jt: 0,
        jf: 0,
        k,
    };
    let jeq = |k| sock_filter {
        code: op::JEQ_K,
        jt: 0,
        jf: 1,
        k,
    };
    let at_zero_is_the_source_port = [
        sock_filter {
            code: op::LD_H_ABS,
            jt: 0,
            jf: 0,
            k: 0,
        },
        jeq(port),
        ret(KEEP),
        ret(DROP),
    ];
    let length_counts_the_header = [
        sock_filter {
            code: op::LD_LEN,
            jt: 0,
            jf: 0,
            k: 0,
        },
        jeq(UDP_HEADER_LEN + 20),
        ret(KEEP),
        ret(DROP),
    ];
    for prog in [&at_zero_is_the_source_port, &length_counts_the_header] {
        let receiver = filtered_socket(prog);
        sender
            .send_to(&payload, receiver.local_addr().unwrap())
            .unwrap();
        assert!(
            received(&receiver).is_some(),
            "the datagram was filtered out"
        );
    }
}

/// The program itself, attached: a libsrt conclusion with a congestion block never arrives,
/// one without does.
#[test]
fn the_kernel_drops_what_the_program_drops() {
    let receiver = filtered_socket(&srt_listener_filter());
    let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
    let to = receiver.local_addr().unwrap();
    let file = handshake(
        5,
        CONCLUSION,
        &[hsreq(), block(6, 1, b"elif"), sid("x")].concat(),
    );
    let live = handshake(5, CONCLUSION, &[hsreq(), sid("x")].concat());
    sender.send_to(&file, to).unwrap();
    sender.send_to(&live, to).unwrap();
    assert_eq!(received(&receiver), Some(live.len()));
    assert_eq!(received(&receiver), None);
}

fn filtered_socket(prog: &[sock_filter]) -> UdpSocket {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None).unwrap();
    socket.attach_filter(prog).unwrap();
    socket
        .bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    socket.into()
}

fn received(socket: &UdpSocket) -> Option<usize> {
    let mut buf = [0u8; 2048];
    socket.recv(&mut buf).ok()
}
