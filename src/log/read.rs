//! Reading a topic's records out (`paystream consume`; a dashboard's feed), with a consumer
//! group's offsets committed for what was taken.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::{GroupOffsets, Isolation, Log, LogError, RecordRef, StartAt, TopicConsumer};

/// How to read a topic.
#[derive(Debug, Clone)]
pub struct ReadTopic {
    /// Where to start (absent, with a group: the group's committed offsets; else the earliest).
    pub start: Option<StartAt>,
    /// `read_committed` (the default) or `read_uncommitted`.
    pub isolation: Isolation,
    /// Skip damaged batches (reported) instead of stopping at them.
    pub skip_corrupt: bool,
    /// Stop at each partition's end as of the start, rather than tail until stopped.
    pub until_end: bool,
    /// Stop after this many records.
    pub max_records: Option<u64>,
    /// Commit what was taken to this consumer group (every second and at the end).
    pub group: Option<String>,
}

/// How a read ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadEnd {
    /// Records handed to the caller.
    pub taken: u64,
    /// Whether the caller's output closed (a broken pipe): the read stopped there, quietly.
    pub output_closed: bool,
}

/// Reads `topic`, handing each record to `take` (its partition and the record) until the end
/// (`until_end`), `max_records`, `stop`, or `take` failing with a broken pipe. `idle` is called
/// when no record is waiting (flush what was written). The group, if any, is committed with the
/// offset after the last record taken in each partition — never past one the caller did not
/// get.
pub fn read_topic(
    log: &Log,
    topic: &str,
    opts: &ReadTopic,
    stop: &AtomicBool,
    mut take: impl FnMut(u32, &RecordRef<'_>) -> std::io::Result<()>,
    mut idle: impl FnMut() -> std::io::Result<()>,
) -> Result<ReadEnd, LogError> {
    log.topic_config(topic)?;
    let start = match (&opts.start, &opts.group) {
        (Some(s), _) => s.clone(),
        (None, Some(g)) => StartAt::Committed(log.group_offsets(topic, g)?),
        (None, None) => StartAt::Earliest,
    };
    let mut consumer = TopicConsumer::open_with(log, topic, &start, opts.isolation)?;
    consumer.skip_corrupt(opts.skip_corrupt);
    let ends = if opts.until_end {
        Some(consumer.end_offsets()?)
    } else {
        None
    };
    let limit = opts.max_records.unwrap_or(u64::MAX);
    let mut taken = 0u64;
    let mut last_commit = Instant::now();
    // What a group commits: the offset after the last record taken, per partition (a poll
    // reads whole batches, of which a limit may take only part).
    let mut done = consumer.positions();
    let commit = |done: &GroupOffsets| -> Result<(), LogError> {
        match &opts.group {
            Some(g) => log.commit_offsets(topic, g, done),
            None => Ok(()),
        }
    };
    let mut closed = false;
    while !stop.load(Ordering::Relaxed) {
        if let Some(ends) = &ends {
            let pos = consumer.positions();
            if ends
                .iter()
                .enumerate()
                .all(|(p, e)| pos.offsets.get(&(p as u32)).is_some_and(|o| o >= e))
            {
                break;
            }
        }
        let mut err = None;
        let n = consumer.poll(|p, r| {
            if err.is_some() || taken >= limit {
                return;
            }
            if let Some(ends) = &ends
                && r.offset >= ends[p as usize]
            {
                return;
            }
            match take(p, &r) {
                Ok(()) => {
                    taken += 1;
                    done.offsets.insert(p, r.offset + 1);
                }
                Err(e) => err = Some(e),
            }
        })?;
        if let Some(e) = err {
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                closed = true;
                break;
            }
            return Err(LogError::Output(e));
        }
        if taken >= limit {
            break;
        }
        if n == 0 {
            if idle().is_err() {
                closed = true;
                break;
            }
            consumer.wait(Duration::from_millis(200));
        }
        if last_commit.elapsed() >= Duration::from_secs(1) {
            commit(&done)?;
            last_commit = Instant::now();
        }
    }
    commit(&done)?;
    if ends.is_some() && !closed && !stop.load(Ordering::Relaxed) && taken < limit {
        // The end was computed where each partition's valid batches end: damage right after it
        // is an error (or a reported skip), not a quiet stop.
        consumer.probe()?;
    }
    Ok(ReadEnd {
        taken,
        output_closed: closed,
    })
}
