//! Micro-benchmark of the pure per-frame work, in ns per frame:
//! encode (`Codec::seal`), decode+verify (`Codec::open`), the replay check
//! (`ReplayWindow::accept`), the checksum a frame must pass before it joins
//! a coalesced run (`offload::csum_add`), a copy and that sum in one pass
//! (`offload::copy_csum`, against a copy and `csum_add`) and the whole receive pipeline
//! (`rx::Inbound::receive`), at 64, 512 and 1432-byte frames; the
//! confidential mode's seal and open (`noise::SendKey::seal`,
//! `noise::RecvKey::open`) with AES-256-GCM and ChaCha20-Poly1305 beside
//! the HMAC mode's, per frame and on a batch of 44 full frames (one 64 KB
//! super-frame's worth), with Gbit/s of frame per core; the CPU time each
//! side of a Noise handshake takes, and what a made-up initiation costs its
//! reader (what bounds an initiation flood). Then what
//! hashing in lanes changes, for batches of 44 datagrams (a TSO
//! super-frame's worth): HMAC-SHA256 one message at a time (`hmac` +
//! `sha2`) against `lanes::HmacKey::mac_many`, with the throughput in frame
//! bytes; sealing (`Codec::seal` each against `Codec::seal_spans`),
//! verifying (`Codec::open` each against `Codec::verify_spans`) and
//! receiving a GRO run (`Inbound::receive` each against `receive_run`).
//!
//! `cargo bench --bench micro`; `cargo bench --bench micro -- WORD...` runs
//! only the sections named by one of the words (`hmac`, `seal`, `open`,
//! `forged`, `replay`, `checksum`, `offload`, `ecn`, `modes`, `handshake`,
//! `receive`, `batch`),
//! e.g. `offload` to time a change to the coalescer or the segmenter alone,
//! alternately with another build of the same bench. Under `cargo test --all-targets` (which runs
//! bench targets too, unoptimized) it only checks once that each benched
//! path does what it should, and times nothing.
//! Standard harness-less bench (no crate):
//! each figure is the median of 15 samples of about 20 ms, with the fastest
//! and slowest sample beside it, so a noisy neighbour shows as a wide range
//! rather than as a wrong number. The batch rows instead take 401 short
//! samples (~0.1 ms, one batch) of the ways compared in turns, which a busy
//! machine disturbs far less and alike. Not run by the test suite.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use std::hint::black_box;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use taptun::aead::Cipher;
use taptun::ecn::Ecn;
use taptun::lanes::{HmacKey, Impl};
use taptun::noise::handshake::{self, Established};
use taptun::noise::wire::{
    HEADER_LEN as NOISE_HEADER_LEN, INITIATION_LEN, OVERHEAD as NOISE_OVERHEAD, RESPONSE_LEN,
};
use taptun::noise::{NoiseError, RecvKey, SendKey};
use taptun::offload;
use taptun::replay::ReplayWindow;
use taptun::rx::{Inbound, Verdict};
use taptun::wire::{Codec, HEADER_LEN, MAC_LEN};

/// Frame sizes: minimum Ethernet frame, a medium one, a full one at TAP MTU 1418.
const SIZES: [usize; 3] = [64, 512, 1432];
const SAMPLES: usize = 15;
const SAMPLE_TIME: Duration = Duration::from_millis(20);
/// A fixed "now" (UNIX ns) so that every run sees the same timestamps.
const NOW: u64 = 1_763_900_000_000_000_000;
/// The default `--max-age`.
const MAX_AGE_NS: u64 = 3_000_000_000;
const KEY: &[u8] = b"0123456789abcdef0123456789abcdef";
/// Segments in the coalesce/segment figures: one 64 KB TSO super-frame.
const RUN: usize = 44;

/// Median, min and max of a sample set.
struct Figure {
    median: f64,
    min: f64,
    max: f64,
}

fn summarize(mut ns: Vec<f64>) -> Figure {
    ns.sort_by(f64::total_cmp);
    Figure {
        median: ns[ns.len() / 2],
        min: ns[0],
        max: ns[ns.len() - 1],
    }
}

/// Times `op` (one frame per call): finds how many calls fill a sample, then
/// takes `SAMPLES` samples.
fn bench(mut op: impl FnMut()) -> Figure {
    let iters = calibrate(&mut op, SAMPLE_TIME);
    let samples = (0..SAMPLES)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..iters {
                op();
            }
            start.elapsed().as_nanos() as f64 / iters as f64
        })
        .collect();
    summarize(samples)
}

fn print(what: &str, size: Option<usize>, f: &Figure) {
    let size = size.map_or_else(|| "-".to_string(), |s| s.to_string());
    println!(
        "{what:<40} {size:>6} {:>10.1} {:>10.1} {:>10.1}",
        f.median, f.min, f.max
    );
}

/// Prints a figure for a whole run of `RUN` 1432-byte frames per frame.
fn print_per(what: &str, f: &Figure) {
    let per = |x: f64| x / RUN as f64;
    print(
        what,
        Some(1432),
        &Figure {
            median: per(f.median),
            min: per(f.min),
            max: per(f.max),
        },
    );
}

