//! Continuous queries over a topic of the embedded log.
//!
//! ```text
//!  partition readers (in turn, ≤ 1 MiB a chunk) ─▶ decoders (N) ─▶ pipeline (router, queries)
//!        └─ idle: wait on the partition directories (inotify), send a tick now and then
//! ```
//! Each chunk holds the records of one partition, one JSON value a line, and carries the offset
//! after its last record; positions in dead letters and late records are log offsets. Ticks (empty
//! chunks) let the router notice idle partitions and move time on when no records arrive.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::pipeline::{self, Checkpoints, EndMode, PipelineState, QueryRun};
use super::reader::{ChunkTag, Job, SeqDecoded, spawn_decoders};
use super::router::Router;
use super::{Progress, Summary};
use crate::decode::{Decoded, Origin};
use crate::error::{Error, Result};
use crate::log::{Log, PartitionReader, TailWaiter};
use crate::operators::{Dedup, Watermark};
use crate::sink::Sink;

/// Bytes of log records per decoded chunk. 1 MiB: unlike file reads (2 MiB, see `reader`), 2 MiB
/// chunks from the log measured no faster in user time and paid more system time for the larger
/// buffers in flight (5 interleaved `run --until-end` pairs over 1 M events: wall 0.31–0.45 s
/// with 1 MiB, 0.33–0.90 s with 2 MiB).
const CHUNK: usize = 1 << 20;
/// How often an idle source sends a tick so idleness and time are re-evaluated.
const TICK: Duration = Duration::from_millis(200);

/// Options of a continuous run over a topic.
#[derive(Debug, Clone)]
pub struct ContinuousOptions {
    /// The log holding the source topic.
    pub log: Log,
    /// The source topic.
    pub topic: String,
    /// Where to start per partition (absent: the earliest stored offset).
    pub start: BTreeMap<u32, u64>,
    /// Bounded out-of-orderness, ms.
    pub watermark_delay: i64,
    /// How far ahead of its partition's watermark an event time may be, ms.
    pub max_skew: i64,
    /// Dedup TTL in event time, ms.
    pub dedup_ttl: i64,
    /// A partition without records for this long stops holding the watermark back.
    pub idle_timeout: Duration,
    /// Workers per query (and decode threads).
    pub workers: usize,
    /// Rows per decoded batch.
    pub batch_size: usize,
    /// Stop at the end of each partition as of the start, and finish (emit open windows).
    pub until_end: bool,
}

impl ContinuousOptions {
    /// Defaults for `topic` in `log`: from the earliest offsets, 5 s watermark delay, 5 min
    /// skew, 1 h dedup TTL, 30 s idle timeout, all cores, tailing until stopped.
    pub fn new(log: Log, topic: impl Into<String>) -> Self {
        ContinuousOptions {
            log,
            topic: topic.into(),
            start: BTreeMap::new(),
            watermark_delay: 5_000,
            max_skew: 300_000,
            dedup_ttl: 3_600_000,
            idle_timeout: Duration::from_secs(30),
            workers: std::thread::available_parallelism().map_or(2, |n| n.get()),
            batch_size: 8192,
            until_end: false,
        }
    }
}

/// Where a run's rows go: each query's results, and the shared dead-letter and late outputs.
pub struct Outputs<'a> {
    /// The queries and their result sinks.
    pub queries: Vec<QueryRun<'a>>,
    /// Rejected records.
    pub dead_letter: Box<dyn Sink>,
    /// Late events.
    pub late: Box<dyn Sink>,
}

impl<'a> Outputs<'a> {
    /// Only the queries' results; dead letters and late events are discarded (benchmarks and
    /// tests that count results).
    pub fn results_only(queries: Vec<QueryRun<'a>>) -> Self {
        Outputs {
            queries,
            dead_letter: Box::new(crate::sink::NullSink),
            late: Box::new(crate::sink::NullSink),
        }
    }
}

/// What a continuous run did, and the state to resume from.
#[derive(Debug)]
pub struct ContinuousOutcome {
    /// Counters of this run.
    pub summary: Summary,
    /// Operator, dedup and watermark state, and the offsets after everything processed.
    pub state: PipelineState,
}

