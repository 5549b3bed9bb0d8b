//! The tinytaptunnel v1.4 datagram format, with no I/O.
//!
//! `datagram = HMAC-SHA256(key, ts ‖ frame) ‖ ts ‖ frame`, where `ts` is the
//! sender's wall clock in UNIX nanoseconds, big-endian. A datagram with an
//! empty frame (40 bytes) is a keepalive, a taptun extension.

use crate::lanes::HmacKey;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use std::fmt;
use std::ops::{Range, RangeFrom};

/// Length of the HMAC-SHA256 tag at the start of a datagram.
pub const MAC_LEN: usize = 32;
/// Length of the big-endian nanosecond timestamp after the tag.
pub const TS_LEN: usize = 8;
/// Bytes in front of the Ethernet frame: tag and timestamp.
pub const HEADER_LEN: usize = MAC_LEN + TS_LEN;

mod field {
    use super::*;
    pub const MAC: Range<usize> = 0..MAC_LEN;
    pub const TS: Range<usize> = MAC_LEN..HEADER_LEN;
    pub const FRAME: RangeFrom<usize> = HEADER_LEN..;
}

/// Why a datagram was rejected by the codec or the freshness check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireError {
    /// Fewer than [`HEADER_LEN`] bytes.
    TooShort(usize),
    /// The tag does not authenticate timestamp and frame under our key.
    BadMac,
    /// The timestamp is older than the maximum age.
    Stale,
    /// The timestamp is further in the future than the maximum age.
    Future,
    /// The output buffer cannot hold header and frame.
    BufferTooSmall,
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WireError::TooShort(n) => write!(
                f,
                "datagram of {n} bytes is shorter than the {HEADER_LEN}-byte header"
            ),
            WireError::BadMac => f.write_str("HMAC does not match (wrong key or altered datagram)"),
            WireError::Stale => f.write_str("timestamp older than the maximum age"),
            WireError::Future => {
                f.write_str("timestamp further in the future than the maximum age")
            }
            WireError::BufferTooSmall => f.write_str("buffer too small for header and frame"),
        }
    }
}

impl std::error::Error for WireError {}

/// A read-only (or, for `AsMut` buffers, writable) view of a datagram.
#[derive(Debug, Clone)]
pub struct Datagram<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Datagram<T> {
    /// Wraps a buffer without checking its length; accessors may panic on short buffers.
    pub fn new_unchecked(buffer: T) -> Self {
        Datagram { buffer }
    }

    /// Wraps a buffer that is at least [`HEADER_LEN`] bytes long.
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let len = buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(WireError::TooShort(len));
        }
        Ok(Datagram { buffer })
    }

    /// The authentication tag.
    pub fn mac(&self) -> &[u8] {
        &self.buffer.as_ref()[field::MAC]
    }

    /// The sender's timestamp in UNIX nanoseconds.
    pub fn timestamp(&self) -> u64 {
        let mut ts = [0u8; TS_LEN];
        ts.copy_from_slice(&self.buffer.as_ref()[field::TS]);
        u64::from_be_bytes(ts)
    }

    /// The authenticated part: timestamp and frame.
    pub fn authenticated(&self) -> &[u8] {
        &self.buffer.as_ref()[MAC_LEN..]
    }

    /// The Ethernet frame (empty for a keepalive).
    pub fn frame(&self) -> &[u8] {
        &self.buffer.as_ref()[field::FRAME]
    }

    /// Gives the buffer back.
    pub fn into_inner(self) -> T {
        self.buffer
    }
}

impl<'a> Datagram<&'a [u8]> {
    /// The frame, borrowed from the underlying buffer rather than the view.
    pub fn into_frame(self) -> &'a [u8] {
        &self.buffer[field::FRAME]
    }
}

/// Seals and opens datagrams under one key.
///
/// The keyed HMAC state is computed once here and cloned per datagram, so
/// the per-frame cost is the hash alone; batches of datagrams are sealed
/// and checked in parallel lanes ([`crate::lanes`]), from keyed states
/// also computed once.
#[derive(Clone)]
pub struct Codec {
    keyed: Hmac<Sha256>,
    lanes: HmacKey,
}

