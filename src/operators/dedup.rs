//! Deduplication by `event_id`, before any query sees an event.
//!
//! A redelivery repeats an `event_id` with the same payload: it is dropped and counted. The same
//! `event_id` with a different payload is a conflict and goes to the dead-letter output. State is
//! one entry per `event_id` seen within the TTL (in event time, default 1 hour): a 128-bit hash of
//! the id, the payload hash and the event time. Entries older than `watermark − ttl` are evicted
//! in sweeps every `ttl / 8` of event time, which bounds memory at about 1.125 × TTL of ids.

use std::sync::Arc;

use datafusion::arrow::array::AsArray;
use datafusion::arrow::array::{ArrayRef, Int64Array, RecordBatch, UInt64Array};
use datafusion::arrow::datatypes::{DataType, Field, Int64Type, Schema, UInt64Type};
use xxhash_rust::xxh3::xxh3_128;

use super::id_table::{IdTable, Probe, Slot, stored_id};
use crate::error::{Error, Result};
use crate::state::Snapshot;

/// What dedup decided for one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DedupOutcome {
    /// First time this id is seen (within the TTL).
    New,
    /// A redelivery with the same payload.
    Duplicate,
    /// The id was seen with a different payload.
    Conflict,
}

/// The dedup operator's state.
pub struct Dedup {
    ttl: i64,
    seen: IdTable,
    last_sweep: i64,
    /// No held id is older than this (`i64::MAX` when none is held): a sweep that could not
    /// evict anything is skipped instead of reading the whole table (a 64 MiB read that found
    /// nothing to evict was 1.3 % of a replay whose ids all lived within the TTL).
    oldest: i64,
}

/// How many rows ahead [`Dedup::prefetch`] should run of [`Dedup::check_key`] to hide a miss.
pub const PREFETCH_DISTANCE: usize = 8;

/// Which payload hash the stored hashes are (see `decode::payload_hash`): 2 was XXH3 of the
/// canonical JSON, 3 is the hash of the validated values. State holding another kind cannot be
/// compared with new events.
const PAYLOAD_HASH_VERSION: u64 = 3;

impl Dedup {
    /// A dedup with the given TTL in milliseconds of event time.
    pub fn new(ttl: i64) -> Self {
        // Room for a million ids up front: growing a table of this size rehashes ~20 times and
        // each growth faults in and zeroes a new table (a fifth of decode time in profiles).
        Self::with_capacity(ttl, 1 << 20)
    }

    /// A dedup with room for `capacity` ids before it grows.
    pub fn with_capacity(ttl: i64, capacity: usize) -> Self {
        Dedup {
            ttl,
            seen: IdTable::with_capacity(capacity),
            last_sweep: i64::MIN,
            oldest: i64::MAX,
        }
    }

    /// Number of ids held.
    pub fn len(&self) -> usize {
        self.seen.len()
    }

    /// Whether no id is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The key [`Self::check_key`] and [`Self::prefetch`] take for an `event_id`.
    pub fn key(event_id: &str) -> u128 {
        stored_id(xxh3_128(event_id.as_bytes()))
    }