/// Runs `queries` over the topic until `stop` is set (or, with `until_end`, until the end of
/// the topic as of the start), taking `checkpoints` as it goes. Returns the state to resume
/// from.
pub fn run_continuous(
    outputs: Outputs<'_>,
    opts: &ContinuousOptions,
    restore: Option<PipelineState>,
    checkpoints: Option<Checkpoints<'_>>,
    progress: Arc<Progress>,
    stop: Arc<AtomicBool>,
) -> Result<ContinuousOutcome> {
    let Outputs {
        queries,
        dead_letter,
        late,
    } = outputs;
    let config = opts.log.topic_config(&opts.topic)?;
    let n = config.partitions;
    let mut start = opts.start.clone();
    if let Some(r) = &restore {
        start.extend(r.positions.iter().map(|(p, o)| (*p, *o)));
    }
    let readers = (0..n)
        .map(|p| {
            opts.log
                .reader(&opts.topic, p, start.get(&p).copied().unwrap_or(0))
        })
        .collect::<std::result::Result<Vec<_>, _>>()?;
    let positions: BTreeMap<u32, u64> = readers
        .iter()
        .enumerate()
        .map(|(p, r)| (p as u32, r.position()))
        .collect();
    let until = if opts.until_end {
        Some(
            readers
                .iter()
                .map(|r| r.visible_end_offset())
                .collect::<std::result::Result<Vec<_>, _>>()?,
        )
    } else {
        None
    };
    let dirs: Vec<_> = (0..n)
        .map(|p| opts.log.partition_dir(&opts.topic, p))
        .collect();
    let waiter = TailWaiter::new(dirs.iter().map(|d| d.as_path()));
    tracing::info!(topic = %opts.topic, partitions = n, ?positions, until_end = opts.until_end, "continuous run starting");

    let workers = opts.workers.max(1);
    let bytes = Arc::new(AtomicU64::new(0));
    let (out_tx, rx) = sync_channel::<Result<SeqDecoded>>(workers * 2 + 2);
    let (jobs, recycled, mut threads) = spawn_decoders(
        workers,
        opts.batch_size,
        Arc::new(Mutex::new(None)),
        out_tx.clone(),
    );
    let reader = LogReader {
        readers,
        until,
        jobs,
        recycled,
        ticks: out_tx,
        bytes: Arc::clone(&bytes),
        stop: Arc::clone(&stop),
        waiter,
    };
    threads.push(super::spawn("log-reader", move || reader.run()));
    let source = pipeline::Source {
        rx,
        threads,
        bytes,
        origins: (0..n)
            .map(|p| Origin::partition(opts.topic.as_str(), p))
            .collect(),
        positions: positions.clone(),
    };
    let name_late_queries = queries.len() > 1;
    let spec = pipeline::Spec {
        queries,
        dead_letter,
        late,
        router: Router::new(
            Dedup::new(opts.dedup_ttl),
            Watermark::partitioned(
                opts.watermark_delay,
                opts.max_skew,
                n as usize,
                Some(opts.idle_timeout),
            ),
        ),
        workers,
        speed: None,
        end: EndMode::SnapshotOnStop,
        restore,
        name_late_queries,
        checkpoint: checkpoints,
    };
    let out = pipeline::run(spec, source, progress, stop)?;
    let mut state = out
        .state
        .ok_or_else(|| Error::Internal("a continuous run ended without its state".into()))?;
    let mut all = positions;
    all.extend(std::mem::take(&mut state.positions));
    state.positions = all;
    Ok(ContinuousOutcome {
        summary: out.summary,
        state,
    })
}

struct LogReader {
    readers: Vec<PartitionReader>,
    until: Option<Vec<u64>>,
    jobs: SyncSender<Job>,
    recycled: Receiver<Vec<u8>>,
    ticks: SyncSender<Result<SeqDecoded>>,
    bytes: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    waiter: TailWaiter,
}

impl LogReader {
    fn run(mut self) {
        if let Err(e) = self.read() {
            let _ = self.ticks.send(Err(e));
        }
    }

    fn read(&mut self) -> Result<()> {
        let mut seq = 0u64;
        let mut last_tick = Instant::now();
        let n = self.readers.len();
        loop {
            if self.stop.load(Ordering::Relaxed) {
                return Ok(());
            }
            let mut any = false;
            let mut done = 0;
            for p in 0..n {
                let limit = self.until.as_ref().map_or(u64::MAX, |u| u[p]);
                if self.readers[p].position() >= limit {
                    done += 1;
                    continue;
                }
                let mut buf = self
                    .recycled
                    .try_recv()
                    // Room for a chunk plus one more batch (up to 1 MiB, and a newline per
                    // record): a buffer that had to grow was reallocated into fresh pages that
                    // the kernel zeroed, for most chunks.
                    .unwrap_or_else(|_| Vec::with_capacity(2 * CHUNK + (64 << 10)));
                buf.clear();
                let mut first = None;
                let mut end = 0;
                let mut records = 0;
                let mut times = Vec::new();
                while buf.len() < CHUNK && self.readers[p].position() < limit {
                    let got = self.readers[p].poll(|r| {
                        if r.offset >= limit {
                            return;
                        }
                        first.get_or_insert(r.offset);
                        end = r.offset + 1;
                        records += 1;
                        times.push(r.timestamp);
                        append_line(&mut buf, r.value);
                    })?;
                    if got == 0 {
                        break;
                    }
                }
                let Some(first) = first else {
                    continue;
                };
                any = true;
                self.bytes.fetch_add(buf.len() as u64, Ordering::Relaxed);
                let job = Job::Json {
                    seq,
                    bytes: buf,
                    first_line: first,
                    lines: records,
                    tag: ChunkTag {
                        partition: p as u32,
                        end: Some(end),
                    },
                    times,
                };
                seq += 1;
                if self.jobs.send(job).is_err() {
                    return Ok(());
                }
            }
            if done == n {
                // --until-end: every partition reached its end. Those ends are where the valid
                // batches end; damage right after one is an error, never a quiet stop.
                for r in &mut self.readers {
                    r.poll(|_| {})?;
                }
                return Ok(());
            }
            if any {
                self.waiter.reset();
                continue;
            }
            if last_tick.elapsed() >= TICK {
                let tick = SeqDecoded {
                    seq,
                    decoded: Decoded::default(),
                    tag: ChunkTag::default(),
                    record_times: None,
                };
                seq += 1;
                if self.ticks.send(Ok(tick)).is_err() {
                    return Ok(());
                }
                last_tick = Instant::now();
            }
            self.waiter.wait(TICK);
        }
    }
}

/// Appends a record value as one line: a newline inside it would split it in two (it becomes a
/// space, as JSON allows between tokens), and an empty value would vanish (it becomes `null`,
/// which is then dead-lettered as not an object).
fn append_line(buf: &mut Vec<u8>, value: &[u8]) {
    let at = buf.len();
    if value.iter().all(u8::is_ascii_whitespace) {
        buf.extend_from_slice(b"null");
    } else {
        buf.extend_from_slice(value);
        for i in memchr::memchr_iter(b'\n', value) {
            buf[at + i] = b' ';
        }
    }
    buf.push(b'\n');
}
