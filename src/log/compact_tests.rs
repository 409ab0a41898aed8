//! Properties of compaction: each key's latest record survives with its offset, everything
//! else a pass may remove is gone, and every way of reading, seeking, reopening, truncating and
//! consuming a partition works across the gaps it leaves.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, SystemTime};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::compact::due;
use super::partition::{Sealed, segment_bases};
use super::*;

/// A record as read back: offset, key, value, timestamp.
type Rec = (u64, Option<Vec<u8>>, Vec<u8>, i64);

fn append(w: &mut PartitionWriter, recs: &[(Option<&str>, &str, i64)]) -> u64 {
    let mut b = BatchBuilder::default();
    for (k, v, t) in recs {
        b.push(k.map(str::as_bytes), v.as_bytes(), *t);
    }
    w.append(&mut b).unwrap()
}

fn read(dir: &Path, from: u64, isolation: Isolation) -> Vec<Rec> {
    let mut r = PartitionReader::open_with(dir, from, isolation).unwrap();
    let mut out = Vec::new();
    while r
        .poll(|rec| {
            out.push((
                rec.offset,
                rec.key.map(<[u8]>::to_vec),
                rec.value.to_vec(),
                rec.timestamp,
            ))
        })
        .unwrap()
        > 0
    {}
    out
}

fn offsets(recs: &[Rec]) -> Vec<u64> {
    recs.iter().map(|r| r.0).collect()
}

fn keep_24h() -> Compaction {
    Compaction::default()
}

fn log_path(dir: &Path, base: u64) -> std::path::PathBuf {
    dir.join(format!("{base:020}.log"))
}

/// Which offsets a pass keeps, by the rule itself: below the end of the sealed segments that
/// end at or before `bound`, a record stays iff it has no key or is its key's latest record
/// below `bound`; everything after stays.
fn model(all: &[Rec], bases: &[u64], bound: u64) -> Vec<u64> {
    let eligible_end = bases
        .windows(2)
        .map(|w| w[1])
        .filter(|end| *end <= bound)
        .max()
        .unwrap_or(0);
    let mut latest = HashMap::new();
    for (o, k, _, _) in all.iter().filter(|r| r.0 < bound) {
        if let Some(k) = k {
            latest.insert(k.clone(), *o);
        }
    }
    all.iter()
        .filter(|(o, k, _, _)| *o >= eligible_end || k.as_ref().is_none_or(|k| latest[k] == *o))
        .map(|r| r.0)
        .collect()
}

