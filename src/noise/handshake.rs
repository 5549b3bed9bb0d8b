//! The handshake's two messages, run by `snow`: Noise NNpsk0 with the key
//! file as the pre-shared key and a fresh X25519 ephemeral on each side.
//! Each message carries its sender's session index, encrypted; what comes
//! out is the session's two transport keys ([`Established`]).

use super::NoiseError;
use super::wire::{self, INITIATION_LEN, Initiation, RESPONSE_LEN, Response};
use crate::aead::Cipher;
use snow::params::NoiseParams;
use snow::{Builder, HandshakeState};
use std::fmt;
use std::sync::OnceLock;

/// Bound into every handshake (Noise's prologue): the protocol and its version.
pub const PROLOGUE: &[u8] = b"taptun v2";

/// The Noise protocol name for `cipher`.
pub fn protocol_name(cipher: Cipher) -> &'static str {
    match cipher {
        Cipher::Aes256Gcm => "Noise_NNpsk0_25519_AESGCM_SHA256",
        Cipher::ChaCha20Poly1305 => "Noise_NNpsk0_25519_ChaChaPoly_BLAKE2s",
    }
}

fn params(cipher: Cipher) -> NoiseParams {
    static AES: OnceLock<NoiseParams> = OnceLock::new();
    static CHACHA: OnceLock<NoiseParams> = OnceLock::new();
    let cell = match cipher {
        Cipher::Aes256Gcm => &AES,
        Cipher::ChaCha20Poly1305 => &CHACHA,
    };
    cell.get_or_init(|| {
        protocol_name(cipher)
            .parse()
            .expect("a protocol name snow knows")
    })
    .clone()
}

fn builder<'a>(
    cipher: Cipher,
    psk: &'a [u8; 32],
    ephemeral: Option<&'a [u8; 32]>,
) -> Result<Builder<'a>, NoiseError> {
    let b = Builder::new(params(cipher))
        .psk(0, psk)
        .and_then(|b| b.prologue(PROLOGUE))
        .map_err(|_| NoiseError::Internal)?;
    Ok(match ephemeral {
        // Fixed ephemerals: the test vectors only.
        Some(e) => b.fixed_ephemeral_key_for_testing_only(e),
        None => b,
    })
}

/// A session the handshake established, from one side's view.
#[derive(Clone, PartialEq, Eq)]
pub struct Established {
    /// This side's index (datagrams to us name it).
    pub local: u32,
    /// The peer's index (datagrams we send name it).
    pub remote: u32,
    /// The key this side seals with.
    pub send: [u8; 32],
    /// The key this side opens with.
    pub recv: [u8; 32],
    /// Whether this side sent the initiation.
    pub initiator: bool,
}

impl fmt::Debug for Established {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the keys.
        f.debug_struct("Established")
            .field("local", &format_args!("{:08x}", self.local))
            .field("remote", &format_args!("{:08x}", self.remote))
            .field("initiator", &self.initiator)
            .finish_non_exhaustive()
    }
}

/// An initiation sent and not answered yet: what reading the response needs.
pub struct Pending {
    /// The index it named.
    pub index: u32,
    /// Its ephemeral public key (ties between crossing initiations).
    pub ephemeral: [u8; 32],
    state: HandshakeState,
}

impl fmt::Debug for Pending {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pending")
            .field("index", &format_args!("{:08x}", self.index))
            .finish_non_exhaustive()
    }
}

fn index_from(payload: &[u8], n: usize) -> Result<u32, NoiseError> {
    match payload.get(..n) {
        Some(&[a, b, c, d]) => Ok(u32::from_be_bytes([a, b, c, d])),
        _ => Err(NoiseError::Malformed),
    }
}

/// Writes an initiation naming `index` into `out`. `ephemeral`: a fixed
/// ephemeral private key (test vectors); `None` draws one.
pub fn initiate(
    cipher: Cipher,
    psk: &[u8; 32],
    index: u32,
    ephemeral: Option<&[u8; 32]>,
    out: &mut [u8; INITIATION_LEN],
) -> Result<Pending, NoiseError> {
    let mut state = builder(cipher, psk, ephemeral)?
        .build_initiator()
        .map_err(|_| NoiseError::Internal)?;
    wire::initiation_header(out);
    let n = state
        .write_message(&index.to_be_bytes(), &mut out[4..])
        .map_err(|_| NoiseError::Internal)?;
    debug_assert_eq!(n + 4, INITIATION_LEN);
    let ephemeral = Initiation::new_checked(&out[..])?.ephemeral();
    Ok(Pending {
        index,
        ephemeral,
        state,
    })
}

/// An initiation read by a responder: its sender's index and the state
/// that writes the response.
pub struct Read {
    /// The initiator's index.
    pub remote: u32,
    /// The initiator's ephemeral public key.
    pub ephemeral: [u8; 32],
    state: HandshakeState,
}

impl fmt::Debug for Read {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Read")
            .field("remote", &format_args!("{:08x}", self.remote))
            .finish_non_exhaustive()
    }
}

