use super::*;
use datafusion::arrow::array::{ArrayRef, AsArray};
use datafusion::arrow::datatypes::{Field, Schema};

fn decoder() -> DeclaredDecoder {
    let ts = crate::schema::timestamp_type();
    let arrow = Arc::new(Schema::new(vec![
        Field::new("order_id", DataType::Utf8, false),
        Field::new("ts", ts, false),
        Field::new("amount_minor", DataType::Int64, true),
        Field::new("qty", DataType::Int32, true),
        Field::new("score", DataType::Float64, true),
        Field::new("gift", DataType::Boolean, true),
        Field::new("note", DataType::Utf8, true).with_metadata(
            [(MAX_CHARS.to_string(), "24".to_string())]
                .into_iter()
                .collect(),
        ),
    ]));
    let events = EventSchema::declared("orders", arrow, Some("order_id"), "ts").unwrap();
    DeclaredDecoder::new(Arc::new(events)).unwrap()
}

#[test]
fn json_values_fill_their_columns_in_any_order_and_spelling() {
    let d = decoder();
    let text = concat!(
        r#"{"order_id":"o1","ts":"2026-11-01T00:00:00Z","amount_minor":1250,"qty":2,"score":0.5,"gift":true,"note":"hi"}"#,
        "\n",
        r#"{ "note" : null, "extra": {"a": [1, "x"]}, "ts": 1793491200001, "order_id": "o\u0032" }"#,
        "\n\n",
    );
    let out = d.json_lines(text.as_bytes(), 1, 100, 3, None);
    assert!(out.rejects.is_empty(), "{:?}", out.rejects);
    // An epoch-millisecond time in a BIGINT is no card number (one in ten passes Luhn).
    let t =
        r#"{"order_id":"o","ts":1,"amount_minor":1700000000004,"note":"ééééééééééééééééééééééé"}"#;
    assert!(
        d.json_lines(t.as_bytes(), 1, 10, 1, None)
            .rejects
            .is_empty()
    );
    assert_eq!((out.records, out.unknown_fields), (2, 1));
    let b = &out.batches[0].batch;
    assert_eq!(b.num_rows(), 2);
    let ids = b.column(0).as_string::<i32>();
    assert_eq!((ids.value(0), ids.value(1)), ("o1", "o2"));
    let ts = b
        .column(1)
        .as_primitive::<datafusion::arrow::datatypes::TimestampMillisecondType>();
    assert_eq!(ts.value(0), 1_793_491_200_000);
    assert_eq!(ts.value(1), 1_793_491_200_001);
    assert!(b.column(2).is_null(1) && b.column(6).is_null(1));
    assert_eq!(
        b.column(4)
            .as_primitive::<datafusion::arrow::datatypes::Float64Type>()
            .value(0),
        0.5
    );
    assert!(b.column(5).as_boolean().value(0));
    assert_eq!(out.batches[0].positions, vec![1, 2]);
}

