//! Sources: where events come from, as decoded chunks tagged with their positions.
//!
//! ```text
//!  Source::open(start) ─▶ reader thread ─▶ decoders (N) ─▶ chunks (seq, partition, end position)
//!                                                              │
//!  engine: router puts chunks back in `seq` order ◀────────────┘
//!  checkpoint owner: Source::commit(positions) once a checkpoint covering them is durable
//! ```
//! A source is a set of partitions (a file is one; a log topic has its own), each with an
//! [`Origin`] that names positions in dead-letter and late records. It is opened at a position
//! per partition — the positions a checkpoint recorded — and every chunk it produces says which
//! partition it came from and the position after its last record, so the engine knows, at each
//! barrier, exactly where a restart must read from. Two implementations: [`FileSource`] (a JSON
//! Lines, CSV or Parquet file: bounded, not resumable from checkpoint positions) and
//! [`LogSource`] (a topic of the embedded log: unbounded unless `until_end`, resumable, its
//! consumer group committed after each checkpoint). A broker's source is a third.

mod decoders;
pub(crate) mod file;
pub(crate) mod kafka;
pub(crate) mod log;
mod merge;
pub(crate) mod nats;
pub(crate) mod rabbitmq;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::mpsc::Receiver;
use std::thread::JoinHandle;

pub use self::file::CHUNK as READ_CHUNK;
pub use self::file::connector::FileSourceOptions;
pub use self::file::{FileSource, SourcePosition};
pub use self::log::LogSource;
pub use self::log::connector::LogSourceOptions;
pub use self::merge::MergedSource;

use crate::decode::{Decoded, Origin};
use crate::error::Result;

/// A source as `CREATE SOURCE` declared it: options checked, nothing opened yet. Registered in
/// `connector::SOURCES`; a job turns it into a [`Source`] when it runs.
pub trait SourceConnector: std::fmt::Debug + Send + Sync {
    /// The connector's name, as `connector = '…'` spells it.
    fn name(&self) -> &'static str;

    /// The topic of the embedded log it reads, if it reads one: a job shows that topic's lag
    /// and refuses a sink that would write it.
    fn log_topic(&self) -> Option<&str> {
        None
    }

    /// The record format it declares (`format = 'csv'`), if it declares one: a replay of
    /// another file under the same declaration reads it so unless told otherwise.
    fn format(&self) -> Option<crate::decode::Format> {
        None
    }

    /// The file it reads, if it reads one: a replay of another file under the same declaration
    /// says that this one is not read.
    fn file_path(&self) -> Option<&std::path::Path> {
        None
    }

    /// Whether a job over it is checkpointed and resumes from the checkpoint's positions
    /// (exactly-once), rather than reading its input whole each run (at-least-once).
    fn resumable(&self) -> bool;

    /// The record metadata its records carry, by kind ([`crate::decode::MetaKey::kind_name`]):
    /// what a `METADATA FROM '…'` column of a source declared on it may read. A source that
    /// lists some renders them for each record ([`crate::decode::RecordMeta`]).
    fn record_metadata(&self) -> &'static [&'static str] {
        &[]
    }

    /// The source a run reads.
    fn source(&self, ctx: &SourceContext<'_>) -> Result<Arc<dyn Source>>;
}

/// What a declared source is opened with.
#[derive(Debug, Clone)]
pub struct SourceContext<'a> {
    /// The events its records decode to: the payment event, or the columns `CREATE SOURCE`
    /// declared. The source's [`Source::events`] must be these.
    pub events: Arc<crate::schema::EventSchema>,
    /// The embedded log of the data directory.
    pub log: &'a crate::log::Log,
    /// The job's name (a log source's consumer group).
    pub job: &'a str,
    /// Read to the current end and stop, rather than tail until stopped.
    pub until_end: bool,
}

/// Per source partition, a position: the next log offset to read (a log), or nothing yet (a file,
/// whose chunks carry no position).
pub type Positions = BTreeMap<u32, u64>;