/// Times `ops` (one batch of `RUN` frames per call) in 401 turns of
/// short samples (about 100 µs), so that all see the same neighbours and
/// most samples fit in one time slice of a busy machine; ns per frame.
fn bench_batches(ops: &mut [&mut dyn FnMut()]) -> Vec<Figure> {
    interleave(ops, 401, Duration::from_micros(100))
        .into_iter()
        .map(|f| Figure {
            median: f.median / RUN as f64,
            min: f.min / RUN as f64,
            max: f.max / RUN as f64,
        })
        .collect()
}

/// Like [`print`], with the throughput at the median: `bytes` per frame.
fn print_rate(what: &str, size: usize, f: &Figure, bytes: usize) {
    println!(
        "{what:<34} {size:>6} {:>10.1} {:>10.1} {:>10.1} {:>7.2} GB/s",
        f.median,
        f.min,
        f.max,
        bytes as f64 / f.median
    );
}

/// The bytes a datagram's tag covers: timestamp and a `len`-byte frame.
fn authenticated(len: usize) -> Vec<u8> {
    (0..HEADER_LEN - MAC_LEN + len)
        .map(|i| (i * 13) as u8)
        .collect()
}

/// HMAC-SHA256 one message at a time, as `Codec` did: the keyed state cloned.
fn hmac_one(keyed: &Hmac<Sha256>, msg: &[u8]) -> [u8; 32] {
    let mut mac = keyed.clone();
    mac.update(msg);
    mac.finalize().into_bytes().into()
}

/// A sealed datagram carrying a `len`-byte frame stamped `ts`.
fn datagram(codec: &Codec, ts: u64, len: usize) -> Vec<u8> {
    let mut buf = vec![0u8; HEADER_LEN + len];
    for (i, b) in buf[HEADER_LEN..].iter_mut().enumerate() {
        *b = i as u8;
    }
    codec.seal(ts, &mut buf).expect("buffer holds the header");
    buf
}

/// The receive pipeline on datagrams it accepts: each sample receives a
/// batch sealed beforehand (outside the timing) with newer timestamps, so
/// the replay window never refuses one and every call takes the full path.
fn bench_receive(codec: &Codec, len: usize) -> Figure {
    const BATCH: usize = 4096;
    let src: SocketAddr = "192.0.2.2:9123".parse().expect("literal address");
    let mut rx = Inbound::new(codec.clone(), MAX_AGE_NS, Some(src));
    let mut batch: Vec<Vec<u8>> = (0..BATCH).map(|_| datagram(codec, NOW, len)).collect();
    let mut ts = NOW - MAX_AGE_NS / 2;
    let mut samples = Vec::with_capacity(SAMPLES);
    // One untimed batch first to warm caches and the window.
    for round in 0..=SAMPLES * 4 {
        for dg in &mut batch {
            ts += 1;
            codec.seal(ts, dg).expect("buffer holds the header");
        }
        let mut delivered = 0usize;
        let start = Instant::now();
        for dg in &batch {
            let (verdict, _) = rx.receive(black_box(dg), src, ts);
            if matches!(verdict, Verdict::Frame(_)) {
                delivered += 1;
            }
        }
        let elapsed = start.elapsed();
        assert_eq!(delivered, BATCH, "the pipeline must accept every datagram");
        if round > 0 {
            samples.push(elapsed.as_nanos() as f64 / BATCH as f64);
        }
    }
    summarize(samples)
}

/// A GRO run of `RUN` datagrams of `len`-byte frames received whole
/// (`Inbound::receive_run`, tags in lanes) and one datagram at a time
/// (`Inbound::receive`, as `receive_run` did before lanes), in turns of
/// one run each; before each turn the run is sealed anew (untimed) with
/// newer timestamps, so every datagram takes the full path. ns per frame.
fn bench_receive_run(codec: &Codec, len: usize) -> (Figure, Figure) {
    const TURNS: usize = 401;
    let src: SocketAddr = "192.0.2.2:9123".parse().expect("literal address");
    let mut whole = Inbound::new(codec.clone(), MAX_AGE_NS, Some(src));
    let mut singly = Inbound::new(codec.clone(), MAX_AGE_NS, Some(src));
    let seg = HEADER_LEN + len;
    let mut run: Vec<u8> = (0..RUN).flat_map(|_| datagram(codec, NOW, len)).collect();
    let spans: Vec<_> = (0..RUN).map(|i| i * seg..(i + 1) * seg).collect();
    let mut ts = NOW - MAX_AGE_NS / 2;
    let mut reseal = |run: &mut Vec<u8>| {
        codec
            .seal_spans(run, &spans, || {
                ts += 1;
                ts
            })
            .expect("room for the headers");
        ts
    };
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for _ in 0..TURNS {
        let now = reseal(&mut run);
        let mut delivered = 0;
        let start = Instant::now();
        whole.receive_run(
            black_box(&mut run),
            Some(seg),
            Ecn::NotEct,
            src,
            now,
            &mut |_| delivered += 1,
        );
        a.push(start.elapsed().as_nanos() as f64 / RUN as f64);
        assert_eq!(delivered, RUN, "the pipeline must accept every datagram");

        let now = reseal(&mut run);
        let start = Instant::now();
        for dg in run.chunks(seg) {
            let (verdict, _) = singly.receive(black_box(dg), src, now);
            if matches!(verdict, Verdict::Frame(_)) {
                delivered += 1;
            }
        }
        b.push(start.elapsed().as_nanos() as f64 / RUN as f64);
        assert_eq!(
            delivered,
            2 * RUN,
            "the pipeline must accept every datagram"
        );
    }
    (summarize(a), summarize(b))
}

