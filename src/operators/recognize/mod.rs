//! `MATCH_RECOGNIZE`: one row per match of a row pattern over each partition's events (CEP).
//!
//! ```text
//!  process(batch) ── WHERE, late split ──▶ pending events
//!  advance_watermark(W) ── events before W, sorted by (partition, time, ties) ──▶ each
//!        partition's rows ──▶ matcher (matcher.rs): match / no match / undecided at its first row
//!        ──▶ measures over each match ──▶ outer WHERE, SELECT
//! ```
//!
//! An event joins its partition once the watermark has passed it, so the partition's rows are
//! in event-time order whatever order they arrived in, and a replay finds the live run's
//! matches. A partition keeps its rows from the first one whose match is undecided; a match
//! waits at most `WITHIN` after its first row, so every partial match, and the rows it holds,
//! is gone once the watermark passes that bound. Rows mapped nowhere leave at once.

mod matcher;

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, RecordBatch, RecordBatchOptions, UInt32Array,
};
use datafusion::arrow::compute::{
    concat_batches, filter_record_batch, interleave, take_record_batch,
};
use datafusion::arrow::datatypes::TimestampMillisecondType;
use datafusion::arrow::row::{RowConverter, SortField};
use datafusion::common::ScalarValue;
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_plan::PhysicalExpr;

use self::matcher::{Chunk, Outcome, Row};
use super::aggregate::{late_events, where_mask};
use super::{Emitted, EventBatch, Operator, OperatorOutput, RowTimes};
use crate::error::Result;
use crate::sql::apply_stages_timed;
use crate::sql::recognize::{Define, RecognizeSpec};
use crate::state::{Snapshot, state_err};

const NAME: &str = "match_recognize";

/// One partition's rows from the first whose match is undecided.
#[derive(Debug, Default)]
struct Partition {
    rows: VecDeque<Row>,
    /// When the first row's match stops waiting for rows (its time plus WITHIN), as entered in
    /// [`Recognize::waiting`].
    deadline: Option<i64>,
}

/// A match found, before its measures are computed.
struct Found {
    rows: VecDeque<Row>,
    assigned: Vec<u16>,
}

/// The operator.
pub(super) struct Recognize {
    spec: Arc<RecognizeSpec>,
    keys: RowConverter,
    order: RowConverter,
    /// Events the watermark has not passed yet.
    pending: Vec<RecordBatch>,
    partitions: HashMap<Box<[u8]>, Partition>,
    /// Partitions whose first row's match is undecided, by when it stops waiting.
    waiting: BTreeSet<(i64, Box<[u8]>)>,
    watermark: i64,
    /// Events before this are late whatever the watermark they arrived under (after `finish`).
    floor: i64,
    newest: i64,
    finished: bool,
}

impl Recognize {
    /// The operator for `spec`, over events of `schema`.
    pub(super) fn new(
        spec: &RecognizeSpec,
        schema: &datafusion::arrow::datatypes::SchemaRef,
    ) -> Result<Self> {
        let keys = RowConverter::new(
            spec.keys
                .iter()
                .map(|k| Ok(SortField::new(k.data_type(schema)?)))
                .collect::<Result<Vec<_>>>()?,
        )?;
        let order = RowConverter::new(
            std::iter::once(Ok(SortField::new(
                schema.field(spec.time).data_type().clone(),
            )))
            .chain(spec.ties.iter().map(|t| {
                Ok(SortField::new_with_options(
                    t.expr.data_type(schema)?,
                    t.options,
                ))
            }))
            .collect::<Result<Vec<_>>>()?,
        )?;
        Ok(Recognize {
            spec: Arc::new(spec.clone()),
            keys,
            order,
            pending: Vec::new(),
            partitions: HashMap::new(),
            waiting: BTreeSet::new(),
            watermark: i64::MIN,
            floor: i64::MIN,
            newest: i64::MIN,
            finished: false,
        })
    }

    fn times(&self, batch: &RecordBatch) -> Vec<i64> {
        batch
            .column(self.spec.time)
            .as_primitive::<TimestampMillisecondType>()
            .values()
            .to_vec()
    }

