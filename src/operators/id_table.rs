//! The dedup table: 128-bit id hashes → (payload hash, event time), open addressing with linear
//! probing.
//!
//! A general hash map hides where an id's slot lives, so every lookup of a batch waits for its
//! own cache miss (the table holds millions of ids; a probe is a trip to memory). Here the slot of
//! an id is known from its hash alone, so the router can prefetch the slots of the ids a few rows
//! ahead while it checks the current one, overlapping the misses.
//!
//! Slots are 32 bytes, two per cache line; an all-zero id marks a free slot (a real hash of 0 is
//! stored as 1). The table stays at most half full, so probes are short. Removal happens only in
//! bulk ([`IdTable::retain`]), by backward shifts.

/// One remembered id.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Slot {
    /// Hash of the id (0: free slot).
    pub id: u128,
    /// Hash of the payload first seen with it.
    pub payload: u64,
    /// Event time it was (last) accepted with.
    pub event_time: i64,
}

/// Where a lookup ended.
pub(super) enum Probe {
    /// The id is in this slot.
    Found(usize),
    /// The id is absent; this free slot is where it goes.
    Free(usize),
}

impl Slot {
    fn pack(&self) -> Raw {
        [
            self.id as u64,
            (self.id >> 64) as u64,
            self.payload,
            self.event_time as u64,
        ]
    }

    fn unpack(r: &Raw) -> Slot {
        Slot {
            id: u128::from(r[0]) | (u128::from(r[1]) << 64),
            payload: r[2],
            event_time: r[3] as i64,
        }
    }
}

/// A slot as stored: id low and high halves, payload, event time. Plain `u64`s, so a new table
/// is one zeroed allocation (`calloc`: the kernel's zero pages, touched only when used) rather
/// than megabytes written slot by slot.
type Raw = [u64; 4];

fn raw_id(r: &Raw) -> u128 {
    u128::from(r[0]) | (u128::from(r[1]) << 64)
}

fn zeroed(n: usize) -> Vec<Raw> {
    vec![[0u64; 4]; n]
}

/// Open-addressing table of [`Slot`]s.
pub(super) struct IdTable {
    slots: Vec<Raw>,
    len: usize,
}

/// Never 0, which marks free slots.
pub(super) fn stored_id(hash: u128) -> u128 {
    hash.max(1)
}

impl IdTable {
    /// A table that holds `capacity` ids before it grows.
    pub(super) fn with_capacity(capacity: usize) -> Self {
        IdTable {
            slots: zeroed((capacity.max(8) * 2).next_power_of_two()),
            len: 0,
        }
    }

    /// Number of ids held.
    pub(super) fn len(&self) -> usize {
        self.len
    }

    /// Number of slots (free or not).
    pub(super) fn slots(&self) -> usize {
        self.slots.len()
    }

    /// Whether one more id makes the table grow.
    pub(super) fn grows_on_insert(&self) -> bool {
        (self.len + 1) * 2 > self.slots.len()
    }

    fn mask(&self) -> usize {
        self.slots.len() - 1
    }

    fn home(&self, id: u128) -> usize {
        (id as u64 as usize) & self.mask()
    }

