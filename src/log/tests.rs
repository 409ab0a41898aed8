//! Properties of the log: what is appended reads back by offset and by time, across segment
//! rolls, reopen, retention and torn tails; readers tail a writer.

use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::*;

type Owned = (Option<Vec<u8>>, Vec<u8>, i64);

fn random_records(rng: &mut StdRng, n: usize, t0: &mut i64) -> Vec<Owned> {
    (0..n)
        .map(|_| {
            let key = rng
                .random_bool(0.7)
                .then(|| (0..rng.random_range(0..12)).map(|_| rng.random()).collect());
            let value = (0..rng.random_range(0..300))
                .map(|_| rng.random())
                .collect();
            *t0 += rng.random_range(-50..100);
            (key, value, *t0)
        })
        .collect()
}

fn append_all(w: &mut PartitionWriter, recs: &[Owned]) -> u64 {
    let mut b = BatchBuilder::default();
    for (k, v, t) in recs {
        b.push(k.as_deref(), v, *t);
    }
    w.append(&mut b).unwrap()
}

fn read_all(r: &mut PartitionReader) -> Vec<(u64, Owned)> {
    let mut out = Vec::new();
    while r
        .poll(|rec| {
            out.push((
                rec.offset,
                (
                    rec.key.map(<[u8]>::to_vec),
                    rec.value.to_vec(),
                    rec.timestamp,
                ),
            ))
        })
        .unwrap()
        > 0
    {}
    out
}

#[test]
fn appends_read_back_by_offset_across_rolls_and_reopen() {
    let mut rng = StdRng::seed_from_u64(7);
    for trial in 0..6 {
        let dir = tempfile::tempdir().unwrap();
        let pdir = dir.path().join("0");
        let segment_bytes = rng.random_range(500..20_000);
        let mut all: Vec<Owned> = Vec::new();
        let mut t = 1_000_000;
        for _reopen in 0..3 {
            let mut w = PartitionWriter::open(&pdir, segment_bytes, FsyncPolicy::Never).unwrap();
            assert_eq!(w.next_offset(), all.len() as u64, "trial {trial}");
            for _ in 0..rng.random_range(5..40) {
                let n = rng.random_range(1..30);
                let recs = random_records(&mut rng, n, &mut t);
                assert_eq!(append_all(&mut w, &recs), all.len() as u64);
                all.extend(recs);
            }
        }
        assert!(
            super::partition::segment_bases(&pdir).unwrap().len() > 1,
            "rolled"
        );
        for _ in 0..30 {
            let from = rng.random_range(0..=all.len() + 2) as u64;
            let mut r = PartitionReader::open(&pdir, from).unwrap();
            let got = read_all(&mut r);
            let want: Vec<(u64, Owned)> = all
                .iter()
                .cloned()
                .enumerate()
                .skip(from as usize)
                .map(|(i, o)| (i as u64, o))
                .collect();
            assert_eq!(got, want, "trial {trial}, from {from}");
            assert_eq!(r.end_offset().unwrap(), all.len() as u64);
        }
    }
}

#[test]
fn seeks_by_timestamp_to_the_first_record_reaching_it() {
    let mut rng = StdRng::seed_from_u64(3);
    let dir = tempfile::tempdir().unwrap();
    let mut w = PartitionWriter::open(dir.path(), 3_000, FsyncPolicy::Never).unwrap();
    let mut times = Vec::new(); // timestamp of every offset
    let mut t = 0;
    for _ in 0..200 {
        let n = rng.random_range(1..10);
        let recs = random_records(&mut rng, n, &mut t);
        append_all(&mut w, &recs);
        times.extend(recs.iter().map(|r| r.2));
    }
    w.flush().unwrap();
    let max = *times.iter().max().unwrap();
    for _ in 0..100 {
        let ts = rng.random_range(-100..max + 100);
        let want = times
            .iter()
            .position(|t| *t >= ts)
            .map_or(w.next_offset(), |o| o as u64);
        let mut r = PartitionReader::open(dir.path(), 0).unwrap();
        r.seek_time(ts).unwrap();
        assert_eq!(r.position(), want, "ts {ts}");
    }
}

