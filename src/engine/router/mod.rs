//! The router: the stage where an event is accepted or not, where time advances, and where each
//! query's events are spread over its workers.
//!
//! ```text
//!  decoded batches ─▶ skew guard ─▶ dedup ─▶ watermark ─▶ per query: WHERE, keys ─▶ worker i
//!   (source order)    (far future)  (event_id) (per partition)   (partition.rs)
//! ```
//! For each decoded batch, in source order: reject far-future timestamps, deduplicate by
//! `event_id`, advance the watermark, and stamp every accepted event with the watermark it
//! arrived under ([`Router::accept`]); then, per query, split the accepted events as its plan
//! requires ([`Partitioner`]). The thread that does this in order, with the checkpoint
//! barriers, is the [`stage`] loop. The router's state (dedup table and watermark) is one
//! [`Snapshot`] like an operator's ([`Router::snapshot`]).

use std::sync::Arc;

mod partition;
pub(super) mod stage;

pub use self::partition::Partitioner;

use datafusion::arrow::array::{AsArray, BooleanArray, BooleanBufferBuilder};
use datafusion::arrow::datatypes::TimestampMillisecondType;

use crate::decode::{DecodedBatch, Reject, RejectReason};
use crate::error::{Error, Result};
use crate::operators::{
    Dedup, DedupOutcome, EventBatch, PREFETCH_DISTANCE, Watermark, WatermarkState,
};
use crate::schema::EventSchema;
use crate::state::Snapshot;
use crate::time::rfc3339;

/// The name the router's snapshot is written under.
const STATE_NAME: &str = "router";

/// Counters kept by the router.
#[derive(Debug, Default, Clone, Copy)]
pub struct RouterCounts {
    /// Events accepted (passed to the query).
    pub accepted: u64,
    /// Redeliveries dropped.
    pub duplicates: u64,
    /// Events dead-lettered by the router (conflicts, far-future timestamps).
    pub dead_lettered: u64,
}

/// Dedup and watermark: decides which events the queries see, and when time advances.
pub struct Router {
    /// Where the id and the event time are: per stream of the source (one but for a source of
    /// several, [`crate::source::Source::streams`]).
    streams: Vec<Arc<EventSchema>>,
    /// Per source partition, its stream.
    stream_of: Vec<usize>,
    /// Dedup state.
    pub dedup: Dedup,
    /// Watermark state.
    pub watermark: Watermark,
    /// Counters.
    pub counts: RouterCounts,
}

impl Router {
    /// A router over payment events ([`EventSchema::payments`]) with the given dedup and
    /// watermark state.
    pub fn new(dedup: Dedup, watermark: Watermark) -> Self {
        Router::for_events(EventSchema::payments(), dedup, watermark)
    }

    /// A router over events of the schema `events`.
    pub fn for_events(events: Arc<EventSchema>, dedup: Dedup, watermark: Watermark) -> Self {
        Router {
            streams: vec![events],
            stream_of: Vec::new(),
            dedup,
            watermark,
            counts: RouterCounts::default(),
        }
    }

    /// A router over the streams of a source of several ([`crate::source::Source::streams`]):
    /// each stream's events are deduplicated by its own id (ids of different streams never
    /// match) and timed by its own time column, and the watermark is the least over every
    /// stream's partitions.
    pub fn for_streams(
        streams: &[crate::source::SourceStream],
        dedup: Dedup,
        watermark: Watermark,
    ) -> Self {
        let mut r = Router::for_events(Arc::clone(&streams[0].events), dedup, watermark);
        r.streams = streams.iter().map(|s| Arc::clone(&s.events)).collect();
        r.stream_of = streams
            .iter()
            .enumerate()
            .flat_map(|(i, s)| std::iter::repeat_n(i, s.partitions))
            .collect();
        r
    }

    /// The events of the stream of source partition `partition`.
    pub fn events_of(&self, partition: usize) -> &Arc<EventSchema> {
        &self.streams[self.stream(partition)]
    }

    /// The stream of source partition `partition`.
    fn stream(&self, partition: usize) -> usize {
        self.stream_of.get(partition).copied().unwrap_or(0)
    }

