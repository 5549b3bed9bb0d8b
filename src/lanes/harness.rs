//! The lanes fuzz harness, shared by the `cargo fuzz` target
//! (`fuzz/fuzz_targets/lanes.rs`) and randomized unit tests: every way of
//! asking [`HmacKey`] for tags must agree with the `hmac` and `sha2` crates,
//! for the key and messages given, on every implementation.

use super::{HmacKey, Impl, TAG_LEN};
use crate::script::Cursor;
use hmac::{Hmac, KeyInit, Mac};
use std::ops::Range;

/// Message lengths where SHA-256 padding changes shape, and the ones taptun
/// sees (a 40-byte keepalive header plus 8; full frames; jumbo; the most a
/// TAP read returns).
pub const EDGES: [usize; 22] = [
    0, 1, 8, 31, 32, 33, 48, 55, 56, 57, 63, 64, 65, 119, 120, 127, 128, 129, 1440, 1472, 9040,
    65535,
];

/// Keeps one fuzz execution cheap: at most this many message bytes.
const MAX_BYTES: usize = 1 << 20;

/// The reference: HMAC-SHA256 from the `hmac` and `sha2` crates.
pub fn reference(key: &[u8], msg: &[u8]) -> [u8; TAG_LEN] {
    let mut mac = <Hmac<sha2::Sha256> as KeyInit>::new_from_slice(key).expect("any key length");
    mac.update(msg);
    mac.finalize().into_bytes().into()
}

/// The implementations this CPU runs: all three with SHA-NI, only the
/// portable one without (where `with_impl` falls back to it).
pub fn runnable() -> Vec<Impl> {
    [Impl::ShaNi3, Impl::ShaNi2, Impl::Portable]
        .into_iter()
        .filter(|&imp| HmacKey::new(b"").with_impl(imp).imp() == imp)
        .collect()
}

/// Checks every method of [`HmacKey`] under `imp` on `msgs` against
/// [`reference`]; panics on any difference, and when this CPU cannot run
/// `imp` (the portable code would then be checked in its name).
pub fn check(key: &[u8], msgs: &[&[u8]], imp: Impl) {
    let hk = HmacKey::new(key).with_impl(imp);
    assert_eq!(hk.imp(), imp, "this CPU cannot run {imp:?}");
    let want: Vec<[u8; TAG_LEN]> = msgs.iter().map(|m| reference(key, m)).collect();
    for (m, w) in msgs.iter().zip(&want) {
        assert_eq!(
            hk.mac(m),
            *w,
            "mac, {} bytes, key {} bytes",
            m.len(),
            key.len()
        );
    }

    // One spare slot: only `msgs.len()` are written.
    let mut out = vec![[0xAA; TAG_LEN]; msgs.len() + 1];
    hk.mac_many(msgs, &mut out);
    assert_eq!(&out[..msgs.len()], &want[..], "mac_many, {imp:?}");
    assert_eq!(
        out[msgs.len()],
        [0xAA; TAG_LEN],
        "mac_many wrote past the batch"
    );

    // The taptun layout: tag ‖ message, with gaps between datagrams.
    let mut buf = Vec::new();
    let mut spans: Vec<Range<usize>> = Vec::new();
    for (i, m) in msgs.iter().enumerate() {
        buf.extend(std::iter::repeat_n(0x5A, i % 3));
        let start = buf.len();
        buf.extend_from_slice(&[0u8; TAG_LEN]);
        buf.extend_from_slice(m);
        spans.push(start..buf.len());
    }
    out.fill([0xAA; TAG_LEN]);
    hk.mac_spans(&buf, &spans, TAG_LEN, &mut out);
    assert_eq!(&out[..msgs.len()], &want[..], "mac_spans, {imp:?}");

    hk.seal_spans(&mut buf, &spans);
    for (s, w) in spans.iter().zip(&want) {
        assert_eq!(&buf[s.start..s.start + TAG_LEN], w, "seal_spans, {imp:?}");
    }
    let mut ok = vec![false; msgs.len()];
    hk.verify_spans(&buf, &spans, &mut ok);
    assert!(
        ok.iter().all(|&v| v),
        "verify_spans refused a genuine tag, {imp:?}"
    );
    let tags: Vec<&[u8]> = want.iter().map(|t| &t[..]).collect();
    hk.verify_many(msgs, &tags, &mut ok);
    assert!(
        ok.iter().all(|&v| v),
        "verify_many refused a genuine tag, {imp:?}"
    );

    // Every second datagram forged (tag or message), every third tag short.
    for (i, s) in spans.iter().enumerate().filter(|(i, _)| i % 2 == 1) {
        let at = if s.len() > TAG_LEN && i % 4 == 1 {
            s.end - 1
        } else {
            s.start + i % TAG_LEN
        };
        buf[at] ^= 1 << (i % 8);
    }
    hk.verify_spans(&buf, &spans, &mut ok);
    for (i, v) in ok.iter().enumerate() {
        assert_eq!(*v, i % 2 == 0, "verify_spans, datagram {i}, {imp:?}");
    }
    let forged: Vec<[u8; TAG_LEN]> = want
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let mut t = *t;
            if i % 2 == 1 {
                t[i % TAG_LEN] ^= 0x80;
            }
            t
        })
        .collect();
    let tags: Vec<&[u8]> = forged
        .iter()
        .enumerate()
        .map(|(i, t)| {
            if i % 3 == 2 {
                &t[..TAG_LEN - 1]
            } else {
                &t[..]
            }
        })
        .collect();
    hk.verify_many(msgs, &tags, &mut ok);
    for (i, v) in ok.iter().enumerate() {
        assert_eq!(
            *v,
            i % 2 == 0 && i % 3 != 2,
            "verify_many, message {i}, {imp:?}"
        );
    }
}

/// Decodes a fuzz input into a key and a batch, and [`check`]s it on every
/// implementation this CPU runs ([`runnable`]). Every byte string is a
/// valid input.
pub fn run(data: &[u8]) {
    let mut c = Cursor::new(data);
    let key_len = usize::from(c.u8()) % 201;
    let key = c.bytes(key_len);
    let count = usize::from(c.u8()) % 71;
    let mut lens = Vec::with_capacity(count);
    let mut total = 0;
    for _ in 0..count {
        let sel = c.u16();
        let len = match sel % 4 {
            // Near a padding edge or a taptun size.
            0 | 1 => {
                let edge = EDGES[usize::from(sel >> 2) % EDGES.len()];
                (edge + usize::from(sel >> 7) % 5).saturating_sub(2)
            }
            2 => usize::from(sel >> 2),
            _ => usize::from(sel >> 2) % 200,
        };
        let len = len.min(MAX_BYTES - total).min(65535);
        total += len;
        lens.push(len);
    }
    let fill = c.u8();
    let msgs: Vec<Vec<u8>> = lens
        .iter()
        .enumerate()
        .map(|(i, &len)| {
            let mut m = c.bytes(len);
            let n = m.len();
            m.extend((n..len).map(|j| (j as u8).wrapping_mul(fill).wrapping_add(i as u8)));
            m
        })
        .collect();
    let msgs: Vec<&[u8]> = msgs.iter().map(|m| &m[..]).collect();
    for imp in runnable() {
        check(&key, &msgs, imp);
    }
}
