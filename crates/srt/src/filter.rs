//! A classic BPF program, attached to the listener's UDP socket, that drops in the kernel the
//! datagrams srt-protocol 0.4.4 panics on.
//!
//! srt-tokio parses every datagram of the socket in its listener task, and that task holds the
//! packet channels of every SRT connection: one datagram that panics the parser ends every SRT
//! session. The datagrams that do (found by reading srt-protocol and confirmed by the tests
//! below, which run the parser on mutated packets):
//!
//! - an HSv5 handshake that is not an induction, with an extension block of type 0 (reject),
//!   6 (congestion: what libsrt sends with `transtype=file`), 7 (filter) or 8 (group), or a
//!   stream id (5) of zero words: `unimplemented!("Implement other kinds")` in
//!   `packet/control/mod.rs:635`, or a read past the end of an empty block
//!   (`packet/control/srt.rs:286`, `:368`);
//! - in such a handshake, keying material that the listener acts on once the request is
//!   accepted with a passphrase: a KMRSP (4) block, the only kind of keying material a caller
//!   never sends (`unimplemented!("Expected kmreq")`,
//!   `protocol/pending_connection/hsv5.rs:88`), or a KMREQ (3) that wraps no key, key flags
//!   0 (`assert!(input.len() > 16)`, `protocol/encryption/wrap.rs:125`);
//! - an SRT control packet (type 0x7fff) of subtype 5 to 8 with fewer than 4 body bytes
//!   (`packet/control/srt.rs:286`, `:368`-`370`);
//! - a NAK whose last loss word opens a range: its `Debug` (`packet/control/mod.rs:943`)
//!   panics, and srt-tokio formats every packet when its debug log is on.
//!
//! The parser reads a handshake's extension blocks one after the other, and each block's
//! parser reads only what it needs: the next block starts where that parser stopped, not
//! where the block's declared size ends (a stream id is read whole, an HSREQ is 12 bytes, a
//! KMREQ as long as its own salt and key lengths say). The program walks the blocks the same
//! way, up to [`MAX_EXTENSION_BLOCKS`]; a handshake with more left after those is dropped.
//! Whatever a block the parser rejects is followed by does not matter: the parser stops there
//! with an error, so the program may keep or drop such a datagram.
//!
//! Everything else is kept, and so is every handshake libsrt (ffmpeg, OBS) and srt-tokio send
//! in live mode: HSREQ, KMREQ with a key, SID. A libsrt caller with `transtype=file` is
//! dropped, so it times out; there is no way to answer it without srt-protocol.

use libc::sock_filter;

/// What a UDP socket's filter sees first: the UDP header, then the payload (checked by a test
/// against the kernel).
pub const UDP_HEADER_LEN: u32 = 8;
/// Extension blocks of one handshake vetted before giving up on it: libsrt sends at most six
/// (HSREQ, KMREQ, SID, congestion, filter, group), srt-tokio three.
pub const MAX_EXTENSION_BLOCKS: usize = 8;

/// The SRT packet header.
const SRT_HEADER_LEN: u32 = 16;
/// A handshake's fixed part, before its extension blocks.
const HANDSHAKE_LEN: u32 = 48;
/// Where the SRT packet starts.
const SRT: u32 = UDP_HEADER_LEN;
/// Where a control packet's body starts.
const BODY: u32 = SRT + SRT_HEADER_LEN;

