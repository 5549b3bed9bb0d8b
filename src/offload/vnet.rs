//! The `virtio_net_hdr` that a TAP opened with `IFF_VNET_HDR` puts before
//! every frame, and the values of its fields.

use super::OffloadError;

/// Size of the `virtio_net_hdr` (no `num_buffers`).
pub const VNET_HDR_LEN: usize = 10;
/// `flags`: the checksum at `csum_start + csum_offset` is to be completed.
pub const F_NEEDS_CSUM: u8 = 1;
/// `flags`: the checksum was already validated.
pub const F_DATA_VALID: u8 = 2;
/// `gso_type`: not a super-frame.
pub const GSO_NONE: u8 = 0;
/// `gso_type`: TCP over IPv4.
pub const GSO_TCPV4: u8 = 1;
/// `gso_type`: TCP over IPv6.
pub const GSO_TCPV6: u8 = 4;
/// `gso_type`: UDP segmentation (USO).
pub const GSO_UDP_L4: u8 = 5;
/// `gso_type` bit: ECN was used (CWR only on the first segment).
pub const GSO_ECN: u8 = 0x80;

/// The header in front of each frame on an `IFF_VNET_HDR` TAP (little-endian).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VnetHdr {
    /// `F_NEEDS_CSUM`, `F_DATA_VALID`.
    pub flags: u8,
    /// `GSO_*`, possibly with `GSO_ECN`.
    pub gso_type: u8,
    /// Length of all headers (Ethernet to L4).
    pub hdr_len: u16,
    /// Payload bytes per segment.
    pub gso_size: u16,
    /// Where checksumming starts (the L4 header).
    pub csum_start: u16,
    /// Where, from `csum_start`, the checksum field is.
    pub csum_offset: u16,
}

impl VnetHdr {
    /// Reads the header from the first [`VNET_HDR_LEN`] bytes.
    pub fn parse(b: &[u8]) -> Result<VnetHdr, OffloadError> {
        let b = b.get(..VNET_HDR_LEN).ok_or(OffloadError::Truncated)?;
        let u16le = |i: usize| u16::from_le_bytes([b[i], b[i + 1]]);
        Ok(VnetHdr {
            flags: b[0],
            gso_type: b[1],
            hdr_len: u16le(2),
            gso_size: u16le(4),
            csum_start: u16le(6),
            csum_offset: u16le(8),
        })
    }

    /// Writes the header into the first [`VNET_HDR_LEN`] bytes.
    pub fn write(&self, b: &mut [u8]) -> Result<(), OffloadError> {
        let b = b.get_mut(..VNET_HDR_LEN).ok_or(OffloadError::NoRoom)?;
        b[0] = self.flags;
        b[1] = self.gso_type;
        b[2..4].copy_from_slice(&self.hdr_len.to_le_bytes());
        b[4..6].copy_from_slice(&self.gso_size.to_le_bytes());
        b[6..8].copy_from_slice(&self.csum_start.to_le_bytes());
        b[8..10].copy_from_slice(&self.csum_offset.to_le_bytes());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vnet_hdr_roundtrip() {
        let h = VnetHdr {
            flags: 1,
            gso_type: 0x81,
            hdr_len: 66,
            gso_size: 1448,
            csum_start: 34,
            csum_offset: 16,
        };
        let mut b = [0u8; 10];
        h.write(&mut b).unwrap();
        assert_eq!(b, [1, 0x81, 66, 0, 0xa8, 5, 34, 0, 16, 0]);
        assert_eq!(VnetHdr::parse(&b), Ok(h));
        assert_eq!(VnetHdr::parse(&b[..9]), Err(OffloadError::Truncated));
        assert_eq!(h.write(&mut b[..9]), Err(OffloadError::NoRoom));
    }
}