    /// The partition key of each row of `batch` (`None`: no PARTITION BY, one partition).
    fn key_rows(&self, batch: &RecordBatch) -> Result<Option<datafusion::arrow::row::Rows>> {
        if self.spec.keys.is_empty() {
            return Ok(None);
        }
        let cols = self
            .spec
            .keys
            .iter()
            .map(|k| k.evaluate(batch)?.into_array(batch.num_rows()))
            .collect::<datafusion::error::Result<Vec<_>>>()?;
        Ok(Some(self.keys.convert_columns(&cols)?))
    }

    /// Bits of the variables each row of `batch` may be mapped to.
    fn fits(&self, batch: &RecordBatch) -> Result<Vec<u64>> {
        let n = batch.num_rows();
        let mut fits = vec![0u64; n];
        for (v, d) in self.spec.defines.iter().enumerate() {
            match d {
                Define::Always | Define::Navigated { .. } => {
                    fits.iter_mut().for_each(|f| *f |= 1 << v);
                }
                Define::Row(e) => {
                    let a = e.evaluate(batch)?.into_array(n)?;
                    let b = a.as_boolean();
                    for (i, f) in fits.iter_mut().enumerate() {
                        if b.is_valid(i) && b.value(i) {
                            *f |= 1 << v;
                        }
                    }
                }
            }
        }
        Ok(fits)
    }

    /// Moves `batch`'s rows (sorted, or in partition order already) into their partitions;
    /// returns the keys touched, in order.
    fn append(&mut self, batch: RecordBatch, sort: bool) -> Result<Vec<Box<[u8]>>> {
        if batch.num_rows() == 0 {
            return Ok(Vec::new());
        }
        let mut keys = self.key_rows(&batch)?;
        let mut batch = batch;
        if sort {
            let mut order_cols = vec![Arc::clone(batch.column(self.spec.time))];
            for t in &self.spec.ties {
                order_cols.push(t.expr.evaluate(&batch)?.into_array(batch.num_rows())?);
            }
            let order = self.order.convert_columns(&order_cols)?;
            let mut idx: Vec<u32> = (0..batch.num_rows() as u32).collect();
            let key = |i: u32| keys.as_ref().map(|k| k.row(i as usize));
            idx.sort_by(|a, b| {
                key(*a)
                    .cmp(&key(*b))
                    .then_with(|| order.row(*a as usize).cmp(&order.row(*b as usize)))
            });
            batch = take_record_batch(&batch, &UInt32Array::from(idx))?;
            keys = self.key_rows(&batch)?;
        }
        let times = self.times(&batch);
        let fits = self.fits(&batch)?;
        let chunk = Arc::new(Chunk { batch });
        let mut touched: Vec<Box<[u8]>> = Vec::new();
        for (i, (time, fits)) in times.into_iter().zip(fits).enumerate() {
            let key: &[u8] = keys.as_ref().map_or(&[], |k| k.row(i).data());
            if touched.last().is_none_or(|k| **k != *key) {
                touched.push(key.into());
            }
            let key = touched.last().expect("pushed above");
            self.partitions
                .entry(key.clone())
                .or_default()
                .rows
                .push_back(Row {
                    chunk: Arc::clone(&chunk),
                    row: i as u32,
                    time,
                    fits,
                });
        }
        Ok(touched)
    }

    /// Finds every match the partition's known rows decide.
    fn settle(&mut self, key: &[u8], found: &mut Vec<Found>) -> Result<()> {
        let Some(mut p) = self.partitions.remove(key) else {
            return Ok(());
        };
        if let Some(d) = p.deadline.take() {
            self.waiting.remove(&(d, Box::from(key)));
        }
        let (finished, watermark, within) = (self.finished, self.watermark, self.spec.within);
        let more = |first: i64| !finished && first.saturating_add(within) >= watermark;
        loop {
            match matcher::find(&self.spec, &p.rows, more)? {
                Outcome::Match(assigned) => {
                    let n = assigned.len();
                    let rows: VecDeque<Row> = p.rows.iter().take(n).cloned().collect();
                    let skip = if self.spec.skip_to_next_row { 1 } else { n };
                    p.rows.drain(..skip);
                    found.push(Found { rows, assigned });
                }
                Outcome::NoMatch => {
                    p.rows.pop_front();
                }
                Outcome::Undecided => break,
            }
            if p.rows.is_empty() {
                break;
            }
        }
        if let Some(first) = p.rows.front() {
            let d = first.time.saturating_add(within);
            self.waiting.insert((d, Box::from(key)));
            p.deadline = Some(d);
            self.partitions.insert(Box::from(key), p);
        }
        Ok(())
    }