/// First 16 bits of a control packet: control bit and type.
const HANDSHAKE: u32 = 0x8000;
const NAK: u32 = 0x8003;
const SRT_CONTROL: u32 = 0xffff;
/// The handshake version that carries extension blocks.
const HSV5: u32 = 5;
/// Handshake type of an induction, which the parser reads no blocks of.
const INDUCTION: u32 = 1;
/// Extension block types kept.
const EXT_HSREQ: u32 = 1;
const EXT_HSRSP: u32 = 2;
const EXT_KMREQ: u32 = 3;
const EXT_SID: u32 = 5;
/// Bytes an HSREQ/HSRSP parser reads: version, flags, latencies.
const HS_EXT_READ: u32 = 12;
/// Bytes a keying-material parser reads besides the salt and keys: four header words and the
/// 8 bytes of the key wrap.
const KM_FIXED_READ: u32 = 16 + 8;
/// Offsets inside a keying-material message: key flags (low two bits), salt and key length
/// (in words).
const KM_KEY_FLAGS: u32 = 3;
const KM_SALT_WORDS: u32 = 14;
const KM_KEY_WORDS: u32 = 15;
/// Both keys (even and odd).
const KM_BOTH_KEYS: u32 = 3;
/// An extension block's header: type, size in words.
const EXT_HEADER_LEN: u32 = 4;
/// Subtypes of an SRT control packet whose parser reads without checking: SID, congestion,
/// filter (a 32-bit word), group (4 bytes).
const SRT_UNCHECKED_FIRST: u32 = 5;
const SRT_UNCHECKED_LAST: u32 = 8;
/// NAK loss word flag: the first of a range.
const LOSS_RANGE_START: u32 = 0x8000_0000;

/// Return values: bytes of the datagram to keep.
const KEEP: u32 = u32::MAX;
const DROP: u32 = 0;
/// Scratch memory cells.
const M_BLOCK: u32 = 0;
const M_KEYS: u32 = 1;

/// The opcodes used (classic BPF, `linux/filter.h`).
mod op {
    /// `A = k`.
    pub const LD_IMM: u16 = 0x00;
    /// `A = word/half/byte at k`.
    pub const LD_W_ABS: u16 = 0x20;
    pub const LD_H_ABS: u16 = 0x28;
    /// `A = word/half/byte at X + k`.
    pub const LD_W_IND: u16 = 0x40;
    pub const LD_H_IND: u16 = 0x48;
    pub const LD_B_IND: u16 = 0x50;
    /// `A = datagram length`.
    pub const LD_LEN: u16 = 0x80;
    /// `X = k`, `X = M[k]`, `M[k] = A`, `M[k] = X`.
    pub const LDX_IMM: u16 = 0x01;
    pub const LDX_MEM: u16 = 0x61;
    pub const ST: u16 = 0x02;
    pub const STX: u16 = 0x03;
    /// `A op= k`, `A op= X`.
    pub const ADD_K: u16 = 0x04;
    pub const ADD_X: u16 = 0x0c;
    pub const SUB_K: u16 = 0x14;
    pub const SUB_X: u16 = 0x1c;
    pub const AND_K: u16 = 0x54;
    pub const LSH_K: u16 = 0x64;
    /// `X = A`.
    pub const TAX: u16 = 0x07;
    /// Jumps, comparing A (unsigned) with k.
    pub const JA: u16 = 0x05;
    pub const JEQ_K: u16 = 0x15;
    pub const JGT_K: u16 = 0x25;
    pub const JGE_K: u16 = 0x35;
    pub const JSET_K: u16 = 0x45;
    /// Return k.
    pub const RET_K: u16 = 0x06;
}

/// The filter for the SRT listener's UDP socket.
pub fn srt_listener_filter() -> Vec<sock_filter> {
    let mut a = Asm::default();
    let handshake = a.label();
    let srt_control = a.label();
    let nak = a.label();

    // Control packets of the three kinds vetted; data and other control packets are kept.
    // The handshake's long walk comes last, so that every jump here stays short.
    a.op(op::LD_H_ABS, SRT);
    a.jump(op::JEQ_K, HANDSHAKE, Some(handshake), None);
    a.jump(op::JEQ_K, SRT_CONTROL, Some(srt_control), None);
    a.jump(op::JEQ_K, NAK, Some(nak), None);
    a.op(op::RET_K, KEEP);

    a.bind(srt_control);
    srt_control_body(&mut a);
    a.bind(nak);
    nak_last_word(&mut a);
    a.bind(handshake);
    handshake_blocks(&mut a);
    a.finish()
}

