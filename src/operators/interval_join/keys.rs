//! The interval join's per-key state: each key's kept rows on both sides, the key's bytes
//! interned once, and when the key next has a row to drop.
//!
//! Joins like reconciliation keep one or two rows per key (an authorization waiting for its
//! capture) for hundreds of thousands of keys, so the per-key overhead is the state: a key is
//! one [`Key`] with its rows and (short) bytes inline, no allocation for the first row of a
//! side, and its id in [`Slots`] under a tag of its hash (the bytes are compared on a match:
//! no second copy as a map key).
//!
//! Deadlines are kept in buckets of [`BUCKET_MS`] of event time, appended to as rows come and
//! drained as the watermark passes them: a binary heap of every key's deadline spent a fifth of
//! the join's time in `pop`, each one a walk through a heap of a million entries. A key has one
//! live entry, pushed only when a row brings its deadline forward, so its later rows cost
//! nothing here.

use std::collections::{BTreeMap, VecDeque};

use smallvec::SmallVec;

use super::slots::{Slots, tag};

/// A kept row: where it is in its side's store, its time, and (a left row) whether it matched.
#[derive(Debug, Clone, Copy)]
pub(super) struct Kept {
    pub batch: u32,
    pub row: u32,
    pub time: i64,
    pub matched: bool,
}

/// One key's kept rows, in arrival order.
#[derive(Debug, Default)]
pub(super) struct Sides {
    pub left: SmallVec<[Kept; 1]>,
    pub right: SmallVec<[Kept; 1]>,
}

/// No deadline.
const NEVER: i64 = i64::MAX;

/// Key bytes up to this long are kept in the [`Key`] itself (a payment or card id's row
/// encoding is about 20 bytes).
type KeyBytes = SmallVec<[u8; 24]>;

/// Width of a deadline bucket, ms (a power of two).
const BUCKET_MS: i64 = 256;

struct Key {
    bytes: KeyBytes,
    /// Whether the key is in use (a freed key waits for its id to be reused).
    live: bool,
    hash: u64,
    sides: Sides,
    /// The deadline of this key's live heap entry ([`NEVER`]: none).
    scheduled: i64,
}

/// Keys per chunk of [`Chunked`].
const CHUNK: usize = 4096;

/// The keys, in fixed-size chunks: a `Vec` of half a million keys doubled by copying 50 MB
/// into fresh memory (and the kernel zeroed every page of it first).
#[derive(Default)]
struct Chunked {
    chunks: Vec<Vec<Key>>,
    len: usize,
}

impl Chunked {
    fn push(&mut self, key: Key) {
        if self.len.is_multiple_of(CHUNK) {
            self.chunks.push(Vec::with_capacity(CHUNK));
        }
        self.chunks.last_mut().expect("a chunk").push(key);
        self.len += 1;
    }
}

impl std::ops::Index<usize> for Chunked {
    type Output = Key;
    fn index(&self, i: usize) -> &Key {
        &self.chunks[i / CHUNK][i % CHUNK]
    }
}

impl std::ops::IndexMut<usize> for Chunked {
    fn index_mut(&mut self, i: usize) -> &mut Key {
        &mut self.chunks[i / CHUNK][i % CHUNK]
    }
}

/// Every key's state.
#[derive(Default)]
pub(super) struct Keys {
    ids: Slots,
    keys: Chunked,
    free: Vec<u32>,
    /// Bucket (deadline / [`BUCKET_MS`]) → (deadline, key id); an entry whose deadline is not
    /// its key's `scheduled` is stale.
    expiry: BTreeMap<i64, VecDeque<(i64, u32)>>,
}

impl Keys {
    /// The hash [`Self::id_hashed`] takes.
    pub(super) fn hash(bytes: &[u8]) -> u64 {
        xxhash_rust::xxh3::xxh3_64(bytes)
    }

    /// Hints the CPU to load what a lookup of a key of hash `hash` reads first.
    pub(super) fn prefetch(&self, hash: u64) {
        self.ids.prefetch(tag(hash));
    }

    /// The id of the key `bytes`, interning it.
    #[cfg(test)]
    pub(super) fn id(&mut self, bytes: &[u8]) -> usize {
        self.id_hashed(bytes, Self::hash(bytes))
    }

    /// The id of the key `bytes` of hash `hash` ([`Self::hash`]), interning it.
    pub(super) fn id_hashed(&mut self, bytes: &[u8], hash: u64) -> usize {
        let keys = &self.keys;
        if let Some(id) = self
            .ids
            .find(tag(hash), |i| keys[i as usize].bytes.as_slice() == bytes)
        {
            return id as usize;
        }
        let key = Key {
            bytes: KeyBytes::from_slice(bytes),
            live: true,
            hash,
            sides: Sides::default(),
            scheduled: NEVER,
        };
        let id = match self.free.pop() {
            Some(id) => {
                self.keys[id as usize] = key;
                id
            }
            None => {
                self.keys.push(key);
                (self.keys.len - 1) as u32
            }
        };
        self.ids.insert(tag(hash), id);
        id as usize
    }

