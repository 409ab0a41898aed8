//! Hostile input at the decoder (issue 12, items 4–6 and 9–12): card numbers in every spelling
//! never reach results or dead letters, reasons do not depend on the file format, byte-order
//! marks and repeated CSV columns, and dead letters that keep the record as received; and
//! (issue 15, part 4) every shape of the same events decodes to the same results.

use std::path::Path;

use datafusion::arrow::array::{ArrayRef, Int64Array, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use paystream::decode::record_contains_card_number;

use crate::util::{replay, replay_with};

const SELECT: &str = "SELECT event_id, card_id, amount_minor FROM payments";

fn line(id: &str, time: &str, card: &str) -> String {
    format!(
        r#"{{"event_id":"{id}","event_type":"capture","event_time":{time},"payment_id":"p","merchant_id":"m","card_id":"{card}","amount_minor":5,"currency":"EUR"}}"#
    )
}

fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

/// No result row and no dead letter holds a card number, in any spelling.
fn assert_no_card(run: &crate::util::Run) {
    for l in &run.lines {
        assert!(!record_contains_card_number(l.as_bytes()), "result {l}");
    }
    for d in &run.dead_letters {
        let text = d.to_string();
        assert!(
            !record_contains_card_number(text.as_bytes()),
            "dead letter {text}"
        );
        // And the raw record, decoded as its consumer would.
        if let Some(raw) = d["raw"].as_str() {
            assert!(!record_contains_card_number(raw.as_bytes()), "raw {raw}");
        }
    }
}

/// Item 4: a card number grouped by dots, no-break spaces or any other separator is a card
/// number, in JSON and in CSV.
#[test]
fn card_numbers_with_any_separator_never_reach_results() {
    let dir = tempfile::tempdir().unwrap();
    let seps = [
        ".", "\u{a0}", "\u{202f}", "\u{2009}", "\u{2007}", "\u{3000}", "\u{2013}", "\u{2011}", "/",
        " - ", "\u{200b}",
    ];
    let mut json = String::new();
    let mut csv = String::from(
        "event_id,event_type,event_time,payment_id,merchant_id,card_id,amount_minor,currency\n",
    );
    for (k, sep) in seps.iter().enumerate() {
        let card = ["4539", "1488", "0343", "6467"].join(sep);
        json.push_str(&line(&format!("e{k}"), "\"2026-11-01T00:00:00Z\"", &card));
        json.push('\n');
        csv.push_str(&format!(
            "e{k},capture,2026-11-01T00:00:00Z,p,m,\"{card}\",5,EUR\n"
        ));
    }
    // A mix of separators in one number.
    json.push_str(&line(
        "mix",
        "\"2026-11-01T00:00:00Z\"",
        "4539.1488\u{a0}0343-6467",
    ));
    json.push('\n');
    for (name, text, n) in [
        ("a.jsonl", json, seps.len() + 1),
        ("a.csv", csv, seps.len()),
    ] {
        let run = replay(SELECT, &write(dir.path(), name, &text), |_| {});
        assert_eq!(run.summary.accepted, 0, "{name}: {:?}", run.lines);
        assert_eq!(run.dead_letters.len(), n, "{name}");
        for d in &run.dead_letters {
            assert_eq!(d["reason"], "card_number", "{name}: {d}");
        }
        assert_no_card(&run);
    }
}

/// Item 5: a card number with escaped digits is redacted in `raw` as decoded text.
#[test]
fn escaped_card_numbers_are_redacted_in_raw() {
    let dir = tempfile::tempdir().unwrap();
    let text = [
        line("e1", "\"2026-11-01T00:00:00Z\"", r"\u0034539148803436467"),
        line(
            "e2",
            "\"2026-11-01T00:00:00Z\"",
            r"4539\u00a01488\u00a00343\u00a06467",
        ),
        // In an extra field, and in a field name.
        r#"{"event_id":"e3","note":"card \u0034539 1488 0343 6467"}"#.to_string(),
        r#"{"event_id":"e4","\u0034539148803436467":1}"#.to_string(),
    ]
    .join("\n");
    let run = replay(SELECT, &write(dir.path(), "a.jsonl", &text), |_| {});
    assert_eq!(run.dead_letters.len(), 4);
    for d in &run.dead_letters {
        assert_eq!(d["reason"], "card_number", "{d}");
        let raw = d["raw"].as_str().unwrap();
        // Still JSON, and nothing in it decodes to a card number.
        let v: serde_json::Value = serde_json::from_str(raw).expect("raw stays JSON");
        assert!(
            !record_contains_card_number(v.to_string().as_bytes()),
            "{raw}"
        );
    }
    assert_no_card(&run);
}

/// Item 6: a card number in a numeric field is rejected for its range, and no detail repeats it.
#[test]
fn card_numbers_in_numeric_fields_are_never_echoed() {
    let dir = tempfile::tempdir().unwrap();
    let pan = "4539148803436467";
    let json = [
        line("e1", "\"2026-11-01T00:00:00Z\"", "c").replace(":5,", &format!(":{pan},")),
        line("e2", pan, "c"),
        line("e3", "\"2026-11-01T00:00:00Z\"", "c")
            .replace("}", &format!(",\"fee_minor\":{pan}}}")),
    ]
    .join("\n");
    let csv = format!(
        "event_id,event_type,event_time,payment_id,merchant_id,card_id,amount_minor,currency\n\
         e1,capture,2026-11-01T00:00:00Z,p,m,c,{pan},EUR\ne2,capture,{pan},p,m,c,5,EUR\n"
    );
    for (name, text, reasons) in [
        (
            "a.jsonl",
            json,
            vec!["out_of_range", "bad_timestamp", "out_of_range"],
        ),
        ("a.csv", csv, vec!["out_of_range", "bad_timestamp"]),
    ] {
        let run = replay(SELECT, &write(dir.path(), name, &text), |_| {});
        let got: Vec<&str> = run
            .dead_letters
            .iter()
            .map(|d| d["reason"].as_str().unwrap())
            .collect();
        assert_eq!(got, reasons, "{name}");
        for d in &run.dead_letters {
            assert!(
                !d["detail"].as_str().unwrap().contains("453914880343"),
                "{d}"
            );
        }
        assert_no_card(&run);
    }
}

/// An epoch-millisecond time whose 13 digits pass the Luhn check, from 2026.
fn luhn_epoch_ms() -> i64 {
    (1_762_000_000_000..)
        .find(|t: &i64| paystream::decode::contains_card_number(t.to_string().as_bytes()))
        .unwrap()
}

fn parquet(dir: &Path, name: &str, time: ArrayRef) -> std::path::PathBuf {
    let n = time.len();
    let s = |v: &str| Arc::new(StringArray::from(vec![v; n])) as ArrayRef;
    let ids: Vec<String> = (0..n).map(|i| format!("e{i}")).collect();
    let schema = Arc::new(Schema::new(vec![
        Field::new("event_id", DataType::Utf8, false),
        Field::new("event_type", DataType::Utf8, false),
        Field::new("event_time", time.data_type().clone(), false),
        Field::new("payment_id", DataType::Utf8, false),
        Field::new("merchant_id", DataType::Utf8, false),
        Field::new("card_id", DataType::Utf8, false),
        Field::new("amount_minor", DataType::Int64, false),
        Field::new("currency", DataType::Utf8, false),
    ]));
    let batch = RecordBatch::try_new(
        Arc::clone(&schema),
        vec![
            Arc::new(StringArray::from(ids)),
            s("capture"),
            time,
            s("p"),
            s("m"),
            s("c"),
            Arc::new(Int64Array::from(vec![5; n])),
            s("EUR"),
        ],
    )
    .unwrap();
    let path = dir.join(name);
    let file = std::fs::File::create(&path).unwrap();
    let mut w = datafusion::parquet::arrow::ArrowWriter::try_new(file, schema, None).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
    path
}

use std::sync::Arc;

/// Item 9: a Luhn-valid epoch-millisecond `event_time` is a time in every format: accepted
/// where the format gives it as a number (JSON number, CSV cell, Parquet integer), and
/// `bad_timestamp` — never `card_number` — where it is a string (JSON string, Parquet text).
#[test]
fn epoch_millisecond_times_are_times_in_every_format() {
    let dir = tempfile::tempdir().unwrap();
    let t = luhn_epoch_ms();
    // A few such times, each passing the Luhn check.
    let times: Vec<i64> = (t..)
        .filter(|t| paystream::decode::contains_card_number(t.to_string().as_bytes()))
        .take(5)
        .collect();
    let json_num: String = times
        .iter()
        .enumerate()
        .map(|(i, t)| line(&format!("e{i}"), &t.to_string(), "c") + "\n")
        .collect();
    let json_str: String = times
        .iter()
        .enumerate()
        .map(|(i, t)| line(&format!("e{i}"), &format!("\"{t}\""), "c") + "\n")
        .collect();
    let mut csv = String::from(
        "event_id,event_type,event_time,payment_id,merchant_id,card_id,amount_minor,currency,created_ms\n",
    );
    for (i, t) in times.iter().enumerate() {
        // An extra column holding a number is a number too.
        csv.push_str(&format!("e{i},capture,{t},p,m,c,5,EUR,{t}\n"));
    }
    let accepted = [
        write(dir.path(), "num.jsonl", &json_num),
        write(dir.path(), "a.csv", &csv),
        parquet(
            dir.path(),
            "int.parquet",
            Arc::new(Int64Array::from(times.clone())),
        ),
    ];
    for p in &accepted {
        let run = replay(SELECT, p, |_| {});
        assert_eq!(
            run.summary.accepted,
            times.len() as u64,
            "{p:?}: {:?}",
            run.dead_letters
        );
    }
    let strs: Vec<String> = times.iter().map(|t| t.to_string()).collect();
    let rejected = [
        write(dir.path(), "str.jsonl", &json_str),
        parquet(dir.path(), "str.parquet", Arc::new(StringArray::from(strs))),
    ];
    for p in &rejected {
        let run = replay(SELECT, p, |_| {});
        assert_eq!(run.dead_letters.len(), times.len(), "{p:?}");
        for d in &run.dead_letters {
            assert_eq!(d["reason"], "bad_timestamp", "{p:?}: {d}");
        }
        assert_no_card(&run);
    }
}

/// Item 10: a UTF-8 byte-order mark at the start of a file is skipped, in JSON Lines and CSV.
#[test]
fn a_leading_byte_order_mark_is_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let json = format!(
        "\u{feff}{}\n{}\n",
        line("e1", "\"2026-11-01T00:00:00Z\"", "c"),
        line("e2", "\"2026-11-01T00:00:00Z\"", "c")
    );
    let csv = "\u{feff}event_id,event_type,event_time,payment_id,merchant_id,card_id,amount_minor,currency\n\
               e1,capture,2026-11-01T00:00:00Z,p,m,c,5,EUR\n";
    for (name, text, n) in [("bom.jsonl", json.as_str(), 2), ("bom.csv", csv, 1)] {
        let run = replay(SELECT, &write(dir.path(), name, text), |_| {});
        assert_eq!(run.summary.accepted, n, "{name}: {:?}", run.dead_letters);
        assert!(run.dead_letters.is_empty(), "{name}");
    }
}

