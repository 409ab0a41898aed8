//! The state a stopped continuous query leaves for its restart.
//!
//! ```text
//! "PSRS" | version u16 | header_len u32 | header JSON | blob_count u32 | (len u32 | bytes)* | crc32c u32
//! ```
//! The header names the queries (their SQL), the worker count and the source offsets; the blobs
//! are the router's snapshot (dedup table and watermark) and one operator snapshot per query and
//! worker, then (version 3) each reference table's rows, named in the header. Version 1 kept
//! the watermark in the header and the dedup table alone in the first blob; version 2 had no
//! tables; both are still read (an older binary refuses version 3 by its number, not by a
//! blob count it cannot explain).
//! It is written atomically (temporary file, fsync, rename) after the sinks are durable, so a
//! restart either sees the previous state or this one, never a mix.

use std::collections::BTreeMap;
use std::path::Path;

use crate::engine::PipelineState;
use crate::error::{Error, Result};
use crate::operators::WatermarkState;

const MAGIC: &[u8; 4] = b"PSRS";
const VERSION: u16 = 3;

#[derive(serde::Serialize, serde::Deserialize)]
struct Header {
    queries: Vec<String>,
    workers: usize,
    topic: String,
    positions: BTreeMap<u32, u64>,
    /// Version 1 only (version 2 keeps it in the router's snapshot).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    watermark: Option<WatermarkState>,
    #[serde(default)]
    epoch: u64,
    #[serde(default)]
    sinks: BTreeMap<String, Vec<u64>>,
    /// How each query's events were spread over the workers (absent before it was recorded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    partitioning: Option<Vec<String>>,
    /// The reference tables whose rows follow the operators' blobs, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    tables: Vec<String>,
}

/// A stopped query's state, as saved.
#[derive(Debug, Clone)]
pub struct SavedState {
    /// The SQL of each query (the state only fits the same queries).
    pub queries: Vec<String>,
    /// Workers per query (the state is partitioned by them).
    pub workers: usize,
    /// How each query's events were spread over the workers ([`partitioning_of`]): keyed state
    /// fits only the same spreading. `None` in states saved before it was recorded.
    pub partitioning: Option<Vec<String>>,
    /// The source topic.
    pub topic: String,
    /// The checkpoint's number.
    pub epoch: u64,
    /// End offset of every partition of every sink topic when the checkpoint was taken: what
    /// its transaction commits.
    pub sinks: BTreeMap<String, Vec<u64>>,
    /// The pipeline state.
    pub pipeline: PipelineState,
    /// Each reference table's rows as the queries saw them (`table/saved.rs`), by name.
    pub tables: Vec<(String, std::sync::Arc<Vec<u8>>)>,
}

