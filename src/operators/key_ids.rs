//! Operator-wide group key ids: each distinct group key is interned once, to a dense `u32`.
//!
//! A hop window is merged from several panes, and each pane holds most of the window's keys. When
//! every table interned keys itself, a window of six panes hashed and compared each key seven
//! times (once into its pane, six times into the window) — card_velocity spent more of its
//! operator time interning than aggregating. With one id per key for the whole operator, a pane
//! records its groups' ids and a window finds its slot for an id in a plain array.
//!
//! Keys are kept (in the chunks they arrived in) so result rows and snapshots can be built from
//! ids. Ids of keys no pane holds any more are reclaimed by [`KeyIds::compact`], which the owner
//! calls when [`KeyIds::wants_compaction`] says the table has doubled since.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, UInt32Array, new_empty_array};
use datafusion::arrow::compute::{concat, interleave, take};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::physical_plan::aggregates::group_values::{GroupValues, new_group_values};
use datafusion::physical_plan::aggregates::order::GroupOrdering;

use super::group_table::key_values;
use crate::error::Result;
use crate::sql::AggregateSpec;

/// Fewer ids than this are never compacted. Small, so every test with a few hundred keys
/// exercises compaction; its cost is amortised either way (the next one waits until the table
/// has twice as many ids as it kept).
const MIN_COMPACT: usize = 64;
/// More key chunks than this are concatenated into one.
const MAX_CHUNKS: usize = 32;

/// Interned group keys of one operator.
pub(super) struct KeyIds {
    /// Key → id (`None`: the query has no keys besides the window; every row is id 0).
    values: Option<Box<dyn GroupValues>>,
    /// Schema of the key columns.
    schema: SchemaRef,
    /// Key columns as they arrived: `chunks[c][k]` is column `k` of chunk `c`.
    chunks: Vec<Vec<ArrayRef>>,
    /// Where key `id` lives: chunk and row.
    at: Vec<(u32, u32)>,
    /// Size at which [`Self::wants_compaction`] says yes.
    compact_at: usize,
    scratch: Vec<usize>,
}

impl KeyIds {
    /// An empty table for the aggregation's keys.
    pub(super) fn new(spec: &AggregateSpec) -> Result<Self> {
        Ok(KeyIds {
            values: key_values(spec)?,
            schema: Arc::clone(&spec.key_schema),
            chunks: Vec::new(),
            at: Vec::new(),
            compact_at: MIN_COMPACT,
            scratch: Vec::new(),
        })
    }

    /// An empty table for keys of `schema` (no columns: every row is id 0).
    pub(super) fn for_schema(schema: &SchemaRef) -> Result<Self> {
        let values = if schema.fields().is_empty() {
            None
        } else {
            Some(new_group_values(Arc::clone(schema), &GroupOrdering::None)?)
        };
        Ok(KeyIds {
            values,
            schema: Arc::clone(schema),
            chunks: Vec::new(),
            at: Vec::new(),
            compact_at: MIN_COMPACT,
            scratch: Vec::new(),
        })
    }

    /// Number of ids handed out.
    pub(super) fn len(&self) -> usize {
        match &self.values {
            Some(_) => self.at.len(),
            None => 1,
        }
    }

    /// Fills `ids` with the id of each row's key (`rows` rows of `keys`).
    pub(super) fn intern(
        &mut self,
        keys: &[ArrayRef],
        rows: usize,
        ids: &mut Vec<u32>,
    ) -> Result<()> {
        ids.clear();
        let Some(values) = &mut self.values else {
            ids.resize(rows, 0);
            return Ok(());
        };
        let old = values.len();
        values.intern(keys, &mut self.scratch)?;
        let new = values.len();
        ids.extend(self.scratch.iter().map(|g| *g as u32));
        if new > old {
            // Keep the first row of each new key.
            let mut first = vec![u32::MAX; new - old];
            for (r, g) in self.scratch.iter().enumerate() {
                if let Some(f) = first.get_mut(g.wrapping_sub(old))
                    && *f == u32::MAX
                {
                    *f = r as u32;
                }
            }
            let idx = UInt32Array::from(first);
            let chunk = keys
                .iter()
                .map(|k| take(k, &idx, None))
                .collect::<std::result::Result<Vec<_>, _>>()?;
            self.push_chunk(chunk)?;
        }
        Ok(())
    }

