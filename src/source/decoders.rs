//! The decoder pool shared by the text sources: byte chunks in, decoded chunks out.
//!
//! ```text
//!  reader ──Job (seq, bytes)──▶ decoder 0..N ──Chunk (seq)──▶ engine (puts them back in order)
//!     ▲                              │
//!     └──── chunk buffers recycled ──┘
//! ```

use std::sync::atomic::AtomicU64;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use super::{Chunk, ChunkTag, Positions, ReadOptions, Reading};
use crate::decode::{ChunkBytes, CsvHeader, Decoded, Decoder, RawSource, RecordMeta};
use crate::error::Result;

/// A chunk of records for a decoder.
pub(super) enum Job {
    Json {
        seq: u64,
        bytes: Vec<u8>,
        first_line: u64,
        /// Lines (records) in `bytes`, about: sizes the decoded columns.
        lines: usize,
        tag: ChunkTag,
        /// Each record's timestamp (a log source; empty for a file).
        times: Vec<i64>,
        /// Each record's metadata, when the events have metadata columns (a Kafka source).
        meta: Option<Box<RecordMeta>>,
    },
    Csv {
        seq: u64,
        bytes: Vec<u8>,
        first_line: u64,
    },
}

/// What a reader thread feeds: the decoders' job queue, the chunk buffers they hand back, the
/// channel for ticks and the error that ends a read, and the count of bytes read.
pub(super) struct Feed {
    pub(super) jobs: SyncSender<Job>,
    pub(super) recycled: Receiver<Vec<u8>>,
    pub(super) ticks: SyncSender<Result<Chunk>>,
    pub(super) bytes: Arc<AtomicU64>,
}

impl Feed {
    /// Sends an empty chunk numbered `seq` (advanced): a tick that lets watermarks and
    /// checkpoints go on while nothing arrives, asking for a checkpoint at once when
    /// `wants_checkpoint`. False once the run has ended.
    pub(super) fn tick(&self, seq: &mut u64, wants_checkpoint: bool) -> bool {
        let tick = Chunk {
            seq: *seq,
            decoded: Decoded::default(),
            tag: ChunkTag {
                wants_checkpoint,
                ..ChunkTag::default()
            },
            record_times: None,
        };
        *seq += 1;
        self.ticks.send(Ok(tick)).is_ok()
    }
}

/// Starts `opts.decoders` decoders for `events` and the reader thread `name`, which runs
/// `read` with the [`Feed`] of those decoders: a record source opened at `positions`.
pub(super) fn start_reading(
    events: &Arc<crate::schema::EventSchema>,
    opts: &ReadOptions,
    positions: Positions,
    name: &'static str,
    read: impl FnOnce(Feed) + Send + 'static,
) -> Result<Reading> {
    let decoders = opts.decoders.max(1);
    let bytes = Arc::new(AtomicU64::new(0));
    let (ticks, chunks) = sync_channel::<Result<Chunk>>(decoders * 2 + 2);
    let decoder = Decoder::for_events(events)?.projected(&opts.projection);
    let (jobs, recycled, mut threads) = spawn_decoders(
        &decoder,
        decoders,
        opts.batch_size,
        Arc::new(Mutex::new(None)),
        ticks.clone(),
    );
    let feed = Feed {
        jobs,
        recycled,
        ticks,
        bytes: Arc::clone(&bytes),
    };
    threads.push(crate::engine::spawn(name, move || read(feed)));
    Ok(Reading {
        chunks,
        threads,
        bytes,
        positions,
    })
}

/// The decoder pool: jobs in, sequence-numbered decoded chunks out; chunk buffers come back on
/// the recycle channel.
pub(super) fn spawn_decoders(
    decoder: &Decoder,
    decoders: usize,
    batch_size: usize,
    header: Arc<Mutex<Option<Arc<CsvHeader>>>>,
    out_tx: SyncSender<Result<Chunk>>,
) -> (SyncSender<Job>, Receiver<Vec<u8>>, Vec<JoinHandle<()>>) {
    let mut handles = Vec::new();
    let (job_tx, job_rx) = sync_channel::<Job>(decoders * 2);
    // Decoders hand chunk buffers back, so the reader reuses warm memory instead of faulting in
    // (and having the kernel zero) fresh pages for every chunk.
    let (recycle_tx, recycle_rx) = sync_channel::<Vec<u8>>(decoders * 2 + 2);
    let job_rx = Arc::new(Mutex::new(job_rx));
    for _ in 0..decoders.max(1) {
        let rx = Arc::clone(&job_rx);
        let tx = out_tx.clone();
        let recycle = recycle_tx.clone();
        let header = Arc::clone(&header);
        let decoder = decoder.clone();
        handles.push(crate::engine::spawn("decoder", move || {
            loop {
                let job = match rx.lock().expect("decoder queue").recv() {
                    Ok(j) => j,
                    Err(_) => return,
                };
                let (seq, decoded, tag, record_times) = match job {
                    Job::Json {
                        seq,
                        bytes,
                        first_line,
                        lines,
                        tag,
                        times,
                        meta,
                    } => {
                        let mut d = decoder.json_lines(
                            &bytes,
                            first_line,
                            batch_size,
                            lines,
                            meta.as_deref(),
                        );
                        keep_chunk(&mut d, bytes, &recycle);
                        let times = (!times.is_empty()).then_some((first_line, times));
                        (seq, d, tag, times)
                    }
                    Job::Csv {
                        seq,
                        bytes,
                        first_line,
                    } => {
                        let h = header
                            .lock()
                            .expect("header")
                            .clone()
                            .expect("header read first");
                        let mut d = decoder.csv(&bytes, first_line, &h, batch_size);
                        keep_chunk(&mut d, bytes, &recycle);
                        (seq, d, ChunkTag::default(), None)
                    }
                };
                let out = Chunk {
                    seq,
                    decoded,
                    tag,
                    record_times,
                };
                if tx.send(Ok(out)).is_err() {
                    return;
                }
            }
        }));
    }
    (job_tx, recycle_rx, handles)
}

/// Keeps a decoded chunk's bytes with its batches, so the records the router rejects are
/// dead-lettered as received ([`crate::decode::DecodedBatch::raw_record`]); the buffer goes
/// back to the reader once the last batch is dropped (at once when the chunk has none).
fn keep_chunk(d: &mut Decoded, bytes: Vec<u8>, recycle: &SyncSender<Vec<u8>>) {
    let chunk = ChunkBytes::new(bytes, Some(recycle.clone()));
    if !d.batches.is_empty() {
        d.keep_source(RawSource::Text(Arc::new(chunk)));
    }
}