/// Item 11: a CSV header (or a Parquet schema) naming a column twice is refused, naming it.
#[test]
fn a_column_named_twice_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let csv = "event_id,event_type,event_time,payment_id,merchant_id,card_id,amount_minor,currency,card_id\n\
               e1,capture,2026-11-01T00:00:00Z,p,m,c,5,EUR,4539148803436467\n";
    let path = write(dir.path(), "dup.csv", csv);
    let plan = paystream::plan_query(SELECT).unwrap();
    let Err(err) = crate::util::try_replay_with(&plan, &path, |_| {}) else {
        panic!("a header naming card_id twice was accepted");
    };
    let msg = err.to_string();
    assert!(
        msg.contains("\"card_id\"") && msg.contains("more than once"),
        "{msg}"
    );
}

/// Item 12: a record the router rejects (a duplicate conflict, a far-future time) is
/// dead-lettered as it was received — key order, time zone offset, extra fields — not
/// re-serialised, in JSON Lines and in CSV.
#[test]
fn router_rejects_keep_the_record_as_received() {
    let dir = tempfile::tempdir().unwrap();
    let first = line("e1", "\"2026-11-01T00:00:00Z\"", "c");
    let conflict = r#"{"amount_minor":7, "event_id":"e1","currency":"EUR","event_type":"capture","event_time":"2026-11-01T01:00:00+01:00","payment_id":"p","merchant_id":"m","card_id":"c","extra":[1,2]}"#;
    let future = r#"{"event_type":"capture","event_id":"e2","event_time":"2027-11-01T00:00:00+05:30","payment_id":"p","merchant_id":"m","card_id":"c","amount_minor":5,"currency":"EUR","x":"y"}"#;
    let text = format!("{first}\n{conflict}\n{future}\n");
    let run = replay(SELECT, &write(dir.path(), "a.jsonl", &text), |_| {});
    let got: Vec<(&str, &str)> = run
        .dead_letters
        .iter()
        .map(|d| (d["reason"].as_str().unwrap(), d["raw"].as_str().unwrap()))
        .collect();
    assert_eq!(
        got,
        [
            ("duplicate_conflict", conflict),
            ("future_timestamp", future)
        ]
    );

    let csv = "event_id,event_type,event_time,payment_id,merchant_id,card_id,amount_minor,currency,extra\n\
               e1,capture,2026-11-01T00:00:00Z,p,m,c,5,EUR,x\n\
               e1,capture,2026-11-01T01:00:00+01:00,p,m,c,7,EUR,\"y,z\"\n\
               e2,capture,2027-11-01T00:00:00Z,p,m,c,5,EUR,\n";
    let run = replay_with(
        &paystream::plan_query(SELECT).unwrap(),
        &write(dir.path(), "a.csv", csv),
        |_| {},
    );
    let raws: Vec<&str> = run
        .dead_letters
        .iter()
        .map(|d| d["raw"].as_str().unwrap())
        .collect();
    assert_eq!(
        raws,
        [
            "e1,capture,2026-11-01T01:00:00+01:00,p,m,c,7,EUR,\"y,z\"",
            "e2,capture,2027-11-01T00:00:00Z,p,m,c,5,EUR,"
        ]
    );
}