/// Bytes of one's-complement sum, inverted: the checksum of `parts`.
fn inet_csum(parts: &[&[u8]]) -> u16 {
    !offload::csum_fold(parts.iter().fold(0, |acc, p| offload::csum_add(acc, p)))
}

/// A run of `n` full-sized TCP/IPv4 segments of one flow, as they arrive
/// from the peer: consecutive sequence numbers and IPv4 IDs, right checksums.
fn tcp_run(n: usize) -> Vec<Vec<u8>> {
    const MSS: usize = 1432 - 14 - 20 - 20;
    (0..n)
        .map(|i| {
            let mut f = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x08, 0x00];
            let total = (20 + 20 + MSS) as u16;
            let id = (0x1234 + i) as u16;
            f.extend_from_slice(&[0x45, 0, (total >> 8) as u8, total as u8]);
            f.extend_from_slice(&id.to_be_bytes());
            f.extend_from_slice(&[0x40, 0, 64, 6, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2]);
            let c = inet_csum(&[&f[14..34]]);
            f[24..26].copy_from_slice(&c.to_be_bytes());
            let seq = 0x1020_3040u32.wrapping_add((i * MSS) as u32);
            f.extend_from_slice(&[0x30, 0x39, 0x13, 0x89]);
            f.extend_from_slice(&seq.to_be_bytes());
            f.extend_from_slice(&[0, 0, 0, 1, 0x50, 0x10, 0xff, 0xff, 0, 0, 0, 0]);
            f.extend((0..MSS).map(|j| (i * 7 + j) as u8));
            let len = ((20 + MSS) as u32).to_be_bytes();
            let c = inet_csum(&[&f[26..34], &[0, 6], &len[2..], &f[34..]]);
            f[50..52].copy_from_slice(&c.to_be_bytes());
            f
        })
        .collect()
}

/// Coalesces `frames` into one super-frame (`VnetHdr ‖ frame`).
fn coalesce(co: &mut offload::Coalescer, frames: &[Vec<u8>], out: &mut Vec<u8>) -> usize {
    let mut n = 0;
    for f in frames {
        co.push(f, &mut |b| {
            n += 1;
            out.clear();
            out.extend_from_slice(b);
        });
    }
    co.flush(&mut |b| {
        n += 1;
        out.clear();
        out.extend_from_slice(b);
    });
    n
}

/// Room for a transport datagram of the confidential mode (header ‖
/// `len`-byte frame ‖ tag), its frame a pattern starting at `i`.
fn noise_datagram(i: usize, len: usize) -> Vec<u8> {
    let mut d = vec![0u8; NOISE_OVERHEAD + len];
    for (j, b) in d[NOISE_HEADER_LEN..NOISE_HEADER_LEN + len]
        .iter_mut()
        .enumerate()
    {
        *b = (i + j) as u8;
    }
    d
}

/// The key file's 32 bytes.
fn psk() -> &'static [u8; 32] {
    KEY.try_into().expect("a 32-byte key")
}

/// One direction of a session: the sender's key and the receiver's.
fn noise_pair(cipher: Cipher) -> (SendKey, RecvKey) {
    (
        SendKey::new(cipher, psk(), 1, 2, 0),
        RecvKey::new(cipher, psk()),
    )
}

/// Datagrams per sample of the per-frame noise rows: enough that a sample
/// of 64-byte frames (some µs) dwarfs reading the clock.
const NOISE_BATCH: usize = 64;

/// The confidential mode's seal (`SendKey::seal`) and open
/// (`RecvKey::open`), both ciphers, in turns (at least 401, and for at
/// least half a second, so that one burst of a neighbour's work does not
/// cover them all): each turn seals a batch
/// of `batch` datagrams of `len`-byte frames in place (timed), then opens
/// them in place (timed). Each datagram has a new counter, as the replay
/// window wants, and nothing is copied: open decrypts what the seal just
/// encrypted, and the next turn seals that plaintext again. The ciphers
/// take turns in rotated order, so a noisy neighbour hits both alike.
/// ns per frame: `[seal, open]` per cipher, in `Cipher::ALL` order.
fn bench_noise(len: usize, batch: usize) -> Vec<[Figure; 2]> {
    const TURNS: usize = 401;
    const SPREAD: Duration = Duration::from_millis(500);
    let dlen = NOISE_OVERHEAD + len;
    let mut sides: Vec<(SendKey, RecvKey, Vec<u8>)> = Cipher::ALL
        .into_iter()
        .map(|c| {
            let (tx, rx) = noise_pair(c);
            let buf = (0..batch).flat_map(|i| noise_datagram(i, len)).collect();
            (tx, rx, buf)
        })
        .collect();
    let mut samples: Vec<[Vec<f64>; 2]> = sides
        .iter()
        .map(|_| [Vec::with_capacity(TURNS), Vec::with_capacity(TURNS)])
        .collect();
    // Turn 0 warms caches and is not counted.
    let began = Instant::now();
    let mut turn = 0;
    while turn <= TURNS || began.elapsed() < SPREAD {
        for k in 0..sides.len() {
            let i = (k + turn) % sides.len();
            let (tx, rx, buf) = &mut sides[i];
            let start = Instant::now();
            for d in buf.chunks_exact_mut(dlen) {
                tx.seal(black_box(d)).expect("room for header and tag");
            }
            let sealed = start.elapsed();
            let mut opened = 0;
            let start = Instant::now();
            for d in buf.chunks_exact_mut(dlen) {
                if rx.open(black_box(d)).is_ok() {
                    opened += 1;
                }
            }
            let open = start.elapsed();
            assert_eq!(opened, batch, "every sealed datagram must open");
            if turn > 0 {
                samples[i][0].push(sealed.as_nanos() as f64 / batch as f64);
                samples[i][1].push(open.as_nanos() as f64 / batch as f64);
            }
        }
        turn += 1;
    }
    samples
        .into_iter()
        .map(|[s, o]| [summarize(s), summarize(o)])
        .collect()
}

