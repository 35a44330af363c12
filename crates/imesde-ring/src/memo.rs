//! Filter results remembered per slot, for the filters searched most recently.
//!
//! A filter is evaluated on each candidate that could still enter the top k; a selective
//! filter has many, and each evaluation reads the item's metadata from the heap. Searches
//! that repeat a filter (a dashboard's, an alert's) find the answer for most slots here
//! instead: one byte per slot. The writer of a slot forgets that slot's answers under the
//! shard's write lock, and answers are stored under its read lock, so no answer outlives the
//! item it was computed for.

use std::sync::atomic::{AtomicU8, Ordering::Relaxed};
use std::sync::{Arc, Weak};

use parking_lot::Mutex;

use crate::item::Filter;

/// How many filters are remembered (the most recently searched).
const KEEP: usize = 4;

const UNKNOWN: u8 = 0;
const PASSES: u8 = 1;
const FAILS: u8 = 2;

/// One filter's answers: per shard, per slot.
#[derive(Debug)]
pub(crate) struct Memo {
    filter: Filter,
    known: Box<[Box<[AtomicU8]>]>,
}

impl Memo {
    /// Whether the item in `slot` of shard `shard` passes, computed by `eval` if not known.
    #[inline]
    pub(crate) fn passes(&self, shard: usize, slot: usize, eval: impl FnOnce() -> bool) -> bool {
        let cell = &self.known[shard][slot];
        match cell.load(Relaxed) {
            PASSES => true,
            FAILS => false,
            _ => {
                let pass = eval();
                cell.store(if pass { PASSES } else { FAILS }, Relaxed);
                pass
            }
        }
    }
}

/// The remembered filters, most recently searched first, and those no longer remembered
/// that a search in flight may still read.
#[derive(Debug, Default)]
pub(crate) struct Memos(Mutex<Remembered>);

#[derive(Debug, Default)]
struct Remembered {
    kept: Vec<Arc<Memo>>,
    /// Dropped from `kept`: alive while a search that took one runs, and until then
    /// forgotten slot by slot by writers as the kept ones are (else that search could read
    /// the answer for an item a writer has since replaced).
    retired: Vec<Weak<Memo>>,
}

impl Memos {
    /// The answers of `filter` (made empty when it is not remembered yet).
    pub(crate) fn of(&self, filter: &Filter, shards: usize, shard_size: usize) -> Arc<Memo> {
        let mut memos = self.0.lock();
        if let Some(i) = memos.kept.iter().position(|m| m.filter.same_items(filter)) {
            let m = memos.kept.remove(i);
            memos.kept.insert(0, Arc::clone(&m));
            return m;
        }
        let m = Arc::new(Memo {
            filter: filter.clone(),
            known: (0..shards)
                .map(|_| (0..shard_size).map(|_| AtomicU8::new(UNKNOWN)).collect())
                .collect(),
        });
        memos.kept.insert(0, Arc::clone(&m));
        if memos.kept.len() > KEEP {
            let dropped: Vec<Weak<Memo>> = memos
                .kept
                .drain(KEEP..)
                .map(|m| Arc::downgrade(&m))
                .collect();
            memos.retired.retain(|w| w.strong_count() > 0);
            memos.retired.extend(dropped);
        }
        m
    }

    /// Every filter's answers a search may read now, for a writer to forget the slots it
    /// writes.
    pub(crate) fn current(&self) -> Vec<Arc<Memo>> {
        let mut memos = self.0.lock();
        memos.retired.retain(|w| w.strong_count() > 0);
        let mut all = memos.kept.clone();
        all.extend(memos.retired.iter().filter_map(Weak::upgrade));
        all
    }
}

/// Forgets what every memo of `memos` knew about `slot` of shard `shard` (its item changes).
#[inline]
pub(crate) fn forget(memos: &[Arc<Memo>], shard: usize, slot: usize) {
    for m in memos {
        m.known[shard][slot].store(UNKNOWN, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn since(t: f64) -> Filter {
        Filter {
            since: Some(t),
            ..Filter::default()
        }
    }

    #[test]
    fn a_memo_no_longer_kept_is_forgotten_by_writers_while_a_search_holds_it() {
        let memos = Memos::default();
        let held = memos.of(&since(0.0), 2, 4);
        held.passes(1, 3, || true);
        // Four other filters: the first is no longer kept, but a search still reads it.
        for t in 1..=KEEP {
            drop(memos.of(&since(t as f64), 2, 4));
        }
        let current = memos.current();
        assert!(current.iter().any(|m| Arc::ptr_eq(m, &held)));
        // A writer replaces the item of slot 3: the search must evaluate it again.
        forget(&current, 1, 3);
        drop(current);
        assert!(!held.passes(1, 3, || false));
        // Once no search holds it, writers no longer see it, and it is freed.
        let weak = Arc::downgrade(&held);
        drop(held);
        assert!(weak.upgrade().is_none());
        assert_eq!(memos.current().len(), KEEP);
    }
}