#[test]
fn values_that_do_not_fit_are_rejected_naming_the_column() {
    let d = decoder();
    let base = r#""order_id":"o1","ts":"2026-11-01T00:00:00Z""#;
    for (members, reason, needle) in [
        (
            r#""amount_minor":"12""#,
            RejectReason::WrongType,
            "column `amount_minor` is BIGINT",
        ),
        (
            r#""amount_minor":12.5"#,
            RejectReason::WrongType,
            "`amount_minor`",
        ),
        (
            r#""amount_minor":123456789012345678901"#,
            RejectReason::OutOfRange,
            "`amount_minor`",
        ),
        (
            r#""qty":3000000000"#,
            RejectReason::OutOfRange,
            "column `qty` is INT",
        ),
        (
            r#""gift":"yes""#,
            RejectReason::WrongType,
            "column `gift` is BOOLEAN",
        ),
        (
            r#""score":"0.5""#,
            RejectReason::WrongType,
            "column `score` is DOUBLE",
        ),
        (
            r#""note":5"#,
            RejectReason::WrongType,
            "column `note` is VARCHAR",
        ),
        (
            r#""note":"4111 1111 1111 1111""#,
            RejectReason::CardNumber,
            "column `note`",
        ),
        (
            r#""other":"4111111111111111""#,
            RejectReason::CardNumber,
            "`other`",
        ),
        (
            r#""amount_minor":4111111111111111"#,
            RejectReason::CardNumber,
            "column `amount_minor`",
        ),
        (
            r#""gift":"4111 1111 1111 1111""#,
            RejectReason::CardNumber,
            "column `gift`",
        ),
        (
            r#""score":4111111111111111"#,
            RejectReason::CardNumber,
            "column `score`",
        ),
        (
            r#""score":9007199254740993"#,
            RejectReason::OutOfRange,
            "column `score`",
        ),
        (
            r#""amount_minor":12.0"#,
            RejectReason::WrongType,
            "whole number",
        ),
        (
            r#""note":"ééééééééééééééééééééééééé""#,
            RejectReason::OutOfRange,
            "VARCHAR(24)",
        ),
    ] {
        let line = format!("{{{base},{members}}}");
        let out = d.json_lines(line.as_bytes(), 7, 100, 1, None);
        assert_eq!(out.records, 1);
        assert!(out.batches.is_empty(), "{line}");
        let r = &out.rejects[0];
        assert_eq!((r.reason, r.position), (reason, 7), "{line}: {}", r.detail);
        assert!(r.detail.contains(needle), "{line}: {}", r.detail);
        assert!(!r.raw.contains("4111111111111111") && !r.detail.contains("4111"));
    }
    for (line, reason) in [
        (
            r#"{"ts":"2026-11-01T00:00:00Z"}"#,
            RejectReason::MissingField,
        ),
        (
            r#"{"order_id":null,"ts":"2026-11-01T00:00:00Z"}"#,
            RejectReason::NullField,
        ),
        (
            r#"{"order_id":"o","ts":"yesterday"}"#,
            RejectReason::BadTimestamp,
        ),
        (
            r#"{"order_id":"o","ts":"2026-11-01T00:00:00"}"#,
            RejectReason::BadTimestamp,
        ),
        (
            r#"{"order_id":"o","ts":"1793491200000"}"#,
            RejectReason::BadTimestamp,
        ),
        (r#"{"order_id":"o","ts":-1}"#, RejectReason::BadTimestamp),
        (
            r#"{"order_id":"o","ts":1793491200000000}"#,
            RejectReason::BadTimestamp,
        ),
        (
            r#"{"order_id":"o","ts":-9223372036854775808}"#,
            RejectReason::BadTimestamp,
        ),
        (
            r#"{"order_id":"o","order_id":"p","ts":1}"#,
            RejectReason::InvalidValue,
        ),
        (r#"{"order_id":"o""#, RejectReason::Malformed),
    ] {
        let out = d.json_lines(line.as_bytes(), 1, 100, 1, None);
        assert_eq!(out.rejects.len(), 1, "{line}");
        assert_eq!(
            out.rejects[0].reason, reason,
            "{line}: {}",
            out.rejects[0].detail
        );
    }
}

#[test]
fn csv_cells_are_parsed_strictly_by_column_type() {
    let d = decoder();
    let header =
        CsvHeader::parse_names("ts,order_id,amount_minor,colour,gift,qty,score,note").unwrap();
    assert!(d.csv_columns(&header).is_ok());
    let text = "2026-11-01T00:00:00Z,o1,12,red,TRUE,,,\n1793491200000,o2,,blue,,,,\n2026-11-01T00:00:00Z,o3,1.5,x,,,,\n";
    let out = d.csv(text.as_bytes(), 2, &header, 100);
    assert_eq!((out.records, out.unknown_fields), (3, 3));
    assert_eq!(out.batches[0].batch.num_rows(), 2);
    assert_eq!(out.rejects[0].reason, RejectReason::WrongType);
    assert_eq!(out.rejects[0].position, 4);
    let missing = CsvHeader::parse_names("ts,Order_Id,amount_minor").unwrap();
    let e = d.csv_columns(&missing).unwrap_err();
    assert!(
        e.contains("order_id") && e.contains("case-sensitive"),
        "{e}"
    );
}

#[test]
fn parquet_columns_are_read_by_name_and_checked_like_json_values() {
    use datafusion::arrow::array::{Int32Array, StringArray, TimestampMicrosecondArray};
    let d = decoder();
    let schema = Arc::new(Schema::new(vec![
        Field::new("extra", DataType::Utf8, true),
        Field::new("amount_minor", DataType::Int32, true),
        Field::new("ts", DataType::Timestamp(TimeUnit::Microsecond, None), true),
        Field::new("order_id", DataType::Utf8, true),
        Field::new("qty", DataType::Utf8, true),
        Field::new("score", DataType::Utf8, true),
        Field::new("gift", DataType::Utf8, true),
        Field::new("note", DataType::Utf8, true),
    ]));
    assert!(d.parquet_columns(&schema).is_ok());
    let s = |v: Vec<Option<&str>>| Arc::new(StringArray::from(v)) as ArrayRef;
    let batch = RecordBatch::try_new(
        Arc::clone(&schema),
        vec![
            s(vec![Some("x"), Some("4111111111111111"), None]),
            Arc::new(Int32Array::from(vec![Some(5), Some(6), Some(7)])),
            Arc::new(TimestampMicrosecondArray::from(vec![
                Some(1_793_491_200_000_000),
                Some(1_793_491_200_000_000),
                None,
            ])),
            s(vec![Some("o1"), Some("o2"), Some("o3")]),
            s(vec![None, None, None]),
            s(vec![None, None, None]),
            s(vec![None, None, None]),
            s(vec![None, None, None]),
        ],
    )
    .unwrap();
    let out = d.parquet(&batch, 1, 100);
    assert_eq!((out.records, out.unknown_fields), (3, 3));
    assert_eq!(out.batches[0].batch.num_rows(), 1);
    let reasons: Vec<_> = out.rejects.iter().map(|r| (r.reason, r.position)).collect();
    assert_eq!(
        reasons,
        [(RejectReason::CardNumber, 2), (RejectReason::NullField, 3)]
    );
    // A string where a number is declared is refused, naming the column.
    let e = d.parquet(
        &RecordBatch::try_new(
            Arc::new(Schema::new(vec![
                Field::new("order_id", DataType::Utf8, false),
                Field::new("ts", DataType::Utf8, false),
                Field::new("qty", DataType::Utf8, false),
            ])),
            vec![
                s(vec![Some("o")]),
                s(vec![Some("2026-11-01T00:00:00Z")]),
                s(vec![Some("2")]),
            ],
        )
        .unwrap(),
        1,
        10,
    );
    assert_eq!(
        e.rejects[0].reason,
        RejectReason::WrongType,
        "{:?}",
        e.rejects
    );
    assert!(e.rejects[0].detail.contains("column `qty`"));
    // A Parquet decimal where an integer is declared is called a decimal.
    let decimal = datafusion::arrow::array::Decimal128Array::from(vec![Some(250)])
        .with_precision_and_scale(10, 2)
        .unwrap();
    let e = d.parquet(
        &RecordBatch::try_new(
            Arc::new(Schema::new(vec![
                Field::new("order_id", DataType::Utf8, false),
                Field::new("ts", DataType::Utf8, false),
                Field::new("qty", DataType::Decimal128(10, 2), false),
            ])),
            vec![
                s(vec![Some("o")]),
                s(vec![Some("2026-11-01T00:00:00Z")]),
                Arc::new(decimal),
            ],
        )
        .unwrap(),
        1,
        10,
    );
    assert_eq!(e.rejects[0].reason, RejectReason::WrongType);
    assert!(
        e.rejects[0].detail.contains("a decimal"),
        "{}",
        e.rejects[0].detail
    );
    let missing = Schema::new(vec![Field::new("ts", DataType::Utf8, false)]);
    assert!(
        d.parquet_columns(&missing)
            .unwrap_err()
            .contains("order_id")
    );
}

#[test]
fn equal_values_hash_alike_whatever_their_spelling() {
    let d = decoder();
    let a = d.json_lines(
        br#"{"order_id":"o1","ts":"2026-11-01T00:00:00Z","amount_minor":5}"#,
        1,
        10,
        1,
        None,
    );
    let b = d.json_lines(
        br#"{"amount_minor":5, "x":1, "ts":1793491200000,"order_id":"o1"}"#,
        1,
        10,
        1,
        None,
    );
    let c = d.json_lines(
        br#"{"order_id":"o1","ts":"2026-11-01T00:00:00Z","amount_minor":6}"#,
        1,
        10,
        1,
        None,
    );
    let h = |d: &Decoded| d.batches[0].payload_hashes[0];
    assert_eq!(h(&a), h(&b));
    assert_ne!(h(&a), h(&c));
}

/// Whatever a declared schema's names look like (short, long past the 16-byte key compare,
/// one a prefix of another, sharing first bytes) and whatever order, spacing and extra members
/// a line has, every member lands in its own column and only members outside the schema are
/// counted as unknown — checked against serde_json's reading of the same lines.
#[test]
fn keys_are_found_by_name_in_any_order_spacing_and_length() {
    use rand::seq::SliceRandom;
    use rand::{Rng, SeedableRng};
    let names = [
        "a",
        "ab",
        "abc",
        "id",
        "ts",
        "amount",
        "amount_minor",
        "amount_minor_x",
        "amount_minor_xyz",
        "a_rather_long_column_name",
        "b",
        "ba",
        "merchant",
        "merchant_id",
    ];
    let mut fields = vec![Field::new("ts", crate::schema::timestamp_type(), false)];
    fields.extend(
        names
            .iter()
            .filter(|n| **n != "ts")
            .map(|n| Field::new(*n, DataType::Utf8, true)),
    );
    let arrow = Arc::new(Schema::new(fields));
    let events = EventSchema::declared("t", arrow.clone(), None, "ts").unwrap();
    let d = DeclaredDecoder::new(Arc::new(events)).unwrap();
    let others = [
        "abcd",
        "amount_min",
        "amount_minor_xy",
        "merchant_i",
        "c",
        "ts_",
    ];
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let mut lines = Vec::new();
    for n in 0..2_000 {
        let mut members: Vec<(String, String)> = vec![("ts".into(), format!("{}", 1_000 + n))];
        for name in names.iter().filter(|k| **k != "ts") {
            if rng.random_bool(0.7) {
                members.push((name.to_string(), format!("\"{name}={n}\"")));
            }
        }
        for name in others {
            if rng.random_bool(0.2) {
                members.push((name.to_string(), format!("\"x{n}\"")));
            }
        }
        members.shuffle(&mut rng);
        let colon = if rng.random_bool(0.2) { " : " } else { ":" };
        let body: Vec<String> = members
            .iter()
            .map(|(k, v)| format!("\"{k}\"{colon}{v}"))
            .collect();
        lines.push(format!("{{{}}}", body.join(",")));
    }
    let text = lines.join("\n");
    let out = d.json_lines(text.as_bytes(), 1, 10_000, lines.len(), None);
    assert!(out.rejects.is_empty(), "{:?}", out.rejects);
    let batch = &out.batches[0].batch;
    assert_eq!(batch.num_rows(), lines.len());
    let mut unknown = 0;
    for (row, line) in lines.iter().enumerate() {
        let v: serde_json::Map<String, serde_json::Value> = serde_json::from_str(line).unwrap();
        unknown += v.keys().filter(|k| !names.contains(&k.as_str())).count();
        for (c, field) in arrow.fields().iter().enumerate().skip(1) {
            let col = batch.column(c).as_string::<i32>();
            let want = v.get(field.name()).and_then(|v| v.as_str());
            let got = batch.column(c).is_valid(row).then(|| col.value(row));
            assert_eq!(got, want, "column {} of {line}", field.name());
        }
    }
    assert_eq!(out.unknown_fields as usize, unknown);
}

/// A decoder of `id`, `ts` and three metadata columns: key, offset, a header.
fn meta_decoder() -> DeclaredDecoder {
    let meta = |k: &str| {
        [(METADATA.to_string(), k.to_string())]
            .into_iter()
            .collect::<std::collections::HashMap<_, _>>()
    };
    let arrow = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Utf8, false),
        Field::new("ts", crate::schema::timestamp_type(), false),
        Field::new("k", DataType::Utf8, true).with_metadata(meta("key")),
        Field::new("offset", DataType::Int64, false).with_metadata(meta("offset")),
        Field::new("trace", DataType::Utf8, true).with_metadata(meta("header.trace")),
    ]));
    let events = EventSchema::declared("p", arrow, Some("id"), "ts").unwrap();
    DeclaredDecoder::new(Arc::new(events)).unwrap()
}