/// Reads an initiation: fails unless it was made under `psk` and `cipher`
/// (one key derivation and one AEAD open: no Diffie-Hellman yet, so a
/// made-up initiation costs little).
pub fn read_initiation(
    cipher: Cipher,
    psk: &[u8; 32],
    ephemeral: Option<&[u8; 32]>,
    dg: &[u8],
) -> Result<Read, NoiseError> {
    let init = Initiation::new_checked(dg)?;
    let mut state = builder(cipher, psk, ephemeral)?
        .build_responder()
        .map_err(|_| NoiseError::Internal)?;
    let mut payload = [0u8; 8];
    let n = state
        .read_message(init.noise(), &mut payload)
        .map_err(|_| NoiseError::BadTag)?;
    Ok(Read {
        remote: index_from(&payload, n)?,
        ephemeral: init.ephemeral(),
        state,
    })
}

/// Answers a read initiation with a response naming this side's `index`
/// (one X25519 key generation and one Diffie-Hellman).
pub fn respond(
    mut read: Read,
    index: u32,
    out: &mut [u8; RESPONSE_LEN],
) -> Result<Established, NoiseError> {
    wire::response_header(out, read.remote);
    let n = read
        .state
        .write_message(&index.to_be_bytes(), &mut out[8..])
        .map_err(|_| NoiseError::Internal)?;
    debug_assert_eq!(n + 8, RESPONSE_LEN);
    let (i2r, r2i) = read.state.dangerously_get_raw_split();
    Ok(Established {
        local: index,
        remote: read.remote,
        send: r2i,
        recv: i2r,
        initiator: false,
    })
}

/// Reads the response to `pending`: the session, as its initiator sees it.
pub fn finish(mut pending: Pending, dg: &[u8]) -> Result<Established, NoiseError> {
    let resp = Response::new_checked(dg)?;
    if resp.receiver() != pending.index {
        return Err(NoiseError::UnknownIndex);
    }
    let mut payload = [0u8; 8];
    let n = pending
        .state
        .read_message(resp.noise(), &mut payload)
        .map_err(|_| NoiseError::BadTag)?;
    let remote = index_from(&payload, n)?;
    let (i2r, r2i) = pending.state.dangerously_get_raw_split();
    Ok(Established {
        local: pending.index,
        remote,
        send: i2r,
        recv: r2i,
        initiator: true,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PSK: [u8; 32] = [0x42; 32];

    #[test]
    fn both_sides_agree_and_a_wrong_key_or_cipher_fails() {
        for c in Cipher::ALL {
            let mut m1 = [0u8; INITIATION_LEN];
            let p = initiate(c, &PSK, 0x1111_2222, None, &mut m1).unwrap();
            let read = read_initiation(c, &PSK, None, &m1).unwrap();
            assert_eq!(read.remote, 0x1111_2222);
            let mut m2 = [0u8; RESPONSE_LEN];
            let r = respond(read, 0x3333_4444, &mut m2).unwrap();
            let i = finish(p, &m2).unwrap();
            assert_eq!((i.local, i.remote), (0x1111_2222, 0x3333_4444));
            assert_eq!((r.local, r.remote), (0x3333_4444, 0x1111_2222));
            assert_eq!((i.send, i.recv), (r.recv, r.send));
            assert_ne!(i.send, i.recv);
            assert!(i.initiator && !r.initiator);
            // Another key file, or the other cipher: refused at once.
            assert_eq!(
                read_initiation(c, &[0x43; 32], None, &m1).unwrap_err(),
                NoiseError::BadTag
            );
            let other = Cipher::ALL.into_iter().find(|&o| o != c).unwrap();
            assert!(read_initiation(other, &PSK, None, &m1).is_err());
            // A flipped bit anywhere in message 1.
            for i in 4..INITIATION_LEN {
                let mut bad = m1;
                bad[i] ^= 0x10;
                assert!(read_initiation(c, &PSK, None, &bad).is_err(), "byte {i}");
            }
        }
    }

    #[test]
    fn a_response_fits_only_its_own_initiation() {
        let c = Cipher::Aes256Gcm;
        let mut m1 = [0u8; INITIATION_LEN];
        let p1 = initiate(c, &PSK, 1, None, &mut m1).unwrap();
        let mut other = [0u8; INITIATION_LEN];
        let p2 = initiate(c, &PSK, 1, None, &mut other).unwrap();
        let mut m2 = [0u8; RESPONSE_LEN];
        respond(read_initiation(c, &PSK, None, &m1).unwrap(), 9, &mut m2).unwrap();
        // Same index, another ephemeral: the response does not open.
        assert_eq!(finish(p2, &m2).unwrap_err(), NoiseError::BadTag);
        let mut flipped = m2;
        flipped[RESPONSE_LEN - 1] ^= 1;
        let p1b = initiate(c, &PSK, 2, None, &mut m1).unwrap();
        assert_eq!(finish(p1b, &m2).unwrap_err(), NoiseError::UnknownIndex);
        assert_eq!(finish(p1, &flipped).unwrap_err(), NoiseError::BadTag);
    }
}