/// Reads until the end or an error; returns what was read and the error, if any.
fn read_until_error(r: &mut PartitionReader) -> (Vec<(u64, Owned)>, Option<LogError>) {
    let mut out = Vec::new();
    loop {
        let got = r.poll(|rec| {
            out.push((
                rec.offset,
                (
                    rec.key.map(<[u8]>::to_vec),
                    rec.value.to_vec(),
                    rec.timestamp,
                ),
            ))
        });
        match got {
            Ok(0) => return (out, None),
            Ok(_) => {}
            Err(e) => return (out, Some(e)),
        }
    }
}

/// Damage anywhere in the active segment: readers return nothing past it (a torn tail is the
/// end, damage with valid batches after it an error naming `--skip-corrupt`, which reads all
/// but the damaged batch); a writer reopening it keeps every valid batch — truncating a damaged
/// tail, or sealing the segment when valid batches follow the damage — and what it appends next
/// reads back.
#[test]
fn damage_in_the_active_segment_loses_no_valid_batch_and_appends_after_it_read_back() {
    let mut rng = StdRng::seed_from_u64(11);
    for trial in 0..200 {
        let dir = tempfile::tempdir().unwrap();
        let mut ends = vec![(0u64, 0u64)]; // (file size, next offset) after each batch
        let mut all = Vec::new();
        let mut t = 0;
        {
            let mut w = PartitionWriter::open(dir.path(), u64::MAX, FsyncPolicy::Never).unwrap();
            for _ in 0..rng.random_range(1..8) {
                let n = rng.random_range(1..10);
                let recs = random_records(&mut rng, n, &mut t);
                append_all(&mut w, &recs);
                all.extend(recs);
                ends.push((w.size(), w.next_offset()));
            }
        }
        let path = dir.path().join(format!("{:020}.log", 0));
        let mut bytes = std::fs::read(&path).unwrap();
        let cut = rng.random_range(0..bytes.len());
        let truncate = trial % 2 == 0;
        if truncate {
            bytes.truncate(cut);
        } else {
            bytes[cut] ^= 1 << rng.random_range(0..8);
        }
        std::fs::write(&path, &bytes).unwrap();
        // The damaged batch k: ends[k] is where it starts, ends[k + 1] where it ends.
        let k = ends
            .iter()
            .rposition(|(size, _)| *size <= cut as u64)
            .unwrap();
        let (before_damage, lost) = (ends[k].1, ends[k].1..ends[k + 1].1);
        let tail = truncate || k + 2 == ends.len();
        let total = ends.last().unwrap().1;
        let ctx = format!(
            "trial {trial}, damage at byte {cut} in batch {k} of {}",
            ends.len() - 1
        );

        let (got, err) = read_until_error(&mut PartitionReader::open(dir.path(), 0).unwrap());
        assert_eq!(got.len() as u64, before_damage, "{ctx}");
        if truncate {
            assert!(err.is_none(), "{ctx}: {err:?}");
        }
        if !tail {
            let e = err
                .as_ref()
                .expect("damage before valid batches is an error");
            assert!(matches!(e, LogError::Corrupt { .. }), "{ctx}: {e}");
            assert!(e.to_string().contains("--skip-corrupt"), "{ctx}: {e}");
        }
        let mut skipping = PartitionReader::open(dir.path(), 0).unwrap();
        skipping.skip_corrupt(true);
        let (got, err) = read_until_error(&mut skipping);
        assert!(err.is_none(), "{ctx}: {err:?}");
        let want: Vec<u64> = if tail {
            (0..before_damage).collect()
        } else {
            (0..total).filter(|o| !lost.contains(o)).collect()
        };
        assert_eq!(
            got.iter().map(|(o, _)| *o).collect::<Vec<_>>(),
            want,
            "{ctx}"
        );

        // The writer keeps every valid batch and appends after them.
        let mut w = PartitionWriter::open(dir.path(), u64::MAX, FsyncPolicy::Never).unwrap();
        let end = if tail { before_damage } else { total };
        assert_eq!(w.next_offset(), end, "{ctx}");
        if tail {
            assert_eq!(w.size(), ends[k].0, "{ctx}");
        }
        let more = random_records(&mut rng, 5, &mut t);
        assert_eq!(append_all(&mut w, &more), end);
        drop(w);
        let mut want: Vec<(u64, Owned)> = want
            .iter()
            .map(|o| (*o, all[*o as usize].clone()))
            .collect();
        want.extend((end..).zip(more));
        for _reopen in 0..2 {
            let mut r = PartitionReader::open(dir.path(), 0).unwrap();
            r.skip_corrupt(true);
            let (after, err) = read_until_error(&mut r);
            assert!(err.is_none(), "{ctx}: {err:?}");
            assert_eq!(after, want, "{ctx}");
            let w = PartitionWriter::open(dir.path(), u64::MAX, FsyncPolicy::Never).unwrap();
            assert_eq!(w.next_offset(), end + 5, "{ctx}");
        }
        if tail {
            // Nothing damaged is left: a plain reader reads everything.
            let plain = read_all(&mut PartitionReader::open(dir.path(), 0).unwrap());
            assert_eq!(plain, want, "{ctx}");
        }
    }
}

