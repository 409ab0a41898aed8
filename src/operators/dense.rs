//! Dense windows (`SET dense_windows = 'true'`): a TUMBLE aggregate's quiet windows, filled.
//!
//! A per-minute series has no row for a minute without events, so a baseline over it (an EWMA,
//! a z-score) only ever sees the busy minutes of a sparse key and drifts high. Dense windows
//! give every key it has seen a row for each window — the aggregates of no rows where it had
//! no events (`count(*)` 0, `sum` NULL) — from its first window with events up to the stream's
//! last one, until the key has been quiet for the state TTL.
//!
//! The rule, which the batch oracle computes too: key `k` has a row in window `s` iff it has
//! events in some window `w ≤ s` with `s − w ≤ ttl`, and `s` is at most the last window with
//! events of the whole stream. The operator keeps, per key, the start of its latest emitted
//! window with events; it fills a window when the watermark closes it, so "the stream's last
//! window" is only known to one worker seeing every key (the plan runs on one).

use std::collections::{BTreeMap, HashMap};

use datafusion::arrow::array::{ArrayRef, Int64Array, RecordBatch};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::arrow::row::{RowConverter, SortField};

use crate::error::Result;
use crate::sql::AggregateSpec;
use crate::state::state_err;

/// The dense-window state of one TUMBLE aggregate.
pub(super) struct Dense {
    size: i64,
    ttl: i64,
    /// Keys as rows (`None`: the aggregate has no keys besides the window: one key).
    converter: Option<RowConverter>,
    /// Each live key: the start of its latest emitted window with events.
    last: HashMap<Box<[u8]>, i64>,
    /// The first window not emitted yet (`None` before any event).
    next: Option<i64>,
    /// Whether a window has been emitted: `next` then only moves on. (An event of an emitted
    /// window that is not late — after `finish`, a resumed run — has its window emitted again
    /// with its own groups alone: see [`Self::behind`].)
    started: bool,
    /// The latest window with events.
    newest: i64,
}

impl Dense {
    /// Dense windows of `size` ms for `spec`'s keys, each kept `ttl` ms after its last events.
    pub(super) fn new(spec: &AggregateSpec, size: i64, ttl: i64) -> Result<Self> {
        let converter = match spec.keys.is_empty() {
            true => None,
            false => Some(RowConverter::new(
                spec.key_schema
                    .fields()
                    .iter()
                    .map(|f| SortField::new(f.data_type().clone()))
                    .collect(),
            )?),
        };
        Ok(Dense {
            size,
            ttl,
            converter,
            last: HashMap::new(),
            next: None,
            started: false,
            newest: i64::MIN,
        })
    }

    /// Events arrived in the window starting at `start`.
    pub(super) fn saw(&mut self, start: i64) {
        if !self.started {
            self.next = Some(self.next.map_or(start, |n| n.min(start)));
        }
        self.newest = self.newest.max(start);
    }

    /// Window `start`, emitted already, came out again with these groups (`keys`, `rows` of
    /// them): their keys live on from it (windows already emitted are not filled again).
    pub(super) fn emitted_again(
        &mut self,
        start: i64,
        keys: &[ArrayRef],
        rows: usize,
    ) -> Result<()> {
        let mut seen = |k: Box<[u8]>| {
            let last = self.last.entry(k).or_insert(start);
            *last = (*last).max(start);
        };
        match &self.converter {
            None if rows > 0 => seen(Box::from(&[][..])),
            None => {}
            Some(c) => {
                for r in c.convert_columns(keys)?.iter() {
                    seen(Box::from(r.data()));
                }
            }
        }
        Ok(())
    }

    /// Whether the window starting at `start` was emitted already.
    pub(super) fn behind(&self, start: i64) -> bool {
        self.started && self.next.is_some_and(|n| start < n)
    }

    /// The next window to emit once the watermark is `watermark`: windows close in order,
    /// quiet ones too, up to the last with events; with no key alive, straight to the next
    /// window with events (`windows`: the open ones).
    pub(super) fn due<T>(&mut self, watermark: i64, windows: &BTreeMap<i64, T>) -> Option<i64> {
        let mut s = self.next?;
        if self.last.is_empty()
            && !windows.contains_key(&s)
            && let Some((&w, _)) = windows.range(s..).next()
        {
            s = w;
            self.next = Some(w);
        }
        (s <= self.newest && s.saturating_add(self.size) <= watermark).then_some(s)
    }