    /// The key of an id of stream `stream` of a source of several ([`crate::source::Source::streams`]):
    /// [`Self::key`] for the first, salted for the others, so equal ids of different streams
    /// are different events (each stream's ids are its own).
    pub fn key_in(stream: usize, id: &str) -> u128 {
        match stream {
            0 => Self::key(id),
            s => stored_id(
                xxh3_128(id.as_bytes())
                    ^ (s as u128).wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835),
            ),
        }
    }

    /// Starts loading the table slot of `key`, to be checked a few rows later.
    #[inline]
    pub fn prefetch(&self, key: u128) {
        self.seen.prefetch(key);
    }

    /// Checks and records one event, given the current watermark. An id last seen before
    /// `watermark − ttl` has expired, whether or not a sweep has removed it yet, so the outcome
    /// never depends on batch boundaries.
    pub fn check(
        &mut self,
        event_id: &str,
        payload: u64,
        event_time: i64,
        watermark: i64,
    ) -> DedupOutcome {
        self.check_key(Self::key(event_id), payload, event_time, watermark)
    }

    /// [`Self::check`] for an id already turned into its key.
    #[inline]
    pub fn check_key(
        &mut self,
        key: u128,
        payload: u64,
        event_time: i64,
        watermark: i64,
    ) -> DedupOutcome {
        let horizon = watermark.saturating_sub(self.ttl);
        let fresh = Slot {
            id: key,
            payload,
            event_time,
        };
        match self.seen.probe(key) {
            Probe::Found(i) => {
                let seen = self.seen.get(i);
                if seen.event_time < horizon {
                    self.seen.set(i, fresh);
                    DedupOutcome::New
                } else if seen.payload == payload {
                    DedupOutcome::Duplicate
                } else {
                    DedupOutcome::Conflict
                }
            }
            Probe::Free(i) => {
                self.oldest = self.oldest.min(event_time);
                if self.seen.grows_on_insert() && self.sweep_due(watermark) {
                    // Make room from expired ids before taking more memory (at most once per
                    // sweep interval: a table whose ids are all live just grows).
                    self.sweep(watermark);
                    self.seen.insert(fresh);
                } else {
                    self.seen.insert_at(i, fresh);
                }
                DedupOutcome::New
            }
        }
    }

    /// Evicts ids whose event time is older than `watermark − ttl`, in sweeps at most every
    /// `ttl / 8` of event time. A sweep reads the whole table, so it waits until the table is a
    /// quarter full (it grows at half): until then expired ids cost nothing, as `check` treats
    /// them as absent. A table about to grow is swept first.
    pub fn expire(&mut self, watermark: i64) {
        if self.sweep_due(watermark) && self.seen.len() * 4 >= self.seen.slots() {
            self.sweep(watermark);
        }
    }

    /// Whether `ttl / 8` of event time has passed since the last sweep.
    fn sweep_due(&self, watermark: i64) -> bool {
        watermark != i64::MIN && watermark >= self.last_sweep.saturating_add(self.ttl / 8)
    }

    fn sweep(&mut self, watermark: i64) {
        self.last_sweep = watermark;
        let horizon = watermark.saturating_sub(self.ttl);
        if self.oldest >= horizon {
            return;
        }
        let mut oldest = i64::MAX;
        self.seen.retain(|s| {
            let keep = s.event_time >= horizon;
            if keep {
                oldest = oldest.min(s.event_time);
            }
            keep
        });
        self.oldest = oldest;
    }

    /// Serialises the state: four `u64`/`i64` columns (id high and low halves, payload hash,
    /// event time), built at their final size — the table can hold millions of ids.
    pub fn snapshot(&self) -> Result<Vec<u8>> {
        self.to_snapshot()?.encode("dedup")
    }

    /// The state as a [`Snapshot`], for a stage that keeps it with its own (the router).
    pub(crate) fn to_snapshot(&self) -> Result<Snapshot> {
        let n = self.seen.len();
        let (mut hi, mut lo) = (Vec::with_capacity(n), Vec::with_capacity(n));
        let (mut payloads, mut times) = (Vec::with_capacity(n), Vec::with_capacity(n));
        for s in self.seen.iter() {
            hi.push((s.id >> 64) as u64);
            lo.push(s.id as u64);
            payloads.push(s.payload);
            times.push(s.event_time);
        }
        let batch = RecordBatch::try_new(
            Arc::new(Schema::new(vec![
                Field::new("id_hi", DataType::UInt64, false),
                Field::new("id_lo", DataType::UInt64, false),
                Field::new("payload", DataType::UInt64, false),
                Field::new("event_time", DataType::Int64, false),
            ])),
            vec![
                Arc::new(UInt64Array::from(hi)) as ArrayRef,
                Arc::new(UInt64Array::from(lo)),
                Arc::new(UInt64Array::from(payloads)),
                Arc::new(Int64Array::from(times)),
            ],
        )?;
        Ok(Snapshot {
            header: serde_json::json!({
                "ttl": self.ttl,
                "last_sweep": self.last_sweep,
                "payload_hash": PAYLOAD_HASH_VERSION,
            }),
            batches: vec![(0, batch)],
        })
    }

    /// Restores a snapshot.
    pub fn restore(&mut self, bytes: &[u8]) -> Result<()> {
        self.restore_snapshot(&Snapshot::decode("dedup", bytes)?)
    }

    /// Restores the state from a [`Snapshot`] written by [`Self::to_snapshot`].
    pub(crate) fn restore_snapshot(&mut self, snap: &Snapshot) -> Result<()> {
        let bad = |m: &str| Error::State {
            operator: "dedup".into(),
            message: m.into(),
        };
        let Some((_, batch)) = snap.batches.first() else {
            return Err(bad("snapshot has no state"));
        };
        if batch.num_columns() != 4 {
            return Err(bad("snapshot has an unexpected layout"));
        }
        if snap.header["payload_hash"].as_u64() != Some(PAYLOAD_HASH_VERSION) {
            return Err(bad(
                "this state was saved by an older paystream that hashed payloads differently, so every redelivery would look like a conflict; run with --reset-state to start over",
            ));
        }
        self.last_sweep = snap.header["last_sweep"].as_i64().unwrap_or(i64::MIN);
        self.seen = IdTable::with_capacity(batch.num_rows().max(1 << 10));
        self.oldest = i64::MAX;
        let hi = batch.column(0).as_primitive::<UInt64Type>();
        let lo = batch.column(1).as_primitive::<UInt64Type>();
        let payloads = batch.column(2).as_primitive::<UInt64Type>();
        let times = batch.column(3).as_primitive::<Int64Type>();
        for i in 0..batch.num_rows() {
            let id = (u128::from(hi.value(i)) << 64) | u128::from(lo.value(i));
            self.seen.insert(Slot {
                id: stored_id(id),
                payload: payloads.value(i),
                event_time: times.value(i),
            });
            self.oldest = self.oldest.min(times.value(i));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_ids_of_different_streams_are_different_events() {
        let mut d = Dedup::new(3_600_000);
        for stream in 0..3 {
            assert_eq!(Dedup::key_in(0, "e1"), Dedup::key("e1"));
            let k = Dedup::key_in(stream, "e1");
            assert_eq!(
                d.check_key(k, 7, 0, 0),
                DedupOutcome::New,
                "stream {stream}"
            );
            assert_eq!(d.check_key(k, 7, 0, 0), DedupOutcome::Duplicate);
        }
    }

    #[test]
    fn duplicates_conflicts_and_ttl() {
        let mut d = Dedup::with_capacity(3_600_000, 4);
        for id in ["b", "c", "d", "e"] {
            d.check(id, 1, 0, 0);
        }
        assert_eq!(d.check("a", 1, 0, 0), DedupOutcome::New);
        assert_eq!(d.check("a", 1, 0, 0), DedupOutcome::Duplicate);
        assert_eq!(d.check("a", 2, 0, 0), DedupOutcome::Conflict);
        assert_eq!(
            d.check("a", 1, 0, 3_600_000),
            DedupOutcome::Duplicate,
            "exactly at the horizon is kept"
        );
        assert_eq!(
            d.check("a", 1, 0, 3_600_001),
            DedupOutcome::New,
            "expired before any sweep"
        );
        d.expire(3_600_000 + 500_000);
        assert!(d.is_empty(), "the sweep frees memory");
        assert_eq!(
            d.check("a", 1, 0, 3_600_000),
            DedupOutcome::New,
            "swept ids are new again"
        );
    }

    /// The exact model: every id with its full payload and time, no sweeps.
    #[derive(Default)]
    struct Model(std::collections::HashMap<String, (u64, i64)>);

    impl Model {
        fn check(&mut self, id: &str, payload: u64, t: i64, wm: i64, ttl: i64) -> DedupOutcome {
            let horizon = wm.saturating_sub(ttl);
            match self.0.get(id) {
                Some((p, seen)) if *seen >= horizon => {
                    if *p == payload {
                        DedupOutcome::Duplicate
                    } else {
                        DedupOutcome::Conflict
                    }
                }
                _ => {
                    self.0.insert(id.to_string(), (payload, t));
                    DedupOutcome::New
                }
            }
        }
    }

    #[test]
    fn agrees_with_an_exact_model_across_sweeps_and_restores() {
        // Times jump by up to 60 days, events arrive up to 50 days behind, TTLs range from a
        // second to 40 days, sweeps and snapshot + restore happen at random: every outcome must
        // equal the exact model's.
        use rand::{Rng, SeedableRng};
        const DAY: i64 = 86_400_000;
        let mut restores = 0;
        for seed in 0..40 {
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            let ttl = [1_000, 3_600_000, 5 * DAY, 40 * DAY][seed as usize % 4];
            let mut d = Dedup::with_capacity(ttl, 16);
            let mut m = Model::default();
            let mut clock: i64 = 1_700_000_000_000;
            let mut wm = i64::MIN;
            for step in 0..3_000 {
                if rng.random_bool(0.01) {
                    clock += rng.random_range(0..60 * DAY);
                } else {
                    clock += rng.random_range(0..2_000);
                }
                // Events up to 50 days behind the clock, some far behind the watermark.
                let t = clock - rng.random_range(0..3) * rng.random_range(0..50 * DAY);
                let id = format!("e{}", rng.random_range(0..400));
                let payload = rng.random_range(0..3u64);
                let (got, want) = (
                    d.check(&id, payload, t, wm),
                    m.check(&id, payload, t, wm, ttl),
                );
                assert_eq!(got, want, "seed {seed} step {step}: {id} t={t} wm={wm}");
                if rng.random_bool(0.5) {
                    wm = wm.max(clock - 5_000);
                }
                if rng.random_bool(0.2) {
                    d.expire(wm);
                }
                if rng.random_bool(0.005) {
                    let bytes = d.snapshot().unwrap();
                    let mut r = Dedup::with_capacity(ttl, 16);
                    r.restore(&bytes).unwrap();
                    assert_eq!(r.len(), d.len());
                    d = r;
                    restores += 1;
                }
            }
        }
        assert!(restores > 0, "restores were exercised");
    }

    #[test]
    fn snapshot_round_trip() {
        let mut d = Dedup::new(1000);
        for i in 0..100 {
            d.check(&format!("e{i}"), i, i as i64, 0);
        }
        let bytes = d.snapshot().unwrap();
        let mut r = Dedup::new(1000);
        r.restore(&bytes).unwrap();
        assert_eq!(r.len(), 100);
        assert_eq!(r.check("e5", 5, 5, 0), DedupOutcome::Duplicate);
        assert_eq!(r.check("e6", 7, 6, 0), DedupOutcome::Conflict);
    }

    #[test]
    fn state_with_another_payload_hash_is_refused() {
        let mut d = Dedup::new(1000);
        d.check("e1", 1, 1, 0);
        let mut snap = Snapshot::decode("dedup", &d.snapshot().unwrap()).unwrap();
        snap.header["payload_hash"] = 1.into();
        let err = Dedup::new(1000)
            .restore(&snap.encode("dedup").unwrap())
            .unwrap_err();
        assert!(err.to_string().contains("--reset-state"), "{err}");
    }
}