#[test]
fn metadata_columns_come_from_the_records_metadata_never_the_payload() {
    let d = meta_decoder();
    let mut m = RecordMeta::new(3);
    for (key, offset, trace) in [(Some("a"), 10, None), (None, 11, Some("t2"))] {
        match key {
            Some(k) => m.push_text(k),
            None => m.values.push(MetaValue::Null),
        }
        m.values.push(MetaValue::Int(offset));
        match trace {
            Some(t) => m.push_text(t),
            None => m.values.push(MetaValue::Null),
        }
    }
    // The payload's own `offset` member is an unknown member, not the column's value.
    let text = "{\"id\":\"e1\",\"ts\":1,\"offset\":99}\n{\"id\":\"e1\",\"ts\":1}\n";
    let out = d.json_lines(text.as_bytes(), 10, 100, 2, Some(&m));
    assert!(out.rejects.is_empty(), "{:?}", out.rejects);
    assert_eq!(out.unknown_fields, 1);
    let b = &out.batches[0];
    let col = |n: &str| b.batch.column_by_name(n).unwrap().clone();
    assert_eq!(
        col("offset")
            .as_primitive::<datafusion::arrow::datatypes::Int64Type>()
            .values()
            .to_vec(),
        [10, 11]
    );
    let k = col("k");
    assert_eq!((k.as_string::<i32>().value(0), k.is_null(1)), ("a", true));
    let t = col("trace");
    assert_eq!((t.is_null(0), t.as_string::<i32>().value(1)), (true, "t2"));
    // A producer's retry (same payload, other offset and key) hashes as the original.
    assert_eq!(b.payload_hashes[0], b.payload_hashes[1]);

    // No metadata, metadata that is no text, a card number in a key: the record is refused.
    let one = "{\"id\":\"e1\",\"ts\":1}";
    // A card number in the payload is the reason, before a fault in the metadata.
    let mut m = RecordMeta::new(3);
    m.values.extend([
        MetaValue::Invalid("the record's key is not UTF-8 text"),
        MetaValue::Int(1),
        MetaValue::Null,
    ]);
    let card = "{\"id\":\"4111111111111111\",\"ts\":1}";
    let out = d.json_lines(card.as_bytes(), 1, 10, 1, Some(&m));
    assert_eq!(
        out.rejects[0].reason,
        RejectReason::CardNumber,
        "{:?}",
        out.rejects
    );
    let out = d.json_lines(one.as_bytes(), 1, 10, 1, None);
    assert!(
        out.rejects[0].detail.contains("without metadata"),
        "{:?}",
        out.rejects
    );
    for (key, want) in [
        (
            MetaValue::Invalid("the record's key is not UTF-8 text"),
            "`k`: the record's key",
        ),
        (MetaValue::Text(0, 16), "card number"),
    ] {
        let mut m = RecordMeta::new(3);
        m.text.push_str("4111111111111111");
        m.values.extend([key, MetaValue::Int(1), MetaValue::Null]);
        let out = d.json_lines(one.as_bytes(), 1, 10, 1, Some(&m));
        assert_eq!(out.rejects.len(), 1, "{want}");
        assert!(out.rejects[0].detail.contains(want), "{:?}", out.rejects);
        assert!(!out.rejects[0].detail.contains("4111111111111111"));
    }
}