/// A complete batch that fails its checksum is an error, never silence; with skip mode the
/// reader steps over it, reporting the offsets it lost — in the active segment and in a
/// sealed one, whose damage no longer stops a writer.
#[test]
fn damaged_batches_are_errors_or_reported_skips() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = StdRng::seed_from_u64(3);
    let mut t = 0;
    let mut all = Vec::new();
    {
        let mut w = PartitionWriter::open(dir.path(), 3_000, FsyncPolicy::Never).unwrap();
        for _ in 0..12 {
            let recs = random_records(&mut rng, 8, &mut t);
            append_all(&mut w, &recs);
            all.extend(recs);
        }
    }
    let bases = super::partition::segment_bases(dir.path()).unwrap();
    assert!(bases.len() >= 3, "{bases:?}");
    // Damage the second batch of the first (sealed) segment and the last batch of the active one.
    let flip = |base: u64, nth_batch: usize| -> (u64, u64) {
        let path = dir.path().join(format!("{base:020}.log"));
        let mut bytes = std::fs::read(&path).unwrap();
        let mut pos = 0usize;
        let mut offset = base;
        let mut starts = Vec::new();
        while pos < bytes.len() {
            let len = u32::from_le_bytes(bytes[pos..pos + 4].try_into().unwrap()) as usize;
            let count = u32::from_le_bytes(bytes[pos + 16..pos + 20].try_into().unwrap());
            starts.push((pos, offset, offset + u64::from(count)));
            offset += u64::from(count);
            pos += 4 + len;
        }
        let (at, from, to) = starts[nth_batch.min(starts.len() - 1)];
        bytes[at + 40] ^= 0x10; // inside the records: the CRC catches it
        std::fs::write(&path, &bytes).unwrap();
        (from, to)
    };
    let (lost_from, lost_to) = flip(bases[0], 1);
    let last = *bases.last().unwrap();
    let (tail_from, _) = flip(last, usize::MAX);

    // Default: an error naming the file and the offsets, after the records before the damage.
    let (got, err) = read_until_error(&mut PartitionReader::open(dir.path(), 0).unwrap());
    assert_eq!(got.len() as u64, lost_from);
    let msg = err.expect("an error, not silence").to_string();
    assert!(
        msg.contains(&format!("{:020}.log", bases[0])) && msg.contains("--skip-corrupt"),
        "{msg}"
    );

    // Skip mode: everything but the damaged batches, and a report of each.
    let mut r = PartitionReader::open(dir.path(), 0).unwrap();
    r.skip_corrupt(true);
    let (got, err) = read_until_error(&mut r);
    assert!(err.is_none(), "{err:?}");
    let skipped = r.take_skipped();
    assert_eq!(skipped.len(), 2, "{skipped:?}");
    assert_eq!((skipped[0].from, skipped[0].to), (lost_from, Some(lost_to)));
    assert_eq!((skipped[1].from, skipped[1].to), (tail_from, None));
    let expect: Vec<u64> = (0..tail_from)
        .filter(|o| !(lost_from..lost_to).contains(o))
        .collect();
    assert_eq!(got.iter().map(|(o, _)| *o).collect::<Vec<_>>(), expect);
    for (o, rec) in &got {
        assert_eq!(rec, &all[*o as usize]);
    }
    // Reported once, not on every poll.
    assert_eq!(r.poll(|_| {}).unwrap(), 0);
    assert!(r.take_skipped().is_empty());

    // A writer opens despite the sealed damage, drops the damaged tail and appends after it;
    // the skipping reader, waiting at the tail, then reads the new records.
    let mut w = PartitionWriter::open(dir.path(), 3_000, FsyncPolicy::Never).unwrap();
    assert_eq!(w.next_offset(), tail_from);
    let more = random_records(&mut rng, 4, &mut t);
    append_all(&mut w, &more);
    let (got, err) = read_until_error(&mut r);
    assert!(err.is_none(), "{err:?}");
    assert_eq!(
        got.iter().map(|(o, _)| *o).collect::<Vec<_>>(),
        (tail_from..tail_from + 4).collect::<Vec<_>>()
    );
}

