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
//! * [`schema`] — [`EventSchema`]: an event stream's Arrow schema and the roles of its columns;
//!   the payment event is the built-in one.
//! * [`source`] — the [`Source`] trait: a file or a log topic as positioned, decoded chunks;
//!   [`source::SourceConnector`], what `CREATE SOURCE` declares.
//! * [`decode`] — JSON Lines, CSV and Parquet into Arrow batches; bad records become [`Reject`]s.
//! * [`table`] — reference tables (`CREATE TABLE`): a file read whole, its versions and
//!   current rows, joined to the stream by `operators/lookup_join.rs`.
//! * [`sql`] — window table functions (`TUMBLE`, `HOP`, `SESSION`), planning via DataFusion into
//!   a [`StreamPlan`] that carries its events and decides its partitioning.
//! * [`operators`] — dedup, watermark, tumbling/hopping/session windows (with their state
//!   codec), stateless map.
//! * `state` (internal) — checksummed snapshots of the router's and the operators' state.
//! * [`sink`] — the [`sink::Sink`] trait and its two-phase commit; [`sink::SinkConnector`], one
//!   directory per connector; rows formatted apart from transport.
//! * `connector` (internal) — the registry `connector = '…'` is looked up in.
//! * [`engine`] — [`engine::run`] wires a [`RunSpec`]: the router stage (`engine/router/`), the
//!   workers, the sink loop; [`engine::RunHandle`] runs one on its own thread.
//! * [`job`] — a query file as a whole: [`job::Job::prepare`], [`job::Job::spawn`], checkpoints.
//! * [`server`] — `paystream serve`: queries submitted at run time, an HTTP API, live result
//!   tables over SSE and the Postgres wire protocol, metrics, the dashboard.
//! * [`checkpoint`] — where checkpoints are stored (a directory or an object store).
//! * [`log`] — the embedded partitioned log: segments, partitions, topics, consumer groups.
//! * [`generate`] — deterministic synthetic payment events.
//! * [`time`] — RFC 3339 and durations.
//!
//! # API
//!
//! What an embedding program needs is re-exported here: prepare and spawn a query file
//! ([`Job`], [`JobHandle`]), or plan a query ([`plan_query`]) and run it over a [`Source`]
//! ([`RunSpec`], [`engine::spawn_run`], [`RunHandle`]), with the [`Summary`], [`RunMetrics`] and
//! [`Error`] they report. The modules behind them stay public for the binary, the benches and
//! the integration tests; `state` and `connector` are internal.
//!
//! Money is `i64` minor units with an ISO 4217 currency, never floats; card data is tokens only.

#![warn(missing_docs, unreachable_pub)]

pub mod checkpoint;
pub(crate) mod connector;
pub mod decode;
pub mod engine;
pub mod error;
pub mod functions;
pub mod generate;
pub mod job;
pub mod log;
pub mod operators;
pub mod schema;
pub mod server;
pub mod sink;
pub mod source;
pub mod sql;
pub(crate) mod state;
pub mod table;
pub mod time;

pub use crate::decode::{Format, Reject, RejectReason};
pub use crate::engine::{
    OnStop, Progress, RunHandle, RunMetrics, RunOptions, RunOutcome, RunSpec, Summary,
};
pub use crate::error::{Error, Result};
pub use crate::job::{Job, JobHandle, JobOptions, JobOutcome};
pub use crate::schema::EventSchema;
pub use crate::source::{FileSource, LogSource, Source, SourcePosition};
pub use crate::sql::{StreamPlan, plan_query};
