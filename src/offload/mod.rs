//! TAP offloads, pure: the `virtio_net_hdr` that a TAP opened with
//! `IFF_VNET_HDR` puts before every frame ([`vnet`]), checksum completion
//! ([`checksum`]), the segmentation of a TSO/USO super-frame into ordinary
//! Ethernet frames that each fit the tunnel MTU ([`segment()`]), and its
//! inverse on receive, the coalescing of frames into super-frames
//! ([`Coalescer`]). The headers are read and written through typed views
//! ([`headers`]). No I/O here; the tunnel does that.

use std::fmt;

pub mod checksum;
pub mod coalesce;
pub mod headers;
pub mod segment;
pub mod vnet;

// The coalescer fuzz harness: compiled for tests and under `cargo fuzz`
// (which sets `--cfg fuzzing`), never into the shipped binary.
#[cfg(any(test, fuzzing))]
#[doc(hidden)]
pub mod harness;

#[cfg(test)]
pub(crate) mod testutil;

pub use checksum::{complete_csum, copy_csum, csum_add, csum_fold};
pub use coalesce::Coalescer;
pub use headers::{Layers, parse_l3};
pub use segment::{segment, segment_with_room};
pub use vnet::{
    F_DATA_VALID, F_NEEDS_CSUM, GSO_ECN, GSO_NONE, GSO_TCPV4, GSO_TCPV6, GSO_UDP_L4, VNET_HDR_LEN,
    VnetHdr,
};

/// Why a frame from the TAP could not be prepared for the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffloadError {
    /// Shorter than the headers it claims.
    Truncated,
    /// A GSO type, protocol or header layout this code does not segment.
    Unsupported,
    /// The checksum position lies outside the frame.
    BadCsum,
    /// The output buffer is too small.
    NoRoom,
}

impl fmt::Display for OffloadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            OffloadError::Truncated => "frame shorter than its headers",
            OffloadError::Unsupported => "unsupported offload frame (GSO type or headers)",
            OffloadError::BadCsum => "checksum offsets outside the frame",
            OffloadError::NoRoom => "segment buffer too small",
        })
    }
}

impl std::error::Error for OffloadError {}

impl From<headers::HeaderError> for OffloadError {
    /// A header field that sizes the header out of range (an IPv4 header
    /// length below 20, a TCP data offset below 5) has always counted as a
    /// truncated frame here: no header of that size fits.
    fn from(_: headers::HeaderError) -> Self {
        OffloadError::Truncated
    }
}