/// No batch the format cannot read back is ever written: a record over the topic's limit is
/// refused before anything of it is written (the records before it still land), and records
/// up to the format's limit read back even after a full batch.
#[test]
fn oversized_records_are_refused_and_large_ones_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::new(dir.path());
    let config = TopicConfig {
        max_record_bytes: Some(1_000),
        ..TopicConfig::default()
    };
    log.create_topic("small", &config).unwrap();
    let mut p = Producer::new(log.writer("small", FsyncPolicy::Never).unwrap(), None);
    let lines = format!(
        "{{\"a\":1}}\n{{\"b\":\"{}\"}}\n{{\"c\":3}}\n",
        "x".repeat(1_200)
    );
    let err = p
        .send_json_lines(lines.as_bytes(), 1, &mut |_| {})
        .unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, LogError::RecordTooLarge { .. }), "{msg}");
    assert!(
        msg.contains("line 2") && msg.contains("1000") && msg.contains("1208"),
        "{msg}"
    );
    p.finish().unwrap();
    let got = read_all(&mut log.reader("small", 0, 0).unwrap());
    assert_eq!(got.len(), 1, "the record before the oversized one is kept");
    let zero = TopicConfig {
        max_record_bytes: Some(0),
        ..TopicConfig::default()
    };
    assert!(log.create_topic("zero", &zero).is_err());

    // The format's own limit: one record of exactly MAX_RECORD_BYTES after a batch's worth
    // of small ones is appended in a batch of its own and reads back; one byte more is refused.
    log.create_topic("big", &TopicConfig::default()).unwrap();
    let mut p = Producer::new(log.writer("big", FsyncPolicy::Never).unwrap(), None);
    for _ in 0..2_000 {
        p.send(None, &[b'v'; 500], 1).unwrap();
    }
    let huge = vec![b'h'; MAX_RECORD_BYTES];
    p.send(None, &huge, 2).unwrap();
    let over = vec![b'o'; MAX_RECORD_BYTES + 1];
    assert!(matches!(
        p.send(None, &over, 3),
        Err(LogError::RecordTooLarge { .. })
    ));
    p.send(None, b"after", 4).unwrap();
    p.finish().unwrap();
    let got = read_all(&mut log.reader("big", 0, 0).unwrap());
    assert_eq!(got.len(), 2_002);
    assert_eq!(got[2_000].1.1.len(), MAX_RECORD_BYTES);
    assert_eq!(got[2_001].1.1, b"after");
    // A batch over the format's limit is refused by the partition writer itself.
    let mut w =
        PartitionWriter::open(&dir.path().join("raw"), u64::MAX, FsyncPolicy::Never).unwrap();
    let mut b = BatchBuilder::default();
    b.push(None, &huge, 1);
    b.push(None, b"x", 1);
    assert!(w.append(&mut b).is_err());
    assert_eq!(w.next_offset(), 0);
}

