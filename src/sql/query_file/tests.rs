use super::*;

const FILE: &str = "-- risk\nCREATE SOURCE payments WITH (connector = 'log', topic = 'payments', format = 'json',\n  event_time = 'event_time', watermark_delay = '5 seconds');\nCREATE SINK alerts WITH (connector = 'log', topic = 'risk.alerts');\n/* a; comment */ SET idle_timeout = '10s';\nINSERT INTO alerts\n  SELECT card_id FROM payments WHERE note = 'a;b';\n";

#[test]
fn parses_sources_sinks_settings_and_inserts() {
    let f = parse_query_file(FILE).unwrap();
    assert_eq!(f.sources[0].connector.name(), "log");
    assert_eq!(f.sources[0].connector.log_topic(), Some("payments"));
    assert_eq!(f.sources[0].watermark_delay, Some(5_000));
    assert_eq!(f.sources[0].line, 2);
    assert_eq!(f.sinks[0].connector.name(), "log");
    assert_eq!(f.sinks[0].connector.log_topic(), Some("risk.alerts"));
    assert_eq!(f.sinks[0].connector.describe(), "topic risk.alerts");
    assert_eq!(f.settings["idle_timeout"], "10s");
    let i = &f.inserts[0];
    assert_eq!(i.sink, "alerts");
    // The SELECT keeps its line and column.
    let lines: Vec<&str> = i.select.lines().collect();
    assert_eq!(lines.len(), 7);
    assert_eq!(
        lines[6],
        "  SELECT card_id FROM payments WHERE note = 'a;b'"
    );
}

#[test]
fn every_set_value_is_checked_with_its_position() {
    // Checked even when CREATE SOURCE sets the option too (its value would win).
    let e = parse_query_file(
        "CREATE SOURCE p WITH (connector = 'log', topic = 't', watermark_delay = '5s');\nSET watermark_delay = 'soon';\nINSERT INTO x SELECT 1;",
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("line 2, column 24") && e.contains("'soon'"),
        "{e}"
    );
    for (set, needle) in [
        ("SET workers = 0;", "line 1, column 15"),
        ("\n  SET workers = 'many';", "line 2, column 18"),
        ("SET checkpoint_interval = '0s';", "must be positive"),
        ("SET state_ttl = '0s';", "must be positive"),
        ("SET state_ttl = 'forever';", "'forever'"),
        ("SET max_hop_ratio = '-1';", "at least 1"),
        (
            "SET max_skew = '1m';\nSET max_skew = '2m';",
            "SET twice (lines 1 and 2)",
        ),
    ] {
        let e = parse_query_file(&format!("{set}\nINSERT INTO x SELECT 1;"))
            .unwrap_err()
            .to_string();
        assert!(e.contains(needle), "{set}: {e}");
    }
}

#[test]
fn max_skew_must_exceed_the_watermark_delay_wherever_they_are_set() {
    let src = |opts: &str| {
        format!(
            "CREATE SOURCE p WITH (connector = 'log', topic = 't'{opts});\nINSERT INTO x SELECT 1;"
        )
    };
    let settings = |text: &str| {
        let f = parse_query_file(text).unwrap();
        f.event_time_settings(&f.sources[0])
    };
    let ok = settings(&src("")).unwrap();
    assert_eq!((ok.watermark_delay, ok.max_skew), (5_000, 300_000));
    for (text, names) in [
        (
            src(", watermark_delay = '10s', max_skew = '10s'"),
            [
                "max_skew of CREATE SOURCE p (line 1) (10s)",
                "watermark_delay of CREATE SOURCE p (line 1) (10s)",
            ],
        ),
        (
            format!("SET max_skew = '3s';\n{}", src("")),
            [
                "SET max_skew (line 1) (3s)",
                "watermark_delay (default) (5s)",
            ],
        ),
        (
            format!("SET watermark_delay = '10m';\n{}", src("")),
            [
                "max_skew (default) (5m)",
                "SET watermark_delay (line 1) (10m)",
            ],
        ),
    ] {
        let e = settings(&text).unwrap_err().to_string();
        assert!(e.contains(names[0]) && e.contains(names[1]), "{text}: {e}");
    }
}