    /// Hints the CPU to load the slot where a lookup of `id` starts.
    #[inline]
    pub(super) fn prefetch(&self, id: u128) {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
            let slot: *const Raw = &self.slots[self.home(id)];
            // SAFETY: a prefetch is only a hint; the address is of a live slot.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(slot.cast()) };
        }
    }

    /// Finds `id` (a [`stored_id`]), or the free slot where it belongs.
    #[inline]
    pub(super) fn probe(&self, id: u128) -> Probe {
        let mask = self.mask();
        let mut i = self.home(id);
        loop {
            let s = raw_id(&self.slots[i]);
            if s == id {
                return Probe::Found(i);
            }
            if s == 0 {
                return Probe::Free(i);
            }
            i = (i + 1) & mask;
        }
    }

    /// The slot at `i`.
    pub(super) fn get(&self, i: usize) -> Slot {
        Slot::unpack(&self.slots[i])
    }

    /// Replaces the slot at `i` with one of the same id.
    pub(super) fn set(&mut self, i: usize, slot: Slot) {
        debug_assert_eq!(raw_id(&self.slots[i]), slot.id);
        self.slots[i] = slot.pack();
    }

    /// Puts `slot` into the free slot `free` found by [`Self::probe`] for its id.
    pub(super) fn insert_at(&mut self, free: usize, slot: Slot) {
        debug_assert_eq!(raw_id(&self.slots[free]), 0);
        self.slots[free] = slot.pack();
        self.len += 1;
        if self.len * 2 > self.slots.len() {
            self.grow();
        }
    }

    /// Inserts a slot whose id is absent.
    pub(super) fn insert(&mut self, slot: Slot) {
        match self.probe(slot.id) {
            Probe::Free(i) => self.insert_at(i, slot),
            Probe::Found(i) => self.set(i, slot),
        }
    }

    fn grow(&mut self) {
        let bigger = zeroed(self.slots.len() * 2);
        let old = std::mem::replace(&mut self.slots, bigger);
        self.len = 0;
        for r in old.iter().filter(|r| raw_id(r) != 0) {
            self.insert(Slot::unpack(r));
        }
    }

    /// Keeps the slots for which `keep` holds, deleting the others with backward shifts (Knuth's
    /// Algorithm R), so every probe path stays unbroken. The scan starts after a free slot and
    /// goes once around; a shift only moves a slot back to the position being scanned, which is
    /// then looked at again.
    pub(super) fn retain(&mut self, mut keep: impl FnMut(&Slot) -> bool) {
        let n = self.slots.len();
        let Some(start) = self.slots.iter().position(|r| raw_id(r) == 0) else {
            return;
        };
        let mask = self.mask();
        let mut k = 1;
        while k <= n {
            let i = (start + k) & mask;
            let r = &self.slots[i];
            if raw_id(r) != 0 && !keep(&Slot::unpack(r)) {
                self.delete_at(i);
                self.len -= 1;
            } else {
                k += 1;
            }
        }
    }

    /// Empties slot `i` and shifts back the slots after it that would otherwise be cut off
    /// from their home.
    fn delete_at(&mut self, mut i: usize) {
        let mask = self.mask();
        self.slots[i] = [0; 4];
        let mut j = i;
        loop {
            j = (j + 1) & mask;
            let id = raw_id(&self.slots[j]);
            if id == 0 {
                return;
            }
            let h = self.home(id);
            // The slot at `j` stays if its home lies cyclically in (i, j].
            let stays = if i <= j {
                i < h && h <= j
            } else {
                i < h || h <= j
            };
            if !stays {
                self.slots[i] = self.slots[j];
                self.slots[j] = [0; 4];
                i = j;
            }
        }
    }

    /// Every held slot.
    pub(super) fn iter(&self) -> impl Iterator<Item = Slot> + '_ {
        self.slots
            .iter()
            .filter(|r| raw_id(r) != 0)
            .map(Slot::unpack)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_a_hash_map_through_inserts_growth_and_retains() {
        // Ids crowded into few home slots (low bits shared) make long clusters that wrap around
        // the end, which is where bulk removal can break probe paths.
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(9);
        for round in 0..50 {
            let mut t = IdTable::with_capacity(4);
            let mut m = std::collections::HashMap::new();
            for step in 0..2_000 {
                // Homes at the start or (low bits near u64::MAX) at the end of the table.
                let low = rng.random_range(0..(8 + round as u64 * 4));
                let low = if rng.random_bool(0.5) {
                    low
                } else {
                    u64::MAX - low
                };
                let id = stored_id((rng.random_range(0..64u128) << 64) | u128::from(low));
                let time = step as i64;
                if let Probe::Free(i) = t.probe(id) {
                    t.insert_at(
                        i,
                        Slot {
                            id,
                            payload: 0,
                            event_time: time,
                        },
                    );
                    m.insert(id, time);
                }
                if rng.random_bool(0.02) {
                    let horizon = time - rng.random_range(0..200);
                    t.retain(|s| s.event_time >= horizon);
                    m.retain(|_, t| *t >= horizon);
                }
                assert_eq!(t.len(), m.len());
                for (id, time) in &m {
                    match t.probe(*id) {
                        Probe::Found(i) => assert_eq!(t.get(i).event_time, *time),
                        Probe::Free(_) => panic!("round {round} step {step}: lost {id:x}"),
                    }
                }
            }
        }
    }
}
