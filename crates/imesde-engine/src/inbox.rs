//! The event queue of a standing query: bounded, the oldest dropped when full, with a condvar
//! for readers that wait.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::{Condvar, Mutex};

/// A bounded first-in first-out queue: when full, a push drops the oldest entry (counted in
/// [`Inbox::dropped`]). Readers take entries without waiting or wait for the next one; after
/// [`Inbox::close`] no more arrive, and waiting ends.
#[derive(Debug)]
pub struct Inbox<T> {
    queue: Mutex<VecDeque<T>>,
    ready: Condvar,
    capacity: usize,
    dropped: AtomicU64,
    closed: AtomicBool,
}

impl<T> Inbox<T> {
    /// An inbox of at most `capacity` entries (at least 1).
    #[must_use]
    pub fn new(capacity: usize) -> Self {
        Inbox {
            queue: Mutex::new(VecDeque::new()),
            ready: Condvar::new(),
            capacity: capacity.max(1),
            dropped: AtomicU64::new(0),
            closed: AtomicBool::new(false),
        }
    }

    /// Adds `item` (dropping the oldest when full) unless the inbox is closed; wakes readers.
    pub fn push(&self, item: T) {
        if self.is_closed() {
            return;
        }
        let mut q = self.queue.lock();
        if q.len() >= self.capacity {
            q.pop_front();
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
        q.push_back(item);
        drop(q);
        self.ready.notify_all();
    }

    /// The oldest entry, without waiting.
    pub fn pop(&self) -> Option<T> {
        self.queue.lock().pop_front()
    }

    /// The oldest entry, waiting at most `step` for one while the inbox is open.
    pub fn wait_pop(&self, step: Duration) -> Option<T> {
        let mut q = self.queue.lock();
        if q.is_empty() && !self.is_closed() {
            self.ready.wait_for(&mut q, step);
        }
        q.pop_front()
    }

    /// Whether an entry waits, waiting at most `step` for one while the inbox is open; takes
    /// nothing (a reader that may be cancelled waits with this, then takes with [`Inbox::pop`]).
    pub fn wait_ready(&self, step: Duration) -> bool {
        let mut q = self.queue.lock();
        if q.is_empty() && !self.is_closed() {
            self.ready.wait_for(&mut q, step);
        }
        !q.is_empty()
    }

    /// Every entry, oldest first, without waiting.
    pub fn drain(&self) -> Vec<T> {
        self.queue.lock().drain(..).collect()
    }

    /// Calls `f` on each entry, oldest first, unless another thread holds the queue right
    /// now (then on none): for a garbage collector's traversal, which must never wait.
    ///
    /// # Errors
    /// The first error `f` returns.
    pub fn try_for_each<E>(&self, f: impl FnMut(&T) -> Result<(), E>) -> Result<(), E> {
        match self.queue.try_lock() {
            Some(q) => q.iter().try_for_each(f),
            None => Ok(()),
        }
    }

    /// Entries waiting.
    pub fn len(&self) -> usize {
        self.queue.lock().len()
    }

    /// Whether no entry waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Entries dropped because the inbox was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// No more entries arrive; waiting readers are woken (entries already queued stay).
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.ready.notify_all();
    }

    /// Whether the inbox was closed (its subscription cancelled).
    #[must_use]
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Instant;

    use super::*;

    #[test]
    fn drops_the_oldest_when_full_and_wakes_waiters() {
        let inbox = Inbox::new(2);
        for i in 0..5 {
            inbox.push(i);
        }
        assert_eq!(inbox.dropped(), 3);
        let mut seen = Vec::new();
        inbox
            .try_for_each(|&i| {
                seen.push(i);
                Ok::<_, ()>(())
            })
            .unwrap();
        assert_eq!(seen, vec![3, 4]);
        assert_eq!(inbox.drain(), vec![3, 4]);
        let shared = Arc::new(Inbox::new(4));
        let writer = Arc::clone(&shared);
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            writer.push(7);
        });
        let start = Instant::now();
        let mut got = None;
        while got.is_none() && start.elapsed() < Duration::from_secs(10) {
            got = shared.wait_pop(Duration::from_millis(20));
        }
        assert_eq!(got, Some(7));
        t.join().unwrap();
        // Waiting for an entry takes none.
        shared.push(9);
        assert!(shared.wait_ready(Duration::from_secs(5)));
        assert_eq!(shared.len(), 1);
        assert_eq!(shared.pop(), Some(9));
        assert!(!shared.wait_ready(Duration::from_millis(10)));
        shared.close();
        shared.push(8);
        assert!(shared.is_empty());
        // A closed inbox does not make readers wait.
        let start = Instant::now();
        assert_eq!(shared.wait_pop(Duration::from_secs(5)), None);
        assert!(start.elapsed() < Duration::from_secs(1));
    }
}