    /// Window `start` emits its groups with events (`keys`, `rows` of them): the keys alive
    /// but quiet in it, as key columns and their count (`None`: none).
    pub(super) fn fill(
        &mut self,
        start: i64,
        keys: &[ArrayRef],
        rows: usize,
    ) -> Result<Option<(Vec<ArrayRef>, usize)>> {
        self.next = Some(start + self.size);
        self.started = true;
        match &self.converter {
            None if rows > 0 => {
                self.last.insert(Box::from(&[][..]), start);
            }
            None => {}
            Some(c) => {
                let converted = c.convert_columns(keys)?;
                for r in converted.iter() {
                    self.last.insert(Box::from(r.data()), start);
                }
            }
        }
        let ttl = self.ttl;
        self.last.retain(|_, last| start - *last <= ttl);
        let quiet: Vec<&[u8]> = self
            .last
            .iter()
            .filter(|(_, last)| **last < start)
            .map(|(k, _)| k.as_ref())
            .collect();
        if quiet.is_empty() {
            return Ok(None);
        }
        // In key order, so a rerun emits the same rows in the same order.
        let mut quiet = quiet;
        quiet.sort_unstable();
        let n = quiet.len();
        let columns = match &self.converter {
            None => Vec::new(),
            Some(c) => {
                let parser = c.parser();
                c.convert_rows(quiet.iter().map(|k| parser.parse(k)))?
            }
        };
        Ok(Some((columns, n)))
    }

    /// The state: a header and, when keys are alive, a batch of them with their last windows.
    pub(super) fn snapshot(&self) -> Result<(serde_json::Value, Option<RecordBatch>)> {
        let header = serde_json::json!({
            "next": self.next, "newest": self.newest, "started": self.started,
        });
        if self.last.is_empty() {
            return Ok((header, None));
        }
        let mut entries: Vec<(&Box<[u8]>, &i64)> = self.last.iter().collect();
        entries.sort();
        let mut fields = Vec::new();
        let mut columns: Vec<ArrayRef> = Vec::new();
        if let Some(c) = &self.converter {
            let parser = c.parser();
            for (i, col) in c
                .convert_rows(entries.iter().map(|(k, _)| parser.parse(k)))?
                .into_iter()
                .enumerate()
            {
                fields.push(Field::new(format!("k{i}"), col.data_type().clone(), true));
                columns.push(col);
            }
        }
        fields.push(Field::new("last", DataType::Int64, false));
        columns.push(std::sync::Arc::new(Int64Array::from_iter_values(
            entries.iter().map(|(_, l)| **l),
        )));
        let batch = RecordBatch::try_new_with_options(
            std::sync::Arc::new(Schema::new(fields)),
            columns,
            &datafusion::arrow::array::RecordBatchOptions::new()
                .with_row_count(Some(entries.len())),
        )?;
        Ok((header, Some(batch)))
    }

    /// Replaces the state with a [`Self::snapshot`]'s.
    pub(super) fn restore(
        &mut self,
        name: &str,
        header: &serde_json::Value,
        keys: Option<&RecordBatch>,
    ) -> Result<()> {
        self.next = header["next"].as_i64();
        self.started = header["started"].as_bool().unwrap_or(false);
        self.newest = header["newest"]
            .as_i64()
            .ok_or_else(|| state_err(name, "the snapshot has no dense windows"))?;
        self.last.clear();
        let Some(batch) = keys else { return Ok(()) };
        let n = batch.num_columns() - 1;
        let last = batch
            .column(n)
            .as_any()
            .downcast_ref::<Int64Array>()
            .ok_or_else(|| state_err(name, "dense windows' last column is not Int64"))?;
        match &self.converter {
            None => {
                if let Some(l) = last.values().first() {
                    self.last.insert(Box::from(&[][..]), *l);
                }
            }
            Some(c) => {
                let rows = c.convert_columns(&batch.columns()[..n])?;
                for (r, l) in rows.iter().zip(last.values()) {
                    self.last.insert(Box::from(r.data()), *l);
                }
            }
        }
        Ok(())
    }
}
