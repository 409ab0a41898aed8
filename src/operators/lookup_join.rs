//! The lookup join: each event joined to the rows of a reference table (or of a query over
//! reference tables: a `VALUES` list, an `IN (SELECT …)`) with the same key.
//!
//! Stateless on the stream's side, so it is a stage ([`crate::sql::Stage::Lookup`]) that runs
//! wherever a filter could: before a window, an aggregation or a sink. The table side is an
//! index built once per table version: DataFusion runs the table side's plan (a scan, or a
//! filter, projection or aggregate over it) over the tables' snapshots, and its rows are hashed
//! by their join key. A table that changes ([`crate::table::ReferenceTable::refresh`]) is seen
//! by the next batch.
//!
//! A temporal join (`FOR SYSTEM_TIME AS OF p.event_time`) keeps every version of a key sorted
//! by `valid_from` and joins the one valid at the event's time: the latest that starts at or
//! before it, so a replay joins what the live run joined. The rest of the ON condition is then
//! evaluated on that version (SQL's order: the version first, then the condition).

use std::sync::{Arc, RwLock};

use datafusion::arrow::array::{
    Array, ArrayRef, BooleanArray, RecordBatch, RecordBatchOptions, UInt32Array,
};
use datafusion::arrow::compute::{cast, filter_record_batch, take};
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::arrow::row::{RowConverter, SortField};
use datafusion::common::JoinSide;
use datafusion::physical_plan::joins::utils::JoinFilter;
use datafusion::physical_plan::{ExecutionPlan, PhysicalExpr};

use crate::error::{Error, Result};
use crate::table::ReferenceTable;

/// What a lookup join keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LookupKind {
    /// Each event with each matching row; events without one are dropped.
    Inner,
    /// Each event with each matching row, or once with nulls.
    Left,
    /// Events with a matching row (`IN (SELECT …)`, `EXISTS`), as they are.
    Semi,
    /// Events without one (`NOT EXISTS`).
    Anti,
    /// `NOT IN (SELECT …)`: as [`LookupKind::Anti`], with SQL's nulls: if the subquery has a
    /// null key no event passes, and an event with a null key passes only an empty subquery.
    NotIn,
}

/// The versions a temporal join chooses among.
#[derive(Debug, Clone, Copy)]
pub struct AsOf {
    /// The event's time: a column of the events (ms timestamps).
    pub event_time: usize,
    /// The version's start (`valid_from`), a column of the table's rows; `None`: every
    /// version is valid from the beginning (the key's last row is the one valid).
    pub valid_from: Option<usize>,
}

/// A planned lookup join and the index it builds.
#[derive(Debug)]
pub struct LookupJoin {
    /// What it keeps.
    pub kind: LookupKind,
    /// The key of an event (over the events' columns), compared with `table_keys` in order.
    pub event_keys: Vec<Arc<dyn PhysicalExpr>>,
    /// The key of a table row (over `table_plan`'s rows).
    pub table_keys: Vec<Arc<dyn PhysicalExpr>>,
    /// The rest of the ON condition, over DataFusion's intermediate batch of a candidate pair.
    pub residual: Option<JoinFilter>,
    /// For a temporal join: which version of a key is joined.
    pub as_of: Option<AsOf>,
    /// The table side's rows: DataFusion's plan over the tables (never over the stream).
    pub table_plan: Arc<dyn ExecutionPlan>,
    /// The tables `table_plan` reads; each scan names its table in its schema's metadata.
    pub tables: Vec<Arc<ReferenceTable>>,
    /// The joined rows (the events' columns, then the table side's; the events' alone for a
    /// semi or anti join).
    pub schema: SchemaRef,
    index: RwLock<Option<Arc<Index>>>,
}

/// Schema metadata naming the reference table a scan reads (set when the planner registers
/// the table, found again in the physical plan's leaves).
pub const TABLE_METADATA: &str = "paystream.table";
/// Schema metadata marking a scan of every version (`FOR SYSTEM_TIME AS OF`).
pub const AS_OF_METADATA: &str = "paystream.as_of";

/// The table side, hashed by key.
#[derive(Debug)]
struct Index {
    /// The table versions it was built from, in `tables` order.
    versions: Vec<u64>,
    /// The table side's rows.
    rows: RecordBatch,
    /// The key's types (an event's key is cast to them).
    key_types: Vec<DataType>,
    /// Rows by encoded key; a temporal join's sorted by version start, then row.
    map: hashbrown::HashMap<Box<[u8]>, Vec<u32>>,
    /// Per row, its version's start (temporal joins only).
    starts: Vec<i64>,
    /// Per row, whether the version deletes its key (a topic's table, temporal joins only).
    deleted: Option<Vec<bool>>,
    /// Whether some row's key has a null (`NOT IN`).
    null_key: bool,
}