    /// Releases the events before `watermark` into their partitions and settles what that, and
    /// the watermark itself, decides.
    fn release(&mut self, watermark: i64, out: &mut OperatorOutput) -> Result<()> {
        let mut released = Vec::new();
        let mut kept = Vec::new();
        for b in std::mem::take(&mut self.pending) {
            let times = b
                .column(self.spec.time)
                .as_primitive::<TimestampMillisecondType>();
            let before: datafusion::arrow::array::BooleanArray = times
                .iter()
                .map(|t| Some(t.is_some_and(|t| t < watermark)))
                .collect();
            match before.true_count() {
                0 => kept.push(b),
                n if n == b.num_rows() => released.push(b),
                _ => {
                    released.push(filter_record_batch(&b, &before)?);
                    let after = datafusion::arrow::compute::not(&before)?;
                    kept.push(filter_record_batch(&b, &after)?);
                }
            }
        }
        self.pending = kept;
        let mut found = Vec::new();
        if !released.is_empty() {
            let batch = concat_batches(&released[0].schema(), &released)?;
            for key in self.append(batch, true)? {
                self.settle(&key, &mut found)?;
            }
        }
        // Partitions whose first match stops waiting: no later row can join it.
        let closing = |w: &(i64, Box<[u8]>)| self.finished || w.0 < self.watermark;
        let due: Vec<Box<[u8]>> = self
            .waiting
            .iter()
            .take_while(|w| closing(w))
            .map(|w| w.1.clone())
            .collect();
        for key in due {
            self.settle(&key, &mut found)?;
        }
        self.emit(found, out)
    }

    /// One row per match: its partition's columns, its measures, through the outer query.
    fn emit(&self, found: Vec<Found>, out: &mut OperatorOutput) -> Result<()> {
        if found.is_empty() {
            return Ok(());
        }
        let spec = &self.spec;
        let n = found.len();
        let mut columns: Vec<ArrayRef> = Vec::new();
        for k in &spec.keys {
            let Some(c) = k.downcast_ref::<Column>().map(Column::index) else {
                return Err(crate::error::Error::Internal(
                    "a PARTITION BY key is no column".into(),
                ));
            };
            let refs: Vec<&dyn Array> = found
                .iter()
                .map(|f| f.rows[0].chunk.batch.column(c).as_ref())
                .collect();
            let idx: Vec<(usize, usize)> = found
                .iter()
                .enumerate()
                .map(|(i, f)| (i, f.rows[0].row as usize))
                .collect();
            columns.push(interleave(&refs, &idx)?);
        }
        let mut nav_columns = Vec::new();
        for nav in &spec.measure_navs {
            let values = found
                .iter()
                .map(|f| matcher::nav_value(nav, &f.rows, &f.assigned, None))
                .collect::<Result<Vec<_>>>()?;
            nav_columns.push(ScalarValue::iter_to_array(values)?);
        }
        let navs = RecordBatch::try_new_with_options(
            Arc::clone(&spec.measure_input),
            nav_columns,
            &RecordBatchOptions::new().with_row_count(Some(n)),
        )?;
        for m in &spec.measures {
            columns.push(m.evaluate(&navs)?.into_array(n)?);
        }
        let matches = RecordBatch::try_new_with_options(
            Arc::clone(&spec.match_schema),
            columns,
            &RecordBatchOptions::new().with_row_count(Some(n)),
        )?;
        // A match stands for its last row's time.
        let times: Vec<i64> = found
            .iter()
            .map(|f| f.rows[f.assigned.len() - 1].time)
            .collect();
        let (batch, times) = apply_stages_timed(&spec.output_stages, &matches, None, &times)?;
        if batch.num_rows() > 0 {
            out.results.push(Emitted {
                batch,
                times: RowTimes::Each(times),
            });
        }
        Ok(())
    }