#[test]
fn retention_deletes_old_segments_and_readers_skip_to_what_is_left() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = StdRng::seed_from_u64(5);
    let mut w = PartitionWriter::open(dir.path(), 2_000, FsyncPolicy::Never).unwrap();
    let mut t = 0;
    for _ in 0..100 {
        let recs = random_records(&mut rng, 5, &mut t);
        append_all(&mut w, &recs);
    }
    let segments = w.segment_count();
    assert!(segments > 5);
    let by_size = Retention {
        max_age_ms: None,
        max_bytes: Some(10_000),
    };
    let deleted = w.apply_retention(&by_size).unwrap();
    assert!(
        deleted > 0 && w.size() <= 10_000 + 2_000 + 2_000,
        "size {}",
        w.size()
    );
    assert_eq!(w.segment_count(), segments - deleted);
    let mut r = PartitionReader::open(dir.path(), 0).unwrap();
    assert_eq!(r.position(), w.start_offset());
    assert_eq!(
        read_all(&mut r).len() as u64,
        w.next_offset() - w.start_offset()
    );
    // By age: every sealed segment is older than 0 ms once a moment passes; the active one stays.
    std::thread::sleep(Duration::from_millis(20));
    let by_age = Retention {
        max_age_ms: Some(1),
        max_bytes: None,
    };
    w.apply_retention(&by_age).unwrap();
    assert_eq!(w.segment_count(), 1);
}

#[test]
fn topics_partition_by_key_stably_and_groups_commit_durably() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::new(dir.path());
    let config = TopicConfig {
        partitions: 4,
        ..TopicConfig::default()
    };
    log.create_topic("payments", &config).unwrap();
    assert!(matches!(
        log.create_topic("payments", &config),
        Err(LogError::TopicExists(_))
    ));
    assert!(matches!(
        log.topic_config("nope"),
        Err(LogError::NoSuchTopic { .. })
    ));
    assert!(log.create_topic("../x", &config).is_err());
    // The partitioner is part of the format: these values must never change.
    assert_eq!(
        partition_for_key(b"card_000001", 8),
        partition_for_key(b"card_000001", 8)
    );
    let spread: std::collections::BTreeSet<u32> = (0..100)
        .map(|i| partition_for_key(format!("card_{i}").as_bytes(), 8))
        .collect();
    assert_eq!(spread.len(), 8);
    let mut w = log.writer("payments", FsyncPolicy::Always).unwrap();
    assert!(matches!(
        log.writer("payments", FsyncPolicy::Never),
        Err(LogError::Locked(_))
    ));
    let mut batches: Vec<BatchBuilder> = (0..4).map(|_| BatchBuilder::default()).collect();
    for i in 0..1000 {
        let key = format!("card_{}", i % 37);
        let p = w.route(Some(key.as_bytes()));
        assert_eq!(p, partition_for_key(key.as_bytes(), 4));
        batches[p as usize].push(Some(key.as_bytes()), format!("{i}").as_bytes(), i);
    }
    for (p, b) in batches.iter_mut().enumerate() {
        w.append(p as u32, b).unwrap();
    }
    let keyless: Vec<u32> = (0..8).map(|_| w.route(None)).collect();
    assert_eq!(keyless, vec![0, 1, 2, 3, 0, 1, 2, 3]);
    // Each key's records are in one partition, in order.
    let mut seen = std::collections::HashMap::new();
    for p in 0..4 {
        let mut r = log.reader("payments", p, 0).unwrap();
        for (_, (k, v, _)) in read_all(&mut r) {
            let i: i64 = String::from_utf8(v).unwrap().parse().unwrap();
            let last = seen.insert(k.clone().unwrap(), (p, i));
            if let Some((lp, li)) = last {
                assert_eq!(lp, p);
                assert!(li < i);
            }
        }
    }
    let offsets = GroupOffsets {
        offsets: [(0, 5), (3, 9)].into_iter().collect(),
    };
    log.commit_offsets("payments", "dash", &offsets).unwrap();
    assert_eq!(log.group_offsets("payments", "dash").unwrap(), offsets);
    assert_eq!(log.groups("payments"), vec!["dash".to_string()]);
    assert_eq!(
        log.group_offsets("payments", "other").unwrap(),
        GroupOffsets::default()
    );
    let stats = log.partition_stats("payments").unwrap();
    assert_eq!(stats.iter().map(|s| s.end_offset).sum::<u64>(), 1000);
}