#[test]
fn a_source_declares_its_columns_time_and_dedup_key() {
    let f = parse_query_file(
        "CREATE SOURCE orders (\n  order_id VARCHAR,\n  ts TIMESTAMP,\n  amount_minor BIGINT,\n  WATERMARK FOR ts AS ts - INTERVAL '2' SECOND\n) WITH (connector = 'log', topic = 'orders', dedup_key = 'order_id');\nINSERT INTO x SELECT 1;",
    )
    .unwrap();
    let s = &f.sources[0];
    let e = &s.events;
    assert!(e.is_declared());
    assert_eq!(e.stream(), "orders");
    assert_eq!(s.watermark_delay, Some(2_000));
    assert_eq!(e.id_column(), Some(0));
    assert_eq!(e.event_time_column(), 1);
    // The id and the time are NOT NULL whatever the list said.
    assert!(!e.arrow().field(0).is_nullable() && !e.arrow().field(1).is_nullable());
    assert!(e.arrow().field(2).is_nullable());
    // Without a column list: the payment event, as before.
    assert!(
        !parse_query_file(FILE).unwrap().sources[0]
            .events
            .is_declared()
    );
    for (text, needle) in [
        (
            "CREATE SOURCE o (ts TIMESTAMP) WITH (connector = 'log', topic = 't')",
            "needs its event-time column",
        ),
        (
            "CREATE SOURCE o (ts TIMESTAMP) WITH (connector = 'log', topic = 't', event_time = 'at')",
            "names no declared column",
        ),
        (
            "CREATE SOURCE o (id BIGINT, ts TIMESTAMP, WATERMARK FOR ts AS ts) WITH (connector = 'log', topic = 't', dedup_key = 'id')",
            "deduplicated by a VARCHAR column",
        ),
        (
            "CREATE SOURCE o (ts TIMESTAMP, WATERMARK FOR ts AS ts) WITH (connector = 'log', topic = 't', watermark_delay = '1s')",
            "keep one",
        ),
        (
            "CREATE SOURCE o WITH (connector = 'log', topic = 't', dedup_key = 'payment_id')",
            "declare the source's columns",
        ),
        (
            "CREATE SOURCE o WITH (connector = 'log', topic = 't', event_time = 'ts')",
            "declare the source's columns",
        ),
        (
            "CREATE SINK s (a INT) WITH (connector = 'log', topic = 't')",
            "takes no column list",
        ),
        (
            "CREATE SOURCE o (ts TIMESTAMP, WATERMARK FOR ts AS ts WITH (connector = 'log', topic = 't')",
            "no closing",
        ),
        (
            "CREATE SOURCE o (ts TIMESTAMP, o BIGINT METADATA FROM 'offset', WATERMARK FOR ts AS ts) WITH (connector = 'log', topic = 't')",
            "a 'log' source's records have no record metadata",
        ),
        (
            "CREATE SOURCE o (ts TIMESTAMP, k VARCHAR METADATA FROM 'key', WATERMARK FOR ts AS ts) WITH (connector = 'file', path = 'x.jsonl')",
            "column `k` reads METADATA FROM 'key'",
        ),
    ] {
        let e = parse_query_file(&format!("{text};\nINSERT INTO x SELECT 1;"))
            .unwrap_err()
            .to_string();
        assert!(e.contains(needle) && e.contains("line 1"), "{text}: {e}");
    }
}

#[test]
fn a_replay_query_may_declare_its_source_first() {
    let q = parse_replay_query("SELECT 1").unwrap();
    assert!(q.source.is_none() && q.select == "SELECT 1");
    let q = parse_replay_query(
        "-- orders\nCREATE SOURCE orders (id VARCHAR, ts TIMESTAMP,\n  WATERMARK FOR ts AS ts - INTERVAL '1' MINUTE);\n  SELECT id FROM orders;\n",
    )
    .unwrap();
    let s = q.source.unwrap();
    assert_eq!(
        (s.name.as_str(), s.watermark_delay),
        ("orders", Some(60_000))
    );
    assert!(s.events.id_column().is_none());
    // The SELECT keeps its line and column.
    assert_eq!(q.select.lines().nth(3), Some("  SELECT id FROM orders"));
    let e = parse_replay_query("CREATE SOURCE o (ts TIMESTAMP, WATERMARK FOR ts AS ts);")
        .unwrap_err()
        .to_string();
    assert!(e.contains("no SELECT"), "{e}");
    let e = parse_replay_query(
        "CREATE SOURCE o (ts TIMESTAMP, WATERMARK FOR ts AS ts);\nSELECT 1;\nSELECT 2;",
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("line 3") && e.contains("paystream run"), "{e}");
}

