use std::sync::Arc;

use crate::error::RingError;
use crate::meta::{Metadata, Predicate};

/// What an item carries besides its vector. Each list is empty (nothing given) or has one
/// entry per vector.
#[derive(Debug, Clone, Default)]
pub struct Attributes {
    /// The item texts.
    pub texts: Vec<Option<Arc<str>>>,
    /// Timestamps in seconds since the Unix epoch; empty means "now" for every item.
    pub timestamps: Vec<f64>,
    /// Per-item metadata.
    pub metadata: Vec<Option<Metadata>>,
}

/// The earliest timestamp an item may have: 0001-01-01 00:00 less a day, so that the first
/// time a Python `datetime` holds is taken in any time zone.
pub const MIN_TIMESTAMP: f64 = -62_135_596_800.0 - 86_400.0;
/// The latest timestamp an item may have: 10000-01-01 00:00 UTC plus a day, so that the last
/// time a `datetime` holds (`datetime.max`, a common "never") is taken in any time zone.
/// Epoch milliseconds of today (~1.7e12) are far beyond it: a time given in the wrong unit
/// is refused rather than stored 55,000 years away.
pub const MAX_TIMESTAMP: f64 = 253_402_300_800.0 + 86_400.0;

impl Attributes {
    /// Checks the attributes of `n` items: each list empty or of length `n`, every timestamp
    /// finite and within [`MIN_TIMESTAMP`]..=[`MAX_TIMESTAMP`], every metadata value one a
    /// snapshot holds ([`crate::Metadata::check`]). [`crate::Ring::ingest`] runs it; callers
    /// with expensive work before the ingest (embedding) can run it first.
    ///
    /// # Errors
    /// [`RingError::Length`], [`RingError::Timestamp`], [`RingError::TimestampRange`] or
    /// [`RingError::Metadata`].
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
        self.timestamps
            .iter()
            .enumerate()
            .try_for_each(|(i, &t)| check_timestamp(t, || format!("timestamps[{i}]")))?;
        self.metadata.iter().enumerate().try_for_each(|(i, m)| {
            m.as_ref().map_or(Ok(()), |m| {
                m.check().map_err(|reason| RingError::Metadata {
                    what: format!("metadata[{i}]"),
                    reason,
                })
            })
        })
    }
}

/// Checks one timestamp: finite and within [`MIN_TIMESTAMP`]..=[`MAX_TIMESTAMP`]; `what`
/// names it in the error ([`Attributes::check`] names `timestamps[i]`).
///
/// # Errors
/// [`RingError::Timestamp`] or [`RingError::TimestampRange`].
pub fn check_timestamp(value: f64, what: impl FnOnce() -> String) -> Result<(), RingError> {
    if (MIN_TIMESTAMP..=MAX_TIMESTAMP).contains(&value) {
        Ok(())
    } else if value.is_finite() {
        Err(RingError::TimestampRange {
            what: what(),
            value,
        })
    } else {
        Err(RingError::Timestamp { what: what() })
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
    pub metadata: Option<Metadata>,
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
    pub metadata: Option<Metadata>,
}

/// A search filter: a half-open time window `since <= ts < until` and a metadata
/// [`Predicate`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Filter {
    /// Keep items with `ts >= since`.
    pub since: Option<f64>,
    /// Keep items with `ts < until`.
    pub until: Option<f64>,
    /// Keep items whose metadata and text pass it.
    pub predicate: Option<Predicate>,
    /// Not a condition on items: scan every item with the exact kernels even where the ring
    /// has a faster, approximate scan (binary storage scans its int8 copy instead).
    pub exact: bool,
}

impl Filter {
    /// A filter on metadata and text alone (no time window).
    #[must_use]
    pub fn matching(predicate: Predicate) -> Self {
        Filter {
            predicate: Some(predicate),
            ..Filter::default()
        }
    }

    /// Refuses a NaN bound (it would keep everything, silently) and a time window whose
    /// start is not before its end.
    ///
    /// # Errors
    /// [`RingError::Timestamp`] or [`RingError::TimeWindow`].
    pub fn check(&self) -> Result<(), RingError> {
        for (what, bound) in [("since", self.since), ("until", self.until)] {
            if bound.is_some_and(f64::is_nan) {
                return Err(RingError::Timestamp { what: what.into() });
            }
        }
        match (self.since, self.until) {
            (Some(since), Some(until)) if since >= until => {
                Err(RingError::TimeWindow { since, until })
            }
            _ => Ok(()),
        }
    }

    /// Whether the filter keeps everything: no time window, and no predicate or one that keeps
    /// every item whatever its metadata ([`Predicate::keeps_everything`]).
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.since.is_none()
            && self.until.is_none()
            && self
                .predicate
                .as_ref()
                .is_none_or(Predicate::keeps_everything)
    }

    /// Whether `self` and `other` keep the same items (`exact` aside).
    #[must_use]
    pub fn same_items(&self, other: &Filter) -> bool {
        self.since == other.since && self.until == other.until && self.predicate == other.predicate
    }

    /// Whether an item with timestamp `ts`, metadata `meta` and text `text` passes.
    #[inline]
    #[must_use]
    pub fn matches(&self, ts: f64, meta: Option<&Metadata>, text: Option<&str>) -> bool {
        if self.since.is_some_and(|s| ts < s) || self.until.is_some_and(|u| ts >= u) {
            return false;
        }
        self.matches_content(meta, text)
    }

    /// Whether an item with metadata `meta` and text `text` passes the predicate (time bounds
    /// not considered).
    #[inline]
    #[must_use]
    pub fn matches_content(&self, meta: Option<&Metadata>, text: Option<&str>) -> bool {
        self.predicate
            .as_ref()
            .is_none_or(|p| p.matches(meta, text))
    }
}

pub(crate) fn text_bytes(t: Option<&Arc<str>>) -> usize {
    t.map_or(0, |s| s.len() + 16)
}

pub(crate) fn meta_bytes(m: Option<&Metadata>) -> usize {
    m.map_or(0, |m| m.heap_bytes() + 16)
}
