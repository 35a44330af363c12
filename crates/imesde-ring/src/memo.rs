//! Filter results remembered per slot, for the filters searched most recently.
//!
//! A filter is evaluated on each candidate that could still enter the top k; a selective
//! filter has many, and each evaluation reads the item's metadata from the heap. Searches
//! that repeat a filter (a dashboard's, an alert's) find the answer for most slots here
//! instead: one byte per slot. The writer of a slot forgets that slot's answers under the
//! shard's write lock, and answers are stored under its read lock, so no answer outlives the
//! item it was computed for.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering::Relaxed};

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

/// The remembered filters, most recently searched first.
#[derive(Debug, Default)]
pub(crate) struct Memos(Mutex<Vec<Arc<Memo>>>);

impl Memos {
    /// The answers of `filter` (made empty when it is not remembered yet).
    pub(crate) fn of(&self, filter: &Filter, shards: usize, shard_size: usize) -> Arc<Memo> {
        let mut memos = self.0.lock();
        if let Some(i) = memos.iter().position(|m| m.filter.same_items(filter)) {
            let m = memos.remove(i);
            memos.insert(0, Arc::clone(&m));
            return m;
        }
        let m = Arc::new(Memo {
            filter: filter.clone(),
            known: (0..shards)
                .map(|_| (0..shard_size).map(|_| AtomicU8::new(UNKNOWN)).collect())
                .collect(),
        });
        memos.insert(0, Arc::clone(&m));
        memos.truncate(KEEP);
        m
    }

    /// The remembered filters now, for a writer to forget the slots it writes.
    pub(crate) fn current(&self) -> Vec<Arc<Memo>> {
        self.0.lock().clone()
    }
}

/// Forgets what every memo of `memos` knew about `slot` of shard `shard` (its item changes).
#[inline]
pub(crate) fn forget(memos: &[Arc<Memo>], shard: usize, slot: usize) {
    for m in memos {
        m.known[shard][slot].store(UNKNOWN, Relaxed);
    }
}