impl fmt::Debug for Codec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Codec { key: <hidden> }")
    }
}

impl Codec {
    /// Keys a codec; HMAC takes keys of any length.
    pub fn new(key: &[u8]) -> Self {
        // HMAC accepts every key length, so this cannot fail; keep a safe fallback anyway.
        let keyed = <Hmac<Sha256> as KeyInit>::new_from_slice(key).unwrap_or_else(|_| {
            <Hmac<Sha256> as KeyInit>::new_from_slice(&[]).expect("empty HMAC key")
        });
        Codec {
            keyed,
            lanes: HmacKey::new(key),
        }
    }

    /// Seals in place: `buf[HEADER_LEN..]` holds the frame already; writes
    /// the timestamp and tag into `buf[..HEADER_LEN]`.
    pub fn seal(&self, ts: u64, buf: &mut [u8]) -> Result<(), WireError> {
        if buf.len() < HEADER_LEN {
            return Err(WireError::BufferTooSmall);
        }
        buf[field::TS].copy_from_slice(&ts.to_be_bytes());
        let mut mac = self.keyed.clone();
        mac.update(&buf[MAC_LEN..]);
        buf[field::MAC].copy_from_slice(&mac.finalize().into_bytes());
        Ok(())
    }

    /// Seals in place every datagram at `spans` of `buf`, in order, each
    /// at the timestamp `ts()` gives, as [`Codec::seal`] would; the tags
    /// are computed in lanes. Each span holds its frame already. Nothing is
    /// written unless every span has room for the header.
    pub fn seal_spans(
        &self,
        buf: &mut [u8],
        spans: &[Range<usize>],
        mut ts: impl FnMut() -> u64,
    ) -> Result<(), WireError> {
        if spans.iter().any(|s| s.len() < HEADER_LEN) {
            return Err(WireError::BufferTooSmall);
        }
        for s in spans {
            buf[s.start..s.end][field::TS].copy_from_slice(&ts().to_be_bytes());
        }
        self.lanes.seal_spans(buf, spans);
        Ok(())
    }

    /// Checks the tags of the datagrams at `spans` of `buf` in lanes (each
    /// in constant time): `ok[i]` is whether datagram `i` is at least
    /// [`HEADER_LEN`] bytes long and authentic, i.e. whether
    /// [`Codec::open`] would accept it.
    ///
    /// # Panics
    /// If `ok` is shorter than `spans`, or a span is not in `buf`.
    pub fn verify_spans(&self, buf: &[u8], spans: &[Range<usize>], ok: &mut [bool]) {
        self.lanes.verify_spans(buf, spans, ok);
        for (v, s) in ok.iter_mut().zip(spans) {
            *v &= s.len() >= HEADER_LEN;
        }
    }

    /// Encodes `frame` at `ts` into `out`, returning the datagram length.
    pub fn encode(&self, ts: u64, frame: &[u8], out: &mut [u8]) -> Result<usize, WireError> {
        let len = HEADER_LEN + frame.len();
        let dst = out.get_mut(..len).ok_or(WireError::BufferTooSmall)?;
        dst[field::FRAME].copy_from_slice(frame);
        self.seal(ts, dst)?;
        Ok(len)
    }

    /// Checks length and tag (in constant time); returns the authenticated view.
    pub fn open<'a>(&self, datagram: &'a [u8]) -> Result<Datagram<&'a [u8]>, WireError> {
        let dg = Datagram::new_checked(datagram)?;
        let mut mac = self.keyed.clone();
        mac.update(dg.authenticated());
        mac.verify_slice(dg.mac()).map_err(|_| WireError::BadMac)?;
        Ok(dg)
    }
}

