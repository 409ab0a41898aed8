//! A topic of the embedded log as a source.
//!
//! ```text
//!  partition readers (in turn, ≤ 1 MiB a chunk) ─▶ decoders (N) ─▶ engine (router, queries)
//!        └─ idle: wait on the partition directories (inotify), send a tick now and then
//! ```
//! Each chunk holds the records of one partition, one JSON value a line, and carries the offset
//! after its last record; positions in dead letters and late records are log offsets. Ticks (empty
//! chunks) let the router notice idle partitions and move time on when no records arrive. After a
//! checkpoint, the positions it covers are committed to the consumer group (for lag and `group
//! list`; a restart reads the checkpoint's own positions, not the group's).

pub(crate) mod connector;

pub(crate) use self::connector::CONNECTOR;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::decoders::{Feed, Job, start_reading};
use super::{Chunk, ChunkTag, Positions, ReadOptions, Reading, Source};
use crate::decode::{Decoded, Origin};
use crate::error::Result;
use crate::log::{GroupOffsets, Log, PartitionReader, TailWaiter};

/// Bytes of log records per decoded chunk. 1 MiB: unlike file reads (2 MiB, see `file`), 2 MiB
/// chunks from the log measured no faster in user time and paid more system time for the larger
/// buffers in flight (5 interleaved `run --until-end` pairs over 1 M events: wall 0.31–0.45 s
/// with 1 MiB, 0.33–0.90 s with 2 MiB).
pub(super) const CHUNK: usize = 1 << 20;
/// How often an idle source sends a tick so idleness and time are re-evaluated.
pub(super) const TICK: Duration = Duration::from_millis(200);

/// A topic of the embedded log.
#[derive(Debug, Clone)]
pub struct LogSource {
    log: Log,
    topic: String,
    start: Positions,
    until_end: bool,
    group: Option<String>,
    events: Arc<crate::schema::EventSchema>,
}

impl LogSource {
    /// `topic` in `log`, from each partition's earliest stored offset, tailing until stopped.
    pub fn new(log: Log, topic: impl Into<String>) -> Self {
        LogSource {
            log,
            topic: topic.into(),
            start: Positions::new(),
            until_end: false,
            group: None,
            events: crate::schema::EventSchema::payments(),
        }
    }

    /// Decodes its records as `events` (a declared source's schema) instead of payment events.
    pub fn events(mut self, events: Arc<crate::schema::EventSchema>) -> Self {
        self.events = events;
        self
    }

    /// Starts each partition in `start` there (positions given to `open` take precedence).
    pub fn starting_at(mut self, start: Positions) -> Self {
        self.start = start;
        self
    }

    /// With `true`, stops at the end of each partition as of the start.
    pub fn until_end(mut self, until_end: bool) -> Self {
        self.until_end = until_end;
        self
    }

    /// Commits checkpointed positions to the consumer group `group`.
    pub fn group(mut self, group: impl Into<String>) -> Self {
        self.group = Some(group.into());
        self
    }

    /// The topic.
    pub fn topic(&self) -> &str {
        &self.topic
    }
}

impl Source for LogSource {
    fn events(&self) -> Arc<crate::schema::EventSchema> {
        Arc::clone(&self.events)
    }

    fn origins(&self) -> Result<Vec<Origin>> {
        let n = self.log.topic_config(&self.topic)?.partitions;
        Ok((0..n)
            .map(|p| Origin::partition(self.topic.as_str(), p))
            .collect())
    }

    fn bounded(&self) -> bool {
        self.until_end
    }

    fn open(&self, start: &Positions, opts: &ReadOptions) -> Result<Reading> {
        let n = self.log.topic_config(&self.topic)?.partitions;
        let mut from = self.start.clone();
        from.extend(start.iter().map(|(p, o)| (*p, *o)));
        let readers = (0..n)
            .map(|p| {
                self.log
                    .reader(&self.topic, p, from.get(&p).copied().unwrap_or(0))
            })
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let positions: Positions = readers
            .iter()
            .enumerate()
            .map(|(p, r)| (p as u32, r.position()))
            .collect();
        let until = if self.until_end {
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
            .map(|p| self.log.partition_dir(&self.topic, p))
            .collect();
        let waiter = TailWaiter::new(dirs.iter().map(|d| d.as_path()));
        tracing::info!(topic = %self.topic, partitions = n, ?positions, until_end = self.until_end, "log source opened");

        let stop = Arc::clone(&opts.stop);
        start_reading(&self.events, opts, positions, "log-reader", move |feed| {
            LogReader {
                readers,
                until,
                feed,
                stop,
                waiter,
            }
            .run()
        })
    }

    fn commit(&self, positions: &Positions) -> Result<()> {
        match &self.group {
            Some(group) => Ok(self.log.commit_offsets(
                &self.topic,
                group,
                &GroupOffsets {
                    offsets: positions.clone(),
                },
            )?),
            None => Ok(()),
        }
    }
}

struct LogReader {
    readers: Vec<PartitionReader>,
    until: Option<Vec<u64>>,
    feed: Feed,
    stop: Arc<AtomicBool>,
    waiter: TailWaiter,
}

impl LogReader {
    fn run(mut self) {
        if let Err(e) = self.read() {
            let _ = self.feed.ticks.send(Err(e));
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
                    .feed
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
                self.feed
                    .bytes
                    .fetch_add(buf.len() as u64, Ordering::Relaxed);
                let job = Job::Json {
                    seq,
                    bytes: buf,
                    first_line: first,
                    lines: records,
                    tag: ChunkTag {
                        partition: p as u32,
                        end: Some(end),
                        last: false,
                        wants_checkpoint: false,
                    },
                    times,
                    meta: None,
                };
                seq += 1;
                if self.feed.jobs.send(job).is_err() {
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
                let tick = Chunk {
                    seq,
                    decoded: Decoded::default(),
                    tag: ChunkTag::default(),
                    record_times: None,
                };
                seq += 1;
                if self.feed.ticks.send(Ok(tick)).is_err() {
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
pub(super) fn append_line(buf: &mut Vec<u8>, value: &[u8]) {
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