/// A replay query file takes the engine settings a `run` file does (what a replay can use):
/// they are taken out of the SELECT's text, which keeps its lines; parameters still work
/// beside them; settings a replay cannot use, unknown ones, bad values and repeats are refused
/// at their line.
#[test]
fn a_replay_query_takes_engine_settings() {
    let q = parse_replay_query(
        "SET state_ttl = '1h';\nSET min_n = '3';\nSET workers = '1';\nSELECT count(*) FROM payments HAVING count(*) >= ${min_n};\n",
    )
    .unwrap();
    assert_eq!(q.settings.get("state_ttl").map(String::as_str), Some("1h"));
    assert_eq!(q.settings.get("workers").map(String::as_str), Some("1"));
    assert_eq!(q.settings.len(), 2, "{:?}", q.settings);
    assert_eq!(
        q.select.lines().nth(3),
        Some("SELECT count(*) FROM payments HAVING count(*) >= 3")
    );
    assert!(q.select.lines().take(3).all(|l| l.trim().is_empty()));
    for (text, needle) in [
        (
            "\nSET checkpoint_interval = '1s';\nSELECT 1",
            "paystream run",
        ),
        ("\nSET idle_timeout = '1s';\nSELECT 1", "paystream run"),
        (
            "\nSET colour = 'red';\nSELECT 1",
            "unknown setting `colour`",
        ),
        ("\nSET state_ttl = 'soon';\nSELECT 1", "state_ttl"),
        ("\nSET workers = '0';\nSELECT 1", "at least 1"),
    ] {
        let e = parse_replay_query(text).unwrap_err().to_string();
        assert!(e.contains(needle) && e.contains("line 2"), "{text}: {e}");
    }
    let e = parse_replay_query("SET workers = '2';\nSET workers = '3';\nSELECT 1")
        .unwrap_err()
        .to_string();
    assert!(e.contains("SET twice") && e.contains("line 2"), "{e}");
}

#[test]
fn unknown_options_and_statements_are_named() {
    let e = parse_query_file("CREATE SOURCE p WITH (connector = 'log', topic = 't', colour = 'red');\nINSERT INTO x SELECT 1;").unwrap_err().to_string();
    assert!(e.contains("unknown option `colour`"), "{e}");
    let e = parse_query_file("CREATE SINK s WITH (connector = 'kinesis');")
        .unwrap_err()
        .to_string();
    assert!(e.contains("unknown connector 'kinesis'"), "{e}");
    let e = parse_query_file("CREATE SINK s WITH (connector = 'kafka');")
        .unwrap_err()
        .to_string();
    assert!(e.contains("needs option `topic`"), "{e}");
    let e = parse_query_file("\n\nDROP TABLE x;")
        .unwrap_err()
        .to_string();
    assert!(e.contains("line 3") && e.contains("DROP"), "{e}");
    let e = parse_query_file("SET colour = 'red'; INSERT INTO x SELECT 1;")
        .unwrap_err()
        .to_string();
    assert!(e.contains("unknown setting `colour`"), "{e}");
    let e = parse_query_file("CREATE SOURCE p WITH (connector = 'log');")
        .unwrap_err()
        .to_string();
    assert!(e.contains("needs option `topic`"), "{e}");
}

#[test]
fn an_option_error_names_the_option_s_own_line() {
    let text = "CREATE SOURCE payments WITH (\n  connector = 'log',\n  topic = 'payments',\n  watermark_delay = 'soon',\n  colour = 'red');\nINSERT INTO x SELECT * FROM payments;";
    let e = parse_query_file(text).unwrap_err().to_string();
    assert!(e.contains("line 4") && e.contains("watermark_delay"), "{e}");
    let text = text.replace("'soon'", "'5s'");
    let e = parse_query_file(&text).unwrap_err().to_string();
    assert!(
        e.contains("line 5") && e.contains("unknown option `colour`"),
        "{e}"
    );
    let sink = "CREATE SOURCE payments WITH (connector = 'log', topic = 'payments');\nCREATE SINK x WITH (connector = 'log',\n  topic = 'x',\n  format = 'csv');\nINSERT INTO x SELECT * FROM payments;";
    let e = parse_query_file(sink).unwrap_err().to_string();
    assert!(e.contains("line 4") && e.contains("format 'csv'"), "{e}");
}

#[test]
fn a_last_insert_without_semicolon_keeps_its_select_whole() {
    for end in ["", "\n", "\n\n  \n"] {
        let text = format!(
            "CREATE SOURCE payments WITH (connector = 'log', topic = 'payments');\nINSERT INTO x\nSELECT event_id FROM payments{end}"
        );
        let f = parse_query_file(&text).unwrap();
        assert_eq!(
            f.inserts[0].select.trim(),
            "SELECT event_id FROM payments",
            "{end:?}"
        );
        assert_eq!(f.inserts[0].select.lines().count(), 3);
    }
}
