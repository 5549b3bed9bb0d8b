//! The framing rtnetlink answers share (`route.rs`, `linkgroup.rs`):
//! netlink messages one after another in a read, and the attributes
//! (rtattr) after a message's fixed header. Pure: bytes in, views out.

/// A netlink message header's length (`struct nlmsghdr`).
pub const NLMSG_HDRLEN: usize = 16;

/// A native-endian u16 at `at`, if `b` holds it.
pub fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

/// A native-endian u32 at `at`, if `b` holds it.
pub fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// One netlink message of a read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Message<'a> {
    /// `nlmsg_type`.
    pub kind: u16,
    /// `nlmsg_flags`.
    pub flags: u16,
    /// `nlmsg_seq`.
    pub seq: u32,
    /// What follows the header.
    pub body: &'a [u8],
}

/// The messages of one read, in order; an item is `Err(())` (and the last)
/// when a header is cut or claims more than the read holds.
pub fn messages(buf: &[u8]) -> impl Iterator<Item = Result<Message<'_>, ()>> {
    let mut at = 0;
    let mut broken = false;
    std::iter::from_fn(move || {
        if broken || at + NLMSG_HDRLEN > buf.len() {
            return None;
        }
        let head = (|| {
            let len = u32_at(buf, at)? as usize;
            let kind = u16_at(buf, at + 4)?;
            let flags = u16_at(buf, at + 6)?;
            let seq = u32_at(buf, at + 8)?;
            (len >= NLMSG_HDRLEN && at + len <= buf.len()).then_some((len, kind, flags, seq))
        })();
        let Some((len, kind, flags, seq)) = head else {
            broken = true;
            return Some(Err(()));
        };
        let body = &buf[at + NLMSG_HDRLEN..at + len];
        at += len.next_multiple_of(4);
        Some(Ok(Message {
            kind,
            flags,
            seq,
            body,
        }))
    })
}

/// The attributes after the first `skip` bytes of `body`: (type without
/// the nested/byte-order bits, data); `Err(())` (and the last) when one is
/// cut.
pub fn attrs(body: &[u8], skip: usize) -> impl Iterator<Item = Result<(u16, &[u8]), ()>> {
    let mut at = skip;
    let mut broken = false;
    std::iter::from_fn(move || {
        if broken || at + 4 > body.len() {
            return None;
        }
        let head = (|| {
            let len = usize::from(u16_at(body, at)?);
            let kind = u16_at(body, at + 2)? & 0x3fff;
            (len >= 4 && at + len <= body.len()).then_some((len, kind))
        })();
        let Some((len, kind)) = head else {
            broken = true;
            return Some(Err(()));
        };
        let data = &body[at + 4..at + len];
        at += len.next_multiple_of(4);
        Some(Ok((kind, data)))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(kind: u16, seq: u32, body: &[u8]) -> Vec<u8> {
        let len = NLMSG_HDRLEN + body.len();
        let mut m = Vec::new();
        m.extend_from_slice(&(len as u32).to_ne_bytes());
        m.extend_from_slice(&kind.to_ne_bytes());
        m.extend_from_slice(&2u16.to_ne_bytes());
        m.extend_from_slice(&seq.to_ne_bytes());
        m.extend_from_slice(&0u32.to_ne_bytes());
        m.extend_from_slice(body);
        m.resize(len.next_multiple_of(4), 0);
        m
    }

    #[test]
    fn messages_in_order_and_a_cut_one_ends_the_walk() {
        let mut buf = msg(24, 7, &[1, 2, 3]);
        buf.extend(msg(3, 8, &[]));
        let got: Vec<_> = messages(&buf).collect();
        assert_eq!(got.len(), 2);
        let first = got[0].unwrap();
        assert_eq!(
            (first.kind, first.flags, first.seq, first.body),
            (24, 2, 7, &[1u8, 2, 3][..])
        );
        assert_eq!(got[1].unwrap().kind, 3);
        // A header claiming more than the read holds.
        let got: Vec<_> = messages(&buf[..18]).collect();
        assert_eq!(got, vec![Err(())]);
    }

    #[test]
    fn attrs_after_a_header_and_a_bad_length_ends_the_walk() {
        let mut body = vec![9u8; 4];
        body.extend_from_slice(&8u16.to_ne_bytes());
        body.extend_from_slice(&(0x8000u16 | 5).to_ne_bytes());
        body.extend_from_slice(&[1, 2, 3, 4]);
        body.extend_from_slice(&5u16.to_ne_bytes());
        body.extend_from_slice(&6u16.to_ne_bytes());
        body.extend_from_slice(&[7, 0, 0, 0]);
        let got: Vec<_> = attrs(&body, 4).collect();
        assert_eq!(got, vec![Ok((5, &[1u8, 2, 3, 4][..])), Ok((6, &[7u8][..]))]);
        body[12] = 200;
        let got: Vec<_> = attrs(&body, 4).collect();
        assert_eq!(got, vec![Ok((5, &[1u8, 2, 3, 4][..])), Err(())]);
    }
}