/// Every JSON line decodes the same with the fast path as by the general route alone: the same
/// rows, values, payload hashes and spans, the same rejects with the same reasons — over lines
/// with members in any order and spacing, absent and `null`, values of every kind in every
/// column, escapes, card numbers, unknown members of any shape, members given twice and
/// garbage after the object.
#[test]
fn the_fast_path_decodes_every_line_as_the_general_route_does() {
    use rand::seq::{IndexedRandom, SliceRandom};
    use rand::{Rng, SeedableRng};
    let fast = decoder();
    let general = decoder().general_route_only();
    // `note`, a VARCHAR no query reads, left out: everything else as the whole decoder's.
    let projected = Arc::new(decoder()).projected(&Projection::of_names(["qty", "score"]));
    assert!(projected.whole.is_some() && !projected.built[6]);
    // Projected again, it starts from the decoder that builds every column.
    let all = projected.projected(&Projection::ALL);
    assert!(all.whole.is_none() && all.built.iter().all(|b| *b));
    let again = projected.projected(&Projection::of_names(["gift"]));
    assert!(again.whole.as_ref().is_some_and(|w| w.whole.is_none()));
    let mut rng = rand::rngs::StdRng::seed_from_u64(29);
    let any: &[&str] = &[
        r#""o1""#,
        r#""""#,
        r#""é""#,
        r#""a\"b""#,
        r#""4111111111111111""#,
        r#""4111 1111 1111 1111""#,
        r#""xxxxxxxxxxxxxxxxxxxxxxxxxxxxx""#,
        r#""éééééééééééééééééééé""#,
        r#""2026-11-01T00:00:00Z""#,
        r#""2026-11-01T00:00:01.500Z""#,
        r#""2026-11-01T00:00:01.500+02:00""#,
        r#""not a time""#,
        r#""12""#,
        "0",
        "-0",
        "12",
        "-5",
        "01",
        "12.5",
        "1e3",
        "-0.0",
        "1.0",
        "0.1",
        "1e400",
        "1700000000004",
        "4111111111111111",
        "123456789012345678901",
        "2147483648",
        "1793491200001",
        "9007199254740993",
        "1000000000000.0",
        "4111111111111111.0",
        "-1",
        "true",
        "false",
        "null",
        "tru",
        "nul",
        "{}",
        r#"[1, "x"]"#,
        r#"{"a":"4111111111111111"}"#,
        "[4111111111111111]",
        r#"{"4111111111111111": 1}"#,
    ];
    let names = [
        "order_id",
        "ts",
        "amount_minor",
        "qty",
        "score",
        "gift",
        "note",
    ];
    let good = |rng: &mut rand::rngs::StdRng, k: usize| -> String {
        match k {
            0 => format!("\"o{}\"", rng.random_range(0..1000)),
            1 if rng.random_bool(0.5) => format!(
                "\"2026-11-01T00:{:02}:{:02}.{:03}Z\"",
                rng.random_range(0..3),
                rng.random_range(0..60),
                rng.random_range(0..1000)
            ),
            1 => format!("{}", 1_793_491_200_000i64 + rng.random_range(0..200_000)),
            2 => format!("{}", rng.random_range(0..1_000_000_000i64)),
            3 => format!("{}", rng.random_range(-100..100)),
            4 => format!("{}.{}", rng.random_range(0..100), rng.random_range(0..100)),
            5 => ["true", "false"].choose(rng).unwrap().to_string(),
            _ => format!("\"n{}\"", rng.random_range(0..100)),
        }
    };
    let mut lines = Vec::new();
    for _ in 0..30_000 {
        let mut members: Vec<(String, String)> = Vec::new();
        for (k, name) in names.iter().enumerate() {
            if rng.random_bool(0.9) {
                let v = if rng.random_bool(0.8) {
                    good(&mut rng, k)
                } else {
                    any.choose(&mut rng).unwrap().to_string()
                };
                members.push((name.to_string(), v));
            }
        }
        for _ in 0..rng.random_range(0..3) {
            let name = ["extra", "x_y", "4111111111111111", "a\\u0062"]
                .choose(&mut rng)
                .unwrap();
            members.push((name.to_string(), any.choose(&mut rng).unwrap().to_string()));
        }
        if rng.random_bool(0.02) && !members.is_empty() {
            let twice = members[0].clone();
            members.push(twice);
        }
        members.shuffle(&mut rng);
        let sep = [",", ", ", " , ", ",\t"].choose(&mut rng).unwrap();
        let colon = [":", ": ", " :", "\t:\t"].choose(&mut rng).unwrap();
        let body: Vec<String> = members
            .iter()
            .map(|(k, v)| format!("\"{k}\"{colon}{v}"))
            .collect();
        let mut line = format!("{{{}}}", body.join(sep));
        match rng.random_range(0..50) {
            0 => line.push_str(" x"),
            1 => line.insert(0, '\u{feff}'),
            2 => line.insert(0, ' '),
            3 => line.push_str(" \r"),
            4 => line.pop().map(|_| ()).unwrap_or(()),
            _ => {}
        }
        lines.push(line);
    }
    let mut accepted = 0;
    for (n, chunk) in lines.chunks(97).enumerate() {
        let text = chunk.join("\n");
        let first = 1 + 97 * n as u64;
        let batch = rng.random_range(1..40);
        let a = fast.json_lines(text.as_bytes(), first, batch, chunk.len(), None);
        let b = general.json_lines(text.as_bytes(), first, batch, chunk.len(), None);
        accepted += crate::decode::assert_same_decoded(&a, &b, &format!("chunk {n}"));
        let p = projected.json_lines(text.as_bytes(), first, batch, chunk.len(), None);
        assert_eq!(p.rejects, b.rejects, "chunk {n}");
        assert_eq!(p.batches.len(), b.batches.len());
        for (x, y) in p.batches.iter().zip(&b.batches) {
            assert!(matches!(
                &x.projected,
                Some(crate::decode::Redecode::Declared(_))
            ));
            assert!(y.projected.is_none());
            assert_eq!(x.payload_hashes, y.payload_hashes);
            assert_eq!(x.raw_spans, y.raw_spans);
            for c in 0..names.len() {
                if c == 6 {
                    let notes = x.batch.column(c).as_string::<i32>();
                    assert!(notes.iter().all(|v| v == Some("")), "chunk {n}");
                } else {
                    assert_eq!(x.batch.column(c), y.batch.column(c), "chunk {n} column {c}");
                }
            }
        }
    }
    // The lines were varied enough that accepting and refusing both happened often, and the
    // fast path took most of what was accepted (it declines escapes and integers from 10^12,
    // which the general route may accept).
    let rejected: usize = lines.len() - accepted;
    let mut path = fast::FastDeclared::default();
    let mut row = fast::FastRow {
        vals: vec![0; names.len()],
        ..Default::default()
    };
    let taken = lines
        .iter()
        .filter(|l| path.row(&general, l, &mut row).is_some())
        .count();
    assert!(
        accepted > 3_000 && rejected > 3_000,
        "{accepted} {rejected}"
    );
    assert!(taken * 2 > accepted, "{taken} of {accepted}");
}

