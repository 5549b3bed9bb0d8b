//! HMAC-SHA256 of a batch of messages in parallel lanes.
//!
//! SHA-NI's `sha256rnds2` has more latency than throughput, so hashing one
//! message at a time leaves the unit idle half the time. Here three (or
//! two) messages are hashed with their instructions interleaved in one
//! function (as in OpenSSL's `sha256_multi_block_shaext` and ISA-L's
//! multi-buffer SHA-256): each lane is fed a new message as soon as it
//! finishes one, and a lane's outer HMAC block runs in the lanes too.
//!
//! [`HmacKey`] keeps the keyed inner and outer SHA-256 states, computed
//! once per key (like `wire::Codec`). The results are bit-identical to the
//! `hmac` and `sha2` crates (property tests below, fuzz target `lanes`).
//! Without SHA-NI (or off x86-64) every message goes through
//! `compress256` one at a time. Nothing here allocates.
//!
//! The only module besides `sys` allowed `unsafe`: calling the SHA-NI
//! function (sound once the CPU feature is detected) and loading blocks.

use sha2::Digest;
use sha2::block_api::compress256;
use std::fmt;
use std::ops::Range;

// The fuzz harness, shared with a unit test; never in the shipped binary.
#[cfg(any(test, fuzzing))]
#[doc(hidden)]
pub mod harness;

/// Length of an HMAC-SHA256 tag.
pub const TAG_LEN: usize = 32;
/// SHA-256 block length.
const BLOCK: usize = 64;
/// Tags computed per round by the span methods: bounds their stack arrays.
const CHUNK: usize = 64;

/// SHA-256's initial state.
const IV: [u32; 8] = [
    0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
];

/// Which compression code hashes the lanes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Impl {
    /// `compress256`, one message at a time: any CPU.
    Portable,
    /// Two lanes interleaved with SHA-NI (x86-64 with the `sha` feature).
    ShaNi2,
    /// Three lanes interleaved with SHA-NI: the fastest on the AMD EPYC
    /// (Zen) it was measured on; four spill registers and are no faster.
    ShaNi3,
}

impl Impl {
    /// The fastest this CPU runs (std caches the CPUID query).
    pub fn detect() -> Impl {
        #[cfg(target_arch = "x86_64")]
        if x86::available() {
            return Impl::ShaNi3;
        }
        Impl::Portable
    }
}

/// An HMAC-SHA256 key, as the SHA-256 states after its inner and outer
/// padded key blocks.
#[derive(Clone)]
pub struct HmacKey {
    inner: [u32; 8],
    outer: [u32; 8],
    /// Invariant: a SHA-NI kernel only if the CPU has SHA-NI (see [`Impl::detect`]).
    imp: Impl,
}

impl fmt::Debug for HmacKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HmacKey {{ key: <hidden>, imp: {:?} }}", self.imp)
    }
}

impl HmacKey {
    /// Keys HMAC-SHA256 (RFC 2104: keys longer than a block are hashed first).
    pub fn new(key: &[u8]) -> Self {
        let mut block = [0u8; BLOCK];
        if key.len() > BLOCK {
            block[..32].copy_from_slice(&sha2::Sha256::digest(key));
        } else {
            block[..key.len()].copy_from_slice(key);
        }
        let state = |pad: u8| {
            let mut b = block;
            b.iter_mut().for_each(|x| *x ^= pad);
            let mut s = IV;
            compress256(&mut s, &[b]);
            s
        };
        HmacKey {
            inner: state(0x36),
            outer: state(0x5c),
            imp: Impl::detect(),
        }
    }

    /// The same key hashed with `imp`, or portably if this CPU cannot run
    /// it (so tests cover both paths wherever SHA-NI exists).
    pub fn with_impl(mut self, imp: Impl) -> Self {
        self.imp = if imp != Impl::Portable && Impl::detect() == Impl::Portable {
            Impl::Portable
        } else {
            imp
        };
        self
    }

    /// Which code hashes for this key.
    pub fn imp(&self) -> Impl {
        self.imp
    }

    /// The tag of one message.
    pub fn mac(&self, msg: &[u8]) -> [u8; TAG_LEN] {
        Lane::start(0, msg, &self.inner).finish_alone(&self.outer)
    }

    /// The tags of `msgs`, into `out[..msgs.len()]`.
    ///
    /// # Panics
    /// If `out` is shorter than `msgs`.
    pub fn mac_many(&self, msgs: &[&[u8]], out: &mut [[u8; TAG_LEN]]) {
        assert!(out.len() >= msgs.len(), "room for every tag");
        self.each(msgs.len(), |i| msgs[i], |i, tag| out[i] = tag);
    }

