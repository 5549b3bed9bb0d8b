//! Which spoke an address belongs to: the receiving thread's table,
//! updated from what each spoke's receiving half learned. An address
//! belongs to one spoke at most, a spoke has one address at most.

use std::collections::HashMap;
use std::net::SocketAddr;

/// Address → spoke index, and each spoke's address. Owned by the
/// UDP→TAP thread.
#[derive(Debug, Default, Clone)]
pub struct Demux {
    by_addr: HashMap<SocketAddr, usize>,
    addr_of: Vec<Option<SocketAddr>>,
}

impl Demux {
    /// A table for `addrs` (the spokes' addresses, by index); a later
    /// spoke with the same address as an earlier one takes it.
    pub fn new(addrs: impl IntoIterator<Item = Option<SocketAddr>>) -> Demux {
        let mut d = Demux::default();
        for (i, a) in addrs.into_iter().enumerate() {
            d.addr_of.push(None);
            if let Some(a) = a {
                d.assign(i, a);
            }
        }
        d
    }

    /// The spoke at `addr`, if any.
    pub fn get(&self, addr: &SocketAddr) -> Option<usize> {
        self.by_addr.get(addr).copied()
    }

    /// The address of spoke `i`, if any.
    pub fn addr_of(&self, i: usize) -> Option<SocketAddr> {
        self.addr_of.get(i).copied().flatten()
    }

    /// Spoke `i` is now at `addr`: its old address is freed, and a spoke
    /// that had `addr` loses it.
    pub fn assign(&mut self, i: usize, addr: SocketAddr) {
        if i >= self.addr_of.len() {
            self.addr_of.resize(i + 1, None);
        }
        if let Some(old) = self.addr_of[i].take() {
            self.by_addr.remove(&old);
        }
        if let Some(j) = self.by_addr.insert(addr, i)
            && j != i
            && let Some(slot) = self.addr_of.get_mut(j)
        {
            *slot = None;
        }
        self.addr_of[i] = Some(addr);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn assign_moves_and_steals() {
        let mut d = Demux::new([Some(a("1.1.1.1:1")), None, Some(a("3.3.3.3:3"))]);
        assert_eq!(d.get(&a("1.1.1.1:1")), Some(0));
        assert_eq!(d.get(&a("3.3.3.3:3")), Some(2));
        d.assign(1, a("2.2.2.2:2"));
        assert_eq!(d.get(&a("2.2.2.2:2")), Some(1));
        // Spoke 0 roams: its old address is no one's.
        d.assign(0, a("1.1.1.1:9"));
        assert_eq!(d.get(&a("1.1.1.1:1")), None);
        // Spoke 2 shows up at spoke 1's address (a NAT reused the port).
        d.assign(2, a("2.2.2.2:2"));
        assert_eq!(d.get(&a("2.2.2.2:2")), Some(2));
        assert_eq!(d.addr_of(1), None);
        assert_eq!(d.get(&a("3.3.3.3:3")), None);
    }

    /// Against a model: after any sequence of assignments, the table and
    /// the addresses agree both ways.
    #[test]
    fn consistent_with_a_model() {
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut d = Demux::new([None; 5]);
        let mut model: Vec<Option<SocketAddr>> = vec![None; 5];
        for _ in 0..5000 {
            let i = (next() % 5) as usize;
            let addr: SocketAddr = ([10, 0, 0, (next() % 4) as u8], 1).into();
            d.assign(i, addr);
            for m in model.iter_mut() {
                if *m == Some(addr) {
                    *m = None;
                }
            }
            model[i] = Some(addr);
            for (j, m) in model.iter().enumerate() {
                assert_eq!(d.addr_of(j), *m);
                if let Some(m) = m {
                    assert_eq!(d.get(m), Some(j));
                }
            }
            assert_eq!(d.by_addr.len(), model.iter().flatten().count());
        }
    }
}