impl LookupJoin {
    /// A join as planned; its index is built on first use.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        kind: LookupKind,
        event_keys: Vec<Arc<dyn PhysicalExpr>>,
        table_keys: Vec<Arc<dyn PhysicalExpr>>,
        residual: Option<JoinFilter>,
        as_of: Option<AsOf>,
        table_plan: Arc<dyn ExecutionPlan>,
        tables: Vec<Arc<ReferenceTable>>,
        schema: SchemaRef,
    ) -> Self {
        LookupJoin {
            kind,
            event_keys,
            table_keys,
            residual,
            as_of,
            table_plan,
            tables,
            schema,
            index: RwLock::new(None),
        }
    }

    /// Joins a batch of events: the joined rows, and for each the row of `batch` it came from
    /// (`None`: the rows are `batch`'s, one each, in order).
    pub fn apply(&self, batch: &RecordBatch) -> Result<(RecordBatch, Option<Vec<u32>>)> {
        let index = self.index()?;
        let n = batch.num_rows();
        let (keys, valid) = self.event_key_rows(batch, &index)?;
        // Candidate pairs (event row, table row), in event order.
        let (mut events, mut rows): (Vec<u32>, Vec<u32>) = (Vec::new(), Vec::new());
        let mut null_event = vec![false; n];
        let event_times = match &self.as_of {
            Some(a) => Some(crate::table::timestamps_ms(
                batch.column(a.event_time).as_ref(),
            )?),
            None => None,
        };
        for r in 0..n {
            if !valid[r] {
                null_event[r] = true;
                continue;
            }
            let key = keys.as_ref().map_or(&[][..], |k| k.row(r).data());
            let Some(found) = index.map.get(key) else {
                continue;
            };
            match (&event_times, &self.as_of) {
                (Some(t), Some(_)) => {
                    // The latest version starting at or before the event.
                    let at = found.partition_point(|&v| index.starts[v as usize] <= t[r]);
                    let gone = |v: u32| index.deleted.as_ref().is_some_and(|d| d[v as usize]);
                    if at > 0 && !gone(found[at - 1]) {
                        events.push(r as u32);
                        rows.push(found[at - 1]);
                    }
                }
                _ => {
                    for &v in found {
                        events.push(r as u32);
                        rows.push(v);
                    }
                }
            }
        }
        if let Some(f) = &self.residual
            && !events.is_empty()
        {
            let keep = residual_mask(f, batch, &index.rows, &events, &rows)?;
            let mut w = 0;
            for i in 0..events.len() {
                if keep.value(i) && keep.is_valid(i) {
                    events[w] = events[i];
                    rows[w] = rows[i];
                    w += 1;
                }
            }
            events.truncate(w);
            rows.truncate(w);
        }
        match self.kind {
            LookupKind::Inner => self.joined(batch, &index, events, rows.into_iter().map(Some)),
            LookupKind::Left => {
                let (mut ev, mut tr) = (Vec::with_capacity(n), Vec::with_capacity(n));
                let mut at = 0;
                for r in 0..n as u32 {
                    let start = at;
                    while at < events.len() && events[at] == r {
                        ev.push(r);
                        tr.push(Some(rows[at]));
                        at += 1;
                    }
                    if at == start {
                        ev.push(r);
                        tr.push(None);
                    }
                }
                self.joined(batch, &index, ev, tr.into_iter())
            }
            LookupKind::Semi | LookupKind::Anti | LookupKind::NotIn => {
                let mut matched = vec![false; n];
                for e in &events {
                    matched[*e as usize] = true;
                }
                let keep: Vec<bool> = match self.kind {
                    LookupKind::Semi => matched,
                    LookupKind::Anti => matched.iter().map(|m| !m).collect(),
                    _ if index.rows.num_rows() == 0 => vec![true; n],
                    _ if index.null_key => vec![false; n],
                    _ => (0..n).map(|r| !matched[r] && !null_event[r]).collect(),
                };
                let mask = BooleanArray::from(keep);
                let kept: Vec<u32> = (0..n as u32).filter(|r| mask.value(*r as usize)).collect();
                let out = filter_record_batch(batch, &mask)?;
                let out = RecordBatch::try_new_with_options(
                    Arc::clone(&self.schema),
                    out.columns().to_vec(),
                    &RecordBatchOptions::new().with_row_count(Some(out.num_rows())),
                )?;
                Ok((out, (kept.len() != n).then_some(kept)))
            }
        }
    }

    /// The joined rows of pairs (event row, table row or none).
    fn joined(
        &self,
        batch: &RecordBatch,
        index: &Index,
        events: Vec<u32>,
        rows: impl Iterator<Item = Option<u32>>,
    ) -> Result<(RecordBatch, Option<Vec<u32>>)> {
        let n = batch.num_rows();
        let count = events.len();
        // Each event once, in order: its columns as they are.
        let same = count == n && events.iter().enumerate().all(|(i, &e)| e as usize == i);
        let picked = UInt32Array::from(events.clone());
        let mut cols: Vec<ArrayRef> = if same {
            batch.columns().to_vec()
        } else {
            batch
                .columns()
                .iter()
                .map(|c| take(c.as_ref(), &picked, None))
                .collect::<std::result::Result<_, _>>()?
        };
        let table_rows: UInt32Array = rows.collect();
        for c in index.rows.columns() {
            cols.push(take(c.as_ref(), &table_rows, None)?);
        }
        // The table side's columns are nullable in a left join; DataFusion's schema says so.
        let cols = cols
            .into_iter()
            .zip(self.schema.fields())
            .map(|(c, f)| {
                if c.data_type() == f.data_type() {
                    Ok(c)
                } else {
                    cast(&c, f.data_type())
                }
            })
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let out = RecordBatch::try_new_with_options(
            Arc::clone(&self.schema),
            cols,
            &RecordBatchOptions::new().with_row_count(Some(count)),
        )?;
        Ok((out, (!same).then_some(events)))
    }

    /// Each event's key, encoded as the index's keys are (`None`: no key columns, every key
    /// is empty), and whether it has no null (a null equals nothing).
    fn event_key_rows(
        &self,
        batch: &RecordBatch,
        index: &Index,
    ) -> Result<(Option<datafusion::arrow::row::Rows>, Vec<bool>)> {
        let n = batch.num_rows();
        let mut cols = Vec::with_capacity(self.event_keys.len());
        for (e, t) in self.event_keys.iter().zip(&index.key_types) {
            let c = e.evaluate(batch)?.into_array(n)?;
            cols.push(if c.data_type() == t { c } else { cast(&c, t)? });
        }
        let valid = (0..n).map(|r| !cols.iter().any(|c| c.is_null(r))).collect();
        if cols.is_empty() {
            return Ok((None, valid));
        }
        Ok((
            Some(converter(&index.key_types)?.convert_columns(&cols)?),
            valid,
        ))
    }

    /// The index over the tables' current snapshots, built again when one has moved on.
    fn index(&self) -> Result<Arc<Index>> {
        for t in &self.tables {
            t.refresh_due();
        }
        let versions: Vec<u64> = self.tables.iter().map(|t| t.version()).collect();
        if let Some(i) = self
            .index
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            && i.versions == versions
            && versions.iter().all(|v| *v > 0)
        {
            return Ok(Arc::clone(i));
        }
        let mut slot = self.index.write().unwrap_or_else(|e| e.into_inner());
        let snapshots = self
            .tables
            .iter()
            .map(|t| t.snapshot())
            .collect::<Result<Vec<_>>>()?;
        let versions: Vec<u64> = snapshots.iter().map(|s| s.version).collect();
        if let Some(i) = slot.as_ref()
            && i.versions == versions
        {
            return Ok(Arc::clone(i));
        }
        let index = Arc::new(self.build(versions, &snapshots)?);
        *slot = Some(Arc::clone(&index));
        Ok(index)
    }

    fn build(
        &self,
        versions: Vec<u64>,
        snapshots: &[Arc<crate::table::Snapshot>],
    ) -> Result<Index> {
        let rows = run_table_plan(&self.table_plan, &self.tables, snapshots)?;
        let n = rows.num_rows();
        let mut cols = Vec::with_capacity(self.table_keys.len());
        for e in &self.table_keys {
            cols.push(e.evaluate(&rows)?.into_array(n)?);
        }
        let key_types: Vec<DataType> = cols.iter().map(|c| c.data_type().clone()).collect();
        let encoded = match cols.is_empty() {
            true => None,
            false => Some(converter(&key_types)?.convert_columns(&cols)?),
        };
        // A temporal join over a topic's table: its rows are the topic's records, each
        // starting at its record's time (unless `valid_from` says), some deleting their key.
        let changelog = match (&self.as_of, snapshots) {
            (Some(_), [one]) if one.all.num_rows() == n => one.changelog.as_ref(),
            _ => None,
        };
        let starts = match (self.as_of.and_then(|a| a.valid_from), changelog) {
            (Some(v), _) => crate::table::timestamps_ms(rows.column(v).as_ref())?,
            (None, Some((times, _))) => times.clone(),
            (None, None) => vec![i64::MIN; n],
        };
        let deleted = changelog.map(|(_, d)| d.clone());
        let mut map: hashbrown::HashMap<Box<[u8]>, Vec<u32>> = hashbrown::HashMap::new();
        let mut null_key = false;
        for r in 0..n {
            if cols.iter().any(|c| c.is_null(r)) {
                null_key = true;
                continue;
            }
            let key = encoded.as_ref().map_or(&[][..], |k| k.row(r).data());
            map.entry(Box::from(key)).or_default().push(r as u32);
        }
        if self.as_of.is_some() {
            // A stable sort: equal starts keep load order, so the later row is the version.
            for v in map.values_mut() {
                v.sort_by_key(|&r| starts[r as usize]);
            }
        }
        Ok(Index {
            versions,
            rows,
            key_types,
            map,
            starts,
            deleted,
            null_key,
        })
    }
}

