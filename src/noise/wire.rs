//! The confidential mode's three datagrams, as views over bytes (after
//! smoltcp's `wire`): `new_checked` refuses what is too short, accessors
//! read the fields, `mod field` says where they lie. See
//! `docs/protocol.md` (Confidential mode) for the layout.

use super::NoiseError;
use std::ops::Range;

/// The first byte of an initiation.
pub const INITIATION: u8 = 1;
/// The first byte of a response.
pub const RESPONSE: u8 = 2;
/// The first byte of a transport datagram.
pub const TRANSPORT: u8 = 4;

/// Noise's first message: an ephemeral key and the encrypted sender index.
pub const NOISE1_LEN: usize = 32 + 4 + TAG_LEN;
/// Noise's second message: the same shape.
pub const NOISE2_LEN: usize = 32 + 4 + TAG_LEN;
/// An initiation: type, reserved, Noise message 1.
pub const INITIATION_LEN: usize = 4 + NOISE1_LEN;
/// A response: type, reserved, receiver index, Noise message 2.
pub const RESPONSE_LEN: usize = 8 + NOISE2_LEN;
/// A transport datagram's header (also its AAD).
pub const HEADER_LEN: usize = 16;
/// The AEAD tag after the frame.
pub const TAG_LEN: usize = 16;
/// What a transport datagram adds to its frame.
pub const OVERHEAD: usize = HEADER_LEN + TAG_LEN;

mod field {
    use std::ops::Range;
    pub const TYPE: usize = 0;
    pub const NOISE1: Range<usize> = 4..super::INITIATION_LEN;
    pub const RECEIVER: Range<usize> = 4..8;
    pub const NOISE2: Range<usize> = 8..super::RESPONSE_LEN;
    pub const COUNTER: Range<usize> = 8..16;
}

/// What a datagram says it is, by its first byte and length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A handshake initiation ([`INITIATION_LEN`] bytes).
    Initiation,
    /// A handshake response ([`RESPONSE_LEN`] bytes).
    Response,
    /// A transport datagram (at least [`OVERHEAD`] bytes).
    Transport,
    /// None of these (maybe another mode's datagram).
    Other,
}

/// The kind of `dg`: the type byte, the three reserved ones zero, and the
/// length the type has.
pub fn kind(dg: &[u8]) -> Kind {
    if dg.len() < 4 || dg[1..4] != [0, 0, 0] {
        return Kind::Other;
    }
    match (dg[field::TYPE], dg.len()) {
        (INITIATION, INITIATION_LEN) => Kind::Initiation,
        (RESPONSE, RESPONSE_LEN) => Kind::Response,
        (TRANSPORT, n) if n >= OVERHEAD => Kind::Transport,
        _ => Kind::Other,
    }
}

fn read_u32(b: &[u8], r: Range<usize>) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[r]);
    u32::from_be_bytes(a)
}

/// An initiation.
#[derive(Debug, Clone, Copy)]
pub struct Initiation<T: AsRef<[u8]>>(T);

impl<T: AsRef<[u8]>> Initiation<T> {
    /// `buf` as an initiation, if it is one.
    pub fn new_checked(buf: T) -> Result<Self, NoiseError> {
        match kind(buf.as_ref()) {
            Kind::Initiation => Ok(Initiation(buf)),
            _ => Err(NoiseError::Malformed),
        }
    }

    /// Noise message 1.
    pub fn noise(&self) -> &[u8] {
        &self.0.as_ref()[field::NOISE1]
    }

    /// The initiator's ephemeral public key (the first 32 bytes of Noise's
    /// message): what tells two initiations apart.
    pub fn ephemeral(&self) -> [u8; 32] {
        let mut e = [0u8; 32];
        e.copy_from_slice(&self.noise()[..32]);
        e
    }
}

/// Writes an initiation's header into `buf` (whose bytes 4.. hold Noise
/// message 1).
pub fn initiation_header(buf: &mut [u8; INITIATION_LEN]) {
    buf[..4].copy_from_slice(&[INITIATION, 0, 0, 0]);
}

/// A response.
#[derive(Debug, Clone, Copy)]
pub struct Response<T: AsRef<[u8]>>(T);