    /// The router's state as one snapshot: the dedup table as its batches, the watermark in the
    /// header.
    pub fn snapshot(&self) -> Result<Vec<u8>> {
        let mut snap = self.dedup.to_snapshot()?;
        snap.header["watermark"] = serde_json::to_value(self.watermark.state())
            .map_err(|e| Error::Internal(format!("cannot write the watermark state: {e}")))?;
        snap.encode(STATE_NAME)
    }

    /// Restores a snapshot written by [`Self::snapshot`].
    pub fn restore(&mut self, bytes: &[u8]) -> Result<()> {
        let snap = Snapshot::decode(STATE_NAME, bytes)?;
        if let Some(w) = snap.header.get("watermark").filter(|w| !w.is_null()) {
            let w: WatermarkState =
                serde_json::from_value(w.clone()).map_err(|e| Error::State {
                    operator: STATE_NAME.into(),
                    message: format!("bad watermark state: {e}"),
                })?;
            self.watermark.restore(&w);
        }
        self.dedup.restore_snapshot(&snap)
    }

    /// `bytes` (a [`Self::snapshot`]) with its watermark raised to at least `at`.
    ///
    /// A run that ends by emitting its open windows (`run --until-end`) saves this: an event
    /// that arrives later for a window it emitted is then late, instead of opening the window
    /// again and emitting a second, partial row for it.
    pub fn snapshot_with_watermark_at_least(bytes: &[u8], at: i64) -> Result<Vec<u8>> {
        let mut snap = Snapshot::decode(STATE_NAME, bytes)?;
        if let Some(w) = snap.header.get("watermark").filter(|w| !w.is_null()) {
            let mut w: WatermarkState =
                serde_json::from_value(w.clone()).map_err(|e| Error::State {
                    operator: STATE_NAME.into(),
                    message: format!("bad watermark state: {e}"),
                })?;
            w.current = w.current.max(at);
            snap.header["watermark"] = serde_json::to_value(w)
                .map_err(|e| Error::Internal(format!("cannot write the watermark state: {e}")))?;
        }
        snap.encode(STATE_NAME)
    }

    /// The router snapshot equivalent to a watermark and a dedup snapshot saved apart (state
    /// files of version 1).
    pub fn state_from_parts(watermark: Option<&WatermarkState>, dedup: &[u8]) -> Result<Vec<u8>> {
        let mut snap = match dedup.is_empty() {
            // No dedup table was saved: an empty one.
            true => Dedup::new(0).to_snapshot()?,
            false => Snapshot::decode("dedup", dedup)?,
        };
        if let Some(w) = watermark {
            snap.header["watermark"] = serde_json::to_value(w)
                .map_err(|e| Error::Internal(format!("cannot write the watermark state: {e}")))?;
        }
        snap.encode(STATE_NAME)
    }

