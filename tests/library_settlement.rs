//! The library's daily settlement (`settlement_daily.sql`): its changelog, applied in order,
//! equals the totals computed here over every event — late money included, business dates
//! from each merchant's time zone and daily close — from a file and from a log topic.

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::{TimeZone, Timelike};
use paystream::generate::{GenConfig, Scenarios};
use paystream::time::parse_rfc3339_millis;
use serde_json::Value;

use crate::golden::check_golden;
use crate::library::{events, from_topic_in_order, replayed_in_order};
use crate::util::repo;

/// (merchant, currency, business date) → the row's totals, as text.
type Days = BTreeMap<(String, String, String), String>;

/// The table a changelog leaves: the latest row per key, deleted keys gone.
fn applied(rows: &[String]) -> Days {
    let mut out = Days::new();
    for r in rows {
        let mut v: serde_json::Map<String, Value> = serde_json::from_str(r).unwrap();
        let op = v.remove("op").unwrap();
        let key = (
            v["merchant_id"].as_str().unwrap().to_string(),
            v["currency"].as_str().unwrap().to_string(),
            v["business_date"].as_str().unwrap().to_string(),
        );
        match op.as_str() {
            Some("insert" | "update") => {
                out.insert(key, totals(&v));
            }
            Some("delete") => {
                out.remove(&key);
            }
            other => panic!("op {other:?} in {r}"),
        }
    }
    out
}

fn totals(v: &serde_json::Map<String, Value>) -> String {
    [
        "captures",
        "captured_minor",
        "refunded_minor",
        "chargeback_minor",
        "fees_minor",
        "net_minor",
        "adjustments",
        "adjustment_net_minor",
    ]
    .iter()
    .map(|k| v[*k].to_string())
    .collect::<Vec<_>>()
    .join(" ")
}

/// The merchant's business date of `ms`: the local date in its zone, the next one at or after
/// its close (a close of 00:00 is the plain local date).
fn business_date(ms: i64, tz: &chrono_tz::Tz, close: &str) -> String {
    let local = tz.timestamp_millis_opt(ms).unwrap();
    let (h, m) = close.split_once(':').unwrap();
    let close = (h.parse::<u32>().unwrap(), m.parse::<u32>().unwrap());
    let mut date = local.date_naive();
    if close != (0, 0) && (local.hour(), local.minute()) >= close {
        date = date.succ_opt().unwrap();
    }
    date.to_string()
}

/// Across London's 22:00 close (merchant m_0002: Europe/London, closing at 22:00), with money
/// events arriving minutes late and refunds after chargebacks.
fn across_a_close() -> GenConfig {
    GenConfig {
        events: 40_000,
        seed: 11,
        rate: 20.0,
        merchants: 12,
        cards: 50_000,
        start: parse_rfc3339_millis("2026-11-02T21:50:00Z").unwrap(),
        spike_at_ms: None,
        scenarios: Scenarios {
            late_money: true,
            refund_after_chargeback: true,
            ..Scenarios::default()
        },
        ..GenConfig::default()
    }
}

/// Each merchant's zone and daily close, from the library's merchants table.
fn merchants() -> HashMap<String, (chrono_tz::Tz, String)> {
    std::fs::read_to_string(repo("queries/data/merchants.csv"))
        .unwrap()
        .lines()
        .skip(1)
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            (f[0].to_string(), (f[1].parse().unwrap(), f[2].to_string()))
        })
        .collect()
}

/// The settlement of the events of `file` computed here: each money event booked at
/// `booked(time, arrival watermark)` — the watermark the engine's router had when it arrived,
/// the latest event time seen so far less the 5 s delay (none before the first event), as a
/// file of one partition gives it.
fn settle(file: &std::path::Path, booked: impl Fn(i64, Option<i64>) -> i64) -> Days {
    let merchants = merchants();
    let mut sums: BTreeMap<(String, String, String), [i64; 7]> = BTreeMap::new();
    let mut seen = HashSet::new();
    let mut newest: Option<i64> = None;
    for line in std::fs::read_to_string(file).unwrap().lines() {
        let e: Value = serde_json::from_str(line).unwrap();
        if !seen.insert(e["event_id"].to_string()) {
            continue;
        }
        let t = parse_rfc3339_millis(e["event_time"].as_str().unwrap()).unwrap();
        let arrival = newest.map(|n| n - 5_000);
        newest = Some(newest.map_or(t, |n| n.max(t)));
        let kind = e["event_type"].as_str().unwrap();
        if !matches!(kind, "capture" | "refund" | "chargeback") {
            continue;
        }
        let m = e["merchant_id"].as_str().unwrap();
        let (tz, close) = &merchants[m];
        let at = booked(t, arrival);
        let s = sums
            .entry((
                m.to_string(),
                e["currency"].as_str().unwrap().to_string(),
                business_date(at, tz, close),
            ))
            .or_default();
        let amount = e["amount_minor"].as_i64().unwrap();
        let fee = e["fee_minor"].as_i64().unwrap_or(0);
        let signed = match kind {
            "capture" => {
                s[0] += 1;
                s[1] += amount;
                amount
            }
            "refund" => {
                s[2] += amount;
                -amount
            }
            _ => {
                s[3] += amount;
                -amount
            }
        };
        s[4] += fee;
        if at > t {
            s[5] += 1;
            s[6] += signed - fee;
        }
    }
    sums.into_iter()
        .map(|(k, s)| {
            let net = s[1] - s[2] - s[3] - s[4];
            (
                k,
                format!(
                    "{} {} {} {} {} {net} {} {}",
                    s[0], s[1], s[2], s[3], s[4], s[5], s[6]
                ),
            )
        })
        .collect()
}