/// Random keyed and keyless records over small segments, with or without a committed marker:
/// after a pass, reading from any offset (gaps included) gives exactly the records the rule
/// keeps, with their offsets; a seek by time lands on the first surviving record reaching it;
/// a second pass changes nothing; the writer reopens, truncates to the committed offset and
/// appends after the gaps.
#[test]
fn the_latest_record_per_key_survives_with_its_offset_and_every_read_path_skips_the_gaps() {
    let mut rng = StdRng::seed_from_u64(21);
    for trial in 0..12 {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path();
        let segment_bytes = rng.random_range(100..1_200);
        let mut w = PartitionWriter::open(p, segment_bytes, FsyncPolicy::Never).unwrap();
        let nkeys = rng.random_range(1..25);
        let mut all: Vec<Rec> = Vec::new();
        let mut boundaries = vec![0];
        let mut t = 1_000i64;
        for _ in 0..rng.random_range(30..80) {
            let n = rng.random_range(1..12);
            let mut b = BatchBuilder::default();
            for _ in 0..n {
                let o = all.len() as u64;
                let key = rng
                    .random_bool(0.8)
                    .then(|| format!("k{}", rng.random_range(0..nkeys)).into_bytes());
                let value = format!("{{\"o\":{o}}}").into_bytes();
                t += rng.random_range(-40..100);
                b.push(key.as_deref(), &value, t);
                all.push((o, key, value, t));
            }
            w.append(&mut b).unwrap();
            boundaries.push(all.len() as u64);
        }
        let total = all.len() as u64;
        let committed = rng
            .random_bool(0.5)
            .then(|| boundaries[rng.random_range(0..boundaries.len())]);
        if let Some(c) = committed {
            commit_offset(p, c).unwrap();
        }
        let bound = committed.unwrap_or(u64::MAX);
        let bases = segment_bases(p).unwrap();
        assert!(bases.len() > 2, "trial {trial}: rolled {bases:?}");
        let want = model(&all, &bases, bound);
        let sizes_before: u64 = bases
            .iter()
            .map(|b| std::fs::metadata(log_path(p, *b)).unwrap().len())
            .sum();

        let stats = w.compact(&keep_24h()).unwrap();
        let ctx = format!("trial {trial}, committed {committed:?}, {stats:?}");
        assert_eq!(stats.records_removed, total - want.len() as u64, "{ctx}");
        assert!(stats.records_removed > 0 || committed.is_some(), "{ctx}");
        if stats.records_removed > 0 {
            assert!(stats.bytes_after < stats.bytes_before, "{ctx}");
            assert!(w.size() < sizes_before, "{ctx}");
        }
        let keyless = all.iter().filter(|r| r.1.is_none()).count();
        let by_offset: BTreeMap<u64, &Rec> = all.iter().map(|r| (r.0, r)).collect();
        // Offsets in gaps are most of them: most records are superseded.
        let froms = [0, total, total + 1]
            .into_iter()
            .chain((0..60).map(|_| rng.random_range(0..total)));
        for from in froms {
            let got = read(p, from, Isolation::ReadUncommitted);
            let expect: Vec<Rec> = want
                .iter()
                .filter(|o| **o >= from)
                .map(|o| by_offset[o].clone())
                .collect();
            assert_eq!(got, expect, "{ctx}, from {from}");
        }
        let everything = read(p, 0, Isolation::ReadUncommitted);
        assert_eq!(
            everything.iter().filter(|r| r.1.is_none()).count(),
            keyless,
            "{ctx}: keyless records are all kept"
        );
        let committed_view = read(p, 0, Isolation::ReadCommitted);
        assert_eq!(
            offsets(&committed_view),
            want.iter()
                .copied()
                .filter(|o| *o < bound)
                .collect::<Vec<_>>(),
            "{ctx}"
        );
        // Seek by time: the first surviving record (in offset order) reaching the time.
        for _ in 0..40 {
            let ts = rng.random_range(900..t + 100);
            let expect = want
                .iter()
                .find(|o| by_offset[o].3 >= ts)
                .copied()
                .unwrap_or(total);
            let mut r = PartitionReader::open_with(p, 0, Isolation::ReadUncommitted).unwrap();
            r.seek_time(ts).unwrap();
            assert_eq!(r.position(), expect, "{ctx}, ts {ts}");
        }
        assert_eq!(
            PartitionReader::open(p, 0).unwrap().end_offset().unwrap(),
            total
        );
        // Nothing new: a second pass removes and rewrites nothing.
        let again = w.compact(&keep_24h()).unwrap();
        assert_eq!(
            (again.records_removed, again.segments_rewritten),
            (0, 0),
            "{ctx}"
        );
        // Reopen (recovery and contiguity check), truncate to the commit, append after it.
        drop(w);
        let mut w = PartitionWriter::open(p, segment_bytes, FsyncPolicy::Never).unwrap();
        assert_eq!(w.next_offset(), total, "{ctx}");
        let end = committed.unwrap_or(total);
        w.truncate_to(end).unwrap();
        assert_eq!(w.next_offset(), end, "{ctx}");
        assert_eq!(append(&mut w, &[(Some("k0"), "new", 5)]), end, "{ctx}");
        drop(w);
        let w = PartitionWriter::open(p, segment_bytes, FsyncPolicy::Never).unwrap();
        assert_eq!(w.next_offset(), end + 1, "{ctx}");
        let got = read(p, 0, Isolation::ReadUncommitted);
        let mut expect: Vec<u64> = want.iter().copied().filter(|o| *o < end).collect();
        expect.push(end);
        assert_eq!(offsets(&got), expect, "{ctx}");
    }
}