    /// Accepts what can be accepted from a decoded batch of source partition `partition`. Rejected events are appended to
    /// `rejects`; the accepted ones are returned with their arrival watermarks.
    pub fn accept(
        &mut self,
        partition: usize,
        d: &DecodedBatch,
        raw: impl Fn(usize) -> String,
        rejects: &mut Vec<Reject>,
    ) -> Result<Option<EventBatch>> {
        let b = &d.batch;
        let stream = self.stream(partition);
        let events = &self.streams[stream];
        // A declared source without a `dedup_key` has no id: nothing is a duplicate.
        let ids = events.id_column().map(|c| b.column(c).as_string::<i32>());
        let times = b
            .column(events.event_time_column())
            .as_primitive::<TimestampMillisecondType>();
        // Which rows are accepted, built as they are checked.
        let mut selected = BooleanBufferBuilder::new(b.num_rows());
        let mut accepted = 0usize;
        let mut arrival = Vec::with_capacity(b.num_rows());
        // Keys first, so each row's table slot can be prefetched a few rows before it is checked.
        let keys: Vec<u128> = match ids {
            Some(ids) => ids
                .iter()
                .map(|id| Dedup::key_in(stream, id.unwrap_or("")))
                .collect(),
            None => Vec::new(),
        };
        for k in keys.iter().take(PREFETCH_DISTANCE) {
            self.dedup.prefetch(*k);
        }
        for i in 0..b.num_rows() {
            if let Some(k) = keys.get(i + PREFETCH_DISTANCE) {
                self.dedup.prefetch(*k);
            }
            let ts = times.value(i);
            // Every row gets an arrival watermark (the batch keeps its rows; see `EventBatch`).
            arrival.push(self.watermark.current());
            if self.watermark.is_far_future(partition, ts) {
                self.counts.dead_lettered += 1;
                rejects.push(Reject::new(
                    RejectReason::FutureTimestamp,
                    format!(
                        "event_time {} is more than the allowed skew ahead of the watermark {}",
                        rfc3339(ts),
                        rfc3339(self.watermark.current())
                    ),
                    d.positions[i],
                    raw(i).as_bytes(),
                ));
                selected.append(false);
                continue;
            }
            let outcome = match keys.get(i) {
                Some(k) => {
                    self.dedup
                        .check_key(*k, d.payload_hashes[i], ts, self.watermark.current())
                }
                None => DedupOutcome::New,
            };
            selected.append(outcome == DedupOutcome::New);
            match outcome {
                DedupOutcome::New => {
                    self.watermark.observe(partition, ts);
                    accepted += 1;
                }
                DedupOutcome::Duplicate => self.counts.duplicates += 1,
                DedupOutcome::Conflict => {
                    self.counts.dead_lettered += 1;
                    rejects.push(Reject::new(
                        RejectReason::DuplicateConflict,
                        format!(
                            "{} {:?} was seen before with a different payload",
                            events
                                .id_column()
                                .map_or("id", |c| b.schema_ref().field(c).name()),
                            ids.map_or("", |ids| ids.value(i))
                        ),
                        d.positions[i],
                        raw(i).as_bytes(),
                    ));
                }
            }
        }
        self.dedup.expire(self.watermark.current());
        self.counts.accepted += accepted as u64;
        if accepted == 0 {
            return Ok(None);
        }
        // Rows not accepted stay in the batch, unselected: copying every column to drop a few
        // rows was a third of the router's work, and operators filter anyway.
        let selection =
            (accepted != b.num_rows()).then(|| BooleanArray::new(selected.finish(), None));
        Ok(Some(EventBatch {
            batch: b.clone(),
            selection,
            positions: d.positions.clone(),
            arrival_watermarks: arrival,
            keys: None,
            stream,
            raw: crate::operators::RawEvents::of(d),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn router() -> Router {
        Router::new(
            Dedup::new(60_000),
            Watermark::partitioned(1_000, 60_000, 2, None),
        )
    }

    #[test]
    fn the_router_state_round_trips_as_one_snapshot_and_from_version_1_parts() {
        let mut r = router();
        assert_eq!(r.dedup.check("e1", 7, 5_000, i64::MIN), DedupOutcome::New);
        r.watermark.observe(1, 5_000);
        let bytes = r.snapshot().unwrap();
        let mut back = router();
        back.restore(&bytes).unwrap();
        assert_eq!(back.watermark.state(), r.watermark.state());
        assert_eq!(
            back.dedup.check("e1", 7, 5_000, i64::MIN),
            DedupOutcome::Duplicate
        );
        assert_eq!(
            back.dedup.check("e1", 8, 5_000, i64::MIN),
            DedupOutcome::Conflict
        );
        // A state file of version 1 kept them apart.
        let v1 = Router::state_from_parts(Some(&r.watermark.state()), &r.dedup.snapshot().unwrap())
            .unwrap();
        let mut old = router();
        old.restore(&v1).unwrap();
        assert_eq!(old.watermark.state(), r.watermark.state());
        assert_eq!(old.dedup.len(), 1);
        // One with a watermark and no dedup table keeps the watermark.
        let v1 = Router::state_from_parts(Some(&r.watermark.state()), &[]).unwrap();
        let mut old = router();
        old.restore(&v1).unwrap();
        assert_eq!(old.watermark.state(), r.watermark.state());
        assert_eq!(old.dedup.len(), 0);
        // Another stage's snapshot is refused.
        assert!(router().restore(&r.dedup.snapshot().unwrap()).is_err());
    }
}
