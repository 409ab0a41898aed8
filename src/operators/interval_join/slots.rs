//! Key hash → key id for the interval join: open addressing with linear probing, 8-byte slots
//! holding 32 bits of the key's hash (the *tag*) and the id.
//!
//! A join looks up one key per row among hundreds of thousands, so each lookup is a trip to
//! memory. Here the slot of a key is known from its hash alone, so the join prefetches the
//! slots of the rows a few ahead while it works on the current one, overlapping the misses (as
//! the dedup table does, `operators/id_table.rs`). The tag rules out other keys without
//! touching them; the caller compares the key's bytes on a tag match, so a lookup is exact.
//! Growing rehashes from the tags alone, never reading the keys. The table is at most half
//! full; removal shifts the following slots back (no tombstones).

/// A slot: tag (0: free) in the low half, id in the high half.
type Slot = u64;

fn tag_of(s: Slot) -> u32 {
    s as u32
}

fn id_of(s: Slot) -> u32 {
    (s >> 32) as u32
}

/// The tag of a 64-bit key hash: its high half, never 0 (which marks a free slot).
pub(super) fn tag(hash: u64) -> u32 {
    ((hash >> 32) as u32).max(1)
}

pub(super) struct Slots {
    slots: Vec<Slot>,
    bits: u32,
    len: usize,
}

impl Default for Slots {
    fn default() -> Self {
        Slots {
            slots: vec![0; 1 << 10],
            bits: 10,
            len: 0,
        }
    }
}

impl Slots {
    /// Where a tag's probe starts (Fibonacci hashing: the tag's bits spread over the index).
    fn home(&self, tag: u32) -> usize {
        (u64::from(tag).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - self.bits)) as usize
    }

    fn mask(&self) -> usize {
        self.slots.len() - 1
    }

    /// Hints the CPU to load the slot where a lookup of `tag` starts.
    #[inline]
    pub(super) fn prefetch(&self, tag: u32) {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
            let slot: *const Slot = &self.slots[self.home(tag)];
            // SAFETY: a prefetch is only a hint; the address is of a live slot.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(slot.cast()) };
        }
    }

    /// The id with tag `tag` for which `is` holds.
    pub(super) fn find(&self, tag: u32, is: impl Fn(u32) -> bool) -> Option<u32> {
        let mask = self.mask();
        let mut i = self.home(tag);
        loop {
            let s = self.slots[i];
            match tag_of(s) {
                0 => return None,
                t if t == tag && is(id_of(s)) => return Some(id_of(s)),
                _ => i = (i + 1) & mask,
            }
        }
    }

    /// Adds `id` under `tag` (not present).
    pub(super) fn insert(&mut self, tag: u32, id: u32) {
        if (self.len + 1) * 2 > self.slots.len() {
            self.grow();
        }
        self.put(tag, id);
        self.len += 1;
    }

    fn put(&mut self, tag: u32, id: u32) {
        let mask = self.mask();
        let mut i = self.home(tag);
        while tag_of(self.slots[i]) != 0 {
            i = (i + 1) & mask;
        }
        self.slots[i] = u64::from(tag) | (u64::from(id) << 32);
    }

    fn grow(&mut self) {
        let old = std::mem::replace(&mut self.slots, vec![0; 1 << (self.bits + 1)]);
        self.bits += 1;
        for s in old {
            if tag_of(s) != 0 {
                self.put(tag_of(s), id_of(s));
            }
        }
    }

    /// Removes `id` (under `tag`); whether it was there.
    pub(super) fn remove(&mut self, tag: u32, id: u32) -> bool {
        let mask = self.mask();
        let mut i = self.home(tag);
        loop {
            let s = self.slots[i];
            if tag_of(s) == 0 {
                return false;
            }
            if tag_of(s) == tag && id_of(s) == id {
                break;
            }
            i = (i + 1) & mask;
        }
        // Backward shift: move up each following slot whose probe could not start after the
        // hole, so every remaining id stays reachable from its home.
        let mut hole = i;
        let mut j = (i + 1) & mask;
        loop {
            let s = self.slots[j];
            if tag_of(s) == 0 {
                break;
            }
            let home = self.home(tag_of(s));
            // Whether `home` lies cyclically in (hole, j]: then the slot must stay.
            let stays = if hole <= j {
                hole < home && home <= j
            } else {
                hole < home || home <= j
            };
            if !stays {
                self.slots[hole] = s;
                hole = j;
            }
            j = (j + 1) & mask;
        }
        self.slots[hole] = 0;
        self.len -= 1;
        true
    }

    /// Every id held.
    pub(super) fn ids(&self) -> impl Iterator<Item = u32> + '_ {
        self.slots
            .iter()
            .filter(|s| tag_of(**s) != 0)
            .map(|s| id_of(*s))
    }

    /// Number of ids held.
    pub(super) fn len(&self) -> usize {
        self.len
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    /// Against a map, over random inserts and removals with many equal tags (collisions and
    /// long probe runs that wrap around the table's end).
    #[test]
    fn holds_exactly_what_a_map_holds() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(17);
        for tags in [3u32, 50, 5_000] {
            let mut t = Slots::default();
            let mut model: std::collections::HashMap<u32, u32> = Default::default();
            let mut next = 0u32;
            for _ in 0..20_000 {
                if rng.random_bool(0.6) || model.is_empty() {
                    let tag = rng.random_range(1..=tags);
                    t.insert(tag, next);
                    model.insert(next, tag);
                    next += 1;
                } else {
                    let id = *model.keys().nth(rng.random_range(0..model.len())).unwrap();
                    let tag = model.remove(&id).unwrap();
                    assert!(t.remove(tag, id));
                    assert!(!t.remove(tag, id), "gone");
                }
            }
            assert_eq!(t.len(), model.len());
            for (id, tag) in &model {
                assert_eq!(t.find(*tag, |i| i == *id), Some(*id), "tags {tags}");
            }
            let mut ids: Vec<u32> = t.ids().collect();
            ids.sort_unstable();
            let mut want: Vec<u32> = model.keys().copied().collect();
            want.sort_unstable();
            assert_eq!(ids, want);
            assert_eq!(t.find(tags + 1, |_| true), None);
        }
    }
}