/// Like [`print`], with the frame bits per second one core carries at the
/// median: `len`-byte frames.
fn print_gbit(what: &str, len: usize, f: &Figure) {
    println!(
        "{what:<40} {len:>6} {:>10.1} {:>10.1} {:>10.1} {:>7.2} Gbit/s",
        f.median,
        f.min,
        f.max,
        (len * 8) as f64 / f.median
    );
}

/// Like [`print`], for a figure in ns printed in µs.
fn print_us(what: &str, f: &Figure) {
    println!(
        "{what:<40} {:>6} {:>10.2} {:>10.2} {:>10.2} µs",
        "-",
        f.median / 1e3,
        f.min / 1e3,
        f.max / 1e3
    );
}

/// This thread's CPU time (ns): a handshake's cost without the time the
/// scheduler gave to others.
fn cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime only writes the timespec it is given.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID)");
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Handshakes timed per side.
const HANDSHAKES: usize = 200;

/// One full handshake under `cipher` (fresh ephemerals, as in use), and
/// the CPU time (ns) each side spent: the initiator's `initiate` and
/// `finish`, the responder's `read_initiation` and `respond`.
fn handshake_once(cipher: Cipher, index: u32) -> (Established, Established, u64, u64) {
    let mut m1 = [0u8; INITIATION_LEN];
    let mut m2 = [0u8; RESPONSE_LEN];
    let t0 = cpu_ns();
    let pending = handshake::initiate(cipher, psk(), index, None, &mut m1).expect("an initiation");
    let t1 = cpu_ns();
    let read = handshake::read_initiation(cipher, psk(), None, black_box(&m1))
        .expect("a genuine initiation reads");
    let r = handshake::respond(read, !index, &mut m2).expect("a response");
    let t2 = cpu_ns();
    let i = handshake::finish(pending, black_box(&m2)).expect("a genuine response reads");
    let t3 = cpu_ns();
    (i, r, (t1 - t0) + (t3 - t2), t2 - t1)
}

/// [`HANDSHAKES`] handshakes (after one untimed): the median, fastest and
/// slowest CPU time per side, initiator then responder (ns).
fn bench_handshake(cipher: Cipher) -> (Figure, Figure) {
    let mut ini = Vec::with_capacity(HANDSHAKES);
    let mut resp = Vec::with_capacity(HANDSHAKES);
    for n in 0..=HANDSHAKES {
        let (i, r, ti, tr) = handshake_once(cipher, n as u32);
        assert_eq!((i.send, i.recv), (r.recv, r.send), "both sides agree");
        if n > 0 {
            ini.push(ti as f64);
            resp.push(tr as f64);
        }
    }
    (summarize(ini), summarize(resp))
}

/// A made-up initiation: the right type and length, the rest from `seed`.
fn made_up_initiation(seed: &mut u64) -> [u8; INITIATION_LEN] {
    let mut d = [0u8; INITIATION_LEN];
    d[0] = 1;
    for b in d[4..].iter_mut() {
        *seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        *b = (*seed >> 56) as u8;
    }
    d
}

/// Calls per sample that fill about a quarter of `sample`, times four.
fn calibrate(op: &mut dyn FnMut(), sample: Duration) -> u64 {
    let mut iters = 1u64;
    loop {
        let start = Instant::now();
        for _ in 0..iters {
            op();
        }
        if start.elapsed() >= sample / 4 || iters >= 1 << 30 {
            return iters * 4;
        }
        iters *= 2;
    }
}

/// Times several operations side by side: in each of `rounds` rounds every
/// one takes a sample of about `sample`, in rotated order, so that a noisy
/// neighbour (this machine is shared) slows all of them alike and their
/// ratios hold; ns per call.
fn interleave(ops: &mut [&mut dyn FnMut()], rounds: usize, sample: Duration) -> Vec<Figure> {
    let iters: Vec<u64> = ops.iter_mut().map(|op| calibrate(*op, sample)).collect();
    let mut samples = vec![Vec::with_capacity(rounds); ops.len()];
    for round in 0..rounds {
        for k in 0..ops.len() {
            let i = (k + round) % ops.len();
            let op = &mut ops[i];
            let start = Instant::now();
            for _ in 0..iters[i] {
                op();
            }
            samples[i].push(start.elapsed().as_nanos() as f64 / iters[i] as f64);
        }
    }
    samples.into_iter().map(summarize).collect()
}