/// Names over the 14 bytes a key pattern holds take the fast path's general lookup: the same
/// rows, hashes and rejects as the general route, and the fast path still takes the lines.
#[test]
fn long_column_names_decode_alike_on_both_routes() {
    use rand::seq::{IndexedRandom, SliceRandom};
    use rand::{Rng, SeedableRng};
    let arrow = Arc::new(Schema::new(vec![
        Field::new("merchant_reference_code", DataType::Utf8, false),
        Field::new("ts", crate::schema::timestamp_type(), false),
        Field::new("amount_minor_units_total", DataType::Int64, true),
    ]));
    let events = EventSchema::declared("long", arrow, Some("merchant_reference_code"), "ts");
    let fast = DeclaredDecoder::new(Arc::new(events.unwrap())).unwrap();
    let general = fast.clone().general_route_only();
    let mut rng = rand::rngs::StdRng::seed_from_u64(41);
    let mut lines = Vec::new();
    for i in 0..3_000 {
        let mut members = vec![
            format!(r#""merchant_reference_code":"m{i}""#),
            format!(r#""ts":{}"#, 1_793_491_200_000i64 + i),
        ];
        if rng.random_bool(0.8) {
            let v = ["12", "null", "\"12\"", "1.5", "4111111111111111"]
                .choose(&mut rng)
                .unwrap();
            members.push(format!(r#""amount_minor_units_total" : {v}"#));
        }
        if rng.random_bool(0.3) {
            members.push(r#""merchant_reference_codes":"x""#.to_string());
        }
        members.shuffle(&mut rng);
        lines.push(format!("{{{}}}", members.join(",")));
    }
    let text = lines.join("\n");
    let a = fast.json_lines(text.as_bytes(), 1, 500, lines.len(), None);
    let b = general.json_lines(text.as_bytes(), 1, 500, lines.len(), None);
    assert_eq!((a.records, a.unknown_fields), (b.records, b.unknown_fields));
    assert_eq!(a.rejects, b.rejects);
    assert_eq!(a.batches.len(), b.batches.len());
    for (x, y) in a.batches.iter().zip(&b.batches) {
        assert_eq!(x.batch, y.batch);
        assert_eq!(x.payload_hashes, y.payload_hashes);
    }
    let mut path = fast::FastDeclared::default();
    let mut row = fast::FastRow {
        vals: vec![0; 3],
        ..Default::default()
    };
    let taken = lines
        .iter()
        .filter(|l| path.row(&fast, l, &mut row).is_some())
        .count();
    assert!(taken > 1_000, "{taken}");
}

/// The CSV fast path decides every record as the general route does — rows, payload hashes,
/// spans, rejects and counts — over records of every column kind written under shuffled headers
/// with extra columns, with cells that fit and cells that do not (quotes, signs, fractions,
/// card numbers, out-of-range numbers, epoch and RFC 3339 times, empty NOT NULL cells, too few
/// or too many cells), and it takes most of the accepted ones.
#[test]
fn the_csv_fast_path_decodes_every_record_as_the_general_route_does() {
    use rand::seq::{IndexedRandom, SliceRandom};
    use rand::{Rng, SeedableRng};
    let fast = decoder();
    let general = decoder().general_route_only();
    let mut rng = rand::rngs::StdRng::seed_from_u64(5150);
    let cell = |rng: &mut rand::rngs::StdRng, name: &str| -> String {
        let good = match name {
            "order_id" => format!("o{}", rng.random_range(0..1000)),
            "ts" if rng.random_bool(0.3) => {
                format!("17304192{:05}", rng.random_range(0..99_999))
            }
            "ts" => format!(
                "2026-11-01T00:{:02}:{:02}.{:03}Z",
                rng.random_range(0..3),
                rng.random_range(0..60),
                rng.random_range(0..1000)
            ),
            "amount_minor" => rng.random_range(-5_000i64..5_000_000).to_string(),
            "qty" => rng.random_range(0..100).to_string(),
            "score" => format!("{:.3}", rng.random_range(-10.0..10.0)),
            "gift" => ["true", "false", "TRUE", "False"]
                .choose(rng)
                .unwrap()
                .to_string(),
            "note" => ["hi", "a note", "ünïcode", ""]
                .choose(rng)
                .unwrap()
                .to_string(),
            _ => ["x", "7", "", "4111111111111111", "a b"]
                .choose(rng)
                .unwrap()
                .to_string(),
        };
        if rng.random_bool(0.85) {
            return good;
        }
        [
            "",
            "\"q\"",
            "-0",
            "+5",
            "007",
            "1.5",
            "1e3",
            "3000000000",
            "4111111111111111",
            "tok 4111 1111 1111 1111",
            "2026-13-01T00:00:00Z",
            "2026-11-01T00:00:00+01:00",
            "99999999999999999999",
            "yes",
            "nan",
            "1e400",
            "a-very-long-note-that-is-over-24-characters",
        ]
        .choose(rng)
        .unwrap()
        .to_string()
    };
    let (mut accepted, mut rejected, mut taken) = (0, 0, 0);
    for round in 0..60 {
        let mut names: Vec<&str> = vec![
            "order_id",
            "ts",
            "amount_minor",
            "qty",
            "score",
            "gift",
            "note",
        ];
        for extra in ["colour", "channel"] {
            if rng.random_bool(0.4) {
                names.push(extra);
            }
        }
        names.shuffle(&mut rng);
        let header = CsvHeader::parse_names(&names.join(",")).unwrap();
        let map = fast.csv_columns(&header).unwrap();
        let mut records = Vec::new();
        for _ in 0..80 {
            let mut cells: Vec<String> = names.iter().map(|n| cell(&mut rng, n)).collect();
            match rng.random_range(0..25) {
                0 => cells.push("extra".into()),
                1 => {
                    cells.pop();
                }
                _ => {}
            }
            let mut rec = cells.join(",");
            if rng.random_bool(0.05) {
                rec.push('\r');
            }
            records.push(rec);
        }
        let text = records.join("\n");
        let batch = rng.random_range(1..30);
        let a = fast.csv(text.as_bytes(), 2, &header, batch);
        let b = general.csv(text.as_bytes(), 2, &header, batch);
        accepted += crate::decode::assert_same_decoded(&a, &b, &format!("round {round}"));
        rejected += b.rejects.len();
        let mut path = fast::FastDeclared::default();
        let mut row = fast::FastRow {
            vals: vec![0; 7],
            ..Default::default()
        };
        taken += records
            .iter()
            .filter(|r| {
                let r = r.strip_suffix('\r').unwrap_or(r);
                !r.contains('"') && path.csv_row(&general, &map, r, &mut row).is_some()
            })
            .count();
    }
    assert!(
        accepted > 1_000 && rejected > 1_000,
        "{accepted} {rejected}"
    );
    assert!(taken * 10 > accepted * 9, "{taken} of {accepted}");
}

/// The Parquet fast path against the general route over generated batches: every declared
/// column in several Parquet types (its own, a wider or narrower one, text, a dictionary), extra
/// columns of text, numbers and lists, in any order, with nulls, card numbers, out-of-range and
/// wrong-typed values.
#[test]
fn the_parquet_fast_path_decodes_every_row_as_the_general_route_does() {
    use datafusion::arrow::array::{
        BooleanArray, DictionaryArray, Float32Array, Float64Array, Int32Array, Int64Array,
        ListArray, StringArray, TimestampMicrosecondArray, TimestampMillisecondArray, UInt64Array,
    };
    use datafusion::arrow::datatypes::{Int32Type, Int64Type};
    use rand::rngs::StdRng;
    use rand::seq::{IndexedRandom, SliceRandom};
    use rand::{Rng, SeedableRng};
    let fast = decoder();
    let general = decoder().general_route_only();
    let mut rng = StdRng::seed_from_u64(2718);
    let dict = DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8));
    let list = DataType::List(Arc::new(Field::new("item", DataType::Int64, true)));
    let types = |name: &str| -> Vec<DataType> {
        use DataType::*;
        match name {
            "order_id" | "note" | "colour" => vec![Utf8, dict.clone(), Int64],
            "ts" => vec![
                Timestamp(TimeUnit::Microsecond, None),
                Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
                Int64,
                Utf8,
            ],
            "amount_minor" | "qty" | "seq" => vec![Int64, Int32, UInt64, Float64, Utf8],
            "score" => vec![Float64, Float32, Int64, Utf8],
            "gift" => vec![Boolean, Utf8],
            _ => vec![list.clone()],
        }
    };
    let text = |rng: &mut StdRng, name: &str| -> String {
        if rng.random_bool(0.85) {
            return match name {
                "order_id" => format!("o{}", rng.random_range(0..1000)),
                "ts" => format!(
                    "2026-11-01T00:{:02}:{:02}.{:03}Z",
                    rng.random_range(0..3),
                    rng.random_range(0..60),
                    rng.random_range(0..1000)
                ),
                "note" => ["hi", "a note", "ünïcode", ""]
                    .choose(rng)
                    .unwrap()
                    .to_string(),
                "gift" => "true".into(),
                _ => rng.random_range(0..100).to_string(),
            };
        }
        [
            "",
            "4111111111111111",
            "tok 4111 1111 1111 1111",
            "2026-13-01T00:00:00Z",
            "2026-11-01T00:00:00+01:00",
            "2026-11-01T12:00:00.4111111111111111Z",
            "a-very-long-note-that-is-over-24-characters",
            "ünïcödé-ünïcödé-ünïcödé-ü",
            "ünïcödé-ünïcödé-ünïcödé",
            "false",
            "5",
        ]
        .choose(rng)
        .unwrap()
        .to_string()
    };
    let int = |rng: &mut StdRng, name: &str| -> i64 {
        if rng.random_bool(0.85) {
            return match name {
                "ts" => 1_793_491_200_000 + rng.random_range(0..200_000),
                "amount_minor" => rng.random_range(-5_000..5_000_000),
                _ => rng.random_range(0..100),
            };
        }
        *[
            4_111_111_111_111_111,
            1_000_000_000_000,
            999_999_999_999,
            -999_999_999_999,
            3_000_000_000,
            -3_000_000_000,
            i64::MAX,
            -1,
            0,
            253_402_300_800_000,
        ]
        .choose(rng)
        .unwrap()
    };
    let float = |rng: &mut StdRng| -> f64 {
        if rng.random_bool(0.85) {
            return rng.random_range(-10.0..10.0);
        }
        *[
            f64::NAN,
            f64::INFINITY,
            1e13,
            4_111_111_111_111_111.0,
            1e12 + 0.5,
            -0.0,
            2.0,
            1e300,
        ]
        .choose(rng)
        .unwrap()
    };
    let (mut accepted, mut rejected, mut taken) = (0, 0, 0);
    for round in 0..60 {
        let mut names = vec![
            "order_id",
            "ts",
            "amount_minor",
            "qty",
            "score",
            "gift",
            "note",
        ];
        for extra in ["colour", "seq", "tags"] {
            if rng.random_bool(0.3) {
                names.push(extra);
            }
        }
        names.shuffle(&mut rng);
        let rows = 80;
        let mut fields = Vec::new();
        let mut arrays: Vec<ArrayRef> = Vec::new();
        for name in &names {
            // Mostly the column's own type, so most rows can take the fast path.
            let options = types(name);
            let ty = if rng.random_bool(0.7) {
                options[0].clone()
            } else {
                options.choose(&mut rng).unwrap().clone()
            };
            let nulls: Vec<bool> = (0..rows).map(|_| rng.random_bool(0.06)).collect();
            let some = |v: Vec<i64>| -> Vec<Option<i64>> {
                v.into_iter()
                    .zip(&nulls)
                    .map(|(v, n)| (!n).then_some(v))
                    .collect()
            };
            let array: ArrayRef = match &ty {
                DataType::Utf8 | DataType::Dictionary(_, _) => {
                    let v: Vec<Option<String>> = nulls
                        .iter()
                        .map(|n| (!n).then(|| text(&mut rng, name)))
                        .collect();
                    if ty == DataType::Utf8 {
                        Arc::new(StringArray::from(v))
                    } else {
                        Arc::new(
                            v.iter()
                                .map(|s| s.as_deref())
                                .collect::<DictionaryArray<Int32Type>>(),
                        )
                    }
                }
                DataType::Float64 | DataType::Float32 => {
                    let v: Vec<Option<f64>> = nulls
                        .iter()
                        .map(|n| (!n).then(|| float(&mut rng)))
                        .collect();
                    if ty == DataType::Float64 {
                        Arc::new(Float64Array::from(v))
                    } else {
                        Arc::new(Float32Array::from_iter(
                            v.iter().map(|f| f.map(|f| f as f32)),
                        ))
                    }
                }
                DataType::Boolean => Arc::new(BooleanArray::from_iter(
                    nulls.iter().map(|n| (!n).then(|| rng.random_bool(0.5))),
                )),
                DataType::List(_) => Arc::new(ListArray::from_iter_primitive::<Int64Type, _, _>(
                    nulls.iter().map(|n| {
                        (!n).then(|| {
                            (0..rng.random_range(0..3))
                                .map(|_| Some(int(&mut rng, "seq")))
                                .collect::<Vec<_>>()
                        })
                    }),
                )),
                _ => {
                    let v = some((0..rows).map(|_| int(&mut rng, name)).collect());
                    match &ty {
                        DataType::Int32 => {
                            Arc::new(Int32Array::from_iter(v.iter().map(|x| x.map(|x| x as i32))))
                        }
                        DataType::UInt64 => Arc::new(UInt64Array::from_iter(
                            v.iter().map(|x| x.map(|x| x as u64)),
                        )),
                        DataType::Timestamp(TimeUnit::Microsecond, _) => {
                            Arc::new(TimestampMicrosecondArray::from_iter(
                                v.iter().map(|x| x.map(|x| x.saturating_mul(1000))),
                            ))
                        }
                        DataType::Timestamp(_, _) => {
                            Arc::new(TimestampMillisecondArray::from(v).with_timezone("UTC"))
                        }
                        _ => Arc::new(Int64Array::from(v)),
                    }
                }
            };
            fields.push(Field::new(*name, array.data_type().clone(), true));
            arrays.push(array);
        }
        let batch = RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays).unwrap();
        let size = rng.random_range(1..30);
        let a = fast.parquet(&batch, 1, size);
        let b = general.parquet(&batch, 1, size);
        accepted += crate::decode::assert_same_decoded(&a, &b, &format!("round {round}"));
        rejected += b.rejects.len();
        let cols = ParquetColumns::new(&batch);
        let map: Vec<Option<usize>> = cols.names().map(|n| general.column(n)).collect();
        let mut path = fast::FastDeclared::default();
        let mut row = fast::FastRow {
            vals: vec![0; 7],
            ..Default::default()
        };
        taken += (0..rows)
            .filter(|&i| {
                path.parquet_row(&general, &cols, &map, i, &mut row)
                    .is_some()
            })
            .count();
    }
    assert!(
        accepted > 1_000 && rejected > 1_000,
        "{accepted} {rejected}"
    );
    // The edge values the general route accepts (integers from 10^12, whole floats) are many
    // here; on a producer's data the fast path takes nearly every row.
    assert!(taken * 2 > accepted, "{taken} of {accepted}");
}
