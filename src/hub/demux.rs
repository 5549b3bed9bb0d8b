//! Which spoke an address belongs to: the receiving thread's table,
//! updated from what each spoke's receiving half learned. An address
//! belongs to one spoke at most, a spoke has one address at most. In the
//! confidential mode, also which spokes hold a session index ([`Indices`]).

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

/// Confidential mode: session index → spoke. Each spoke's receiving
/// half draws its indices at random (32 bits), so two spokes may hold the
/// same one: rare (with a thousand spokes, about once a day), but then
/// both are kept, and the datagram is tried under each (see `get`).
#[derive(Debug, Default, Clone)]
pub struct Indices {
    /// The first spoke that took each index.
    first: HashMap<u32, usize>,
    /// Further spokes holding an index another holds too (almost always
    /// empty).
    more: Vec<(u32, usize)>,
}

/// What [`Indices::get`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Holders {
    /// No spoke has the index.
    None,
    /// One spoke has it.
    One(usize),
    /// Several have it (in the order they took it).
    Many(Vec<usize>),
}

impl Indices {
    /// Spoke `i`'s indices were `old` and are now `new`.
    pub fn update(&mut self, i: usize, old: &[Option<u32>], new: &[Option<u32>]) {
        for x in old.iter().flatten() {
            if !new.contains(&Some(*x)) {
                self.remove(*x, i);
            }
        }
        for x in new.iter().flatten() {
            if !old.contains(&Some(*x)) {
                self.insert(*x, i);
            }
        }
    }

    fn insert(&mut self, x: u32, i: usize) {
        match self.first.get(&x) {
            None => {
                self.first.insert(x, i);
            }
            Some(&j) if j == i => {}
            Some(_) => {
                if !self.more.contains(&(x, i)) {
                    self.more.push((x, i));
                }
            }
        }
    }

    fn remove(&mut self, x: u32, i: usize) {
        if self.first.get(&x) == Some(&i) {
            self.first.remove(&x);
            // The next holder, if any, becomes the first.
            if let Some(k) = self.more.iter().position(|&(y, _)| y == x) {
                let (_, j) = self.more.remove(k);
                self.first.insert(x, j);
            }
        } else {
            self.more.retain(|&e| e != (x, i));
        }
    }

    /// The spokes holding index `x`.
    pub fn get(&self, x: u32) -> Holders {
        let Some(&i) = self.first.get(&x) else {
            return Holders::None;
        };
        if self.more.is_empty() || !self.more.iter().any(|&(y, _)| y == x) {
            return Holders::One(i);
        }
        let mut all = vec![i];
        all.extend(self.more.iter().filter(|&&(y, _)| y == x).map(|&(_, j)| j));
        Holders::Many(all)
    }

    /// Forgets every index.
    pub fn clear(&mut self) {
        self.first.clear();
        self.more.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Against a model (each spoke's set of indices): after any sequence
    /// of updates, every index's holders are the spokes whose sets hold
    /// it, in the order they took it; a shared index is still found once
    /// all but one let it go.
    #[test]
    fn indices_consistent_with_a_model() {
        let mut next = crate::seeded::xorshift(0x9e37_79b9_7f4a_7c15u64);
        let spokes = 6;
        let mut t = Indices::default();
        let mut sets: Vec<[Option<u32>; crate::noise::INDICES]> =
            vec![[None; crate::noise::INDICES]; spokes];
        // Who took each index, in order.
        let mut order: Vec<(u32, usize)> = Vec::new();
        for _ in 0..20_000 {
            let i = (next() % spokes as u64) as usize;
            let mut new = sets[i];
            // A few indices only: collisions are frequent here.
            let k = (next() % 4) as usize;
            new[k] = (!next().is_multiple_of(3)).then(|| (next() % 8) as u32);
            let old = sets[i];
            t.update(i, &old, &new);
            for o in old.iter().flatten() {
                if !new.contains(&Some(*o)) {
                    order.retain(|&e| e != (*o, i));
                }
            }
            for n in new.iter().flatten() {
                if !old.contains(&Some(*n)) && !order.contains(&(*n, i)) {
                    order.push((*n, i));
                }
            }
            sets[i] = new;
            for y in 0..8u32 {
                let want: Vec<usize> = order
                    .iter()
                    .filter(|&&(z, _)| z == y)
                    .map(|&(_, j)| j)
                    .collect();
                let got = match t.get(y) {
                    Holders::None => vec![],
                    Holders::One(j) => vec![j],
                    Holders::Many(v) => v,
                };
                assert_eq!(got, want, "index {y}");
            }
        }
    }

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
        let mut next = crate::seeded::xorshift(0x2545_f491_4f6c_dd1du64);
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