/// A handshake: HSv5, not an induction, each extension block as the parser reads it.
fn handshake_blocks(a: &mut Asm) {
    let keep = a.label();
    let walk = a.label();
    // Version 4 carries no blocks; the parser refuses other versions. A datagram too short to
    // hold these words ends the program with a drop (the parser refuses it too).
    a.op(op::LD_W_ABS, BODY);
    a.jump(op::JEQ_K, HSV5, None, Some(keep));
    // The handshake type: an induction's blocks are not read.
    a.op(op::LD_W_ABS, BODY + 20);
    a.jump(op::JEQ_K, INDUCTION, Some(keep), Some(walk));
    a.bind(keep);
    a.op(op::RET_K, KEEP);
    // X = where the first block starts.
    a.bind(walk);
    a.op(op::LDX_IMM, BODY + HANDSHAKE_LEN);
    for _ in 0..MAX_EXTENSION_BLOCKS {
        extension_block(a);
    }
    // More blocks than vetted: any of them could be one the parser panics on.
    let keep = a.label();
    let drop = a.label();
    a.op(op::LD_LEN, 0);
    a.op(op::SUB_X, 0);
    a.jump(op::JGT_K, EXT_HEADER_LEN, Some(drop), Some(keep));
    a.bind(keep);
    a.op(op::RET_K, KEEP);
    a.bind(drop);
    a.op(op::RET_K, DROP);
}

/// One extension block at X; leaves X where the parser reads the next one.
fn extension_block(a: &mut Asm) {
    let keep = a.label();
    let drop = a.label();
    let km = a.label();
    let km_both = a.label();
    let km_len = a.label();
    let sid = a.label();
    let hs = a.label();
    let next = a.label();

    // The parser reads a block only while more than 4 bytes are left. X past the end (a
    // previous block longer than the datagram, which the parser refuses) wraps around here
    // and the load below drops it.
    a.op(op::LD_LEN, 0);
    a.op(op::SUB_X, 0);
    a.jump(op::JGT_K, EXT_HEADER_LEN, None, Some(keep));
    // The block type: HSREQ/HSRSP, KMREQ and SID pass, every other type is dropped (0, 6,
    // 7, 8 panic; 4 panics once accepted with a passphrase; 9 and up the parser refuses).
    a.op(op::LD_H_IND, 0);
    a.jump(op::JEQ_K, EXT_HSREQ, Some(hs), None);
    a.jump(op::JEQ_K, EXT_HSRSP, Some(hs), None);
    a.jump(op::JEQ_K, EXT_KMREQ, Some(km), None);
    a.jump(op::JEQ_K, EXT_SID, Some(sid), Some(drop));

    // KMREQ: key flags 0 (no key) is dropped. The parser reads 24 bytes, the salt and one
    // key per flag. M[0] keeps the block's offset while X serves the sum.
    a.bind(km);
    a.op(op::LD_B_IND, EXT_HEADER_LEN + KM_KEY_FLAGS);
    a.op(op::AND_K, 0b11);
    a.jump(op::JEQ_K, 0, Some(drop), None);
    a.jump(op::JEQ_K, KM_BOTH_KEYS, Some(km_both), None);
    a.op(op::LD_B_IND, EXT_HEADER_LEN + KM_KEY_WORDS);
    a.op(op::LSH_K, 2);
    a.jump(op::JA, 0, Some(km_len), None);
    a.bind(km_both);
    a.op(op::LD_B_IND, EXT_HEADER_LEN + KM_KEY_WORDS);
    a.op(op::LSH_K, 3);
    a.bind(km_len);
    a.op(op::ST, M_KEYS);
    a.op(op::STX, M_BLOCK);
    a.op(op::LD_B_IND, EXT_HEADER_LEN + KM_SALT_WORDS);
    a.op(op::LSH_K, 2);
    a.op(op::LDX_MEM, M_KEYS);
    a.op(op::ADD_X, 0);
    a.op(op::ADD_K, KM_FIXED_READ);
    a.op(op::LDX_MEM, M_BLOCK);
    a.jump(op::JA, 0, Some(next), None);

    // SID: a block of zero words is dropped; the parser reads the whole block.
    a.bind(sid);
    a.op(op::LD_H_IND, 2);
    a.jump(op::JEQ_K, 0, Some(drop), None);
    a.op(op::LSH_K, 2);
    a.jump(op::JA, 0, Some(next), None);

    // HSREQ/HSRSP: the parser reads 12 bytes, whatever the block's size.
    a.bind(hs);
    a.op(op::LD_IMM, HS_EXT_READ);
    a.jump(op::JA, 0, Some(next), None);

    a.bind(keep);
    a.op(op::RET_K, KEEP);
    a.bind(drop);
    a.op(op::RET_K, DROP);

    // A = bytes the block's parser read: X += header + A.
    a.bind(next);
    a.op(op::ADD_K, EXT_HEADER_LEN);
    a.op(op::ADD_X, 0);
    a.op(op::TAX, 0);
}