fn converter(types: &[DataType]) -> Result<RowConverter> {
    Ok(RowConverter::new(
        types.iter().map(|t| SortField::new(t.clone())).collect(),
    )?)
}

/// Whether each candidate pair passes the rest of the ON condition (DataFusion's join filter
/// over its intermediate batch: the columns it reads, taken from either side).
pub(super) fn residual_mask(
    f: &JoinFilter,
    batch: &RecordBatch,
    table: &RecordBatch,
    events: &[u32],
    rows: &[u32],
) -> Result<BooleanArray> {
    let (ev, tr) = (
        UInt32Array::from(events.to_vec()),
        UInt32Array::from(rows.to_vec()),
    );
    let cols = f
        .column_indices()
        .iter()
        .map(|ci| match ci.side {
            JoinSide::Left => take(batch.column(ci.index).as_ref(), &ev, None),
            _ => take(table.column(ci.index).as_ref(), &tr, None),
        })
        .collect::<std::result::Result<Vec<_>, _>>()?;
    let inter = RecordBatch::try_new_with_options(
        Arc::clone(f.schema()),
        cols,
        &RecordBatchOptions::new().with_row_count(Some(events.len())),
    )?;
    let mask = f.expression().evaluate(&inter)?.into_array(events.len())?;
    use datafusion::arrow::array::AsArray;
    mask.as_boolean_opt()
        .cloned()
        .ok_or_else(|| Error::Internal(format!("a join condition produced {}", mask.data_type())))
}