    /// Every partition's rows, in partition and time order, as one batch.
    fn held_rows(&self) -> Result<Option<RecordBatch>> {
        let mut keys: Vec<&Box<[u8]>> = self.partitions.keys().collect();
        keys.sort();
        let mut chunks: Vec<&Arc<Chunk>> = Vec::new();
        let mut idx = Vec::new();
        for k in keys {
            for r in &self.partitions[k].rows {
                let c = match chunks.iter().position(|c| Arc::ptr_eq(c, &r.chunk)) {
                    Some(c) => c,
                    None => {
                        chunks.push(&r.chunk);
                        chunks.len() - 1
                    }
                };
                idx.push((c, r.row as usize));
            }
        }
        let Some(first) = chunks.first() else {
            return Ok(None);
        };
        let schema = first.batch.schema();
        let columns = (0..schema.fields().len())
            .map(|c| {
                let arrays: Vec<&dyn Array> = chunks
                    .iter()
                    .map(|ch| ch.batch.column(c).as_ref())
                    .collect();
                interleave(&arrays, &idx)
            })
            .collect::<std::result::Result<Vec<_>, _>>()?;
        Ok(Some(RecordBatch::try_new(schema, columns)?))
    }
}

impl Operator for Recognize {
    fn process(&mut self, input: &EventBatch, out: &mut OperatorOutput) -> Result<()> {
        let filters: &[Arc<dyn PhysicalExpr>] = match input.keys {
            // The router applied them.
            Some(_) => &[],
            None => &self.spec.filters,
        };
        let mut batch = input.batch.clone();
        let mut input_rows: Option<Vec<u32>> = None;
        if let Some(mask) = where_mask(filters, &batch, input.selection.as_ref())?
            && mask.true_count() != batch.num_rows()
        {
            batch = filter_record_batch(&batch, &mask)?;
            input_rows = Some(mask.values().set_indices().map(|i| i as u32).collect());
        }
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let times = self.times(&batch);
        let input_row = |r: usize| input_rows.as_ref().map_or(r, |ix| ix[r] as usize);
        let late: Vec<u32> = (0..batch.num_rows())
            .filter(|&r| times[r] < input.arrival_watermarks[input_row(r)].max(self.floor))
            .map(|r| input_row(r) as u32)
            .collect();
        if !late.is_empty() {
            out.late.push(late_events(input, &late)?);
            let keep: datafusion::arrow::array::BooleanArray = (0..batch.num_rows())
                .map(|r| Some(times[r] >= input.arrival_watermarks[input_row(r)].max(self.floor)))
                .collect();
            batch = filter_record_batch(&batch, &keep)?;
        }
        if let Some(t) = self.times(&batch).into_iter().max() {
            self.newest = self.newest.max(t);
            self.pending.push(batch);
        }
        Ok(())
    }

    fn advance_watermark(&mut self, watermark: i64, out: &mut OperatorOutput) -> Result<()> {
        if watermark <= self.watermark {
            return Ok(());
        }
        self.watermark = watermark;
        self.release(watermark, out)
    }

    fn finish(&mut self, out: &mut OperatorOutput) -> Result<()> {
        self.finished = true;
        self.release(i64::MAX, out)?;
        if self.newest > i64::MIN {
            self.floor = self.floor.max(self.newest.saturating_add(1));
        }
        self.finished = false;
        Ok(())
    }

    fn snapshot(&mut self) -> Result<Vec<u8>> {
        let mut snap = Snapshot {
            header: serde_json::json!({
                "watermark": self.watermark,
                "floor": self.floor,
                "newest": self.newest,
            }),
            batches: Vec::new(),
        };
        if let Some(first) = self.pending.first() {
            snap.batches
                .push((0, concat_batches(&first.schema(), &self.pending)?));
        }
        if let Some(held) = self.held_rows()? {
            snap.batches.push((1, held));
        }
        snap.encode(NAME)
    }

    fn restore(&mut self, bytes: &[u8]) -> Result<()> {
        let snap = Snapshot::decode(NAME, bytes)?;
        let field = |name: &str| {
            snap.header[name]
                .as_i64()
                .ok_or_else(|| state_err(NAME, format!("the snapshot has no {name}")))
        };
        self.watermark = field("watermark")?;
        self.floor = field("floor")?;
        self.newest = field("newest")?;
        self.pending.clear();
        self.partitions.clear();
        self.waiting.clear();
        for (tag, batch) in snap.batches {
            match tag {
                0 => self.pending.push(batch),
                1 => {
                    for key in self.append(batch, false)? {
                        let p = self.partitions.get_mut(&key).expect("appended");
                        let d = p.rows[0].time.saturating_add(self.spec.within);
                        p.deadline = Some(d);
                        self.waiting.insert((d, key));
                    }
                }
                t => return Err(state_err(NAME, format!("unknown batch tag {t}"))),
            }
        }
        Ok(())
    }
}
