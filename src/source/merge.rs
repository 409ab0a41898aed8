//! Several sources read as one: the source of a query over several streams (a `UNION ALL` of
//! different streams).
//!
//! ```text
//!  source 0 ─▶ chunks (its seq) ─┐  merge: one chunk of each   one stream of chunks (global
//!  source 1 ─▶ chunks (its seq) ─┼─▶ part in turn, in each   ─▶ seq, global partitions, `last`
//!  …                              ┘   part's own order           when a part ended)
//! ```
//! Each part keeps its own partitions, decoders, positions and commits; its partitions follow
//! those of the parts before it (part 1's partition 0 is partition `n0`), so a checkpoint's
//! positions name every part's partitions, and each part is its own stream
//! ([`Source::streams`]): the router deduplicates and times each part's events by that part's
//! schema, and the watermark is the least over all partitions. Chunks of one part keep their
//! order, and the parts take turns, one chunk each: the same input always interleaves the same
//! way, so lateness and results do not depend on which reader was faster. When a bounded part
//! ends, a chunk marked
//! [`ChunkTag::last`] for each of its partitions tells the router they no longer hold time back,
//! so a short file does not stop the watermark of a long one.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, sync_channel};
use std::time::Duration;

use super::{Chunk, ChunkTag, Positions, ReadOptions, Reading, Source, SourceStream};
use crate::decode::{Decoded, Origin};
use crate::error::{Error, Result};
use crate::schema::EventSchema;

/// Chunks in flight between the merge thread and the engine.
const QUEUE: usize = 8;

/// How long the merge waits on each unbounded part once none had anything.
const IDLE_WAIT: Duration = Duration::from_millis(5);

/// Several sources read as one, each a stream of its own.
pub struct MergedSource {
    parts: Vec<Arc<dyn Source>>,
}

impl MergedSource {
    /// `parts` read as one source; the run's streams are theirs, in this order.
    pub fn new(parts: Vec<Arc<dyn Source>>) -> Result<Self> {
        if parts.is_empty() {
            return Err(Error::Internal("a merged source needs a part".into()));
        }
        Ok(MergedSource { parts })
    }

    /// The first global partition of each part, and the total.
    fn offsets(&self) -> Result<(Vec<u32>, u32)> {
        let mut first = Vec::with_capacity(self.parts.len());
        let mut n = 0u32;
        for p in &self.parts {
            first.push(n);
            n += p.origins()?.len() as u32;
        }
        Ok((first, n))
    }

    /// `positions` (global partitions) as part `i`'s own, which start at `first[i]`.
    fn local(positions: &Positions, first: u32, count: u32) -> Positions {
        positions
            .range(first..first + count)
            .map(|(p, o)| (p - first, *o))
            .collect()
    }
}

impl Source for MergedSource {
    fn events(&self) -> Arc<EventSchema> {
        self.parts[0].events()
    }

    fn streams(&self) -> Result<Vec<SourceStream>> {
        self.parts
            .iter()
            .map(|p| {
                Ok(SourceStream {
                    events: p.events(),
                    partitions: p.origins()?.len(),
                })
            })
            .collect()
    }

    fn origins(&self) -> Result<Vec<Origin>> {
        let mut all = Vec::new();
        for p in &self.parts {
            all.extend(p.origins()?);
        }
        Ok(all)
    }

    fn bounded(&self) -> bool {
        self.parts.iter().all(|p| p.bounded())
    }

    fn open(&self, start: &Positions, opts: &ReadOptions) -> Result<Reading> {
        let (first, _) = self.offsets()?;
        let (tx, chunks) = sync_channel::<Result<Chunk>>(QUEUE);
        let bytes = Arc::new(AtomicU64::new(0));
        let mut threads = Vec::new();
        let mut positions = Positions::new();
        let mut parts = Vec::with_capacity(self.parts.len());
        for (i, part) in self.parts.iter().enumerate() {
            let count = part.origins()?.len() as u32;
            let reading = part.open(&Self::local(start, first[i], count), opts)?;
            positions.extend(reading.positions.iter().map(|(p, o)| (p + first[i], *o)));
            threads.extend(reading.threads);
            parts.push(Part {
                chunks: reading.chunks,
                pending: BTreeMap::new(),
                next: 0,
                first: first[i],
                count,
                bounded: part.bounded(),
                bytes: reading.bytes,
            });
        }
        let merge = Merge {
            parts,
            tx,
            stop: Arc::clone(&opts.stop),
            bytes: Arc::clone(&bytes),
        };
        let t = std::thread::Builder::new()
            .name("merge".into())
            .spawn(move || merge.run())
            .map_err(|e| Error::Internal(format!("cannot start a reader thread: {e}")))?;
        threads.push(t);
        Ok(Reading {
            chunks,
            threads,
            bytes,
            positions,
        })
    }

    fn commit(&self, positions: &Positions) -> Result<()> {
        let (first, _) = self.offsets()?;
        for (i, part) in self.parts.iter().enumerate() {
            let count = part.origins()?.len() as u32;
            part.commit(&Self::local(positions, first[i], count))?;
        }
        Ok(())
    }
}

/// One part being read: its chunks, put back in its order.
struct Part {
    chunks: Receiver<Result<Chunk>>,
    pending: BTreeMap<u64, Chunk>,
    /// The part's own number of its next chunk.
    next: u64,
    first: u32,
    count: u32,
    bounded: bool,
    bytes: Arc<AtomicU64>,
}

/// What a part has next.
enum Next {
    Chunk(Result<Chunk>),
    /// Nothing yet (an unbounded part not waited for).
    Nothing,
    Ended,
}