/// A named operation for [`bench_interleaved`].
type Op<'a> = (String, Box<dyn FnMut() + 'a>);

/// Rounds of [`bench_interleaved`]: more than `SAMPLES`, as each round is
/// spread over several operations.
const ROUNDS: usize = 21;

/// [`interleave`] over named operations, `ROUNDS` rounds of samples of
/// about `SAMPLE_TIME`.
fn bench_interleaved(ops: &mut [Op<'_>]) -> Vec<Figure> {
    let mut ops: Vec<&mut dyn FnMut()> = ops
        .iter_mut()
        .map(|(_, op)| &mut **op as &mut dyn FnMut())
        .collect();
    interleave(&mut ops, ROUNDS, SAMPLE_TIME)
}

/// Seal and open, HMAC mode and both ciphers, per frame and per batch of
/// `RUN` full frames (printed per frame). The HMAC rows are interleaved
/// with each other; the confidential mode's rows come from
/// [`bench_noise`] (its open needs a new counter each time, so it seals
/// the datagrams it opens, untimed for the open rows), with the Gbit/s of
/// frame one core seals or opens.
fn bench_modes() {
    for (len, n) in SIZES.into_iter().map(|l| (l, 1)).chain([(1432, RUN)]) {
        let label = |what: &str| {
            if n == 1 {
                what.to_string()
            } else {
                format!("{what}, {n} at once")
            }
        };
        let mut ops: Vec<Op> = Vec::new();
        // HMAC mode.
        let codec = Codec::new(KEY);
        let mut batch: Vec<Vec<u8>> = (0..n).map(|_| datagram(&codec, NOW, len)).collect();
        let opened = batch.clone();
        {
            let codec = codec.clone();
            let mut ts = NOW;
            ops.push((
                label("seal hmac-sha256"),
                Box::new(move || {
                    for dg in &mut batch {
                        ts += 1;
                        codec
                            .seal(black_box(ts), black_box(dg))
                            .expect("buffer holds the header");
                    }
                }),
            ));
        }
        ops.push((
            label("open hmac-sha256"),
            Box::new(move || {
                for dg in &opened {
                    assert!(codec.open(black_box(dg)).is_ok());
                }
            }),
        ));
        let figures = bench_interleaved(&mut ops);
        for ((what, _), f) in ops.iter().zip(figures) {
            let per = |x: f64| x / n as f64;
            let f = Figure {
                median: per(f.median),
                min: per(f.min),
                max: per(f.max),
            };
            print(what, Some(len), &f);
        }
        // The confidential mode (Noise transport).
        let batch = if n == 1 { NOISE_BATCH } else { n };
        for (cipher, [seal, open]) in Cipher::ALL.into_iter().zip(bench_noise(len, batch)) {
            print_gbit(&label(&format!("seal {cipher}")), len, &seal);
            print_gbit(&label(&format!("open {cipher}")), len, &open);
        }
    }
}

/// The handshake's CPU per side, both ciphers (the target: at most 1 ms
/// each), and what reading a made-up initiation costs (refused by the
/// first AEAD open: no Diffie-Hellman), which bounds the CPU an
/// initiation flood takes at the keyring's read budget.
fn bench_handshakes() {
    for cipher in Cipher::ALL {
        let (ini, resp) = bench_handshake(cipher);
        print_us(&format!("handshake initiator, {cipher}"), &ini);
        print_us(&format!("handshake responder, {cipher}"), &resp);
    }
    for cipher in Cipher::ALL {
        let mut seed = 1u64;
        let f = bench(|| {
            let d = made_up_initiation(&mut seed);
            let r = handshake::read_initiation(cipher, psk(), None, black_box(&d));
            assert_eq!(r.err(), Some(NoiseError::BadTag));
        });
        print_us(&format!("made-up initiation, {cipher}"), &f);
    }
}

/// One pass over every benched path, checking its result: what
/// `cargo test` runs instead of the timing.
fn smoke() {
    let codec = Codec::new(KEY);
    let src: SocketAddr = "192.0.2.2:9123".parse().expect("literal address");
    let mut rx = Inbound::new(codec.clone(), MAX_AGE_NS, Some(src));
    for (i, len) in SIZES.into_iter().enumerate() {
        let ts = NOW + i as u64;
        let dg = datagram(&codec, ts, len);
        let opened = codec.open(&dg).expect("a sealed datagram opens");
        assert_eq!(opened.frame().len(), len);
        let (verdict, _) = rx.receive(&dg, src, ts);
        assert!(matches!(verdict, Verdict::Frame(f) if f.len() == len));
        let (again, _) = rx.receive(&dg, src, ts);
        assert!(!matches!(again, Verdict::Frame(_)), "a replay is refused");
        let mut forged = dg.clone();
        forged[HEADER_LEN] ^= 1;
        assert!(codec.open(&forged).is_err());
    }
    for cipher in Cipher::ALL {
        // The transport: a batch sealed opens, in order; a replay and a
        // flipped bit are refused.
        let (tx, mut rx) = noise_pair(cipher);
        let dlen = NOISE_OVERHEAD + 1432;
        let mut batch: Vec<u8> = (0..RUN).flat_map(|i| noise_datagram(i, 1432)).collect();
        for d in batch.chunks_exact_mut(dlen) {
            tx.seal(d).expect("room for header and tag");
        }
        let first = batch[..dlen].to_vec();
        for (i, d) in batch.chunks_exact_mut(dlen).enumerate() {
            let o = rx.open(d).expect("a sealed datagram opens");
            assert_eq!(o.frame, NOISE_HEADER_LEN..NOISE_HEADER_LEN + 1432);
            assert_eq!(d[o.frame.start + 1], (i + 1) as u8);
        }
        assert_eq!(rx.open(&mut first.clone()), Err(NoiseError::Replay));
        let mut forged = noise_datagram(0, 64);
        tx.seal(&mut forged).expect("room for header and tag");
        forged[NOISE_HEADER_LEN] ^= 1;
        assert_eq!(rx.open(&mut forged), Err(NoiseError::BadTag));
        // The handshake: both sides agree; a made-up initiation is refused.
        let (i, r, _, _) = handshake_once(cipher, 7);
        assert_eq!((i.send, i.recv, i.remote), (r.recv, r.send, r.local));
        let d = made_up_initiation(&mut 1);
        assert_eq!(
            handshake::read_initiation(cipher, psk(), None, &d).err(),
            Some(NoiseError::BadTag)
        );
    }
    let mut window = ReplayWindow::new();
    assert_eq!(window.accept(NOW + 1), Ok(true));
    assert_eq!(window.accept(NOW), Ok(false));
    assert!(window.accept(NOW).is_err());
    // RFC 1071's worked example: the one's-complement sum of these 8 bytes is 0xddf2.
    let rfc1071 = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
    assert_eq!(offload::csum_fold(offload::csum_add(0, &rfc1071)), 0xddf2);
    let mut copy = [0u8; 8];
    assert_eq!(
        offload::csum_fold(offload::copy_csum(&mut copy, &rfc1071, 0)),
        0xddf2
    );
    assert_eq!(copy, rfc1071);
    // 44 segments coalesce into one super-frame that cuts back into them.
    let run = tcp_run(RUN);
    let mut sup = Vec::new();
    assert_eq!(coalesce(&mut offload::Coalescer::new(), &run, &mut sup), 1);
    let hdr = offload::VnetHdr::parse(&sup).expect("a virtio_net_hdr");
    let mut out = vec![0u8; 100_000];
    let mut spans = Vec::new();
    offload::segment(
        &hdr,
        &sup[offload::VNET_HDR_LEN..],
        1432,
        HEADER_LEN,
        &mut out,
        &mut spans,
    )
    .expect("the super-frame cuts");
    assert_eq!(spans.len(), RUN);
    for (s, f) in spans.iter().zip(&run) {
        assert_eq!(&out[s.start + HEADER_LEN..s.end], &f[..]);
    }
    // A batch of 44 datagrams' worth hashed in lanes: what hmac + sha2 say.
    let keyed = <Hmac<Sha256> as KeyInit>::new_from_slice(KEY).expect("any key length");
    let msgs: Vec<Vec<u8>> = (0..RUN).map(|_| authenticated(1432)).collect();
    let msgs: Vec<&[u8]> = msgs.iter().map(|m| &m[..]).collect();
    let mut tags = [[0u8; 32]; RUN];
    HmacKey::new(KEY).mac_many(&msgs, &mut tags);
    for (m, t) in msgs.iter().zip(&tags) {
        assert_eq!(*t, hmac_one(&keyed, m));
    }
    // The batch paths: the same bytes as one at a time; a GRO run received whole.
    let seg = HEADER_LEN + 1432;
    let spans: Vec<_> = (0..RUN).map(|i| i * seg..(i + 1) * seg).collect();
    let mut one: Vec<u8> = (0..RUN).flat_map(|_| datagram(&codec, NOW, 1432)).collect();
    let mut batch = one.clone();
    for (i, s) in spans.iter().enumerate() {
        codec
            .seal(NOW + i as u64, &mut one[s.clone()])
            .expect("room");
    }
    let mut ts = NOW;
    codec
        .seal_spans(&mut batch, &spans, || {
            let t = ts;
            ts += 1;
            t
        })
        .expect("room");
    assert_eq!(one, batch);
    let mut ok = [false; RUN];
    codec.verify_spans(&batch, &spans, &mut ok);
    assert!(ok.iter().all(|&v| v));
    let mut rx = Inbound::new(codec.clone(), MAX_AGE_NS, Some(src));
    let mut delivered = 0;
    let t = rx.receive_run(
        &mut batch,
        Some(seg),
        Ecn::NotEct,
        src,
        NOW + 100,
        &mut |_| delivered += 1,
    );
    assert_eq!((delivered, t.frames), (RUN, RUN as u64));
    println!(
        "micro: paths checked, nothing timed (run `cargo bench --bench micro` for the figures)"
    );
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--list") {
        // `cargo test -- --list`: there are no tests to list here.
        return;
    }
    if !args.iter().any(|a| a == "--bench") {
        // `cargo bench` passes --bench; anything else (cargo test) gets the check only.
        smoke();
        return;
    }
    let words: Vec<&str> = args
        .iter()
        .filter(|a| !a.starts_with('-'))
        .map(|a| a.as_str())
        .collect();
    let wants = |section: &str| words.is_empty() || words.contains(&section);
    let sha_ni = std::fs::read_to_string("/proc/cpuinfo")
        .map(|s| s.split_whitespace().any(|w| w == "sha_ni"))
        .unwrap_or(false);
    println!(
        "taptun per-frame micro-benchmark, ns per frame (median of {SAMPLES} samples, min, max); CPU sha_ni: {}",
        if sha_ni { "yes" } else { "no" }
    );
    println!(
        "{:<40} {:>6} {:>10} {:>10} {:>10}",
        "operation", "frame", "median", "min", "max"
    );
    let codec = Codec::new(KEY);

    // HMAC-SHA256 of what a datagram's tag covers (timestamp and frame),
    // per frame: one at a time against a batch of RUN in two and in the
    // detected number of lanes.
    let keyed = <Hmac<Sha256> as KeyInit>::new_from_slice(KEY).expect("any key length");
    let lanes = HmacKey::new(KEY);
    let two = lanes.clone().with_impl(Impl::ShaNi2);
    for len in SIZES.into_iter().filter(|_| wants("hmac")) {
        let msgs: Vec<Vec<u8>> = (0..RUN).map(|_| authenticated(len)).collect();
        let msgs: Vec<&[u8]> = msgs.iter().map(|m| &m[..]).collect();
        let mut tags = [[[0u8; 32]; RUN]; 3];
        let [t0, t1, t2] = &mut tags;
        let f = bench_batches(&mut [
            &mut || {
                for (m, t) in msgs.iter().zip(t0.iter_mut()) {
                    *t = hmac_one(&keyed, black_box(m));
                }
                black_box(&t0);
            },
            &mut || {
                two.mac_many(black_box(&msgs), t1);
                black_box(&t1);
            },
            &mut || {
                lanes.mac_many(black_box(&msgs), t2);
                black_box(&t2);
            },
        ]);
        print_rate("HMAC one at a time (hmac+sha2)", len, &f[0], len);
        print_rate(
            &format!("HMAC {RUN} in lanes ({:?})", two.imp()),
            len,
            &f[1],
            len,
        );
        print_rate(
            &format!("HMAC {RUN} in lanes ({:?})", lanes.imp()),
            len,
            &f[2],
            len,
        );
        println!(
            "{:<34} {len:>6} {:>9.2}x {:>9.2}x",
            "  lanes speedup (medians)",
            f[0].median / f[1].median,
            f[0].median / f[2].median
        );
    }

    for len in SIZES.into_iter().filter(|_| wants("seal")) {
        let mut buf = datagram(&codec, NOW, len);
        let mut ts = NOW;
        let f = bench(|| {
            ts += 1;
            codec
                .seal(black_box(ts), black_box(&mut buf))
                .expect("buffer holds the header");
        });
        print("encode (Codec::seal)", Some(len), &f);
    }

    for len in SIZES.into_iter().filter(|_| wants("open")) {
        let dg = datagram(&codec, NOW, len);
        let f = bench(|| {
            let ok = codec.open(black_box(&dg)).is_ok();
            black_box(ok);
        });
        print("decode+verify (Codec::open)", Some(len), &f);
    }

    for len in SIZES.into_iter().filter(|_| wants("forged")) {
        let mut dg = datagram(&codec, NOW, len);
        dg[HEADER_LEN] ^= 1;
        let f = bench(|| {
            let ok = codec.open(black_box(&dg)).is_ok();
            assert!(!black_box(ok));
        });
        print("reject forged (Codec::open)", Some(len), &f);
    }

    // The window does not look at the frame, so one figure per pattern.
    if wants("replay") {
        let mut window = ReplayWindow::new();
        let mut ts = NOW;
        let f = bench(|| {
            ts += 1;
            black_box(window.accept(black_box(ts))).expect("newer timestamp");
        });
        print("replay check, in order", None, &f);

        // Pairs swapped (2, 1, 4, 3, ...): every second one is an older, unseen timestamp.
        let mut window = ReplayWindow::new();
        let mut n = NOW;
        let mut odd = false;
        let f = bench(|| {
            let ts = if odd { n } else { n + 1 };
            if odd {
                n += 2;
            }
            odd = !odd;
            black_box(window.accept(black_box(ts))).expect("unseen timestamp");
        });
        print("replay check, pairs swapped", None, &f);
    }

    // What verifying a TCP/UDP checksum costs before a frame may join a
    // coalesced run.
    for len in SIZES.into_iter().filter(|_| wants("checksum")) {
        let frame: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
        let f = bench(|| {
            black_box(offload::csum_fold(offload::csum_add(0, black_box(&frame))));
        });
        print("checksum (offload::csum_add)", Some(len), &f);
    }
    // What segmenting and coalescing do to each payload: copy and sum it,
    // in two passes or in one (offload::copy_csum), interleaved.
    for len in SIZES.into_iter().filter(|_| wants("checksum")) {
        let frame: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
        let (mut a, mut b) = (vec![0u8; len], vec![0u8; len]);
        let f = interleave(
            &mut [
                &mut || {
                    a.copy_from_slice(black_box(&frame));
                    black_box(offload::csum_add(0, &frame));
                    black_box(&a);
                },
                &mut || {
                    black_box(offload::copy_csum(&mut b, black_box(&frame), 0));
                    black_box(&b);
                },
            ],
            ROUNDS,
            SAMPLE_TIME,
        );
        print("copy, then csum_add", Some(len), &f[0]);
        print("copy_csum (one pass)", Some(len), &f[1]);
    }

    // The offload paths, per 1432-byte frame: a run of 44 segments of one
    // flow coalesced into one super-frame, and that super-frame cut back.
    if wants("offload") {
        let run = tcp_run(RUN);
        let mut co = offload::Coalescer::new();
        let mut sup = Vec::with_capacity(70_000);
        let f = bench(|| {
            black_box(coalesce(&mut co, black_box(&run), &mut sup));
        });
        print_per(&format!("coalesce {RUN} TCP segments"), &f);
        let hdr = offload::VnetHdr::parse(&sup).expect("a virtio_net_hdr");
        let mut out = vec![0u8; 100_000];
        let mut spans = Vec::with_capacity(64);
        let f = bench(|| {
            offload::segment(
                &hdr,
                black_box(&sup[offload::VNET_HDR_LEN..]),
                1432,
                HEADER_LEN,
                &mut out,
                &mut spans,
            )
            .expect("the super-frame cuts");
        });
        print_per(&format!("segment into {RUN} TCP frames"), &f);
    }

    // ECN (RFC 6040), per frame: reading a frame's ECN for its outer
    // header on send (ecn::of_frame), and on receive decapsulating an outer
    // Not-ECT (the common case: returns before parsing) and an outer CE
    // onto an ECT(0) IPv4 frame (marked CE, checksum updated, then set
    // back to ECT(0) outside the figure's concern: the same work twice).
    if wants("ecn") {
        let mut f = tcp_run(1).remove(0);
        taptun::offload::headers::Ipv4Packet::new_unchecked(&mut f[14..]).set_ecn(Ecn::Ect0.bits());
        let fig = bench(|| {
            black_box(taptun::ecn::of_frame(black_box(&f)));
        });
        print("ecn::of_frame (IPv4 TCP)", Some(f.len()), &fig);
        let fig = bench(|| {
            black_box(taptun::ecn::decapsulate(Ecn::NotEct, black_box(&mut f))).ok();
        });
        print("ecn::decapsulate, outer Not-ECT", Some(f.len()), &fig);
        let fig = bench(|| {
            black_box(taptun::ecn::decapsulate(Ecn::Ce, black_box(&mut f))).ok();
            taptun::offload::headers::Ipv4Packet::new_unchecked(&mut f[14..])
                .set_ecn(Ecn::Ect0.bits());
        });
        print("ecn::decapsulate, outer CE (+ reset)", Some(f.len()), &fig);
    }

    if wants("modes") {
        bench_modes();
    }

    if wants("handshake") {
        bench_handshakes();
    }

    for len in SIZES.into_iter().filter(|_| wants("receive")) {
        print(
            "full receive (rx::Inbound::receive)",
            Some(len),
            &bench_receive(&codec, len),
        );
    }

    // What lanes change on the two paths, per frame of a batch of RUN:
    // sealing (Outbound::seal) and receiving a GRO run (Inbound::receive_run),
    // each against the datagram-at-a-time code it replaced.
    for len in SIZES.into_iter().filter(|_| wants("batch")) {
        let mut out: Vec<u8> = (0..RUN).flat_map(|_| datagram(&codec, NOW, len)).collect();
        let seg = HEADER_LEN + len;
        let spans: Vec<_> = (0..RUN).map(|i| i * seg..(i + 1) * seg).collect();
        let (mut ts1, mut ts2) = (NOW, NOW);
        let mut out2 = out.clone();
        let f = bench_batches(&mut [
            &mut || {
                for s in &spans {
                    ts1 += 1;
                    codec
                        .seal(ts1, black_box(&mut out[s.clone()]))
                        .expect("room for the header");
                }
            },
            &mut || {
                codec
                    .seal_spans(black_box(&mut out2), &spans, || {
                        ts2 += 1;
                        ts2
                    })
                    .expect("room for the headers");
            },
        ]);
        print(
            &format!("seal {RUN}, one by one (Codec::seal)"),
            Some(len),
            &f[0],
        );
        print(
            &format!("seal {RUN} in lanes (seal_spans)"),
            Some(len),
            &f[1],
        );
        let mut ok = [false; RUN];
        let f = bench_batches(&mut [
            &mut || {
                for s in &spans {
                    black_box(codec.open(black_box(&out2[s.clone()])).is_ok());
                }
            },
            &mut || {
                codec.verify_spans(black_box(&out2), &spans, &mut ok);
                assert!(black_box(ok).iter().all(|&v| v));
            },
        ]);
        print(
            &format!("verify {RUN}, one by one (Codec::open)"),
            Some(len),
            &f[0],
        );
        print(
            &format!("verify {RUN} in lanes (verify_spans)"),
            Some(len),
            &f[1],
        );
        let (whole, singly) = bench_receive_run(&codec, len);
        print(
            &format!("receive {RUN}, one by one (receive)"),
            Some(len),
            &singly,
        );
        print(
            &format!("receive GRO run of {RUN} (receive_run)"),
            Some(len),
            &whole,
        );
    }
}
