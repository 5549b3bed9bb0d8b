//! The yardstick of `aead::harness`: confidential mode's construction as
//! `docs/protocol.md` (Confidential mode) spells it, written afresh on
//! RustCrypto's `hkdf`, `sha2`, `aes-gcm` and `chacha20poly1305`, not on
//! the aws-lc-rs code under test and not on its helpers (labels, nonce,
//! field offsets are all restated here).
//!
//! It names no item of taptun, only std types, so that one file serves
//! two crates: `taptun`'s unit tests (where those crates are
//! dev-dependencies) and the `aead_open` fuzz target, which includes it
//! with `#[path]` (where they are the fuzz crate's own dependencies; a
//! harness built under `--cfg fuzzing` cannot see taptun's dev-dependencies).

use aes_gcm::aead::AeadInOut;
use aes_gcm::{Aes256Gcm, KeyInit};
use chacha20poly1305::ChaCha20Poly1305;

/// Session id, then timestamp: the AAD and the part in front of the frame.
const AAD_LEN: usize = 16 + 8;
const TAG_LEN: usize = 16;

/// The AEAD key of (key file, `--cipher` name, session):
/// HKDF-SHA256(ikm = key file, salt = none, info = label ‖ session).
/// `None` for a cipher name the protocol does not have.
fn session_key(cipher: &str, key_file: &[u8], session: &[u8]) -> Option<[u8; 32]> {
    let label: &[u8] = match cipher {
        "aes-256-gcm" => b"taptun aes-256-gcm v1",
        "chacha20-poly1305" => b"taptun chacha20-poly1305 v1",
        _ => return None,
    };
    let mut info = label.to_vec();
    info.extend_from_slice(session);
    let mut okm = [0u8; 32];
    hkdf::Hkdf::<sha2::Sha256>::new(None, key_file)
        .expand(&info, &mut okm)
        .ok()?;
    Some(okm)
}

/// Seals `frame` as `session` at `ts` (UNIX ns) under the key file bytes
/// `key_file`: the whole datagram, or `None` for an unknown cipher name.
pub fn seal(
    cipher: &str,
    key_file: &[u8],
    session: [u8; 16],
    ts: u64,
    frame: &[u8],
) -> Option<Vec<u8>> {
    let key = session_key(cipher, key_file, &session)?;
    let mut dg = session.to_vec();
    dg.extend_from_slice(&ts.to_be_bytes());
    let mut nonce = [0u8; 12];
    nonce[4..].copy_from_slice(&ts.to_be_bytes());
    let mut body = frame.to_vec();
    let tag = match cipher {
        "aes-256-gcm" => Aes256Gcm::new(&key.into())
            .encrypt_inout_detached(&nonce.into(), &dg, body.as_mut_slice().into())
            .ok()?,
        _ => ChaCha20Poly1305::new(&key.into())
            .encrypt_inout_detached(&nonce.into(), &dg, body.as_mut_slice().into())
            .ok()?,
    };
    dg.extend_from_slice(&body);
    dg.extend_from_slice(&tag);
    Some(dg)
}

/// Opens a datagram under the key file bytes `key_file`: its session id,
/// timestamp and frame if the tag is right, `None` otherwise (too short,
/// another key or cipher, any change).
pub fn open(cipher: &str, key_file: &[u8], datagram: &[u8]) -> Option<([u8; 16], u64, Vec<u8>)> {
    if datagram.len() < AAD_LEN + TAG_LEN {
        return None;
    }
    let (aad, rest) = datagram.split_at(AAD_LEN);
    let (ct, tag) = rest.split_at(rest.len() - TAG_LEN);
    let session: [u8; 16] = aad[..16].try_into().ok()?;
    let ts_bytes: [u8; 8] = aad[16..].try_into().ok()?;
    let tag: [u8; TAG_LEN] = tag.try_into().ok()?;
    let key = session_key(cipher, key_file, &session)?;
    let mut nonce = [0u8; 12];
    nonce[4..].copy_from_slice(&ts_bytes);
    let mut frame = ct.to_vec();
    let opened = match cipher {
        "aes-256-gcm" => Aes256Gcm::new(&key.into()).decrypt_inout_detached(
            &nonce.into(),
            aad,
            frame.as_mut_slice().into(),
            &tag.into(),
        ),
        _ => ChaCha20Poly1305::new(&key.into()).decrypt_inout_detached(
            &nonce.into(),
            aad,
            frame.as_mut_slice().into(),
            &tag.into(),
        ),
    };
    opened.ok()?;
    Some((session, u64::from_be_bytes(ts_bytes), frame))
}