#[test]
fn settlement_daily_changelog_applies_to_the_totals_of_every_event() {
    let dir = tempfile::tempdir().unwrap();
    let name = "settlement_daily";
    let file = events(dir.path(), "days", &across_a_close());
    let rows = replayed_in_order(name, &file);
    // Pinned sorted: workers interleave their rows in no fixed order, each key's in order.
    check_golden(name, &crate::util::sorted(rows.clone()));

    // Minutes late is well within the 7 days allowed: every event on its own day.
    let want = settle(&file, |t, _| t);
    // Some merchant's day ends within the stream (London closes at 22:00), so its rows span
    // two business dates.
    let mut dates: HashMap<&str, HashSet<&str>> = HashMap::new();
    for (m, _, d) in want.keys() {
        dates.entry(m).or_default().insert(d);
    }
    assert!(dates.values().any(|d| d.len() >= 2), "{dates:?}");
    // Late money is in the stream (delivered minutes behind the latest event time), and the
    // totals above, which count it, are what the changelog leaves.
    let mut latest = 0;
    let mut late = 0;
    for line in std::fs::read_to_string(&file).unwrap().lines() {
        let e: Value = serde_json::from_str(line).unwrap();
        let t = parse_rfc3339_millis(e["event_time"].as_str().unwrap()).unwrap();
        if latest - t >= 5 * 60_000 {
            late += 1;
        }
        latest = latest.max(t);
    }
    assert!(late >= 10, "{late} late money events");
    assert_eq!(applied(&rows), want);
    assert_eq!(
        applied(&from_topic_in_order(name, &file)),
        want,
        "from a topic"
    );
}

/// With an allowed lateness of two minutes, money arriving later than that behind the stream is
/// booked at the watermark it arrived under — across London's close, into the next business
/// date — counted as an adjustment there; the changelog applied equals that booking computed
/// here, and every cent of the stream is still in some day.
#[test]
fn settlement_daily_books_money_later_than_allowed_into_the_open_day() {
    let dir = tempfile::tempdir().unwrap();
    let file = events(dir.path(), "days", &across_a_close());
    let text = std::fs::read_to_string(repo("queries/settlement_daily.sql"))
        .unwrap()
        .replace(
            "SET allowed_lateness = '7 days';",
            "SET allowed_lateness = '2 minutes';",
        );
    assert!(text.contains("'2 minutes'"));
    let query = dir.path().join("settlement_daily.sql");
    std::fs::write(&query, text).unwrap();
    let rows: Vec<String> = crate::util::ok(
        std::process::Command::new(env!("CARGO_BIN_EXE_paystream"))
            .current_dir(repo("."))
            .arg("replay")
            .arg(&file)
            .arg("--query")
            .arg(&query),
    )
    .lines()
    .map(str::to_string)
    .collect();
    let want = settle(&file, |t, arrival| match arrival {
        Some(w) if t < w - 120_000 => w,
        _ => t,
    });
    let got = applied(&rows);
    assert_eq!(got, want);
    // Some money moved, some of it across the close into the next business date, and the
    // money of the whole stream is what the 7-day settlement counts.
    let adjusted: i64 = want
        .values()
        .map(|v| v.split(' ').nth(6).unwrap().parse::<i64>().unwrap())
        .filter(|n| *n != 0)
        .count() as i64;
    assert!(adjusted >= 3, "{want:?}");
    let total = |d: &Days, column: usize| -> i64 {
        d.values()
            .map(|v| v.split(' ').nth(column).unwrap().parse::<i64>().unwrap())
            .sum()
    };
    let on_time = settle(&file, |t, _| t);
    for column in 0..6 {
        assert_eq!(
            total(&got, column),
            total(&on_time, column),
            "column {column}"
        );
    }
    assert_ne!(got, on_time, "booking moved money between days");
}