/// An SRT control packet: subtypes 5 to 8 need 4 body bytes.
fn srt_control_body(a: &mut Asm) {
    let keep = a.label();
    let drop = a.label();
    // The subtype is the header's reserved half-word.
    a.op(op::LD_H_ABS, SRT + 2);
    a.jump(op::JGT_K, SRT_UNCHECKED_LAST, Some(keep), None);
    a.jump(op::JGE_K, SRT_UNCHECKED_FIRST, None, Some(keep));
    a.op(op::LD_LEN, 0);
    a.jump(op::JGE_K, BODY + 4, Some(keep), Some(drop));
    a.bind(keep);
    a.op(op::RET_K, KEEP);
    a.bind(drop);
    a.op(op::RET_K, DROP);
}

/// A NAK: its last whole word must not open a range.
fn nak_last_word(a: &mut Asm) {
    let keep = a.label();
    let drop = a.label();
    a.op(op::LD_LEN, 0);
    a.jump(op::JGE_K, BODY + 4, None, Some(keep));
    // X = BODY + 4 * (whole words) - 4.
    a.op(op::SUB_K, BODY);
    a.op(op::AND_K, !3);
    a.op(op::ADD_K, BODY - 4);
    a.op(op::TAX, 0);
    a.op(op::LD_W_IND, 0);
    a.jump(op::JSET_K, LOSS_RANGE_START, Some(drop), Some(keep));
    a.bind(keep);
    a.op(op::RET_K, KEEP);
    a.bind(drop);
    a.op(op::RET_K, DROP);
}

/// A jump target, bound to an instruction later.
#[derive(Debug, Clone, Copy)]
struct Label(usize);

/// A tiny assembler: instructions with jumps to labels, resolved at the end.
#[derive(Debug, Default)]
struct Asm {
    code: Vec<(u16, u32, Option<Label>, Option<Label>)>,
    labels: Vec<usize>,
}

impl Asm {
    fn label(&mut self) -> Label {
        self.labels.push(usize::MAX);
        Label(self.labels.len() - 1)
    }

    fn bind(&mut self, label: Label) {
        if let Some(at) = self.labels.get_mut(label.0) {
            *at = self.code.len();
        }
    }

    fn op(&mut self, code: u16, k: u32) {
        self.code.push((code, k, None, None));
    }

    /// A conditional jump (or, with `JA`, an unconditional one to `jt`); `None` is the next
    /// instruction.
    fn jump(&mut self, code: u16, k: u32, jt: Option<Label>, jf: Option<Label>) {
        self.code.push((code, k, jt, jf));
    }

    /// The program. Every jump here is forward and short enough (a test checks); should one
    /// not be, the program is empty, which the kernel refuses to attach, so binding fails.
    fn finish(self) -> Vec<sock_filter> {
        let mut out = Vec::with_capacity(self.code.len());
        for (at, &(code, k, jt, jf)) in self.code.iter().enumerate() {
            let offset = |l: Option<Label>| -> Option<usize> {
                match l {
                    None => Some(0),
                    Some(l) => self.labels.get(l.0)?.checked_sub(at + 1),
                }
            };
            let (Some(t), Some(f)) = (offset(jt), offset(jf)) else {
                return Vec::new();
            };
            let insn = if code == op::JA {
                match u32::try_from(t) {
                    Ok(t) => sock_filter {
                        code,
                        jt: 0,
                        jf: 0,
                        k: t,
                    },
                    Err(_) => return Vec::new(),
                }
            } else {
                match (u8::try_from(t), u8::try_from(f)) {
                    (Ok(jt), Ok(jf)) => sock_filter { code, jt, jf, k },
                    _ => return Vec::new(),
                }
            };
            out.push(insn);
        }
        out
    }
}

#[cfg(test)]
mod tests;
