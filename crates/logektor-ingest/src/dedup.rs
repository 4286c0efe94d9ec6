//! Message-id deduplication: an SDK that retries a batch (after a timeout, a 503, or a server
//! restart) must not create a second row of any event in it.
//!
//! **Scope and window.** An event is a duplicate when an event with the same `(source,
//! message_id)` was accepted within the last [`DedupConfig::window`] (by receive time) and is
//! among the last [`DedupConfig::capacity`] accepted events. Duplicates are dropped silently (the
//! request still answers 200, as the SDK expects). Within one request, the second of two equal
//! ids is dropped too.
//!
//! **Surviving a restart.** On start the set is rebuilt from the table (the ids received within
//! the window, newest first, up to the capacity) and then from the WAL records being replayed.
//! Each WAL record stores which of its events were dropped, so a replay reproduces exactly the
//! rows that were acknowledged rather than deciding again.
//!
//! **Ordering.** The check, the insert and the WAL enqueue happen under one lock, so of two
//! concurrent requests carrying the same id, the one that keeps it is also the one written to
//! the WAL first; the other's acknowledgement then waits for a later fsync, which covers both.
//!
//! Ids are kept as 64-bit keyed hashes (about 40 bytes per id with the queue): with a million
//! ids, the chance that a new event is wrongly taken for a duplicate is about 1 in 10^13.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, BuildHasherDefault, Hasher, RandomState};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

/// How far back duplicates are recognised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DedupConfig {
    /// Ids received longer ago than this are forgotten.
    pub window: Duration,
    /// At most this many ids are remembered (the oldest are forgotten first). 0 disables dedup.
    pub capacity: usize,
}

impl Default for DedupConfig {
    fn default() -> Self {
        Self {
            window: Duration::from_secs(24 * 3600),
            capacity: 1_000_000,
        }
    }
}

pub(crate) struct Dedup {
    config: DedupConfig,
    hasher: RandomState,
    state: Mutex<State>,
}

#[derive(Default)]
pub(crate) struct State {
    /// key → the WAL ticket of the append that first stored it (0: known to be stored).
    seen: HashMap<u64, u64, BuildHasherDefault<KeyHasher>>,
    /// (key, received_at, ticket) in insertion order, for eviction by age and by count. An
    /// entry evicts its key only if the key still belongs to that ticket (a forgotten key may
    /// have been inserted again since).
    order: VecDeque<(u64, i64, u64)>,
}

impl Dedup {
    pub fn new(config: DedupConfig) -> Self {
        Self {
            config,
            hasher: RandomState::new(),
            state: Mutex::new(State::default()),
        }
    }

    pub fn config(&self) -> DedupConfig {
        self.config
    }

    pub fn key(&self, source: &str, message_id: &str) -> u64 {
        self.hasher.hash_one((source, message_id))
    }

    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().expect("dedup lock poisoned")
    }

    fn window_micros(&self) -> i64 {
        i64::try_from(self.config.window.as_micros()).unwrap_or(i64::MAX)
    }

    /// Records `keys` as seen at `received_at`, to be stored by the WAL append with `ticket`.
    /// Returns the indices that were already seen (before this call, or earlier in `keys`)
    /// and the distinct tickets of the appends that first sent them: the caller's skipped
    /// events are stored only if those appends succeed.
    pub fn check_and_insert(
        &self,
        state: &mut State,
        keys: &[u64],
        received_at: i64,
        ticket: u64,
    ) -> (Vec<u32>, Vec<u64>) {
        if self.config.capacity == 0 {
            return (Vec::new(), Vec::new());
        }
        self.evict(state, received_at);
        let mut skip = Vec::new();
        let mut originals = Vec::new();
        for (index, &key) in keys.iter().enumerate() {
            match state.seen.entry(key) {
                Entry::Occupied(first) => {
                    skip.push(index as u32);
                    let original = *first.get();
                    if original != 0 && original != ticket && !originals.contains(&original) {
                        originals.push(original);
                    }
                }
                Entry::Vacant(slot) => {
                    slot.insert(ticket);
                    state.order.push_back((key, received_at, ticket));
                }
            }
        }
        self.evict_to_capacity(state);
        (skip, originals)
    }

    /// Records keys known to be stored (table rows and replayed WAL records on start).
    pub fn insert_known(&self, state: &mut State, key: u64, received_at: i64) {
        if self.config.capacity == 0 {
            return;
        }
        if state.seen.insert(key, 0).is_none() {
            state.order.push_back((key, received_at, 0));
            self.evict_to_capacity(state);
        }
    }

    /// Forgets `keys` that the append with `ticket` inserted, because it was not stored after
    /// all (its WAL append failed), so the client's retry is accepted. Keys that belong to
    /// another append by now are left alone.
    pub fn forget(&self, keys: &[u64], ticket: u64) {
        let mut state = self.lock();
        for key in keys {
            if state.seen.get(key) == Some(&ticket) {
                state.seen.remove(key);
            }
        }
        // Their queue entries stay; they evict nothing once the key is gone or re-inserted.
    }

    fn evict(&self, state: &mut State, now: i64) {
        let cutoff = now.saturating_sub(self.window_micros());
        while let Some(&(key, at, ticket)) = state.order.front() {
            if at >= cutoff {
                break;
            }
            state.order.pop_front();
            remove_if_owned(state, key, ticket);
        }
    }

    fn evict_to_capacity(&self, state: &mut State) {
        while state.order.len() > self.config.capacity {
            if let Some((key, _, ticket)) = state.order.pop_front() {
                remove_if_owned(state, key, ticket);
            }
        }
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.lock().seen.len()
    }
}

