//! The shipped query library (issue 18): each query over generated data that holds the pattern
//! it looks for (its rows pinned in `tests/golden/<query>.jsonl`), over the same data as a log
//! topic (the same rows), and over a clean stream (no alert).

use std::collections::{BTreeSet, HashSet};
use std::path::Path;
use std::sync::Arc;

use paystream::generate::{GenConfig, generate};
use paystream::log::{FsyncPolicy, Log, Producer, TopicConfig};
use paystream::source::LogSource;
use paystream::time::parse_rfc3339_millis;
use serde_json::Value;

use crate::golden::check_golden;
use crate::util::{ok, repo, run_source, sorted};

/// `paystream replay FILE --query queries/<name>.sql`, as a user runs it: its rows, sorted.
pub(crate) fn replayed(name: &str, events: &Path) -> Vec<String> {
    sorted(replayed_in_order(name, events))
}

/// [`replayed`]'s rows in the order they came (a changelog's order matters).
pub(crate) fn replayed_in_order(name: &str, events: &Path) -> Vec<String> {
    let out = ok(std::process::Command::new(env!("CARGO_BIN_EXE_paystream"))
        .arg("replay")
        .arg(events)
        .arg("--query")
        .arg(repo(&format!("queries/{name}.sql"))));
    out.lines().map(str::to_string).collect()
}

/// The same query over `events` produced into a topic of the embedded log: its rows, sorted.
pub(crate) fn from_topic(name: &str, events: &Path) -> Vec<String> {
    sorted(from_topic_in_order(name, events))
}

/// [`from_topic`]'s rows in the order they came.
pub(crate) fn from_topic_in_order(name: &str, events: &Path) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::new(dir.path());
    log.create_topic(
        "payments",
        &TopicConfig {
            partitions: 3,
            ..TopicConfig::default()
        },
    )
    .unwrap();
    let mut p = Producer::new(
        log.writer("payments", FsyncPolicy::Never).unwrap(),
        Some("card_id"),
    );
    p.send_json_lines(&std::fs::read(events).unwrap(), 1, &mut |_| {})
        .unwrap();
    p.finish().unwrap();
    let text = std::fs::read_to_string(repo(&format!("queries/{name}.sql"))).unwrap();
    let parsed = paystream::sql::query_file::parse_replay_query(&text).unwrap();
    // The reference tables the file declares (their relative paths: from the working
    // directory, the repository's root in tests).
    let tables: Vec<_> = parsed
        .tables
        .clone()
        .into_iter()
        .map(paystream::table::ReferenceTable::new)
        .collect();
    let streams = [("payments".to_string(), paystream::EventSchema::payments())];
    let plan = parsed
        .with_settings(
            paystream::sql::plan_query_over(&parsed.select, &streams, &tables, &Default::default())
                .unwrap(),
        )
        .unwrap();
    let source = Arc::new(LogSource::new(log, "payments").until_end(true));
    run_source(&plan, source, |_| {}).lines
}

pub(crate) fn events(dir: &Path, name: &str, cfg: &GenConfig) -> std::path::PathBuf {
    let path = dir.join(format!("{name}.jsonl"));
    generate(cfg, &mut std::fs::File::create(&path).unwrap()).unwrap();
    path
}

/// The events of a generated file, each once (a duplicate delivery is dropped).
pub(crate) fn distinct_events(path: &Path) -> Vec<Value> {
    let mut seen = HashSet::new();
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|e| seen.insert(e["event_id"].to_string()))
        .collect()
}

/// An event's `event_time` in epoch milliseconds.
pub(crate) fn time(e: &Value) -> i64 {
    parse_rfc3339_millis(e["event_time"].as_str().unwrap()).unwrap()
}

/// The values of `key` in `rows` (JSON texts), as a set of their JSON texts.
pub(crate) fn field_set(rows: &[String], key: &str) -> BTreeSet<String> {
    rows.iter()
        .map(|r| serde_json::from_str::<Value>(r).unwrap()[key].to_string())
        .collect()
}

/// 40 minutes of 20 authorizations a second over 12 merchants, with merchant m_0007's volume
/// spiking in minute 20 (half of all authorizations for that minute) or not at all.
fn traffic(spike: bool, attacks: bool) -> GenConfig {
    GenConfig {
        events: 60_000,
        seed: 11,
        rate: 20.0,
        merchants: 12,
        cards: 5_000,
        spike_at_ms: spike.then_some(20 * 60_000),
        attacks,
        ..GenConfig::default()
    }
}