/// A segment whose tail records were superseded, and one left with no record at all, end
/// where they did (their end marker): readers go on to the next segment instead of reporting
/// lost offsets, the writer reopens, and reading from an offset in a gap starts at the next
/// surviving record.
#[test]
fn segments_emptied_at_the_tail_or_wholly_keep_their_end() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    // segment_bytes 1: every batch rolls into a segment of its own.
    let mut w = PartitionWriter::open(p, 1, FsyncPolicy::Never).unwrap();
    append(
        &mut w,
        &[
            (None, "x0", 1),
            (Some("k1"), "a1", 2),
            (Some("k2"), "b1", 3),
        ],
    );
    append(&mut w, &[(Some("k1"), "a2", 4)]);
    append(&mut w, &[(Some("k2"), "b2", 5), (None, "x5", 6)]);
    append(&mut w, &[(Some("k1"), "a3", 7)]);
    assert_eq!(segment_bases(p).unwrap(), vec![0, 3, 4, 6]);
    let s = w.compact(&keep_24h()).unwrap();
    assert_eq!(
        (
            s.segments,
            s.segments_rewritten,
            s.records_kept,
            s.records_removed
        ),
        (3, 2, 3, 3),
        "{s:?}"
    );
    // Segment 3 held only a superseded record: nothing but its end marker is left.
    assert_eq!(std::fs::metadata(log_path(p, 3)).unwrap().len(), 36);
    // Segment 4 had nothing to remove: not rewritten.
    let values = |recs: Vec<Rec>| -> Vec<(u64, String)> {
        recs.into_iter()
            .map(|r| (r.0, String::from_utf8(r.2).unwrap()))
            .collect()
    };
    let all = vec![
        (0, "x0".to_string()),
        (4, "b2".into()),
        (5, "x5".into()),
        (6, "a3".into()),
    ];
    assert_eq!(values(read(p, 0, Isolation::ReadCommitted)), all);
    for (from, first) in [(1, 4), (2, 4), (3, 4), (4, 4), (6, 6)] {
        let got = read(p, from, Isolation::ReadCommitted);
        assert_eq!(got.first().map(|r| r.0), Some(first), "from {from}");
    }
    let mut r = PartitionReader::open(p, 1).unwrap();
    assert_eq!(
        r.poll(|_| {}).unwrap(),
        2,
        "a batch after the gap, not an end"
    );
    assert_eq!(r.position(), 6);
    drop(w);
    let mut w = PartitionWriter::open(p, 1, FsyncPolicy::Never).unwrap();
    assert_eq!((w.next_offset(), w.start_offset()), (7, 0));
    assert_eq!(append(&mut w, &[(Some("k2"), "b3", 8)]), 7);
    assert_eq!(
        offsets(&read(p, 0, Isolation::ReadCommitted)),
        vec![0, 4, 5, 6, 7]
    );
    // A reader that skips damage would report a lost range here if an end were missing.
    let mut r = PartitionReader::open(p, 0).unwrap();
    r.skip_corrupt(true);
    while r.poll(|_| {}).unwrap() > 0 {}
    assert!(r.take_skipped().is_empty());
}