    /// The tags of the messages `buf[span.start + skip..span.end]` for each
    /// of `spans`, into `out[..spans.len()]`. For a taptun datagram, `skip`
    /// is the tag's length: the tag covers what follows it.
    ///
    /// # Panics
    /// If `out` is shorter than `spans`, or a span (less `skip`) is not in `buf`.
    pub fn mac_spans(
        &self,
        buf: &[u8],
        spans: &[Range<usize>],
        skip: usize,
        out: &mut [[u8; TAG_LEN]],
    ) {
        assert!(out.len() >= spans.len(), "room for every tag");
        self.each(
            spans.len(),
            |i| &buf[spans[i].start + skip..spans[i].end],
            |i, tag| out[i] = tag,
        );
    }

    /// Tags in place: for each of `spans`, writes the tag of
    /// `buf[span.start + TAG_LEN..span.end]` into its first [`TAG_LEN`] bytes.
    ///
    /// # Panics
    /// If a span is not in `buf` or is shorter than [`TAG_LEN`].
    pub fn seal_spans(&self, buf: &mut [u8], spans: &[Range<usize>]) {
        let mut tags = [[0u8; TAG_LEN]; CHUNK];
        for chunk in spans.chunks(CHUNK) {
            self.mac_spans(buf, chunk, TAG_LEN, &mut tags);
            for (span, tag) in chunk.iter().zip(&tags) {
                buf[span.start..span.start + TAG_LEN].copy_from_slice(tag);
            }
        }
    }

    /// Checks `tags[i]` against the tag of `msgs[i]` (in constant time),
    /// into `ok[..msgs.len()]`; a tag not [`TAG_LEN`] bytes long is wrong.
    ///
    /// # Panics
    /// If `tags` or `ok` is shorter than `msgs`.
    pub fn verify_many(&self, msgs: &[&[u8]], tags: &[&[u8]], ok: &mut [bool]) {
        assert!(tags.len() >= msgs.len() && ok.len() >= msgs.len());
        self.each(
            msgs.len(),
            |i| msgs[i],
            |i, tag| ok[i] = ct_eq(&tag, tags[i]),
        );
    }

    /// Checks the datagrams at `spans` of `buf`, each a tag followed by
    /// what it covers (the taptun layout), into `ok[..spans.len()]`; a
    /// span shorter than a tag is wrong.
    ///
    /// # Panics
    /// If `ok` is shorter than `spans`, or a span is not in `buf`.
    pub fn verify_spans(&self, buf: &[u8], spans: &[Range<usize>], ok: &mut [bool]) {
        assert!(ok.len() >= spans.len(), "room for every verdict");
        let msg = |i: usize| {
            let s = &buf[spans[i].clone()];
            s.get(TAG_LEN..).unwrap_or(&[])
        };
        self.each(spans.len(), msg, |i, tag| {
            let s = &buf[spans[i].clone()];
            ok[i] = s.len() >= TAG_LEN && ct_eq(&tag, &s[..TAG_LEN]);
        });
    }

