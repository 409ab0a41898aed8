//! Several sources read as one: the source of a query over several streams (a `UNION ALL` of
//! different streams).
//!
//! ```text
//!  source 0 ─▶ chunks (its seq) ─▶ forwarder 0 ─┐  in its order, renumbered:
//!  source 1 ─▶ chunks (its seq) ─▶ forwarder 1 ─┼─▶ one stream of chunks (global seq, global
//!  …                                             ┘   partitions, `last` when a source ended)
//! ```
//! Each part keeps its own partitions, decoders, positions and commits; its partitions follow
//! those of the parts before it (part 1's partition 0 is partition `n0`), so a checkpoint's
//! positions name every part's partitions, and each part is its own stream
//! ([`Source::streams`]): the router deduplicates and times each part's events by that part's
//! schema, and the watermark is the least over all partitions. Chunks of one part keep their
//! order; parts interleave as they come. When a bounded part ends, a chunk marked
//! [`ChunkTag::last`] for each of its partitions tells the router they no longer hold time back,
//! so a short file does not stop the watermark of a long one.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};

use super::{Chunk, ChunkTag, Positions, ReadOptions, Reading, Source, SourceStream};
use crate::decode::{Decoded, Origin};
use crate::error::{Error, Result};
use crate::schema::EventSchema;

/// Chunks in flight between the forwarders and the engine.
const QUEUE: usize = 8;

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
        // The next global sequence number, taken with the channel so numbers arrive in order.
        let next = Arc::new(Mutex::new(0u64));
        let bytes = Arc::new(AtomicU64::new(0));
        let mut threads = Vec::new();
        let mut positions = Positions::new();
        let mut readings = Vec::with_capacity(self.parts.len());
        for (i, part) in self.parts.iter().enumerate() {
            let count = part.origins()?.len() as u32;
            let reading = part.open(&Self::local(start, first[i], count), opts)?;
            positions.extend(reading.positions.iter().map(|(p, o)| (p + first[i], *o)));
            readings.push((reading, count));
        }
        let parts_bytes: Vec<Arc<AtomicU64>> =
            readings.iter().map(|(r, _)| Arc::clone(&r.bytes)).collect();
        for (i, (reading, count)) in readings.into_iter().enumerate() {
            threads.extend(reading.threads);
            let forward = Forwarder {
                chunks: reading.chunks,
                tx: tx.clone(),
                next: Arc::clone(&next),
                first: first[i],
                count,
                bounded: self.parts[i].bounded(),
                stop: Arc::clone(&opts.stop),
                bytes: Arc::clone(&bytes),
                parts_bytes: parts_bytes.clone(),
            };
            let t = std::thread::Builder::new()
                .name(format!("merge-{i}"))
                .spawn(move || forward.run())
                .map_err(|e| Error::Internal(format!("cannot start a reader thread: {e}")))?;
            threads.push(t);
        }
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

/// Moves one part's chunks into the merged stream, in that part's order.
struct Forwarder {
    chunks: Receiver<Result<Chunk>>,
    tx: SyncSender<Result<Chunk>>,
    next: Arc<Mutex<u64>>,
    first: u32,
    count: u32,
    bounded: bool,
    stop: Arc<AtomicBool>,
    bytes: Arc<AtomicU64>,
    parts_bytes: Vec<Arc<AtomicU64>>,
}

impl Forwarder {
    fn run(self) {
        let mut pending: BTreeMap<u64, Chunk> = BTreeMap::new();
        let mut own = 0u64;
        for item in self.chunks.iter() {
            let chunk = match item {
                Ok(c) => c,
                Err(e) => {
                    self.send(|_| Err(e));
                    return;
                }
            };
            pending.insert(chunk.seq, chunk);
            while let Some(mut c) = pending.remove(&own) {
                own += 1;
                c.tag.partition += self.first;
                if !self.send(|seq| {
                    c.seq = seq;
                    Ok(c)
                }) {
                    return;
                }
            }
            let total = self
                .parts_bytes
                .iter()
                .map(|b| b.load(Ordering::Relaxed))
                .sum();
            self.bytes.store(total, Ordering::Relaxed);
        }
        // The part ended by itself (not stopped): its partitions no longer hold time back.
        if self.bounded && !self.stop.load(Ordering::Relaxed) && pending.is_empty() {
            for p in self.first..self.first + self.count {
                let sent = self.send(|seq| {
                    Ok(Chunk {
                        seq,
                        decoded: Decoded::default(),
                        tag: ChunkTag {
                            partition: p,
                            end: None,
                            last: true,
                        },
                        record_times: None,
                    })
                });
                if !sent {
                    return;
                }
            }
        }
    }

    /// Sends the item `make` builds with the next global sequence number; false once the run
    /// has ended.
    fn send(&self, make: impl FnOnce(u64) -> Result<Chunk>) -> bool {
        let mut next = self.next.lock().expect("merge sequence lock");
        let item = make(*next);
        if self.tx.send(item).is_err() {
            return false;
        }
        *next += 1;
        true
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