/// Rejects a timestamp more than `max_age_ns` away from `now_ns`, either way.
pub fn check_freshness(ts_ns: u64, now_ns: u64, max_age_ns: u64) -> Result<(), WireError> {
    if ts_ns <= now_ns {
        if now_ns - ts_ns > max_age_ns {
            return Err(WireError::Stale);
        }
    } else if ts_ns - now_ns > max_age_ns {
        return Err(WireError::Future);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &[u8] = b"0123456789abcdef0123456789abcdef";

    #[test]
    fn roundtrip_and_tamper() {
        let codec = Codec::new(KEY);
        let mut buf = [0u8; 128];
        let n = codec.encode(42, b"hello frame", &mut buf).unwrap();
        assert_eq!(n, HEADER_LEN + 11);
        let dg = codec.open(&buf[..n]).unwrap();
        assert_eq!(dg.timestamp(), 42);
        assert_eq!(dg.frame(), b"hello frame");
        for i in 0..n {
            let mut bad = buf;
            bad[i] ^= 0x01;
            assert_eq!(
                codec.open(&bad[..n]).unwrap_err(),
                WireError::BadMac,
                "byte {i}"
            );
        }
        assert_eq!(codec.open(&buf[..n - 1]).unwrap_err(), WireError::BadMac);
        assert_eq!(codec.open(&buf[..39]).unwrap_err(), WireError::TooShort(39));
        assert!(Codec::new(b"other key").open(&buf[..n]).is_err());
    }

    #[test]
    fn batches_agree_with_one_at_a_time() {
        let codec = Codec::new(KEY);
        let mut buf = vec![0u8; 8000];
        let mut spans = Vec::new();
        let mut at = 0;
        for (i, len) in [0usize, 1, 24, 60, 1432, 100, 9].into_iter().enumerate() {
            let frame: Vec<u8> = (0..len).map(|j| (i * 31 + j) as u8).collect();
            let n = HEADER_LEN + len;
            buf[at + HEADER_LEN..at + n].copy_from_slice(&frame);
            spans.push(at..at + n);
            at += n + i;
        }
        let mut ts = 6;
        codec
            .seal_spans(&mut buf, &spans, || {
                ts += 1;
                ts
            })
            .unwrap();
        let mut one = buf.clone();
        for (i, s) in spans.iter().enumerate() {
            codec.seal(7 + i as u64, &mut one[s.clone()]).unwrap();
        }
        assert_eq!(buf, one, "the same bytes on the wire");
        // Forge one, add a short one.
        buf[spans[3].start + HEADER_LEN] ^= 1;
        spans.push(0..HEADER_LEN - 1);
        let mut ok = [false; 8];
        codec.verify_spans(&buf, &spans, &mut ok);
        for (s, v) in spans.iter().zip(ok) {
            assert_eq!(v, codec.open(&buf[s.clone()]).is_ok());
        }
        assert_eq!(ok, [true, true, true, false, true, true, true, false]);
        let mut small = [0u8; 64];
        assert_eq!(
            codec.seal_spans(&mut small, &[0..40, 40..60], || 1),
            Err(WireError::BufferTooSmall)
        );
        assert_eq!(small, [0u8; 64], "nothing written");
    }

    #[test]
    fn encode_needs_room() {
        let codec = Codec::new(KEY);
        let mut small = [0u8; HEADER_LEN + 3];
        assert_eq!(
            codec.encode(1, b"four", &mut small),
            Err(WireError::BufferTooSmall)
        );
        assert_eq!(codec.encode(1, b"", &mut small), Ok(HEADER_LEN));
    }

    #[test]
    fn freshness_edges() {
        let now = 10_000_000_000;
        let age = 3_000_000_000;
        assert_eq!(check_freshness(now, now, age), Ok(()));
        assert_eq!(check_freshness(now - age, now, age), Ok(()));
        assert_eq!(
            check_freshness(now - age - 1, now, age),
            Err(WireError::Stale)
        );
        assert_eq!(check_freshness(now + age, now, age), Ok(()));
        assert_eq!(
            check_freshness(now + age + 1, now, age),
            Err(WireError::Future)
        );
        assert_eq!(check_freshness(0, now, age), Err(WireError::Stale));
        assert_eq!(check_freshness(u64::MAX, now, age), Err(WireError::Future));
        assert_eq!(check_freshness(u64::MAX, u64::MAX, 0), Ok(()));
    }
}