#[test]
fn tombstones_delete_their_key_and_go_once_older_than_delete_retention() {
    assert!(is_tombstone(b"null") && is_tombstone(b" null\n") && is_tombstone(b""));
    assert!(is_tombstone(b" \t"));
    assert!(!is_tombstone(b"nul") && !is_tombstone(b"\"null\"") && !is_tombstone(b"nullx"));
    assert!(!is_tombstone(b"{}"));
    assert!(is_tombstone(br#"{"card_id":"c1","n":3,"op":"delete"}"#));
    assert!(!is_tombstone(br#"{"card_id":"c1","n":3,"op":"update"}"#));
    assert!(
        !is_tombstone(br#"{"note":"\"op\":\"delete\"","op":"insert"}"#),
        "the text inside a string is no delete"
    );
    assert!(!is_tombstone(br#"{"op":"delete""#), "not JSON");
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    let mut w = PartitionWriter::open(p, 1, FsyncPolicy::Never).unwrap();
    append(
        &mut w,
        &[(Some("k1"), "v1", 1), (Some("k2"), "v1", 1), (None, "x", 1)],
    );
    append(&mut w, &[(Some("k1"), "null", 2)]);
    append(&mut w, &[(Some("k2"), " null \n", 3), (Some("k3"), "", 3)]);
    append(&mut w, &[(Some("k4"), "v", 4)]);
    // Fresh tombstones stay: the values before them go.
    let s = w.compact(&keep_24h()).unwrap();
    assert_eq!((s.records_removed, s.tombstones_removed), (2, 0), "{s:?}");
    assert_eq!(
        offsets(&read(p, 0, Isolation::ReadCommitted)),
        vec![2, 3, 4, 5, 6]
    );
    // Two hours after the segments' last write: kept under a 3 h delete retention...
    let two_hours_ago = SystemTime::now() - Duration::from_secs(7_200);
    for b in segment_bases(p).unwrap() {
        let f = std::fs::File::options()
            .write(true)
            .open(log_path(p, b))
            .unwrap();
        f.set_modified(two_hours_ago).unwrap();
    }
    let three_hours = Compaction {
        delete_retention_ms: 3 * 3_600_000,
    };
    let s = w.compact(&three_hours).unwrap();
    assert_eq!((s.records_removed, s.segments_rewritten), (0, 0), "{s:?}");
    // ... removed under a 1 h one (the active segment is never compacted).
    let one_hour = Compaction {
        delete_retention_ms: 3_600_000,
    };
    let s = w.compact(&one_hour).unwrap();
    assert_eq!((s.records_removed, s.tombstones_removed), (3, 3), "{s:?}");
    assert_eq!(offsets(&read(p, 0, Isolation::ReadCommitted)), vec![2, 6]);
    // A rewritten segment keeps its last write: the time tombstones are judged by.
    let modified = std::fs::metadata(log_path(p, 4))
        .unwrap()
        .modified()
        .unwrap();
    assert!(modified < SystemTime::now() - Duration::from_secs(3_600));
}

/// Records at or past the committed offset may be aborted: they supersede nothing, and the
/// segments holding them are not rewritten. A committed later record does supersede; after
/// the abort (truncation) and a new commit, the next pass removes what the new record
/// supersedes.
#[test]
fn uncommitted_records_supersede_nothing_and_their_segments_are_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    let mut w = PartitionWriter::open(p, 1, FsyncPolicy::Never).unwrap();
    append(&mut w, &[(Some("k1"), "a", 1), (Some("k2"), "a", 1)]); // 0, 1
    append(&mut w, &[(Some("k2"), "b", 2)]); // 2
    commit_offset(p, 3).unwrap();
    append(&mut w, &[(Some("k1"), "uncommitted", 3)]); // 3
    append(&mut w, &[(Some("k9"), "z", 4)]); // 4, active
    let untouched = std::fs::read(log_path(p, 3)).unwrap();
    let s = w.compact(&keep_24h()).unwrap();
    assert_eq!((s.segments, s.records_removed), (2, 1), "{s:?}");
    assert_eq!(std::fs::read(log_path(p, 3)).unwrap(), untouched);
    let ru = read(p, 0, Isolation::ReadUncommitted);
    assert_eq!(offsets(&ru), vec![0, 2, 3, 4]);
    assert_eq!(
        ru[0].2, b"a",
        "the committed k1 survives the uncommitted one"
    );
    assert_eq!(offsets(&read(p, 0, Isolation::ReadCommitted)), vec![0, 2]);

    // Recovery aborts what follows the commit; a new k1 is committed and sealed.
    w.truncate_to(3).unwrap();
    assert_eq!(w.next_offset(), 3);
    assert_eq!(offsets(&read(p, 0, Isolation::ReadUncommitted)), vec![0, 2]);
    append(&mut w, &[(Some("k1"), "c", 5)]); // 3
    append(&mut w, &[(Some("k9"), "z", 6)]); // 4, active
    commit_offset(p, 5).unwrap();
    let s = w.compact(&keep_24h()).unwrap();
    assert_eq!(s.records_removed, 1, "{s:?}");
    let rc = read(p, 0, Isolation::ReadCommitted);
    assert_eq!(offsets(&rc), vec![2, 3, 4]);
    assert_eq!(rc[1].2, b"c");
}

/// Truncating to an offset in a compacted segment's gap (restoring an older savepoint) leaves
/// the next offset there, not at the end of the last record kept.
#[test]
fn truncating_into_a_gap_appends_at_that_offset() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    let mut w = PartitionWriter::open(p, 1, FsyncPolicy::Never).unwrap();
    append(
        &mut w,
        &[
            (Some("k1"), "a", 1),
            (Some("k2"), "a", 1),
            (Some("k3"), "a", 1),
        ],
    );
    append(&mut w, &[(Some("k1"), "b", 2), (Some("k2"), "b", 2)]);
    append(&mut w, &[(Some("k9"), "z", 3)]);
    w.compact(&keep_24h()).unwrap();
    assert_eq!(
        offsets(&read(p, 0, Isolation::ReadCommitted)),
        vec![2, 3, 4, 5]
    );
    w.truncate_to(1).unwrap();
    assert_eq!(w.next_offset(), 1);
    assert_eq!(append(&mut w, &[(Some("k7"), "n", 4)]), 1);
    drop(w);
    let w = PartitionWriter::open(p, 1, FsyncPolicy::Never).unwrap();
    assert_eq!(w.next_offset(), 2);
    let got = read(p, 0, Isolation::ReadCommitted);
    assert_eq!(offsets(&got), vec![1]);
    assert_eq!(got[0].2, b"n");
}

/// A topic.json written before compaction existed loads as retention with the default delete
/// retention; a topic under retention still writes no `cleanup` (older versions read it); an
/// unknown field is still refused.
#[test]
fn an_old_topic_json_loads_and_cleanup_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::new(dir.path());
    std::fs::create_dir_all(dir.path().join("old/0")).unwrap();
    std::fs::write(
        dir.path().join("old/topic.json"),
        r#"{"partitions":1,"segment_bytes":1000,"retention":{"max_age_ms":604800000,"max_bytes":null}}"#,
    )
    .unwrap();
    let c = log.topic_config("old").unwrap();
    assert_eq!(c.cleanup, Cleanup::Delete);
    assert_eq!(c.delete_retention_ms, DEFAULT_DELETE_RETENTION_MS);
    assert_eq!(c.compaction(), None);
    let json = serde_json::to_string(&TopicConfig::default()).unwrap();
    assert!(
        !json.contains("cleanup") && !json.contains("delete_retention"),
        "{json}"
    );
    let compacted = TopicConfig {
        cleanup: Cleanup::Compact,
        delete_retention_ms: 60_000,
        ..TopicConfig::default()
    };
    log.create_topic("new", &compacted).unwrap();
    let c = log.topic_config("new").unwrap();
    assert_eq!(c, compacted);
    assert_eq!(
        c.compaction(),
        Some(Compaction {
            delete_retention_ms: 60_000
        })
    );
    let raw = std::fs::read_to_string(dir.path().join("new/topic.json")).unwrap();
    assert!(raw.contains(r#""cleanup": "compact""#), "{raw}");
    std::fs::write(
        dir.path().join("old/topic.json"),
        r#"{"partitions":1,"segment_bytes":1000,"retention":{"max_age_ms":null,"max_bytes":null},"cleanup_policy":"compact"}"#,
    )
    .unwrap();
    assert!(matches!(
        log.topic_config("old"),
        Err(LogError::Corrupt { .. })
    ));
    // Compacting a topic under retention is refused, naming how to get a compacted one.
    let e = log.compact_topic("new").map(|_| ());
    assert!(e.is_ok(), "{e:?}");
    std::fs::write(
        dir.path().join("old/topic.json"),
        r#"{"partitions":1,"segment_bytes":1000,"retention":{"max_age_ms":null,"max_bytes":null}}"#,
    )
    .unwrap();
    let e = log.compact_topic("old").unwrap_err().to_string();
    assert!(e.contains("--compact"), "{e}");
}

/// Produce keyed JSON records of a few keys into a compacted topic with small segments:
/// compaction runs by itself as segments roll (the topic ends far smaller than what was
/// written), age retention is not applied to it, and a consumer group reading it from the
/// earliest offset sees each key's latest value, deletes included, and commits the end.
#[test]
fn a_compacted_topic_compacts_as_it_rolls_and_a_group_sees_each_keys_latest_value() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::new(dir.path());
    let config = TopicConfig {
        partitions: 2,
        segment_bytes: 4_096,
        cleanup: Cleanup::Compact,
        // Would delete every sealed segment if retention applied.
        retention: Retention {
            max_age_ms: Some(1),
            max_bytes: Some(1),
        },
        ..TopicConfig::default()
    };
    log.create_topic("changelog", &config).unwrap();
    let mut p = Producer::new(log.writer("changelog", FsyncPolicy::Never).unwrap(), None);
    let mut latest: BTreeMap<String, String> = BTreeMap::new();
    let mut written = 0u64;
    for i in 0..6_000u64 {
        let key = format!("card_{}", i % 40);
        let value = if i >= 5_960 && i % 40 < 5 {
            "null".to_string() // the last word on five keys is a delete
        } else {
            format!("{{\"card\":\"{key}\",\"total\":{i}}}")
        };
        p.send(Some(key.as_bytes()), value.as_bytes(), i as i64)
            .unwrap();
        written += (key.len() + value.len()) as u64;
        latest.insert(key, value);
        if i % 25 == 0 {
            p.flush().unwrap();
        }
    }
    drop(p.finish().unwrap());
    std::thread::sleep(Duration::from_millis(5));
    drop(log.writer("changelog", FsyncPolicy::Never).unwrap());
    let stats = log.partition_stats("changelog").unwrap();
    let bytes: u64 = stats.iter().map(|s| s.bytes).sum();
    assert!(
        bytes * 4 < written,
        "{bytes} bytes stored of {written} written"
    );
    assert!(stats.iter().all(|s| s.start_offset == 0), "{stats:?}");

    let got = std::cell::RefCell::new(BTreeMap::new());
    let taken = std::cell::Cell::new(0u64);
    let read_group = || {
        read_topic(
            &log,
            "changelog",
            &ReadTopic {
                start: None,
                isolation: Isolation::ReadCommitted,
                skip_corrupt: false,
                until_end: true,
                max_records: None,
                group: Some("dash".into()),
            },
            &AtomicBool::new(false),
            |_, r| {
                taken.set(taken.get() + 1);
                got.borrow_mut().insert(
                    String::from_utf8(r.key.unwrap().to_vec()).unwrap(),
                    String::from_utf8(r.value.to_vec()).unwrap(),
                );
                Ok(())
            },
            || Ok(()),
        )
        .unwrap()
    };
    read_group();
    assert_eq!(got.borrow().clone(), latest);
    assert!(taken.get() < 6_000 / 4, "read {} records", taken.get());
    let ends: Vec<u64> = stats.iter().map(|s| s.end_offset).collect();
    let committed = log.group_offsets("changelog", "dash").unwrap();
    assert_eq!(
        committed.offsets.values().copied().collect::<Vec<_>>(),
        ends
    );
    // A forced pass now only finds what the automatic ones left; once more, nothing.
    log.compact_topic("changelog").unwrap();
    let again = log.compact_topic("changelog").unwrap();
    assert_eq!(
        (again.segments_rewritten, again.records_removed),
        (0, 0),
        "{again:?}"
    );
    // The group, from its committed offsets, has nothing left to read.
    taken.set(0);
    read_group();
    assert_eq!(taken.get(), 0);
}

/// A pass is due when the sealed bytes since the last pass are at least half of those it may
/// rewrite (below the committed offset); not again right after one.
#[test]
fn a_pass_is_due_only_for_enough_new_sealed_data() {
    let seg = |base, size| Sealed { base, size };
    let sealed = [seg(0, 100), seg(10, 100), seg(20, 100)];
    assert!(due(&sealed, 30, None, 0), "never compacted");
    assert!(!due(&sealed, 30, None, 30), "nothing new");
    assert!(!due(&sealed, 30, None, 20), "100 new of 300");
    assert!(due(&sealed, 30, None, 10), "200 new of 300");
    // Below a commit at 20 only the first two count: 100 new of 200.
    assert!(due(&sealed, 30, Some(20), 10));
    assert!(!due(&sealed, 30, Some(5), 0), "nothing wholly committed");
    assert!(!due(&[], 0, None, 0));
}

/// What a crash leaves of a rewrite is settled when the writer opens: a copy not swapped in is
/// removed, indexes of a swapped-in log are put in place. Readers given an index that does not
/// fit the log (a swap between reading one and opening the other) scan instead.
#[test]
fn a_crash_mid_rewrite_and_stale_indexes_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    let mut w = PartitionWriter::open(p, 200_000, FsyncPolicy::Never).unwrap();
    let pad = "p".repeat(300);
    for i in 0..400u64 {
        let key = format!("k{}", i % 7);
        append(&mut w, &[(Some(&key), &format!("{i}{pad}"), i as i64)]);
    }
    // Roll: the first segment is sealed.
    let mut b = BatchBuilder::default();
    b.push(Some(b"z"), &[b'v'; 200_000], 0);
    w.append(&mut b).unwrap();
    append(&mut w, &[(Some("z"), "last", 1)]);
    let before = read(p, 0, Isolation::ReadCommitted);
    let old_index = std::fs::read(p.join(format!("{:020}.index", 0))).unwrap();
    assert!(old_index.len() >= 8 * 10, "several index entries");
    w.compact(&keep_24h()).unwrap();
    let after = read(p, 0, Isolation::ReadCommitted);
    // Each of k0..k6's latest, and z's latest (the active segment's).
    assert_eq!(after.len(), 7 + 1);
    // The old index over the new log: every seek still finds the right records.
    std::fs::write(p.join(format!("{:020}.index", 0)), &old_index).unwrap();
    for from in (0..=401).step_by(7) {
        let want: Vec<Rec> = after.iter().filter(|r| r.0 >= from).cloned().collect();
        assert_eq!(read(p, from, Isolation::ReadCommitted), want, "from {from}");
    }
    drop(w);

    // Indexes left beside a swapped-in log are renamed into place on open.
    let index = p.join(format!("{:020}.index", 0));
    let tmp = p.join(format!("{:020}.index.compacting", 0));
    std::fs::write(&tmp, b"12345678").unwrap();
    // An unfinished copy of a segment (its log still a temporary) is removed.
    let log_tmp = p.join(format!("{:020}.log.compacting", 400));
    std::fs::write(&log_tmp, b"garbage").unwrap();
    std::fs::write(p.join(format!("{:020}.timeindex.compacting", 400)), b"x").unwrap();
    let w = PartitionWriter::open(p, 200_000, FsyncPolicy::Never).unwrap();
    assert_eq!(std::fs::read(&index).unwrap(), b"12345678");
    let left: Vec<_> = std::fs::read_dir(p)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".compacting"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
    assert_eq!(w.next_offset(), 402);
    assert_eq!(read(p, 0, Isolation::ReadCommitted), after);
    assert!(before.len() > after.len());
}