#[test]
fn merchant_volume_spike_flags_the_spike_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let name = "merchant_volume_spike";
    let spiking = events(dir.path(), "spike", &traffic(true, false));
    let rows = replayed(name, &spiking);
    check_golden(name, &rows);
    assert_eq!(rows.len(), 1, "{rows:?}");
    let alert: serde_json::Value = serde_json::from_str(&rows[0]).unwrap();
    assert_eq!(alert["merchant_id"], "m_0007");
    assert_eq!(alert["window_start"], "2026-11-01T00:20:00.000Z");
    assert_eq!(from_topic(name, &spiking), rows, "from a topic");
    // No spike, no attacks: nothing.
    let clean = events(dir.path(), "clean", &traffic(false, false));
    assert_eq!(replayed(name, &clean), Vec::<String>::new());
    // With the generator's attacks too, the spike is still found (an enumeration attack is a
    // volume spike at its merchant as well).
    let noisy = events(dir.path(), "noisy", &traffic(true, true));
    assert!(
        replayed(name, &noisy)
            .iter()
            .any(|r| r.contains("\"m_0007\"") && r.contains("00:20:00.000Z")),
        "the spike among the alerts"
    );
}

/// Enumeration attacks (one merchant and device, many cards, mostly declined) are decline waves:
/// every alert is a merchant-minute where one device made an attack's many authorizations, and
/// a stream without attacks raises none.
#[test]
fn decline_rate_spike_flags_enumeration_attacks_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let name = "decline_rate_spike";
    let attacked = events(dir.path(), "attacked", &traffic(false, true));
    let rows = replayed(name, &attacked);
    check_golden(name, &rows);
    assert!(rows.len() >= 3, "{rows:?}");
    // Authorizations per (merchant, minute, device) in the generated events.
    let mut per_device: std::collections::HashMap<(String, String, String), u32> =
        Default::default();
    for line in std::fs::read_to_string(&attacked).unwrap().lines() {
        let Ok(e) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if e["event_type"] != "authorization" {
            continue;
        }
        let (Some(m), Some(t), Some(d)) = (
            e["merchant_id"].as_str(),
            e["event_time"].as_str(),
            e["device_id"].as_str(),
        ) else {
            continue;
        };
        *per_device
            .entry((m.to_string(), t[..16].to_string(), d.to_string()))
            .or_default() += 1;
    }
    for r in &rows {
        let a: serde_json::Value = serde_json::from_str(r).unwrap();
        let (m, minute) = (
            a["merchant_id"].as_str().unwrap(),
            &a["window_start"].as_str().unwrap()[..16],
        );
        assert!(
            per_device
                .iter()
                .any(|((pm, pt, _), n)| pm == m && pt == minute && *n >= 15),
            "no attack behind {r}"
        );
    }
    assert_eq!(from_topic(name, &attacked), rows, "from a topic");
    let clean = events(dir.path(), "clean", &traffic(false, false));
    assert_eq!(replayed(name, &clean), Vec::<String>::new());
}

/// The devices listed are the enumeration attacks' (one device, dozens of cards), ranked 1, 2, …
/// within each window; a stream without attacks lists none.
#[test]
fn device_card_fanout_lists_the_attacking_devices() {
    let dir = tempfile::tempdir().unwrap();
    let name = "device_card_fanout";
    let attacked = events(dir.path(), "attacked", &traffic(false, true));
    let rows = replayed(name, &attacked);
    check_golden(name, &rows);
    assert!(rows.len() >= 3, "{rows:?}");
    let mut cards: std::collections::HashMap<String, std::collections::HashSet<String>> =
        Default::default();
    for line in std::fs::read_to_string(&attacked).unwrap().lines() {
        if let Ok(e) = serde_json::from_str::<serde_json::Value>(line)
            && let (Some(d), Some(c)) = (e["device_id"].as_str(), e["card_id"].as_str())
        {
            cards
                .entry(d.to_string())
                .or_default()
                .insert(c.to_string());
        }
    }
    let mut ranks: std::collections::BTreeMap<String, Vec<u64>> = Default::default();
    for r in &rows {
        let a: serde_json::Value = serde_json::from_str(r).unwrap();
        let device = a["device_id"].as_str().unwrap();
        assert!(cards[device].len() >= 20, "{device} is no attack: {r}");
        ranks
            .entry(a["window_start"].as_str().unwrap().to_string())
            .or_default()
            .push(a["rank"].as_u64().unwrap());
    }
    for (w, mut r) in ranks {
        r.sort();
        assert_eq!(r, (1..=r.len() as u64).collect::<Vec<_>>(), "{w}");
    }
    assert_eq!(from_topic(name, &attacked), rows, "from a topic");
    let clean = events(dir.path(), "clean", &traffic(false, false));
    assert_eq!(replayed(name, &clean), Vec::<String>::new());
}