    fn push_chunk(&mut self, chunk: Vec<ArrayRef>) -> Result<()> {
        let c = self.chunks.len() as u32;
        self.at.extend((0..chunk[0].len() as u32).map(|r| (c, r)));
        self.chunks.push(chunk);
        if self.chunks.len() > MAX_CHUNKS {
            let columns = (0..self.chunks[0].len())
                .map(|k| {
                    let parts: Vec<&dyn Array> =
                        self.chunks.iter().map(|c| c[k].as_ref()).collect();
                    concat(&parts)
                })
                .collect::<std::result::Result<Vec<_>, _>>()?;
            self.chunks = vec![columns];
            for (i, at) in self.at.iter_mut().enumerate() {
                *at = (0, i as u32);
            }
        }
        Ok(())
    }

    /// The key columns of `ids`, in that order (no columns when the query has no keys).
    pub(super) fn keys(&self, ids: &[u32]) -> Result<Vec<ArrayRef>> {
        if self.values.is_none() {
            return Ok(vec![]);
        }
        if self.chunks.is_empty() {
            // No key interned yet (so `ids` is empty): empty columns of the keys' types.
            return Ok(self
                .schema
                .fields()
                .iter()
                .map(|f| new_empty_array(f.data_type()))
                .collect());
        }
        if let [only] = self.chunks.as_slice() {
            let idx = UInt32Array::from_iter_values(ids.iter().map(|i| self.at[*i as usize].1));
            return Ok(only
                .iter()
                .map(|k| take(k, &idx, None))
                .collect::<std::result::Result<_, _>>()?);
        }
        let idx: Vec<(usize, usize)> = ids
            .iter()
            .map(|i| {
                let (c, r) = self.at[*i as usize];
                (c as usize, r as usize)
            })
            .collect();
        let columns = self.chunks.first().map_or(0, Vec::len);
        (0..columns)
            .map(|k| {
                let parts: Vec<&dyn Array> = self.chunks.iter().map(|c| c[k].as_ref()).collect();
                Ok(interleave(&parts, &idx)?)
            })
            .collect()
    }

    /// Whether enough ids have been handed out since the last compaction to look for dead ones.
    pub(super) fn wants_compaction(&self) -> bool {
        self.values.is_some() && self.at.len() >= self.compact_at
    }

    /// Keeps only the keys of `live` ids (every id still in use, each once, any order) and
    /// renumbers them `0..live.len()`. Returns the new id of each old id (`u32::MAX`: dropped),
    /// or `None` when too few ids were dead to be worth it (nothing changed).
    pub(super) fn compact(&mut self, live: &[u32]) -> Result<Option<Vec<u32>>> {
        if self.values.is_none() {
            return Ok(None);
        }
        if live.len() * 2 > self.at.len() {
            self.compact_at = (self.at.len() * 2).max(MIN_COMPACT);
            return Ok(None);
        }
        let mut live = live.to_vec();
        live.sort_unstable();
        let keys = self.keys(&live)?;
        let mut fresh = new_group_values(Arc::clone(&self.schema), &GroupOrdering::None)?;
        fresh.intern(&keys, &mut self.scratch)?;
        let mut renumber = vec![u32::MAX; self.at.len()];
        let mut at = vec![(0, 0); live.len()];
        for (row, (old, new)) in live.iter().zip(&self.scratch).enumerate() {
            renumber[*old as usize] = *new as u32;
            at[*new] = (0, row as u32);
        }
        self.values = Some(fresh);
        self.chunks = vec![keys];
        self.at = at;
        self.compact_at = (live.len() * 2).max(MIN_COMPACT);
        Ok(Some(renumber))
    }
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::{AsArray, Int64Array, StringArray};
    use datafusion::arrow::datatypes::Int64Type;

    use super::*;
    use crate::sql::{PlanKind, plan_query};

    fn spec(sql: &str) -> AggregateSpec {
        match plan_query(sql).unwrap().kind {
            PlanKind::Window { aggregate, .. } => aggregate,
            _ => unreachable!(),
        }
    }

    fn key_pairs(keys: &[ArrayRef]) -> Vec<(String, i64)> {
        let (m, a) = (
            keys[0].as_string::<i32>(),
            keys[1].as_primitive::<Int64Type>(),
        );
        (0..m.len())
            .map(|i| (m.value(i).to_string(), a.value(i)))
            .collect()
    }