    /// Computes the tags of messages `0..n` (`msg(i)`), handing each to
    /// `done(i, tag)` as it is finished (not necessarily in order).
    fn each<'a>(
        &self,
        n: usize,
        msg: impl Fn(usize) -> &'a [u8],
        mut done: impl FnMut(usize, [u8; TAG_LEN]),
    ) {
        match self.imp {
            #[cfg(target_arch = "x86_64")]
            Impl::ShaNi2 => self.each_in_lanes::<2>(n, msg, done),
            #[cfg(target_arch = "x86_64")]
            Impl::ShaNi3 => self.each_in_lanes::<3>(n, msg, done),
            _ => (0..n).for_each(|i| done(i, self.mac(msg(i)))),
        }
    }

    /// [`HmacKey::each`] in `N` SHA-NI lanes: whenever a lane is free it
    /// takes the next message; all lanes run together for as many blocks as
    /// each has contiguous. When the messages run out and fewer lanes are
    /// busy, two run together while they can and the last finishes alone.
    #[cfg(target_arch = "x86_64")]
    fn each_in_lanes<'a, const N: usize>(
        &self,
        n: usize,
        msg: impl Fn(usize) -> &'a [u8],
        mut done: impl FnMut(usize, [u8; TAG_LEN]),
    ) {
        let mut next = 0;
        let mut lanes: [Option<Lane<'a>>; N] = [const { None }; N];
        loop {
            for slot in &mut lanes {
                if slot.is_none() && next < n {
                    *slot = Some(Lane::start(next, msg(next), &self.inner));
                    next += 1;
                }
            }
            let mut busy = [0; N];
            let mut m = 0;
            for (i, slot) in lanes.iter().enumerate() {
                if slot.is_some() {
                    busy[m] = i;
                    m += 1;
                }
            }
            match m {
                0 => return,
                1 => {
                    if let Some(lane) = &mut lanes[busy[0]] {
                        done(lane.index, lane.finish_alone(&self.outer));
                    }
                    lanes[busy[0]] = None;
                }
                _ if m == N => {
                    let all = lanes.each_mut().map(|s| s.as_mut().expect("busy"));
                    self.step(all, &mut done);
                }
                _ => {
                    let pair = lanes
                        .get_disjoint_mut([busy[0], busy[1]])
                        .expect("two distinct lanes");
                    self.step(pair.map(|s| s.as_mut().expect("busy")), &mut done);
                }
            }
            for slot in &mut lanes {
                if slot.as_ref().is_some_and(Lane::finished) {
                    *slot = None;
                }
            }
        }
    }

    /// Hashes `M` lanes together for as many blocks as each has
    /// contiguous, handing on the tags of those it finishes.
    #[cfg(target_arch = "x86_64")]
    fn step<const M: usize>(
        &self,
        lanes: [&mut Lane<'_>; M],
        done: &mut impl FnMut(usize, [u8; TAG_LEN]),
    ) {
        debug_assert_ne!(self.imp, Impl::Portable, "only SHA-NI keys hash in lanes");
        let k = lanes.iter().map(|l| l.segment().len()).min().unwrap_or(0);
        let mut states: [[u32; 8]; M] = core::array::from_fn(|l| lanes[l].state);
        let blocks: [&[[u8; BLOCK]]; M] = core::array::from_fn(|l| &lanes[l].segment()[..k]);
        // SAFETY: `imp` names a SHA-NI kernel only when `Impl::detect` found
        // SHA-NI and SSE4.1 on this CPU (`with_impl` keeps that invariant),
        // which is all `compress_n` needs.
        unsafe { x86::compress_n(states.each_mut(), blocks) };
        for (lane, state) in lanes.into_iter().zip(states) {
            lane.state = state;
            if let Some(tag) = lane.advance(k, &self.outer) {
                done(lane.index, tag);
            }
        }
    }
}

/// Whether `a == b`, in time that depends on their lengths only (`subtle`
/// is not a dependency: an XOR-accumulate the optimiser cannot see through).
fn ct_eq(a: &[u8; TAG_LEN], b: &[u8]) -> bool {
    if b.len() != TAG_LEN {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// Where a lane is in one message's HMAC.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Hashing `key ^ ipad ‖ msg` (the key block is in the state already).
    Inner,
    /// Hashing `key ^ opad ‖ inner digest` (likewise).
    Outer,
}

/// One message in a lane: the state and the blocks still to hash, first
/// whole blocks of the message in place, then the padded tail copied here.
struct Lane<'a> {
    /// Which message of the batch (read by the lanes, which only x86-64 has).
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    index: usize,
    state: [u32; 8],
    phase: Phase,
    whole: &'a [[u8; BLOCK]],
    tail: [[u8; BLOCK]; 2],
    tail_at: usize,
    tail_end: usize,
}

impl<'a> Lane<'a> {
    /// Message `index` from the keyed inner state.
    fn start(index: usize, msg: &'a [u8], inner: &[u32; 8]) -> Self {
        let (whole, rest) = msg.as_chunks::<BLOCK>();
        let mut lane = Lane {
            index,
            state: *inner,
            phase: Phase::Inner,
            whole,
            tail: [[0; BLOCK]; 2],
            tail_at: 0,
            tail_end: 0,
        };
        // The key block was hashed first: it counts in the length.
        lane.pad(rest, BLOCK + msg.len());
        lane
    }

    /// Lays out the last bytes `rest` (< one block) with SHA-256 padding
    /// for a message of `total` bytes in `tail`.
    fn pad(&mut self, rest: &[u8], total: usize) {
        let flat = self.tail.as_flattened_mut();
        flat[..rest.len()].copy_from_slice(rest);
        flat[rest.len()] = 0x80;
        flat[rest.len() + 1..].fill(0);
        let blocks = if rest.len() + 1 + 8 <= BLOCK { 1 } else { 2 };
        let end = blocks * BLOCK;
        flat[end - 8..end].copy_from_slice(&(total as u64 * 8).to_be_bytes());
        self.tail_at = 0;
        self.tail_end = blocks;
    }

    /// The blocks to hash next, contiguous in memory (never empty).
    // Only the SHA-NI scheduler asks (x86-64).
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    fn segment(&self) -> &[[u8; BLOCK]] {
        if self.whole.is_empty() {
            &self.tail[self.tail_at..self.tail_end]
        } else {
            self.whole
        }
    }

    /// Whether the tag is out (after [`Lane::advance`] gave it).
    // Only the SHA-NI scheduler asks (x86-64).
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    fn finished(&self) -> bool {
        self.phase == Phase::Outer && self.whole.is_empty() && self.tail_at == self.tail_end
    }

    /// Hashes the rest of the message alone, with `compress256`; the tag.
    fn finish_alone(&mut self, outer: &[u32; 8]) -> [u8; TAG_LEN] {
        loop {
            let seg = if self.whole.is_empty() {
                &self.tail[self.tail_at..self.tail_end]
            } else {
                self.whole
            };
            compress256(&mut self.state, seg);
            if let Some(tag) = self.advance(seg.len(), outer) {
                return tag;
            }
        }
    }

    /// Notes that `n` blocks of [`Lane::segment`] were hashed; the tag
    /// once the outer hash is done.
    fn advance(&mut self, n: usize, outer: &[u32; 8]) -> Option<[u8; TAG_LEN]> {
        if self.whole.is_empty() {
            self.tail_at += n;
        } else {
            self.whole = &self.whole[n..];
        }
        if !self.whole.is_empty() || self.tail_at < self.tail_end {
            return None;
        }
        let digest = digest(&self.state);
        match self.phase {
            Phase::Inner => {
                self.phase = Phase::Outer;
                self.state = *outer;
                self.pad(&digest, BLOCK + TAG_LEN);
                None
            }
            Phase::Outer => Some(digest),
        }
    }
}

/// A SHA-256 state as its big-endian digest.
fn digest(state: &[u32; 8]) -> [u8; TAG_LEN] {
    let mut out = [0u8; TAG_LEN];
    for (o, w) in out.chunks_exact_mut(4).zip(state) {
        o.copy_from_slice(&w.to_be_bytes());
    }
    out
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    //! `N` SHA-256 compressions interleaved, with SHA-NI. The round and
    //! message-schedule steps are those of `sha2`'s x86 backend, done for
    //! each lane in turn so that the lanes' dependency chains overlap.

    use core::arch::x86_64::*;

    /// SHA-256 round constants.
    const K: [u32; 64] = [
        0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4,
        0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe,
        0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f,
        0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7,
        0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc,
        0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b,
        0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116,
        0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
        0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
        0xc67178f2,
    ];

    /// Whether this CPU runs [`compress_n`].
    pub(super) fn available() -> bool {
        is_x86_feature_detected!("sha")
            && is_x86_feature_detected!("sse2")
            && is_x86_feature_detected!("ssse3")
            && is_x86_feature_detected!("sse4.1")
    }

    /// Round constants `4r..4r + 4`.
    #[inline]
    #[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
    fn k4(r: usize) -> __m128i {
        _mm_set_epi32(
            K[4 * r + 3] as i32,
            K[4 * r + 2] as i32,
            K[4 * r + 1] as i32,
            K[4 * r] as i32,
        )
    }

    /// A state `a..h` as SHA-NI's register pair (ABEF, CDGH).
    #[inline]
    #[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
    fn unpack(s: &[u32; 8]) -> (__m128i, __m128i) {
        let dcba = _mm_set_epi32(s[3] as i32, s[2] as i32, s[1] as i32, s[0] as i32);
        let hgfe = _mm_set_epi32(s[7] as i32, s[6] as i32, s[5] as i32, s[4] as i32);
        let cdab = _mm_shuffle_epi32(dcba, 0xB1);
        let efgh = _mm_shuffle_epi32(hgfe, 0x1B);
        (
            _mm_alignr_epi8(cdab, efgh, 8),
            _mm_blend_epi16(efgh, cdab, 0xF0),
        )
    }

    /// The inverse of [`unpack`].
    #[inline]
    #[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
    fn pack(abef: __m128i, cdgh: __m128i, s: &mut [u32; 8]) {
        let feba = _mm_shuffle_epi32(abef, 0x1B);
        let dchg = _mm_shuffle_epi32(cdgh, 0xB1);
        let dcba = _mm_blend_epi16(feba, dchg, 0xF0);
        let hgfe = _mm_alignr_epi8(dchg, feba, 8);
        *s = [
            _mm_extract_epi32::<0>(dcba) as u32,
            _mm_extract_epi32::<1>(dcba) as u32,
            _mm_extract_epi32::<2>(dcba) as u32,
            _mm_extract_epi32::<3>(dcba) as u32,
            _mm_extract_epi32::<0>(hgfe) as u32,
            _mm_extract_epi32::<1>(hgfe) as u32,
            _mm_extract_epi32::<2>(hgfe) as u32,
            _mm_extract_epi32::<3>(hgfe) as u32,
        ];
    }

    /// A block as four big-endian message-word vectors.
    #[inline]
    #[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
    fn load(block: &[u8; 64]) -> [__m128i; 4] {
        let mask = _mm_set_epi64x(0x0C0D_0E0F_0809_0A0B, 0x0405_0607_0001_0203);
        let p = block.as_ptr().cast::<__m128i>();
        // SAFETY: `block` is 64 readable bytes, so `p.add(i)` for i < 4
        // points at 16 of them; `loadu` has no alignment requirement.
        let w = unsafe {
            [
                _mm_loadu_si128(p),
                _mm_loadu_si128(p.add(1)),
                _mm_loadu_si128(p.add(2)),
                _mm_loadu_si128(p.add(3)),
            ]
        };
        [
            _mm_shuffle_epi8(w[0], mask),
            _mm_shuffle_epi8(w[1], mask),
            _mm_shuffle_epi8(w[2], mask),
            _mm_shuffle_epi8(w[3], mask),
        ]
    }

    /// Four rounds (`4r..4r + 4`) of `N` lanes.
    #[inline]
    #[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
    fn rounds4n<const N: usize>(r: usize, s: &mut [(__m128i, __m128i); N], w: [__m128i; N]) {
        let k = k4(r);
        let t: [__m128i; N] = core::array::from_fn(|l| _mm_add_epi32(w[l], k));
        for l in 0..N {
            s[l].1 = _mm_sha256rnds2_epu32(s[l].1, s[l].0, t[l]);
        }
        for l in 0..N {
            s[l].0 = _mm_sha256rnds2_epu32(s[l].0, s[l].1, _mm_shuffle_epi32(t[l], 0x0E));
        }
    }

    /// The next four message words of lane words `w` into `w[i]`.
    #[inline]
    #[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
    fn schedule1(w: &mut [__m128i; 4], i: usize) {
        let (w0, w1, w2, w3) = (w[i], w[(i + 1) % 4], w[(i + 2) % 4], w[(i + 3) % 4]);
        let t = _mm_add_epi32(_mm_sha256msg1_epu32(w0, w1), _mm_alignr_epi8(w3, w2, 4));
        w[i] = _mm_sha256msg2_epu32(t, w3);
    }

    /// Compresses `blocks[l]` into `states[l]` for each lane `l`, as `N`
    /// `compress256` calls would, the `N` interleaved.
    ///
    /// # Panics
    /// If the lanes are not the same number of blocks.
    // Lane loops index several arrays at once: clearer with indices.
    #[allow(clippy::needless_range_loop)]
    #[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
    pub(super) fn compress_n<const N: usize>(states: [&mut [u32; 8]; N], blocks: [&[[u8; 64]]; N]) {
        let len = blocks[0].len();
        assert!(blocks.iter().all(|b| b.len() == len), "lanes in step");
        let mut s: [(__m128i, __m128i); N] = [(_mm_setzero_si128(), _mm_setzero_si128()); N];
        for l in 0..N {
            s[l] = unpack(states[l]);
        }
        for i in 0..len {
            let saved = s;
            let mut w = [[_mm_setzero_si128(); 4]; N];
            for l in 0..N {
                w[l] = load(&blocks[l][i]);
            }
            // Spelt out, so that round constants and word indices are
            // constants and every vector stays in a register.
            macro_rules! rounds {
                ($($r:literal)+) => {$(
                    if $r >= 4 {
                        for wl in &mut w {
                            schedule1(wl, $r % 4);
                        }
                    }
                    rounds4n($r, &mut s, core::array::from_fn(|l| w[l][$r % 4]));
                )+};
            }
            rounds!(0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15);
            for l in 0..N {
                s[l] = (
                    _mm_add_epi32(s[l].0, saved[l].0),
                    _mm_add_epi32(s[l].1, saved[l].1),
                );
            }
        }
        for (l, st) in states.into_iter().enumerate() {
            pack(s[l].0, s[l].1, st);
        }
    }
}

#[cfg(test)]
mod tests;