/// A source of events. Implementations are cheap handles (a path, a log and a topic): `open`
/// starts the threads that read and decode. One handle may be opened by several runs, one
/// after the other (a test, a restarted job); each `open` is a new read.
///
/// The contract the engine and the job rely on:
/// * **Partitions** are `0..origins().len()`, the same on every call; every chunk's partition
///   is one of them, and [`Reading::positions`] has an entry for each (a resumable source) or
///   is empty (a source with no positions, such as a file: saved state cannot be restored over
///   it, and the engine refuses to).
/// * **Order**: chunks are numbered `seq = 0, 1, 2, …` with no gap; the engine processes them
///   in that order, whatever order the decoders finish in. Within a partition, chunks come in
///   position order, and a resumable source sets [`ChunkTag::end`] on every chunk that holds
///   records, to the position after its last record, so a checkpoint taken after the chunk
///   resumes right behind it.
/// * **Liveness**: an unbounded source sends a tick (an empty chunk, numbered too) at least
///   every few hundred milliseconds while it has nothing to read. The engine notices idle
///   partitions, checkpoint requests and stop only between chunks, so a reader that blocks
///   without ticking never checkpoints.
/// * **Stop**: the reader stops promptly when `stop` is set or when sending a chunk fails (the
///   run has ended); an error ends the stream as its last item.
/// * **Acknowledgement**: the source never commits, acknowledges or deletes on its own (no
///   broker auto-commit). [`Source::commit`] is called by the checkpoint's owner (a job's
///   committer, on its checkpoint thread, one call at a time, in checkpoint order) with the
///   positions of a checkpoint that is already durable — possibly after the run has ended and
///   its [`Reading`] is gone (the final checkpoint), so whatever commits must outlive the reader
///   threads. A commit that fails fails the job after the checkpoint is durable: make it
///   idempotent, since a restart commits the same positions again.
pub trait Source: Send + Sync {
    /// The schema of the events its chunks' batches hold; queries run over it must be planned
    /// for the same events. The built-in decoders produce payment events.
    fn events(&self) -> Arc<crate::schema::EventSchema> {
        crate::schema::EventSchema::payments()
    }

    /// Its streams, in partition order: one (its [`Self::events`], over every partition) but
    /// for a source of several ([`MergedSource`]), whose first stream has the first partitions,
    /// the next the ones after, and so on. A query over several streams reads them in this
    /// order.
    fn streams(&self) -> Result<Vec<SourceStream>> {
        Ok(vec![SourceStream {
            events: self.events(),
            partitions: self.origins()?.len(),
        }])
    }

    /// Each partition's origin (index = partition), naming positions in dead letters.
    fn origins(&self) -> Result<Vec<Origin>>;

    /// Whether the source ends by itself (a file; a log read to its current end), rather than
    /// running until stopped.
    fn bounded(&self) -> bool;

    /// Starts reading at `start` (a partition absent from it starts where the source was
    /// configured to), with `opts.decoders` decode threads.
    fn open(&self, start: &Positions, opts: &ReadOptions) -> Result<Reading>;

    /// Called once a checkpoint covering `positions` is durable (see the contract above). The
    /// default does nothing.
    fn commit(&self, positions: &Positions) -> Result<()> {
        let _ = positions;
        Ok(())
    }
}

/// One stream of a source ([`Source::streams`]).
#[derive(Debug, Clone)]
pub struct SourceStream {
    /// Its events.
    pub events: Arc<crate::schema::EventSchema>,
    /// How many of the source's partitions are its.
    pub partitions: usize,
}

/// How to read: decode threads, batch size, and the stop flag.
#[derive(Debug, Clone)]
pub struct ReadOptions {
    /// Decode threads.
    pub decoders: usize,
    /// Rows per decoded batch.
    pub batch_size: usize,
    /// Set to stop reading (Ctrl-C, a failure downstream).
    pub stop: Arc<AtomicBool>,
    /// The columns to build, of the payment event or a declared source (the run's queries
    /// read no others).
    pub projection: crate::decode::Projection,
}

/// An opened source: its chunks and the threads producing them.
pub struct Reading {
    /// Decoded chunks in `seq` numbering (not necessarily in order), or the error that ended it.
    pub chunks: Receiver<Result<Chunk>>,
    /// The reader and decoder threads (joined at the end of a run).
    pub threads: Vec<JoinHandle<()>>,
    /// Bytes read so far (progress).
    pub bytes: Arc<AtomicU64>,
    /// Where every partition starts: a checkpoint records a position for every partition, also
    /// one that delivered nothing since the start (else a recovery would re-read it from 0).
    pub positions: Positions,
}

/// A decoded chunk with its place in the source.
pub struct Chunk {
    /// 0-based chunk number (see [`Source`]'s contract).
    pub seq: u64,
    /// The chunk's contents.
    pub decoded: Decoded,
    /// Where the chunk came from.
    pub tag: ChunkTag,
    /// For a source whose records have timestamps (a log): the first record's position and
    /// every record's timestamp, so a dead letter carries its source record's time.
    pub record_times: Option<(u64, Vec<i64>)>,
}

/// Which source partition a chunk came from (0 for a file) and, for a resumable source, the
/// position after its last record: where to read from once the chunk is processed.
#[derive(Debug, Clone, Copy, Default)]
pub struct ChunkTag {
    /// The source partition.
    pub partition: u32,
    /// The position after the chunk's last record, if the source has positions.
    pub end: Option<u64>,
    /// The partition has ended: no chunk follows from it (a [`MergedSource`] says so of a
    /// bounded part that finished, so it stops holding the watermark back). Such a chunk
    /// holds no records.
    pub last: bool,
    /// The source waits for a checkpoint: it delivers nothing more until one covers what it
    /// delivered (a queue whose unacknowledged messages reached the prefetch limit). A
    /// checkpointed run then takes one now rather than at its next interval.
    pub wants_checkpoint: bool,
}
