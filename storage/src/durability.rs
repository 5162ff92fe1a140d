//! Group commit: appends that must be durable share `fdatasync` calls.
//!
//! A waiter that finds no sync in progress becomes the leader: it notes the log end, syncs,
//! and publishes that end as durable. Waiters arriving meanwhile queue on the condition
//! variable; when the sync finishes, those it covered return and the rest elect the next
//! leader, whose one sync covers all of them. Under load each sync therefore covers every
//! append that arrived during the previous one.
//!
//! A failed sync is sticky: the kernel may already have dropped the pages it could not write,
//! so claiming durability later would be a lie. The log refuses writes until reopened.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Condvar, Mutex};

#[derive(Debug)]
struct State {
    /// Offsets below this are on disk.
    durable_end: i64,
    syncing: bool,
    failed: bool,
    syncs: u64,
}

#[derive(Debug)]
pub(crate) struct Durability {
    state: Mutex<State>,
    cv: Condvar,
    /// Mirror of `State::durable_end` so the append path can read it without the lock.
    durable_end: AtomicI64,
}

/// What a waiter must do.
pub(crate) enum Turn {
    Durable,
    Failed,
    /// Sync, then report with [`Durability::finish_sync`].
    Lead,
}

impl Durability {
    pub fn new(durable_end: i64) -> Self {
        Durability {
            state: Mutex::new(State {
                durable_end,
                syncing: false,
                failed: false,
                syncs: 0,
            }),
            cv: Condvar::new(),
            durable_end: AtomicI64::new(durable_end),
        }
    }

    pub fn durable_end(&self) -> i64 {
        self.durable_end.load(Ordering::Acquire)
    }

    pub fn syncs(&self) -> u64 {
        self.state.lock().expect("durability lock").syncs
    }

    /// Blocks until `end` is durable, the log failed, or this caller should lead a sync.
    pub fn wait_turn(&self, end: i64) -> Turn {
        let mut st = self.state.lock().expect("durability lock");
        loop {
            if st.failed {
                return Turn::Failed;
            }
            if st.durable_end >= end {
                return Turn::Durable;
            }
            if !st.syncing {
                st.syncing = true;
                return Turn::Lead;
            }
            st = self.cv.wait(st).expect("durability lock");
        }
    }

    /// Publishes the outcome of a sync that covered everything below `synced_end`.
    pub fn finish_sync(&self, synced_end: Option<i64>) {
        let mut st = self.state.lock().expect("durability lock");
        st.syncing = false;
        st.syncs += 1;
        match synced_end {
            Some(end) => {
                st.durable_end = st.durable_end.max(end);
                self.durable_end.store(st.durable_end, Ordering::Release);
            }
            None => st.failed = true,
        }
        drop(st);
        self.cv.notify_all();
    }

    /// Records durability established outside a group sync (a segment synced on roll).
    pub fn mark_durable(&self, end: i64) {
        let mut st = self.state.lock().expect("durability lock");
        st.durable_end = st.durable_end.max(end);
        self.durable_end.store(st.durable_end, Ordering::Release);
        drop(st);
        self.cv.notify_all();
    }

    /// After a truncation the durable end cannot be past the log end.
    pub fn clamp(&self, end: i64) {
        let mut st = self.state.lock().expect("durability lock");
        st.durable_end = st.durable_end.min(end);
        self.durable_end.store(st.durable_end, Ordering::Release);
    }

    pub fn fail(&self) {
        let mut st = self.state.lock().expect("durability lock");
        st.failed = true;
        drop(st);
        self.cv.notify_all();
    }
}