impl<T: AsRef<[u8]>> Response<T> {
    /// `buf` as a response, if it is one.
    pub fn new_checked(buf: T) -> Result<Self, NoiseError> {
        match kind(buf.as_ref()) {
            Kind::Response => Ok(Response(buf)),
            _ => Err(NoiseError::Malformed),
        }
    }

    /// The initiator's index, which it chose.
    pub fn receiver(&self) -> u32 {
        read_u32(self.0.as_ref(), field::RECEIVER)
    }

    /// Noise message 2.
    pub fn noise(&self) -> &[u8] {
        &self.0.as_ref()[field::NOISE2]
    }
}

/// Writes a response's header into `buf` (whose bytes 8.. hold Noise
/// message 2).
pub fn response_header(buf: &mut [u8; RESPONSE_LEN], receiver: u32) {
    buf[..4].copy_from_slice(&[RESPONSE, 0, 0, 0]);
    buf[field::RECEIVER].copy_from_slice(&receiver.to_be_bytes());
}

/// A transport datagram.
#[derive(Debug, Clone, Copy)]
pub struct Transport<T: AsRef<[u8]>>(T);

impl<T: AsRef<[u8]>> Transport<T> {
    /// `buf` as a transport datagram, if it is one.
    pub fn new_checked(buf: T) -> Result<Self, NoiseError> {
        match kind(buf.as_ref()) {
            Kind::Transport => Ok(Transport(buf)),
            _ => Err(NoiseError::Malformed),
        }
    }

    /// The index the receiver chose for the session.
    pub fn receiver(&self) -> u32 {
        read_u32(self.0.as_ref(), field::RECEIVER)
    }

    /// The counter (the nonce).
    pub fn counter(&self) -> u64 {
        let mut a = [0u8; 8];
        a.copy_from_slice(&self.0.as_ref()[field::COUNTER]);
        u64::from_be_bytes(a)
    }

    /// Where the frame is (encrypted before opening, plain after).
    pub fn frame_range(&self) -> Range<usize> {
        HEADER_LEN..self.0.as_ref().len() - TAG_LEN
    }
}

/// The receiver index of a transport datagram, read without checking the
/// rest (the hub's demultiplexer looks before it knows the spoke).
pub fn transport_receiver(dg: &[u8]) -> Option<u32> {
    Transport::new_checked(dg).ok().map(|t| t.receiver())
}

/// Writes a transport header into `buf[..HEADER_LEN]`.
pub fn transport_header(buf: &mut [u8], receiver: u32, counter: u64) {
    buf[..4].copy_from_slice(&[TRANSPORT, 0, 0, 0]);
    buf[field::RECEIVER].copy_from_slice(&receiver.to_be_bytes());
    buf[field::COUNTER].copy_from_slice(&counter.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_by_type_reserved_and_length() {
        let mut i = [0u8; INITIATION_LEN];
        initiation_header(&mut i);
        assert_eq!(kind(&i), Kind::Initiation);
        assert_eq!(kind(&i[..INITIATION_LEN - 1]), Kind::Other);
        let mut r = [0u8; RESPONSE_LEN];
        response_header(&mut r, 0xdead_beef);
        assert_eq!(kind(&r), Kind::Response);
        assert_eq!(
            Response::new_checked(&r[..]).unwrap().receiver(),
            0xdead_beef
        );
        let mut t = [0u8; OVERHEAD + 5];
        transport_header(&mut t, 7, 0x0102_0304_0506_0708);
        assert_eq!(kind(&t), Kind::Transport);
        let v = Transport::new_checked(&t[..]).unwrap();
        assert_eq!((v.receiver(), v.counter()), (7, 0x0102_0304_0506_0708));
        assert_eq!(v.frame_range(), 16..21);
        assert_eq!(kind(&t[..OVERHEAD - 1]), Kind::Other);
        t[2] = 1;
        assert_eq!(kind(&t), Kind::Other, "reserved bytes must be zero");
        assert_eq!(kind(&[]), Kind::Other);
        assert_eq!(kind(&[3, 0, 0, 0, 0]), Kind::Other);
    }
}