/// How a plan's events are spread over workers, as a checkpoint records it.
pub fn partitioning_of(plan: &crate::sql::StreamPlan) -> String {
    use crate::sql::Partitioning;
    let exprs = |k: &[std::sync::Arc<dyn datafusion::physical_plan::PhysicalExpr>]| {
        k.iter()
            .map(|e| e.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    match plan.partitioning() {
        Partitioning::Single => "single".into(),
        Partitioning::RoundRobin => "round robin".into(),
        Partitioning::ByKeys { keys, .. } => format!("by keys {}", exprs(&keys)),
        Partitioning::ByStreamKeys(per) => format!(
            "by stream keys {}",
            per.iter().map(|k| exprs(k)).collect::<Vec<_>>().join(" | ")
        ),
    }
}

fn bad(path: &Path, message: impl Into<String>) -> Error {
    Error::State {
        operator: format!("saved query state {}", path.display()),
        message: message.into(),
    }
}

impl SavedState {
    /// Serialises the state.
    pub fn encode(&self) -> Vec<u8> {
        let header = Header {
            queries: self.queries.clone(),
            workers: self.workers,
            topic: self.topic.clone(),
            positions: self.pipeline.positions.clone(),
            watermark: None,
            epoch: self.epoch,
            sinks: self.sinks.clone(),
            partitioning: self.partitioning.clone(),
            tables: self.tables.iter().map(|(n, _)| n.clone()).collect(),
        };
        let h = serde_json::to_vec(&header).expect("header serializes");
        let blobs: Vec<&Vec<u8>> = std::iter::once(&self.pipeline.router)
            .chain(self.pipeline.operators.iter().flatten())
            .chain(self.tables.iter().map(|(_, b)| b.as_ref()))
            .collect();
        let blob_bytes: usize = blobs.iter().map(|b| b.len() + 4).sum();
        let mut out = Vec::with_capacity(h.len() + blob_bytes + 64);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&VERSION.to_le_bytes());
        out.extend_from_slice(&(h.len() as u32).to_le_bytes());
        out.extend_from_slice(&h);
        out.extend_from_slice(&(blobs.len() as u32).to_le_bytes());
        for b in blobs {
            out.extend_from_slice(&(b.len() as u32).to_le_bytes());
            out.extend_from_slice(b);
        }
        let crc = crc32c::crc32c(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }

    /// Parses a saved state, verifying its checksum.
    pub fn decode(path: &Path, bytes: &[u8]) -> Result<SavedState> {
        if bytes.len() < 14 || &bytes[..4] != MAGIC {
            return Err(bad(path, "not a paystream query state file"));
        }
        let (body, crc) = bytes.split_at(bytes.len() - 4);
        if crc32c::crc32c(body).to_le_bytes() != crc {
            return Err(bad(path, "checksum mismatch: the file is torn or corrupt"));
        }
        let version = u16::from_le_bytes([body[4], body[5]]);
        if !(1..=VERSION).contains(&version) {
            return Err(bad(
                path,
                format!(
                    "version {version} is not supported (expected 1 to {VERSION}): it was written by a newer paystream"
                ),
            ));
        }
        let mut i = 6;
        let mut take = |n: usize| -> Result<&[u8]> {
            let s = body.get(i..i + n).ok_or_else(|| bad(path, "truncated"))?;
            i += n;
            Ok(s)
        };
        let hl = u32::from_le_bytes(take(4)?.try_into().expect("4")) as usize;
        let header: Header =
            serde_json::from_slice(take(hl)?).map_err(|e| bad(path, format!("bad header: {e}")))?;
        let n = u32::from_le_bytes(take(4)?.try_into().expect("4")) as usize;
        let mut blobs = Vec::with_capacity(n);
        for _ in 0..n {
            let l = u32::from_le_bytes(take(4)?.try_into().expect("4")) as usize;
            blobs.push(take(l)?.to_vec());
        }
        let nq = header.queries.len();
        if blobs.len() != 1 + nq * header.workers + header.tables.len() {
            return Err(bad(
                path,
                "the number of operator snapshots does not match the header",
            ));
        }
        let mut it = blobs.into_iter();
        let mut router = it.next().expect("counted");
        if version == 1 && (!router.is_empty() || header.watermark.is_some()) {
            router = crate::engine::Router::state_from_parts(header.watermark.as_ref(), &router)?;
        }
        let operators = (0..nq)
            .map(|_| it.by_ref().take(header.workers).collect())
            .collect();
        let tables = header
            .tables
            .into_iter()
            .zip(it.map(std::sync::Arc::new))
            .collect();
        Ok(SavedState {
            queries: header.queries,
            workers: header.workers,
            partitioning: header.partitioning,
            topic: header.topic,
            epoch: header.epoch,
            sinks: header.sinks,
            pipeline: PipelineState {
                router,
                operators,
                positions: header.positions,
            },
            tables,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_damage() {
        let s = SavedState {
            queries: vec!["SELECT 1".into(), "SELECT 2".into()],
            workers: 2,
            partitioning: Some(vec!["single".into(), "round robin".into()]),
            topic: "payments".into(),
            epoch: 7,
            sinks: [("alerts".to_string(), vec![3, 4])].into_iter().collect(),
            pipeline: PipelineState {
                router: vec![1, 2, 3],
                operators: vec![vec![vec![4], vec![5, 6]], vec![vec![], vec![7]]],
                positions: [(0, 10), (1, 20)].into_iter().collect(),
            },
            tables: vec![("merchants".into(), std::sync::Arc::new(vec![8, 9]))],
        };
        let bytes = s.encode();
        let p = Path::new("state");
        let back = SavedState::decode(p, &bytes).unwrap();
        assert_eq!(back.queries, s.queries);
        assert_eq!(back.pipeline.operators, s.pipeline.operators);
        assert_eq!(back.pipeline.positions, s.pipeline.positions);
        assert_eq!(back.pipeline.router, s.pipeline.router);
        assert_eq!((back.epoch, &back.sinks), (7, &s.sinks));
        assert_eq!(back.partitioning, s.partitioning);
        assert_eq!(back.tables, s.tables);
        for cut in [0, 5, bytes.len() / 2, bytes.len() - 1] {
            assert!(SavedState::decode(p, &bytes[..cut]).is_err());
        }
        let mut flipped = bytes.clone();
        flipped[bytes.len() / 2] ^= 4;
        assert!(SavedState::decode(p, &flipped).is_err());
    }
}