fn remove_if_owned(state: &mut State, key: u64, ticket: u64) {
    if let Entry::Occupied(entry) = state.seen.entry(key)
        && *entry.get() == ticket
    {
        entry.remove();
    }
}

/// The keys are keyed SipHash values already, uniformly spread: hashing them again (the map's
/// default) only costs time. An id set of a million keys does three lookups per event.
#[derive(Default)]
pub(crate) struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `u64` keys are hashed; this is here for completeness.
        for &byte in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(byte);
        }
    }

    fn write_u64(&mut self, value: u64) {
        self.0 = value;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drops_repeats_within_the_window_and_capacity() {
        let dedup = Dedup::new(DedupConfig {
            window: Duration::from_secs(10),
            capacity: 3,
        });
        let keys: Vec<u64> = ["a", "b", "a"]
            .iter()
            .map(|id| dedup.key("web", id))
            .collect();
        let mut state = dedup.lock();
        assert_eq!(
            dedup.check_and_insert(&mut state, &keys, 0, 1),
            (vec![2], vec![])
        );
        // Repeats name the append that first sent them.
        assert_eq!(
            dedup.check_and_insert(&mut state, &keys, 1, 2),
            (vec![0, 1, 2], vec![1])
        );
        // Another source's id is not a duplicate.
        let other = [dedup.key("app", "a")];
        assert!(
            dedup
                .check_and_insert(&mut state, &other, 2, 3)
                .0
                .is_empty()
        );
        // Past the window, "a" and "b" are forgotten.
        assert!(
            dedup
                .check_and_insert(&mut state, &keys[..1], 11_000_001, 4)
                .0
                .is_empty()
        );
        // Capacity 3: after three more ids, the oldest is gone.
        let more: Vec<u64> = ["x", "y", "z"]
            .iter()
            .map(|id| dedup.key("web", id))
            .collect();
        dedup.check_and_insert(&mut state, &more, 11_000_002, 5);
        assert!(
            dedup
                .check_and_insert(&mut state, &keys[..1], 11_000_003, 6)
                .0
                .is_empty()
        );
        drop(state);
        assert_eq!(dedup.len(), 3);
    }

    #[test]
    fn forgotten_keys_are_accepted_again() {
        let dedup = Dedup::new(DedupConfig::default());
        let keys = [dedup.key("web", "m1")];
        let (skip, _) = dedup.check_and_insert(&mut dedup.lock(), &keys, 5, 1);
        assert!(skip.is_empty());
        // Another append's key is not forgotten by this one.
        dedup.forget(&keys, 9);
        assert_eq!(
            dedup.check_and_insert(&mut dedup.lock(), &keys, 5, 3),
            (vec![0], vec![1])
        );
        dedup.forget(&keys, 1);
        assert!(
            dedup
                .check_and_insert(&mut dedup.lock(), &keys, 6, 2)
                .0
                .is_empty()
        );
    }
}
