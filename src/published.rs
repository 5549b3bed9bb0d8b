//! A value that one thread replaces now and then and others read on every
//! frame (the peer address, the sending key): a reader checks a version
//! counter, one atomic load, and takes the lock only when it changed.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// The shared side: the current value and its change counter.
#[derive(Debug)]
pub struct Published<T> {
    version: AtomicU64,
    value: Mutex<T>,
}

impl<T: Clone> Published<T> {
    /// Starts with `value`.
    pub fn new(value: T) -> Self {
        Published {
            version: AtomicU64::new(1),
            value: Mutex::new(value),
        }
    }

    /// Replaces the value; readers see it on their next frame.
    pub fn set(&self, value: T) {
        *self.value.lock().unwrap_or_else(|p| p.into_inner()) = value;
        self.version.fetch_add(1, Ordering::Release);
    }

    /// A copy of the current value (takes the lock).
    pub fn get(&self) -> T {
        self.value.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The change counter; a different value means `get` may differ.
    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }
}

/// A reader's copy of a [`Published`] value, refreshed only on change.
#[derive(Debug)]
pub struct Cached<T> {
    version: u64,
    value: T,
}

impl<T: Clone> Cached<T> {
    /// A copy of the current value.
    pub fn new(shared: &Published<T>) -> Self {
        Cached {
            version: shared.version(),
            value: shared.get(),
        }
    }

    /// The current value, re-read from `shared` only when it changed.
    #[inline]
    pub fn get(&mut self, shared: &Published<T>) -> &T {
        let v = shared.version();
        if v != self.version {
            self.value = shared.get();
            self.version = v;
        }
        &self.value
    }

    /// The new value if it changed since the last look, else `None`:
    /// for a reader that must act on a change (a receiver keeping the
    /// previous key for a while).
    #[inline]
    pub fn changed(&mut self, shared: &Published<T>) -> Option<&T> {
        let v = shared.version();
        if v == self.version {
            return None;
        }
        self.value = shared.get();
        self.version = v;
        Some(&self.value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_follows_changes() {
        let s = Published::new(Some(1));
        let mut c = Cached::new(&s);
        assert_eq!(c.get(&s), &Some(1));
        s.set(Some(2));
        assert_eq!(c.get(&s), &Some(2));
        s.set(None);
        assert_eq!(c.get(&s), &None);
        assert_eq!(s.get(), None);
    }

    #[test]
    fn changed_reports_each_change_once() {
        let s = Published::new(1);
        let mut c = Cached::new(&s);
        assert_eq!(c.changed(&s), None);
        s.set(2);
        assert_eq!(c.changed(&s), Some(&2));
        assert_eq!(c.changed(&s), None);
        assert_eq!(c.get(&s), &2);
    }
}
