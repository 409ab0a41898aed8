//! The PostgreSQL sink against a real server (started by `scripts/services.sh`): its tables
//! hold what the query computed, and a job killed with `kill -9` at random moments and
//! restarted leaves them exactly as one uninterrupted run does — upserted, appended and
//! changelog tables alike — and so does the server restarting under a running job.

use std::path::Path;
use std::process::Command;

use crate::util::services::postgres_database;
use crate::util::{consume_all, kill_rounds, ok, paystream, settlement_select};

/// A job writing three tables of `url`: settlement upserted by its key, large payments
/// appended, running totals from a changelog (keyed by its group key); settlement also to a
/// log topic, the reference for the table's values.
fn job(data: &Path, url: &str) -> std::path::PathBuf {
    let settlement = settlement_select();
    let text = format!(
        "CREATE SOURCE payments WITH (connector = 'log', topic = 'payments', format = 'json', \
           event_time = 'event_time', watermark_delay = '5 seconds');\n\
         CREATE SINK settlement WITH (connector = 'postgres', url = '{url}', table = 'settlement', \
           primary_key = 'merchant_id,currency,window_start');\n\
         CREATE SINK settlement_log WITH (connector = 'log', topic = 'settlement_log');\n\
         CREATE SINK big WITH (connector = 'postgres', url = '{url}', table = 'big_payments');\n\
         CREATE SINK totals WITH (connector = 'postgres', url = '{url}', table = 'reporting.totals');\n\
         INSERT INTO settlement {settlement};\n\
         INSERT INTO settlement_log {settlement};\n\
         INSERT INTO big SELECT event_id, merchant_id, amount_minor, currency, event_time \
           FROM payments WHERE amount_minor > 150000;\n\
         INSERT INTO totals SELECT merchant_id, currency, count(*) AS n, sum(amount_minor) AS total_minor \
           FROM payments GROUP BY merchant_id, currency;\n"
    );
    let q = data.join("job.sql");
    std::fs::create_dir_all(data).unwrap();
    std::fs::write(&q, text).unwrap();
    q
}

/// Every row of each table, as PostgreSQL prints it, sorted.
fn tables(url: &str) -> Vec<(String, Vec<String>)> {
    let mut c = postgres::Client::connect(url, postgres::NoTls).unwrap();
    ["settlement", "big_payments", "reporting.totals"]
        .iter()
        .map(|t| {
            let rows = c
                .query(&format!("SELECT r::text FROM {t} r ORDER BY 1"), &[])
                .unwrap();
            (t.to_string(), rows.iter().map(|r| r.get(0)).collect())
        })
        .collect()
}

#[test]
fn postgres_tables_hold_each_checkpoint_once_through_kill_9() {
    let tag = std::process::id();
    let (reference_url, crashed_url) = (
        postgres_database(&format!("paystream_ref_{tag}")),
        postgres_database(&format!("paystream_crash_{tag}")),
    );
    for url in [&reference_url, &crashed_url] {
        let mut c = postgres::Client::connect(url, postgres::NoTls).unwrap();
        c.batch_execute("CREATE SCHEMA reporting").unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("events.jsonl");
    ok(Command::new(env!("CARGO_BIN_EXE_paystream"))
        .args(["gen", "--events", "300000", "--seed", "31", "-o"])
        .arg(&events));
    let (reference, crashed) = (dir.path().join("reference"), dir.path().join("crashed"));
    for data in [&reference, &crashed] {
        ok(paystream(data).args(["topic", "create", "payments", "--partitions", "2"]));
        ok(paystream(data).args(["produce", "payments"]).arg(&events));
    }
    let out = paystream(&reference)
        .arg("run")
        .arg(job(&reference, &reference_url))
        .arg("--until-end")
        .output()
        .unwrap();
    let summary = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{summary}");

    // The tables hold what the query computed: settlement as the log sink has it, every
    // accepted event counted once in the totals, each large payment once.
    let want = tables(&reference_url);
    let mut c = postgres::Client::connect(&reference_url, postgres::NoTls).unwrap();
    let in_table: Vec<(String, String, i64, i64)> = c
        .query(
            "SELECT merchant_id, currency, (extract(epoch FROM window_start) * 1000)::bigint, net_minor::bigint FROM settlement",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect();
    let mut from_log: Vec<(String, String, i64, i64)> = consume_all(&reference, "settlement_log")
        .iter()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (
                v["merchant_id"].as_str().unwrap().to_string(),
                v["currency"].as_str().unwrap().to_string(),
                paystream::time::parse_rfc3339_millis(v["window_start"].as_str().unwrap()).unwrap(),
                v["net_minor"].as_i64().unwrap(),
            )
        })
        .collect();
    let mut in_table = in_table;
    in_table.sort();
    from_log.sort();
    assert!(!from_log.is_empty());
    assert_eq!(in_table, from_log, "settlement table vs the log sink");
    let accepted: i64 = summary
        .split_whitespace()
        .find_map(|w| w.strip_prefix("accepted="))
        .and_then(|n| n.replace(',', "").parse().ok())
        .unwrap_or_else(|| panic!("no accepted= in {summary}"));
    let counted: i64 = c
        .query_one("SELECT sum(n)::bigint FROM reporting.totals", &[])
        .unwrap()
        .get(0);
    assert_eq!(counted, accepted, "totals count every accepted event once");
    let (rows, ids): (i64, i64) = {
        let r = c
            .query_one(
                "SELECT count(*), count(DISTINCT event_id) FROM big_payments",
                &[],
            )
            .unwrap();
        (r.get(0), r.get(1))
    };
    assert!(rows > 0 && rows == ids, "{rows} rows, {ids} event ids");

    // The same job killed at random moments (checkpoints every 200 ms), then run to the end.
    let query = job(&crashed, &crashed_url);
    let seed = kill_rounds(&crashed, &query, 6, 300..1500, Some("postgres"));
    let out = paystream(&crashed)
        .arg("run")
        .arg(&query)
        .arg("--until-end")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("resumed=true"), "{err}");
    let got = tables(&crashed_url);
    for ((table, want), (_, got)) in want.iter().zip(&got) {
        assert!(!want.is_empty(), "{table} is empty");
        assert_eq!(
            got.len(),
            want.len(),
            "{table}: rows after kill -9s (seed {seed})"
        );
        assert!(
            got == want,
            "{table}: rows differ after kill -9s (seed {seed})"
        );
    }
    // Nothing is left staged once every checkpoint is applied.
    let mut c = postgres::Client::connect(&crashed_url, postgres::NoTls).unwrap();
    let staged: i64 = c
        .query_one("SELECT count(*) FROM paystream_sink_staging", &[])
        .unwrap()
        .get(0);
    assert_eq!(staged, 0);
}
