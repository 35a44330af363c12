//! An LRU cache of embeddings keyed by text, with an optional time to live.

use std::num::NonZeroUsize;
use std::time::{Duration, Instant};

use lru::LruCache;

#[derive(Debug)]
struct Entry {
    vector: Box<[f32]>,
    stored: Instant,
}

/// Least-recently-used map from text to its vector; entries older than the TTL count as absent.
#[derive(Debug)]
pub struct Cache {
    map: LruCache<Box<str>, Entry>,
    ttl: Option<Duration>,
}

impl Cache {
    /// A cache of at most `capacity` vectors.
    #[must_use]
    pub fn new(capacity: NonZeroUsize, ttl: Option<Duration>) -> Self {
        Self {
            map: LruCache::new(capacity),
            ttl,
        }
    }

    /// Copies the vector of `text` into `out` and returns true, or returns false when absent
    /// or expired (an expired entry is dropped).
    pub fn get_into(&mut self, text: &str, out: &mut [f32]) -> bool {
        let expired = match self.map.get(text) {
            None => return false,
            Some(e) => self.ttl.is_some_and(|ttl| e.stored.elapsed() > ttl),
        };
        if expired {
            self.map.pop(text);
            return false;
        }
        // `get` above made it the most recent; peek avoids a second reorder.
        let entry = self.map.peek(text).expect("present");
        out.copy_from_slice(&entry.vector);
        true
    }

    /// Stores `vector` for `text`, evicting the least recently used entry when full.
    pub fn put(&mut self, text: &str, vector: &[f32]) {
        self.map.put(
            text.into(),
            Entry {
                vector: vector.into(),
                stored: Instant::now(),
            },
        );
    }

    /// Number of entries (expired ones included until they are looked up or evicted).
    #[must_use]
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// True when the cache holds nothing.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Drops every entry.
    pub fn clear(&mut self) {
        self.map.clear();
    }
}

#[cfg(test)]
#[allow(clippy::float_cmp)] // values are copied, not computed
mod tests {
    use super::*;

    #[test]
    fn evicts_least_recently_used() {
        let mut c = Cache::new(NonZeroUsize::new(2).unwrap(), None);
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
        );
        let mut out = [0.0f32; 1];
        c.put("a", &[1.]);
        assert!(c.get_into("a", &mut out));
        std::thread::sleep(Duration::from_millis(40));
        assert!(!c.get_into("a", &mut out));
        assert!(c.is_empty());
    }
}