    #[test]
    fn ids_give_back_their_keys_across_chunks_and_compaction() {
        let spec = spec(
            "SELECT merchant_id, amount_minor, window_start, count(*) FROM TUMBLE(payments, event_time, INTERVAL '1' MINUTE) GROUP BY merchant_id, amount_minor, window_start",
        );
        let mut ids = KeyIds::new(&spec).unwrap();
        let mut all: Vec<(String, i64)> = Vec::new();
        let mut row_ids = Vec::new();
        // 100 batches of 7 rows, each mostly new keys with some repeats: more than MAX_CHUNKS
        // chunks, so they are concatenated on the way.
        for b in 0..100i64 {
            let rows: Vec<(String, i64)> = (0..7)
                .map(|r| (format!("m{}", (b * 5 + r) % 400), r % 3))
                .collect();
            let keys: Vec<ArrayRef> = vec![
                Arc::new(StringArray::from_iter_values(
                    rows.iter().map(|r| r.0.clone()),
                )),
                Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.1))),
            ];
            ids.intern(&keys, rows.len(), &mut row_ids).unwrap();
            for (row, id) in rows.iter().zip(&row_ids) {
                match all.get(*id as usize) {
                    Some(k) => assert_eq!(k, row, "an id always means one key"),
                    None => {
                        assert_eq!(*id as usize, all.len(), "ids are dense");
                        all.push(row.clone());
                    }
                }
            }
            assert_eq!(key_pairs(&ids.keys(&row_ids).unwrap()), rows);
        }
        assert_eq!(ids.len(), all.len());
        assert!(ids.chunks.len() <= MAX_CHUNKS);
        assert!(ids.wants_compaction());

        // Keep a quarter of the keys: they are renumbered densely and still give their keys.
        let live: Vec<u32> = (0..all.len() as u32).rev().filter(|i| i % 4 == 1).collect();
        let renumber = ids
            .compact(&live)
            .unwrap()
            .expect("three quarters dead: compacted");
        assert_eq!(ids.len(), live.len());
        let mut new_ids: Vec<u32> = live.iter().map(|i| renumber[*i as usize]).collect();
        let expect: Vec<(String, i64)> = live.iter().map(|i| all[*i as usize].clone()).collect();
        assert_eq!(key_pairs(&ids.keys(&new_ids).unwrap()), expect);
        new_ids.sort_unstable();
        assert_eq!(new_ids, (0..live.len() as u32).collect::<Vec<_>>());
        assert!(
            renumber
                .iter()
                .enumerate()
                .all(|(old, new)| (*new == u32::MAX) != live.contains(&(old as u32)))
        );
        // Interning a kept key finds its new id; a dropped key gets a fresh one.
        let kept = &all[live[0] as usize];
        let dropped = &all[0];
        let keys: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from(vec![kept.0.as_str(), dropped.0.as_str()])),
            Arc::new(Int64Array::from(vec![kept.1, dropped.1])),
        ];
        ids.intern(&keys, 2, &mut row_ids).unwrap();
        assert_eq!(row_ids, vec![renumber[live[0] as usize], live.len() as u32]);
        // Most keys live: nothing to gain, nothing changes.
        let live: Vec<u32> = (0..ids.len() as u32).collect();
        assert!(ids.compact(&live).unwrap().is_none());
        assert!(!ids.wants_compaction());
    }

    #[test]
    fn no_ids_give_empty_key_columns() {
        let spec = spec(
            "SELECT merchant_id, amount_minor, window_start, count(*) FROM TUMBLE(payments, event_time, INTERVAL '1' MINUTE) GROUP BY merchant_id, amount_minor, window_start",
        );
        let keys = KeyIds::new(&spec).unwrap().keys(&[]).unwrap();
        assert_eq!(keys.len(), 2);
        assert!(keys.iter().all(|k| k.is_empty()));
    }

    #[test]
    fn a_query_without_keys_has_one_id() {
        let spec = spec(
            "SELECT window_start, count(*) FROM TUMBLE(payments, event_time, INTERVAL '1' MINUTE) GROUP BY window_start",
        );
        let mut ids = KeyIds::new(&spec).unwrap();
        let mut row_ids = Vec::new();
        ids.intern(&[], 3, &mut row_ids).unwrap();
        assert_eq!(row_ids, vec![0, 0, 0]);
        assert_eq!(ids.len(), 1);
        assert!(ids.keys(&[0]).unwrap().is_empty());
        assert!(!ids.wants_compaction());
    }
}
