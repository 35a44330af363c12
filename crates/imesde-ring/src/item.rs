use std::sync::Arc;

use crate::error::RingError;

/// String metadata of an item: `key -> value` pairs, sorted by key, keys unique.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Metadata(Box<[(Box<str>, Box<str>)]>);

impl Metadata {
    /// Builds metadata from pairs; a later pair wins over an earlier one with the same key.
    pub fn new<K: Into<Box<str>>, V: Into<Box<str>>>(
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        let mut v: Vec<(Box<str>, Box<str>)> = pairs
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .collect();
        // Stable sort keeps insertion order among equal keys; keep the last of each run.
        v.sort_by(|a, b| a.0.cmp(&b.0));
        let mut out: Vec<(Box<str>, Box<str>)> = Vec::with_capacity(v.len());
        for pair in v {
            match out.last_mut() {
                Some(last) if last.0 == pair.0 => *last = pair,
                _ => out.push(pair),
            }
        }
        Metadata(out.into_boxed_slice())
    }

    /// The value stored under `key`.
    #[must_use]
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .binary_search_by(|(k, _)| k.as_ref().cmp(key))
            .ok()
            .map(|i| self.0[i].1.as_ref())
    }

    /// The pairs, sorted by key.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_ref(), v.as_ref()))
    }

    /// Number of pairs.
    #[must_use]
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are no pairs.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn heap_bytes(&self) -> usize {
        self.0.iter().map(|(k, v)| k.len() + v.len() + 32).sum()
    }
}

/// What an item carries besides its vector. Each list is empty (nothing given) or has one
/// entry per vector.
#[derive(Debug, Clone, Default)]
pub struct Attributes {
    /// The item texts.
    pub texts: Vec<Option<Arc<str>>>,
    /// Timestamps in seconds since the Unix epoch; empty means "now" for every item.
    pub timestamps: Vec<f64>,
    /// Per-item metadata.
    pub metadata: Vec<Option<Arc<Metadata>>>,
}

impl Attributes {
    /// Checks the attributes of `n` items: each list empty or of length `n`, every timestamp
    /// finite. [`crate::Ring::ingest`] runs it; callers with expensive work before the ingest
    /// (embedding) can run it first.
    ///
    /// # Errors
    /// [`RingError::Length`] or [`RingError::Timestamp`].
    pub fn check(&self, n: usize) -> Result<(), RingError> {
        for (what, got) in [
            ("texts", self.texts.len()),
            ("timestamps", self.timestamps.len()),
            ("metadata", self.metadata.len()),
        ] {
            if got != 0 && got != n {
                return Err(RingError::Length {
                    what,
                    got,
                    expected: n,
                });
            }
        }
        match self.timestamps.iter().position(|t| !t.is_finite()) {
            Some(index) => Err(RingError::Timestamp { index }),
            None => Ok(()),
        }
    }
}

/// One search result.
#[derive(Debug, Clone, PartialEq)]
pub struct Hit {
    /// Global id of the item (its position in the stream).
    pub id: u64,
    /// Cosine similarity to the query.
    pub score: f32,
    /// The item's text, if it had one.
    pub text: Option<Arc<str>>,
    /// Timestamp, seconds since the Unix epoch.
    pub ts: f64,
    /// The item's metadata, if any.
    pub metadata: Option<Arc<Metadata>>,
}

/// An item read back by id.
#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    /// Global id.
    pub id: u64,
    /// The stored (unit-length) vector; dequantised for int8 storage.
    pub vector: Vec<f32>,
    /// The item's text, if any.
    pub text: Option<Arc<str>>,
    /// Timestamp, seconds since the Unix epoch.
    pub ts: f64,
    /// The item's metadata, if any.
    pub metadata: Option<Arc<Metadata>>,
}

/// A search filter: a half-open time window `since <= ts < until` and metadata equality on
/// every listed key.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Keep items with `ts >= since`.
    pub since: Option<f64>,
    /// Keep items with `ts < until`.
    pub until: Option<f64>,
    /// Keep items whose metadata has each `key == value`.
    pub equals: Vec<(String, String)>,
}

impl Filter {
    /// Whether the filter keeps everything.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.since.is_none() && self.until.is_none() && self.equals.is_empty()
    }

    #[inline]
    pub(crate) fn matches(&self, ts: f64, meta: Option<&Metadata>) -> bool {
        if self.since.is_some_and(|s| ts < s) || self.until.is_some_and(|u| ts >= u) {
            return false;
        }
        self.matches_meta(meta)
    }

    /// Whether `meta` has every `key == value` of the filter (time bounds not considered).
    #[inline]
    pub(crate) fn matches_meta(&self, meta: Option<&Metadata>) -> bool {
        self.equals
            .iter()
            .all(|(k, v)| meta.and_then(|m| m.get(k)) == Some(v.as_str()))
    }
}

pub(crate) fn text_bytes(t: Option<&Arc<str>>) -> usize {
    t.map_or(0, |s| s.len() + 16)
}

pub(crate) fn meta_bytes(m: Option<&Arc<Metadata>>) -> usize {
    m.map_or(0, |m| m.heap_bytes() + 16)
}