impl Part {
    /// The part's next chunk in its order. A bounded part is waited for (so a replay always
    /// interleaves alike); an unbounded one is waited for up to `wait`, since a quiet topic
    /// must not hold a busy one to its tick rate.
    fn next_chunk(&mut self, wait: Duration) -> Next {
        loop {
            if let Some(c) = self.pending.remove(&self.next) {
                self.next += 1;
                return Next::Chunk(Ok(c));
            }
            let got = match self.bounded {
                true => self
                    .chunks
                    .recv()
                    .map_err(|_| RecvTimeoutError::Disconnected),
                false => self.chunks.recv_timeout(wait),
            };
            match got {
                Ok(Ok(c)) => {
                    self.pending.insert(c.seq, c);
                }
                Ok(Err(e)) => return Next::Chunk(Err(e)),
                Err(RecvTimeoutError::Timeout) => return Next::Nothing,
                Err(RecvTimeoutError::Disconnected) => return Next::Ended,
            }
        }
    }
}

/// Takes the parts' chunks in turn, one each, into the merged stream: over bounded parts (files,
/// topics read to their end) the interleaving, and so every watermark and every late verdict,
/// is the same on every run over the same input. Unbounded parts (tailed topics) are taken as
/// they have something, waiting briefly only when none had anything.
struct Merge {
    parts: Vec<Part>,
    tx: SyncSender<Result<Chunk>>,
    stop: Arc<AtomicBool>,
    bytes: Arc<AtomicU64>,
}

impl Merge {
    fn run(mut self) {
        let mut seq = 0u64;
        let mut live: Vec<usize> = (0..self.parts.len()).collect();
        let mut idle = false;
        while !live.is_empty() {
            let mut ended = Vec::new();
            // After a round where no part had anything, wait a little on each.
            let wait = if idle { IDLE_WAIT } else { Duration::ZERO };
            idle = true;
            for &i in &live {
                let part = &mut self.parts[i];
                let item = match part.next_chunk(wait) {
                    Next::Chunk(Ok(mut c)) => {
                        c.tag.partition += part.first;
                        c.seq = seq;
                        Ok(c)
                    }
                    Next::Chunk(Err(e)) => Err(e),
                    Next::Nothing => continue,
                    Next::Ended => {
                        ended.push(i);
                        continue;
                    }
                };
                idle = false;
                let failed = item.is_err();
                if self.tx.send(item).is_err() || failed {
                    return;
                }
                seq += 1;
                let total = self
                    .parts
                    .iter()
                    .map(|p| p.bytes.load(Ordering::Relaxed))
                    .sum();
                self.bytes.store(total, Ordering::Relaxed);
            }
            for i in ended {
                live.retain(|l| *l != i);
                // The part ended by itself (not stopped): its partitions no longer hold time
                // back.
                let part = &self.parts[i];
                if !part.bounded || self.stop.load(Ordering::Relaxed) {
                    continue;
                }
                for p in part.first..part.first + part.count {
                    let last = Chunk {
                        seq,
                        decoded: Decoded::default(),
                        tag: ChunkTag {
                            partition: p,
                            end: None,
                            last: true,
                            wants_checkpoint: false,
                        },
                        record_times: None,
                    };
                    if self.tx.send(Ok(last)).is_err() {
                        return;
                    }
                    seq += 1;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::FileSource;

    /// Every chunk of a merged read of two files: numbered without gaps, each file's in its
    /// order under its own partition, each file's end marked once after its records.
    #[test]
    fn parts_keep_their_order_and_partitions_and_say_when_they_end() {
        let dir = tempfile::tempdir().unwrap();
        let mut parts: Vec<Arc<dyn Source>> = Vec::new();
        for (name, events) in [("a", 3_000), ("b", 40)] {
            let path = dir.path().join(format!("{name}.jsonl"));
            let cfg = crate::generate::GenConfig {
                events,
                ..Default::default()
            };
            crate::generate::generate(&cfg, &mut std::fs::File::create(&path).unwrap()).unwrap();
            parts.push(Arc::new(FileSource::new(path)));
        }
        let merged = MergedSource::new(parts).unwrap();
        assert_eq!(merged.origins().unwrap().len(), 2);
        let streams = merged.streams().unwrap();
        assert_eq!(streams.len(), 2);
        assert_eq!(streams.iter().map(|s| s.partitions).sum::<usize>(), 2);
        let reading = merged
            .open(
                &Positions::new(),
                &ReadOptions {
                    decoders: 2,
                    batch_size: 64,
                    stop: Arc::default(),
                    projection: Default::default(),
                },
            )
            .unwrap();
        let mut chunks: Vec<Chunk> = reading.chunks.iter().map(|c| c.unwrap()).collect();
        for t in reading.threads {
            t.join().unwrap();
        }
        chunks.sort_by_key(|c| c.seq);
        assert!(chunks.iter().enumerate().all(|(i, c)| c.seq == i as u64));
        for p in 0..2u32 {
            let mine: Vec<&Chunk> = chunks.iter().filter(|c| c.tag.partition == p).collect();
            let last = mine.iter().position(|c| c.tag.last);
            assert_eq!(last, Some(mine.len() - 1), "partition {p} ends last, once");
            // Records in file order: each chunk's first position follows the one before.
            let firsts: Vec<u64> = mine
                .iter()
                .filter_map(|c| c.decoded.batches.first().map(|b| b.positions[0]))
                .collect();
            assert!(firsts.windows(2).all(|w| w[0] < w[1]), "partition {p}");
        }
        let read: u64 = chunks.iter().map(|c| c.decoded.records).sum();
        assert_eq!(read, 3_040);
    }
}
