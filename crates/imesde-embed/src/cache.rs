//! An LRU cache of embeddings keyed by text, bounded by entries and by bytes, with an optional
//! time to live.

use std::num::NonZeroUsize;
use std::time::{Duration, Instant};

use lru::LruCache;

#[derive(Debug)]
struct Entry {
    vector: Box<[f32]>,
    stored: Instant,
}

/// Least-recently-used map from text to its vector; entries older than the TTL count as absent.
/// Long texts are keys too, so the cache is bounded by the bytes it holds as well as by its
/// number of entries.
#[derive(Debug)]
pub struct Cache {
    /// Grows as entries come (a capacity given in advance would be reserved whole: a large
    /// `cache_size` bounded by `max_bytes` would allocate for entries that never fit).
    map: LruCache<Box<str>, Entry>,
    capacity: usize,
    ttl: Option<Duration>,
    bytes: usize,
    max_bytes: usize,
}

/// Bytes an entry holds: its text, its vector and the map's bookkeeping.
fn cost(text: &str, dims: usize) -> usize {
    text.len() + dims * 4 + 64
}

impl Cache {
    /// A cache of at most `capacity` vectors taking at most `max_bytes` (texts and vectors).
    #[must_use]
    pub fn new(capacity: NonZeroUsize, ttl: Option<Duration>, max_bytes: usize) -> Self {
        Self {
            map: LruCache::unbounded(),
            capacity: capacity.get(),
            ttl,
            bytes: 0,
            max_bytes,
        }
    }

    /// Bytes held now (see [`Cache::new`]).
    #[must_use]
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    fn forget(&mut self, text: &str, e: &Entry) {
        self.bytes -= cost(text, e.vector.len());
    }

    /// Copies the vector of `text` into `out` and returns true, or returns false when absent
    /// or expired (an expired entry is dropped).
    ///
    /// # Panics
    /// `out` of another length than the vectors [`Cache::put`] stored.
    pub fn get_into(&mut self, text: &str, out: &mut [f32]) -> bool {
        let expired = match self.map.get(text) {
            None => return false,
            Some(e) => self.ttl.is_some_and(|ttl| e.stored.elapsed() > ttl),
        };
        if expired {
            if let Some((k, e)) = self.map.pop_entry(text) {
                self.forget(&k, &e);
            }
            return false;
        }
        // `get` above made it the most recent; peek avoids a second reorder.
        let entry = self.map.peek(text).expect("present");
        out.copy_from_slice(&entry.vector);
        true
    }

    /// Stores `vector` for `text`, evicting the least recently used entries while the cache
    /// holds too many or too many bytes. A text too long to fit at all is not stored.
    pub fn put(&mut self, text: &str, vector: &[f32]) {
        let size = cost(text, vector.len());
        if size > self.max_bytes {
            if let Some((k, e)) = self.map.pop_entry(text) {
                self.forget(&k, &e);
            }
            return;
        }
        self.bytes += size;
        let entry = Entry {
            vector: vector.into(),
            stored: Instant::now(),
        };
        // `push` hands back what it replaced (the same text).
        if let Some((k, e)) = self.map.push(text.into(), entry) {
            self.forget(&k, &e);
        }
        while self.bytes > self.max_bytes || self.map.len() > self.capacity {
            let Some((k, e)) = self.map.pop_lru() else {
                break;
            };
            self.forget(&k, &e);
        }
    }

    /// Number of entries (expired ones included until they are looked up or evicted).
    #[must_use]
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Number of entries that can still be served (not expired): a scan of them all.
    #[must_use]
    pub fn live_len(&self) -> usize {
        match self.ttl {
            None => self.map.len(),
            Some(ttl) => self
                .map
                .iter()
                .filter(|(_, e)| e.stored.elapsed() <= ttl)
                .count(),
        }
    }

    /// True when the cache holds nothing.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Drops every entry.
    pub fn clear(&mut self) {
        self.map.clear();
        self.bytes = 0;
    }
}

#[cfg(test)]
#[allow(clippy::float_cmp)] // values are copied, not computed
mod tests {
    use super::*;

    #[test]
    fn evicts_least_recently_used() {
        let mut c = Cache::new(NonZeroUsize::new(2).unwrap(), None, usize::MAX);
        let mut out = [0.0f32; 2];
        c.put("a", &[1., 2.]);
        c.put("b", &[3., 4.]);
        assert!(c.get_into("a", &mut out)); // "a" is now the most recent
        c.put("c", &[5., 6.]); // evicts "b"
        assert!(!c.get_into("b", &mut out));
        assert!(c.get_into("a", &mut out));
        assert_eq!(out, [1., 2.]);
        assert!(c.get_into("c", &mut out));
        assert_eq!(out, [5., 6.]);
        assert_eq!(c.len(), 2);
    }

    #[test]
    fn expired_entries_are_misses() {
        let mut c = Cache::new(
            NonZeroUsize::new(4).unwrap(),
            Some(Duration::from_millis(20)),
            usize::MAX,
        );
        let mut out = [0.0f32; 1];
        c.put("a", &[1.]);
        assert!(c.get_into("a", &mut out));
        assert_eq!(c.live_len(), 1);
        std::thread::sleep(Duration::from_millis(40));
        // Held until looked up, but no longer counted as served.
        assert_eq!((c.len(), c.live_len()), (1, 0));
        assert!(!c.get_into("a", &mut out));
        assert!(c.is_empty());
        assert_eq!(c.bytes(), 0);
    }

    #[test]
    fn long_texts_are_bounded_by_bytes() {
        // Room for 100 entries, but 10 of these texts fill the byte budget.
        let long = |i: usize| format!("{i:04}{}", "x".repeat(10_000));
        let mut c = Cache::new(NonZeroUsize::new(100).unwrap(), None, 100_000);
        let mut out = [0.0f32; 2];
        for i in 0..50 {
            c.put(&long(i), &[i as f32, 0.0]);
            assert!(c.bytes() <= 100_000);
        }
        assert_eq!(c.len(), 9);
        assert!(c.get_into(&long(49), &mut out));
        assert_eq!(out[0], 49.0);
        assert!(!c.get_into(&long(40), &mut out));
        // Replacing an entry counts its bytes once; a text larger than the budget is not kept.
        c.put(&long(49), &[1.0, 1.0]);
        assert_eq!(c.len(), 9);
        c.put(&"y".repeat(200_000), &[0.0, 0.0]);
        assert_eq!(c.len(), 9);
        let held: usize = (41..50).map(|i| long(i).len() + 8 + 64).sum();
        assert_eq!(c.bytes(), held);
        c.clear();
        assert_eq!(c.bytes(), 0);
    }
}