/// Runs the table side's plan over `snapshots`: each scan of a table (an empty leaf whose
/// schema names it) reads the table's rows, every version or the current contents.
fn run_table_plan(
    plan: &Arc<dyn ExecutionPlan>,
    tables: &[Arc<ReferenceTable>],
    snapshots: &[Arc<crate::table::Snapshot>],
) -> Result<RecordBatch> {
    use datafusion::common::tree_node::{Transformed, TreeNode};
    use datafusion::datasource::memory::MemorySourceConfig;
    use futures::FutureExt;
    let plan = Arc::clone(plan)
        .transform_up(|node| {
            if node.children().is_empty() && node.name() == "EmptyExec" {
                let schema = node.schema();
                if let Some(name) = schema.metadata().get(TABLE_METADATA) {
                    let Some(i) = tables.iter().position(|t| t.name() == name) else {
                        return Ok(Transformed::no(node));
                    };
                    let s = &snapshots[i];
                    let rows = match schema.metadata().contains_key(AS_OF_METADATA) {
                        true => &s.all,
                        false => &s.current,
                    };
                    // The scan's columns, by name (all of them unless it was projected).
                    let columns = schema
                        .fields()
                        .iter()
                        .map(|f| {
                            let at = rows.schema().index_of(f.name())?;
                            Ok(Arc::clone(rows.column(at)))
                        })
                        .collect::<datafusion::error::Result<Vec<_>>>()?;
                    let rows = RecordBatch::try_new_with_options(
                        Arc::clone(&schema),
                        columns,
                        &RecordBatchOptions::new().with_row_count(Some(rows.num_rows())),
                    )?;
                    let exec: Arc<dyn ExecutionPlan> =
                        MemorySourceConfig::try_new_exec(&[vec![rows]], schema, None)?;
                    return Ok(Transformed::yes(exec));
                }
            }
            Ok(Transformed::no(node))
        })?
        .data;
    let schema = plan.schema();
    let ctx = Arc::new(datafusion::execution::TaskContext::default());
    // Each partition in turn, on this thread (a UNION has one per branch; DataFusion's own
    // `collect` would spawn a task to merge them, and workers have no async runtime).
    let mut batches = Vec::new();
    use datafusion::physical_plan::ExecutionPlanProperties;
    for p in 0..plan.output_partitioning().partition_count() {
        let stream = plan.execute(p, Arc::clone(&ctx))?;
        let part: Vec<RecordBatch> = futures::TryStreamExt::try_collect(stream)
            .now_or_never()
            .ok_or_else(|| {
            Error::Internal("a reference table's query waited on I/O".into())
        })??;
        batches.extend(part);
    }
    Ok(datafusion::arrow::compute::concat_batches(
        &schema, &batches,
    )?)
}