    pub(super) fn sides(&self, id: usize) -> &Sides {
        &self.keys[id].sides
    }

    pub(super) fn sides_mut(&mut self, id: usize) -> &mut Sides {
        &mut self.keys[id].sides
    }

    /// Key `id` has a row to drop once the watermark passes `at`.
    pub(super) fn schedule(&mut self, id: usize, at: i64) {
        let key = &mut self.keys[id];
        if at < key.scheduled {
            key.scheduled = at;
            self.expiry
                .entry(at.div_euclid(BUCKET_MS))
                .or_default()
                .push_back((at, id as u32));
        }
    }

    /// Key `id` has a row to drop once the watermark passes `at`, which may as well wait for
    /// the key's deadline if it has one.
    pub(super) fn schedule_eventually(&mut self, id: usize, at: i64) {
        if self.keys[id].scheduled == NEVER {
            self.schedule(id, at);
        }
    }

    /// The keys with a deadline before `watermark` (every live key for `None`: the end), each
    /// once, unscheduled: the caller drops their passed rows and schedules what is left.
    pub(super) fn due(&mut self, watermark: Option<i64>) -> Vec<usize> {
        let Some(w) = watermark else {
            self.expiry.clear();
            let mut due = Vec::with_capacity(self.ids.len());
            for id in self.ids.ids() {
                self.keys[id as usize].scheduled = NEVER;
                due.push(id as usize);
            }
            due.sort_unstable();
            return due;
        };
        let mut due = Vec::new();
        let mut take = |at: i64, id: u32, keys: &mut Chunked| {
            let key = &mut keys[id as usize];
            if key.scheduled == at {
                key.scheduled = NEVER;
                due.push(id as usize);
            }
        };
        while let Some(mut first) = self.expiry.first_entry() {
            let bucket = *first.key();
            if bucket.saturating_mul(BUCKET_MS) >= w {
                break;
            }
            if bucket.saturating_add(1).saturating_mul(BUCKET_MS) <= w {
                // Every deadline in it has passed.
                for (at, id) in first.remove() {
                    take(at, id, &mut self.keys);
                }
                continue;
            }
            // The watermark is inside this bucket: take what it passed, keep the rest.
            let entries = first.get_mut();
            for _ in 0..entries.len() {
                let (at, id) = entries.pop_front().expect("counted");
                if at < w {
                    take(at, id, &mut self.keys);
                } else {
                    entries.push_back((at, id));
                }
            }
            if entries.is_empty() {
                first.remove();
            }
            break;
        }
        due
    }

    /// Forgets key `id` if it keeps no row (its id may be reused).
    pub(super) fn release_if_empty(&mut self, id: usize) {
        let key = &self.keys[id];
        if !key.sides.left.is_empty() || !key.sides.right.is_empty() || !key.live {
            return;
        }
        if self.ids.remove(tag(key.hash), id as u32) {
            let key = &mut self.keys[id];
            key.live = false;
            key.bytes = KeyBytes::new();
            key.scheduled = NEVER;
            self.free.push(id as u32);
        }
    }

    /// Every live key's rows.
    pub(super) fn all(&self) -> impl Iterator<Item = &Sides> {
        self.ids.ids().map(|id| &self.keys[id as usize].sides)
    }

    /// Number of live keys.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.ids.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kept(time: i64) -> Kept {
        Kept {
            batch: 0,
            row: 0,
            time,
            matched: false,
        }
    }

    #[test]
    fn keys_are_interned_released_and_reused() {
        let mut k = Keys::default();
        let a = k.id(b"a");
        let b = k.id(b"b");
        assert_ne!(a, b);
        assert_eq!(k.id(b"a"), a);
        k.sides_mut(a).left.push(kept(1));
        k.release_if_empty(a);
        k.release_if_empty(b);
        assert_eq!(k.len(), 1, "a keeps a row, b none");
        assert_eq!(k.id(b"c"), b, "b's id is reused");
        assert_eq!(k.id(b"a"), a);
        assert_eq!(k.len(), 2);
    }

    #[test]
    fn a_key_is_due_once_at_its_earliest_deadline() {
        let mut k = Keys::default();
        let a = k.id(b"a");
        let b = k.id(b"b");
        k.schedule(a, 10);
        k.schedule(a, 20); // later: no new entry
        k.schedule(b, 30);
        k.schedule(b, 5); // earlier: replaces
        assert_eq!(k.due(Some(5)), Vec::<usize>::new());
        let mut due = k.due(Some(11));
        due.sort_unstable();
        assert_eq!(due, vec![a, b]);
        assert_eq!(
            k.due(Some(100)),
            Vec::<usize>::new(),
            "the stale 30 is skipped"
        );
        k.schedule(a, 50);
        k.schedule(b, 1000);
        assert_eq!(k.due(Some(600)), vec![a], "whole buckets are drained");
        assert_eq!(k.due(None), vec![a, b]);
        assert_eq!(
            k.due(Some(100)),
            Vec::<usize>::new(),
            "the end unschedules all"
        );
    }
}