/// The same generated events (redeliveries and invalid lines included) rewritten the ways other
/// producers write them, each copy of a redelivered event differently: results, counts and
/// dead-letter reasons equal the original file's. A redelivery respelled is still a duplicate,
/// not a conflict (the payload hash reads values), and unknown fields are counted.
#[test]
fn every_shape_of_the_same_events_gives_the_same_results_and_counts() {
    use rand::seq::SliceRandom;
    use rand::{Rng, SeedableRng};
    use serde_json::Value;

    let dir = tempfile::tempdir().unwrap();
    let mut bytes = Vec::new();
    paystream::generate::generate(
        &paystream::generate::GenConfig {
            events: 6_000,
            seed: 31,
            duplicate_rate: 0.05,
            malformed_rate: 0.02,
            ..paystream::generate::GenConfig::default()
        },
        &mut bytes,
    )
    .unwrap();
    let original = String::from_utf8(bytes).unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(32);
    let (mut reshaped, mut extras) = (String::new(), 0);
    for line in original.lines() {
        let Ok(Value::Object(map)) = serde_json::from_str::<Value>(line) else {
            reshaped.push_str(line);
            reshaped.push('\n');
            continue;
        };
        let mut fields: Vec<(String, Value)> = map.into_iter().collect();
        fields.shuffle(&mut rng);
        if fields
            .iter()
            .any(|(k, v)| k == "event_type" && v == "authorization")
            && rng.random_bool(0.5)
        {
            fields.retain(|(k, v)| !(k == "status" && v == "approved"));
        }
        if !fields.iter().any(|(k, _)| k == "fee_minor") && rng.random_bool(0.3) {
            fields.push(("fee_minor".into(), Value::Null));
        }
        if rng.random_bool(0.3) {
            extras += 1;
            fields.push((
                "x_trace".into(),
                serde_json::json!({"span": [1, "a"], "ok": true}),
            ));
        }
        let (comma, colon) = if rng.random_bool(0.5) {
            (", ", ": ")
        } else {
            (",", ":")
        };
        let body: Vec<String> = fields
            .iter()
            .map(|(k, v)| format!("{}{colon}{v}", Value::from(k.as_str())))
            .collect();
        reshaped.push_str(&format!("{{{}}}\n", body.join(comma)));
    }
    let a = write(dir.path(), "generated.jsonl", &original);
    let b = write(dir.path(), "reshaped.jsonl", &reshaped);
    let sql = "SELECT merchant_id, currency, window_start, count(*) AS n, \
               sum(amount_minor) AS amount, sum(fee_minor) AS fees, \
               count(*) FILTER (WHERE status = 'approved') AS approved \
               FROM TUMBLE(payments, event_time, INTERVAL '1' MINUTE) \
               GROUP BY merchant_id, currency, window_start, window_end";
    let (ra, rb) = (replay(sql, &a, |_| {}), replay(sql, &b, |_| {}));
    assert!(
        ra.summary.duplicates > 20 && ra.summary.dead_lettered > 50,
        "{:?}",
        (ra.summary.duplicates, ra.summary.dead_lettered)
    );
    assert_eq!(
        crate::util::sorted(ra.lines.clone()),
        crate::util::sorted(rb.lines.clone())
    );
    let counts = |r: &crate::util::Run| {
        let s = &r.summary;
        (s.read, s.accepted, s.duplicates, s.dead_lettered, s.late)
    };
    assert_eq!(counts(&ra), counts(&rb));
    let reasons = |r: &crate::util::Run| {
        let mut v: Vec<String> = r
            .dead_letters
            .iter()
            .map(|d| d["reason"].to_string())
            .collect();
        v.sort();
        v
    };
    assert_eq!(reasons(&ra), reasons(&rb));
    assert_eq!(
        rb.summary.unknown_fields,
        ra.summary.unknown_fields + extras
    );
}
