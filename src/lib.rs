//! paystream: a stream processing engine for payment events.
//!
//! # Layout
//!
//! The modules follow the data's path:
//!
//! ```text
//!  source ─────────▶ decode ─▶ engine::router ─▶ operators ─▶ sink
//!  (file, log topic)  Arrow +    dedup, watermark,   windows      JSON Lines, topics,
//!   chunks, positions rejects    partition by key    per worker   dead letters, late
//!                        ▲
//!            sql: query text ─▶ DataFusion plan ─▶ StreamPlan (what the operators run)
//! ```
//!
//! * [`schema`] — the payment event columns, in Arrow.
//! * [`source`] — the [`Source`] trait: a file or a log topic as positioned, decoded chunks.
//! * [`decode`] — JSON Lines, CSV and Parquet into Arrow batches; bad records become [`Reject`]s.
//! * [`sql`] — window table functions (`TUMBLE`, `HOP`, `SESSION`), planning via DataFusion.
//! * [`operators`] — dedup, watermark, tumbling/hopping/session windows, stateless map.
//! * [`state`] — checksummed operator snapshots.
//! * [`sink`] — the [`sink::Sink`] trait and its two-phase commit; result, dead-letter and late
//!   outputs (rows formatted apart from transport).
//! * [`connector`] — the registry `connector = '…'` is looked up in; each connector's options.
//! * [`engine`] — [`engine::run`] wires a [`RunSpec`]'s stages; one shutdown path.
//! * [`job`] — a query file as a whole: [`job::Job::prepare`], [`job::JobHandle`], checkpoints.
//! * [`checkpoint`] — where checkpoints are stored (a directory or an object store).
//! * [`log`] — the embedded partitioned log: segments, partitions, topics, consumer groups.
//! * [`generate`] — deterministic synthetic payment events.
//! * [`throughput`] — the benchmark harness behind `paystream bench`.
//! * [`time`] — RFC 3339 and durations.
//!
//! Money is `i64` minor units with an ISO 4217 currency, never floats; card data is tokens only.

#![warn(missing_docs, unreachable_pub)]

pub mod checkpoint;
pub mod connector;
pub mod decode;
pub mod engine;
pub mod error;
pub mod generate;
pub mod job;
pub mod log;
pub mod operators;
pub mod schema;
pub mod sink;
pub mod source;
pub mod sql;
pub mod state;
pub mod throughput;
pub mod time;

pub use crate::decode::{Format, Reject, RejectReason};
pub use crate::engine::{OnStop, Progress, RunOptions, RunOutcome, RunSpec, Summary};
pub use crate::error::{Error, Result};
pub use crate::source::{FileSource, LogSource, Source, SourcePosition};
pub use crate::sql::{StreamPlan, plan_query};
