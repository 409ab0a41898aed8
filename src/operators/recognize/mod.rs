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

use std::collections::{BTreeMap, VecDeque};
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

/// Width of a bucket of [`Recognize::waiting`] deadlines. A heap of one entry per partition
/// cost more than the matching itself (every card's first row waits out its WITHIN); buckets
/// settle together, so a match decided by its deadline alone comes out once the watermark has
/// passed its whole bucket — at most this much event time later, with the same rows.
const BUCKET_MS: i64 = 256;

/// One partition's rows from the first whose match is undecided.
#[derive(Debug, Default)]
struct Partition {
    /// Its key (row-encoded PARTITION BY values).
    key: Box<[u8]>,
    rows: VecDeque<Row>,
    /// When the first row's match stops waiting for rows (its time plus WITHIN), as entered in
    /// [`Recognize::waiting`].
    deadline: Option<i64>,
}

/// A match found, before its measures are computed.
struct Found {
    /// Its partition's key (matches come out ordered by time, then key).
    key: Box<[u8]>,
    rows: VecDeque<Row>,
    assigned: Vec<u16>,
}

/// The operator.
pub(super) struct Recognize {
    /// The spec over the events' columns it reads ([`projected`]); its filters over all.
    spec: Arc<RecognizeSpec>,
    /// The event columns kept, in order.
    projection: Vec<usize>,
    keys: RowConverter,
    order: RowConverter,
    /// Events the watermark has not passed yet, each batch with its least and greatest time.
    pending: Vec<(i64, i64, RecordBatch)>,
    /// Partition ids by key.
    ids: hashbrown::HashMap<Box<[u8]>, u32>,
    /// Partitions by id (an empty one's id is in `free`).
    partitions: Vec<Partition>,
    free: Vec<u32>,
    /// Partitions whose first row's match is undecided, by when it stops waiting, in buckets of
    /// [`BUCKET_MS`] (an entry is stale unless it is its partition's deadline): a bucket is
    /// settled once the watermark passes all of it.
    waiting: BTreeMap<i64, Vec<(i64, u32)>>,
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
        events: &datafusion::arrow::datatypes::SchemaRef,
    ) -> Result<Self> {
        let (spec, projection) = projected(spec, events)?;
        let schema = &Arc::new(events.project(&projection)?);
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
            spec: Arc::new(spec),
            projection,
            keys,
            order,
            pending: Vec::new(),
            ids: hashbrown::HashMap::new(),
            partitions: Vec::new(),
            free: Vec::new(),
            waiting: BTreeMap::new(),
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

    /// The id of the partition with `key`, made when it has none.
    fn partition(&mut self, key: &[u8]) -> u32 {
        if let Some(id) = self.ids.get(key) {
            return *id;
        }
        let id = match self.free.pop() {
            Some(id) => id,
            None => {
                self.partitions.push(Partition::default());
                self.partitions.len() as u32 - 1
            }
        };
        self.partitions[id as usize].key = Box::from(key);
        self.ids.insert(Box::from(key), id);
        id
    }

    /// Moves `batch`'s rows (sorted, or in partition order already) into their partitions;
    /// returns the partitions touched, in order.
    fn append(&mut self, batch: RecordBatch, sort: bool) -> Result<Vec<u32>> {
        if batch.num_rows() == 0 {
            return Ok(Vec::new());
        }
        let n = batch.num_rows();
        let keys = self.key_rows(&batch)?;
        let ids: Vec<u32> = (0..n)
            .map(|i| self.partition(keys.as_ref().map_or(&[], |k| k.row(i).data())))
            .collect();
        let (batch, ids) = if sort {
            let mut order_cols = vec![Arc::clone(batch.column(self.spec.time))];
            for t in &self.spec.ties {
                order_cols.push(t.expr.evaluate(&batch)?.into_array(n)?);
            }
            let order = self.order.convert_columns(&order_cols)?;
            let mut idx: Vec<u32> = (0..n as u32).collect();
            idx.sort_unstable_by(|a, b| {
                ids[*a as usize]
                    .cmp(&ids[*b as usize])
                    .then_with(|| order.row(*a as usize).cmp(&order.row(*b as usize)))
            });
            let sorted_ids = idx.iter().map(|i| ids[*i as usize]).collect();
            (
                take_record_batch(&batch, &UInt32Array::from(idx))?,
                sorted_ids,
            )
        } else {
            (batch, ids)
        };
        let times = self.times(&batch);
        let fits = self.fits(&batch)?;
        let chunk = Arc::new(Chunk { batch });
        let mut touched: Vec<u32> = Vec::new();
        for (i, ((time, fits), id)) in times.into_iter().zip(fits).zip(ids).enumerate() {
            if touched.last() != Some(&id) {
                touched.push(id);
            }
            self.partitions[id as usize].rows.push_back(Row {
                chunk: Arc::clone(&chunk),
                row: i as u32,
                time,
                fits,
            });
        }
        Ok(touched)
    }

    /// Finds every match partition `id`'s known rows decide.
    fn settle(&mut self, id: u32, found: &mut Vec<Found>) -> Result<()> {
        let (finished, watermark, within) = (self.finished, self.watermark, self.spec.within);
        let more = |first: i64| !finished && first.saturating_add(within) >= watermark;
        let spec = &self.spec;
        let p = &mut self.partitions[id as usize];
        if p.rows.is_empty() {
            // Freed already.
            return Ok(());
        }
        loop {
            if p.rows.is_empty() {
                break;
            }
            match matcher::find(spec, &p.rows, more)? {
                Outcome::Match(assigned) => {
                    let n = assigned.len();
                    let rows: VecDeque<Row> = p.rows.iter().take(n).cloned().collect();
                    let skip = if spec.skip_to_next_row { 1 } else { n };
                    p.rows.drain(..skip);
                    found.push(Found {
                        key: p.key.clone(),
                        rows,
                        assigned,
                    });
                }
                Outcome::NoMatch => {
                    p.rows.pop_front();
                }
                Outcome::Undecided => break,
            }
        }
        match p.rows.front() {
            Some(first) => {
                let d = first.time.saturating_add(within);
                if p.deadline != Some(d) {
                    p.deadline = Some(d);
                    self.waiting
                        .entry(d.div_euclid(BUCKET_MS))
                        .or_default()
                        .push((d, id));
                }
            }
            None => {
                p.deadline = None;
                let key = std::mem::take(&mut p.key);
                self.ids.remove(&key);
                self.free.push(id);
            }
        }
        Ok(())
    }

    /// Releases the events before `watermark` into their partitions and settles what that, and
    /// the watermark itself, decides.
    fn release(&mut self, watermark: i64, out: &mut OperatorOutput) -> Result<()> {
        let mut released = Vec::new();
        let mut kept = Vec::new();
        for (first, last, b) in std::mem::take(&mut self.pending) {
            // Most batches are wholly on one side: their rows are not looked at.
            if first >= watermark {
                kept.push((first, last, b));
                continue;
            }
            if last < watermark {
                released.push(b);
                continue;
            }
            let times = b
                .column(self.spec.time)
                .as_primitive::<TimestampMillisecondType>();
            let before: datafusion::arrow::array::BooleanArray = times
                .iter()
                .map(|t| Some(t.is_some_and(|t| t < watermark)))
                .collect();
            match before.true_count() {
                0 => kept.push((first, last, b)),
                n if n == b.num_rows() => released.push(b),
                _ => {
                    released.push(filter_record_batch(&b, &before)?);
                    let after = datafusion::arrow::compute::not(&before)?;
                    let b = filter_record_batch(&b, &after)?;
                    let (first, last) = time_range(&b, self.spec.time);
                    kept.push((first, last, b));
                }
            }
        }
        self.pending = kept;
        let mut found = Vec::new();
        if !released.is_empty() {
            let batch = concat_batches(&released[0].schema(), &released)?;
            for id in self.append(batch, true)? {
                self.settle(id, &mut found)?;
            }
        }
        // Partitions whose first match stops waiting: no later row can join it.
        while let Some(entry) = self.waiting.first_entry() {
            let end = entry.key().saturating_add(1).saturating_mul(BUCKET_MS);
            if !(self.finished || end <= self.watermark) {
                break;
            }
            for (d, id) in entry.remove() {
                if self.partitions[id as usize].deadline == Some(d) {
                    self.settle(id, &mut found)?;
                }
            }
        }
        self.emit(found, out)
    }

    /// One row per match: its partition's columns, its measures, through the outer query.
    fn emit(&self, mut found: Vec<Found>, out: &mut OperatorOutput) -> Result<()> {
        if found.is_empty() {
            return Ok(());
        }
        // The same order whatever the partitions' ids (they depend on arrival and restores).
        let last = |f: &Found| f.rows[f.assigned.len() - 1].time;
        found.sort_by(|a, b| {
            last(a)
                .cmp(&last(b))
                .then_with(|| a.key.cmp(&b.key))
                .then_with(|| a.rows[0].time.cmp(&b.rows[0].time))
        });
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
        let mut keys: Vec<(&Box<[u8]>, u32)> = self.ids.iter().map(|(k, id)| (k, *id)).collect();
        keys.sort();
        let mut chunks: Vec<&Arc<Chunk>> = Vec::new();
        // Each chunk's place in `chunks`, by address.
        let mut places: hashbrown::HashMap<*const Chunk, usize> = hashbrown::HashMap::new();
        let mut idx = Vec::new();
        for (_, id) in keys {
            for r in &self.partitions[id as usize].rows {
                let c = *places.entry(Arc::as_ptr(&r.chunk)).or_insert_with(|| {
                    chunks.push(&r.chunk);
                    chunks.len() - 1
                });
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

/// The least and greatest event time of `batch`'s rows (its time column is never null).
fn time_range(batch: &RecordBatch, time: usize) -> (i64, i64) {
    let times = batch
        .column(time)
        .as_primitive::<TimestampMillisecondType>()
        .values();
    times
        .iter()
        .fold((i64::MAX, i64::MIN), |(lo, hi), t| (lo.min(*t), hi.max(*t)))
}

/// `spec` over only the event columns it reads (keys, ties, conditions, what it navigates to),
/// with those columns; buffered and sorted rows then carry nothing else. The filters stay over
/// every column: they run before the projection.
fn projected(
    spec: &RecognizeSpec,
    events: &datafusion::arrow::datatypes::SchemaRef,
) -> Result<(RecognizeSpec, Vec<usize>)> {
    use datafusion::physical_expr::utils::collect_columns;
    let n = events.fields().len();
    let mut used = std::collections::BTreeSet::from([spec.time]);
    let mut read = |e: &Arc<dyn PhysicalExpr>| {
        used.extend(
            collect_columns(e)
                .iter()
                .map(Column::index)
                .filter(|i| *i < n),
        );
    };
    spec.keys.iter().for_each(&mut read);
    spec.ties.iter().for_each(|t| read(&t.expr));
    for d in &spec.defines {
        match d {
            Define::Always => {}
            Define::Row(e) | Define::Navigated { expr: e, .. } => read(e),
        }
    }
    let navs = spec.defines.iter().flat_map(|d| match d {
        Define::Navigated { navs, .. } => navs.as_slice(),
        _ => &[],
    });
    used.extend(navs.chain(&spec.measure_navs).filter_map(|nav| nav.column));
    let projection: Vec<usize> = used.into_iter().collect();
    let at = |c: usize| projection.iter().position(|p| *p == c).expect("projected");
    let rebind = |e: &Arc<dyn PhysicalExpr>| super::rebind(e, &projection);
    let mut out = spec.clone();
    out.keys = spec.keys.iter().map(rebind).collect::<Result<_>>()?;
    for t in &mut out.ties {
        t.expr = rebind(&t.expr)?;
    }
    out.time = at(spec.time);
    for nav in &mut out.measure_navs {
        nav.column = nav.column.map(at);
    }
    for d in &mut out.defines {
        match d {
            Define::Always => {}
            Define::Row(e) => *e = rebind(e)?,
            Define::Navigated { expr, navs, schema } => {
                // The navigations' columns follow the events' in its input.
                let nav_columns = (n..schema.fields().len()).collect::<Vec<_>>();
                let columns: Vec<usize> = projection.iter().copied().chain(nav_columns).collect();
                *expr = super::rebind(expr, &columns)?;
                *schema = Arc::new(schema.project(&columns)?);
                for nav in navs.iter_mut() {
                    nav.column = nav.column.map(at);
                }
            }
        }
    }
    Ok((out, projection))
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
        let mut batch = batch.project(&self.projection)?;
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
        if batch.num_rows() > 0 {
            let (first, last) = time_range(&batch, self.spec.time);
            self.newest = self.newest.max(last);
            self.pending.push((first, last, batch));
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
        let released = self.release(i64::MAX, out);
        self.finished = false;
        released?;
        if self.newest > i64::MIN {
            self.floor = self.floor.max(self.newest.saturating_add(1));
        }
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
        if let Some((_, _, first)) = self.pending.first() {
            let pending: Vec<RecordBatch> =
                self.pending.iter().map(|(_, _, b)| b.clone()).collect();
            snap.batches
                .push((0, concat_batches(&first.schema(), &pending)?));
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
        self.ids.clear();
        self.partitions.clear();
        self.free.clear();
        self.waiting.clear();
        for (tag, batch) in snap.batches {
            match tag {
                0 => {
                    let (first, last) = time_range(&batch, self.spec.time);
                    self.pending.push((first, last, batch));
                }
                1 => {
                    for id in self.append(batch, false)? {
                        let p = &mut self.partitions[id as usize];
                        let d = p.rows[0].time.saturating_add(self.spec.within);
                        p.deadline = Some(d);
                        self.waiting
                            .entry(d.div_euclid(BUCKET_MS))
                            .or_default()
                            .push((d, id));
                    }
                }
                t => return Err(state_err(NAME, format!("unknown batch tag {t}"))),
            }
        }
        Ok(())
    }
}