#[test]
fn a_reader_tails_a_writer_in_another_thread() {
    let dir = tempfile::tempdir().unwrap();
    let pdir = dir.path().to_path_buf();
    let mut w = PartitionWriter::open(&pdir, 4_000, FsyncPolicy::Never).unwrap();
    let mut r = PartitionReader::open(&pdir, 0).unwrap();
    let mut waiter = TailWaiter::new([pdir.as_path()]);
    let writer = std::thread::spawn(move || {
        let mut b = BatchBuilder::default();
        for i in 0..300u64 {
            b.push(None, &i.to_le_bytes(), i as i64);
            if i % 7 == 6 {
                w.append(&mut b).unwrap();
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        w.append(&mut b).unwrap();
    });
    let mut got = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while got.len() < 300 && std::time::Instant::now() < deadline {
        let n = r
            .poll(|rec| got.push(u64::from_le_bytes(rec.value.try_into().unwrap())))
            .unwrap();
        if n == 0 {
            waiter.wait(Duration::from_millis(100));
        }
    }
    writer.join().unwrap();
    assert_eq!(got, (0..300).collect::<Vec<_>>());
}

/// Readers that spin on a writer appending large batches back to back, rolling small
/// segments, catch batches mid-write and segments mid-roll all the time: none of that is
/// damage — no error, no skip, every record once and in order, in both modes.
#[test]
fn readers_never_take_a_batch_being_written_for_damage() {
    for skip in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let pdir = dir.path().to_path_buf();
        let mut w = PartitionWriter::open(&pdir, 200_000, FsyncPolicy::Never).unwrap();
        let mut r = PartitionReader::open(&pdir, 0).unwrap();
        r.skip_corrupt(skip);
        const N: u64 = 3_000;
        let writer = std::thread::spawn(move || {
            let mut b = BatchBuilder::with_capacity(1 << 20);
            let pad = vec![b'p'; 1_000];
            for i in 0..N {
                let mut v = i.to_le_bytes().to_vec();
                v.extend_from_slice(&pad[..(i as usize * 37) % 1_000]);
                b.push(None, &v, i as i64);
                // Batches of 30–60 kB: many pages, written while the reader spins.
                if b.byte_len() > 30_000 + (i as usize % 5) * 6_000 {
                    w.append(&mut b).unwrap();
                }
            }
            w.append(&mut b).unwrap();
        });
        let mut got = Vec::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while (got.len() as u64) < N && std::time::Instant::now() < deadline {
            r.poll(|rec| got.push(u64::from_le_bytes(rec.value[..8].try_into().unwrap())))
                .unwrap_or_else(|e| panic!("skip={skip}: {e}"));
        }
        writer.join().unwrap();
        assert_eq!(got, (0..N).collect::<Vec<_>>(), "skip={skip}");
        assert!(r.take_skipped().is_empty(), "skip={skip}");
    }
}

/// The race behind a tailing reader's damage check, made deterministic: the reader saw half a
/// batch, then the writer finished it and wrote the next. A fresh look must find a whole
/// batch, not damage before a valid one.
#[test]
fn a_batch_finished_after_a_partial_read_is_not_damage() {
    use super::segment::{Fresh, Next, SegmentCursor};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("0.log");
    let mut bytes = Vec::new();
    for base in [0u64, 3] {
        let mut b = BatchBuilder::default();
        for i in 0..3 {
            b.push(None, &[b'v'; 5_000], i);
        }
        bytes.extend_from_slice(b.seal(base));
    }
    let first = bytes.len() / 2 - 100; // inside batch 0
    std::fs::write(&path, &bytes[..first]).unwrap();
    let mut c = SegmentCursor::open(path.clone(), 0).unwrap();
    assert!(matches!(c.next_batch().unwrap(), Next::End));
    assert!(c.has_partial());
    std::fs::write(&path, &bytes).unwrap();
    assert!(!c.damaged_before_valid(0).unwrap());
    assert_eq!(c.peek_fresh().unwrap(), Fresh::Batch);
    assert!(matches!(c.next_batch().unwrap(), Next::Batch(v) if v.base_offset == 0));
    // A garbage length before a valid batch is damage.
    let mut bad = bytes.clone();
    bad[0..4].copy_from_slice(&u32::MAX.to_le_bytes()[..4]);
    bad[3] = 0x01; // a length within the limit that runs past the file
    std::fs::write(&path, &bad).unwrap();
    let mut c = SegmentCursor::open(path, 0).unwrap();
    assert!(matches!(c.next_batch().unwrap(), Next::End));
    assert!(c.damaged_before_valid(0).unwrap());
}

#[test]
fn truncation_aborts_uncommitted_records_and_readers_see_only_committed_ones() {
    let mut rng = StdRng::seed_from_u64(9);
    for trial in 0..8 {
        let dir = tempfile::tempdir().unwrap();
        let mut w = PartitionWriter::open(dir.path(), 8_000, FsyncPolicy::Never).unwrap();
        let mut t = 0;
        let mut all = Vec::new();
        let mut bounds = vec![0u64];
        for _ in 0..rng.random_range(2..30) {
            let n = rng.random_range(1..20);
            let recs = random_records(&mut rng, n, &mut t);
            append_all(&mut w, &recs);
            all.extend(recs);
            bounds.push(w.next_offset());
        }
        let commit = bounds[rng.random_range(0..bounds.len())];
        commit_offset(dir.path(), commit).unwrap();
        // read_committed stops at the marker; read_uncommitted sees everything.
        let mut rc = PartitionReader::open(dir.path(), 0).unwrap();
        assert_eq!(read_all(&mut rc).len() as u64, commit, "trial {trial}");
        let mut ru = PartitionReader::open_with(dir.path(), 0, Isolation::ReadUncommitted).unwrap();
        assert_eq!(read_all(&mut ru).len(), all.len());
        // Abort: truncate to the commit, then append more; readers see the committed prefix and
        // the new records, never the aborted ones.
        w.truncate_to(commit).unwrap();
        assert_eq!(w.next_offset(), commit);
        let more = random_records(&mut rng, 5, &mut t);
        append_all(&mut w, &more);
        commit_offset(dir.path(), commit + 5).unwrap();
        let got = read_all(&mut PartitionReader::open(dir.path(), 0).unwrap());
        let want: Vec<Owned> = all[..commit as usize]
            .iter()
            .chain(&more)
            .cloned()
            .collect();
        assert_eq!(got.into_iter().map(|(_, r)| r).collect::<Vec<_>>(), want);
        // A reader parked at the old marker continues once the marker moves.
        assert!(PartitionWriter::open(dir.path(), 8_000, FsyncPolicy::Never).is_ok());
    }
}
