//! `MATCH_RECOGNIZE` (issue 18, CEP): the streaming matches equal a batch matcher's over the
//! same events, over random inputs (disorder within the watermark bound), batch sizes and
//! workers.
//!
//! The batch side is written here, apart from the engine: rows of each partition sorted by
//! (event time, event id), and from each row the preferred match found by a recursive matcher
//! over the pattern (a greedy quantifier's longer path first, alternatives left to right) with
//! every row of the partition known, the next search starting after the match (PAST LAST ROW)
//! or at its second row (TO NEXT ROW). The engine compiles the pattern to a program and decides
//! matches as the watermark passes, waiting where a preferred path needs rows not seen yet.

use std::collections::BTreeMap;

use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::arrow::datatypes::{Int64Type, TimestampMillisecondType};
use paystream::sql::plan_query;
use rand::SeedableRng;
use serde_json::{Value, json};

use crate::oracle::random_file;
use crate::util::{replay_randomly, sorted};

/// An event, as the batch matcher reads it.
#[derive(Debug, Clone)]
struct Ev {
    id: String,
    time: i64,
    card: String,
    merchant: String,
    currency: String,
    event_type: String,
    status: String,
    amount: i64,
}

fn events(batches: &[RecordBatch]) -> Vec<Ev> {
    let mut out = Vec::new();
    for b in batches {
        let s = |name: &str| {
            let c = b.column(b.schema().index_of(name).unwrap());
            datafusion::arrow::compute::cast(c, &datafusion::arrow::datatypes::DataType::Utf8)
                .unwrap()
        };
        let (id, card, merchant, currency, et, st) = (
            s("event_id"),
            s("card_id"),
            s("merchant_id"),
            s("currency"),
            s("event_type"),
            s("status"),
        );
        let amount = b.column(b.schema().index_of("amount_minor").unwrap());
        let amount = amount.as_primitive::<Int64Type>();
        let time = b.column(b.schema().index_of("event_time").unwrap());
        let time = time.as_primitive::<TimestampMillisecondType>();
        for i in 0..b.num_rows() {
            let text = |a: &datafusion::arrow::array::ArrayRef| {
                let a = a.as_string::<i32>();
                if a.is_null(i) {
                    String::new()
                } else {
                    a.value(i).to_string()
                }
            };
            out.push(Ev {
                id: text(&id),
                time: time.value(i),
                card: text(&card),
                merchant: text(&merchant),
                currency: text(&currency),
                event_type: text(&et),
                status: text(&st),
                amount: amount.value(i),
            });
        }
    }
    out
}

/// A row pattern, as the batch matcher runs it.
enum Pat {
    Var(u16),
    Seq(Vec<Pat>),
    Alt(Vec<Pat>),
    /// Greedy: at least, at most (`None`: unbounded).
    Rep(Box<Pat>, u32, Option<u32>),
}

/// A variable's condition: the partition's rows, the variables of the rows mapped so far (the
/// row tried is the next one), the row tried.
type Cond = dyn Fn(&[&Ev], &[u16], usize) -> bool;

/// The preferred match of `pat` starting at `rows[start]` within `within` ms: the variable of
/// each of its rows.
fn preferred(
    pat: &Pat,
    rows: &[&Ev],
    start: usize,
    within: i64,
    conds: &[Box<Cond>],
) -> Option<Vec<u16>> {
    fn go(
        p: &Pat,
        at: usize,
        m: &mut Vec<u16>,
        cx: &(&[&Ev], usize, i64, &[Box<Cond>]),
        k: &mut dyn FnMut(usize, &mut Vec<u16>) -> bool,
    ) -> bool {
        let (rows, start, within, conds) = *cx;
        match p {
            Pat::Var(v) => {
                if at < rows.len()
                    && rows[at].time - rows[start].time <= within
                    && conds[*v as usize](&rows[start..], m, at - start)
                {
                    m.push(*v);
                    if k(at + 1, m) {
                        return true;
                    }
                    m.pop();
                }
                false
            }
            Pat::Seq(ps) => seq(ps, at, m, cx, k),
            Pat::Alt(ps) => ps.iter().any(|p| go(p, at, m, cx, k)),
            Pat::Rep(p, min, max) => rep(p, *min, *max, 0, at, m, cx, k),
        }
    }
    fn seq(
        ps: &[Pat],
        at: usize,
        m: &mut Vec<u16>,
        cx: &(&[&Ev], usize, i64, &[Box<Cond>]),
        k: &mut dyn FnMut(usize, &mut Vec<u16>) -> bool,
    ) -> bool {
        match ps.split_first() {
            None => k(at, m),
            Some((p, rest)) => go(p, at, m, cx, &mut |j, m| seq(rest, j, m, cx, k)),
        }
    }
    #[allow(clippy::too_many_arguments)]
    fn rep(
        p: &Pat,
        min: u32,
        max: Option<u32>,
        n: u32,
        at: usize,
        m: &mut Vec<u16>,
        cx: &(&[&Ev], usize, i64, &[Box<Cond>]),
        k: &mut dyn FnMut(usize, &mut Vec<u16>) -> bool,
    ) -> bool {
        if max.is_none_or(|x| n < x)
            && go(p, at, m, cx, &mut |j, m| {
                rep(p, min, max, n + 1, j, m, cx, k)
            })
        {
            return true;
        }
        n >= min && k(at, m)
    }
    let mut found = None;
    let mut m = Vec::new();
    go(
        pat,
        start,
        &mut m,
        &(rows, start, within, conds),
        &mut |_, m| {
            found = Some(m.clone());
            true
        },
    );
    found
}

/// Rows of the match (relative to its first row) mapped to `v`.
fn of<'a>(rows: &[&'a Ev], m: &[u16], v: u16) -> Vec<&'a Ev> {
    m.iter()
        .zip(rows)
        .filter(|(x, _)| **x == v)
        .map(|(_, r)| *r)
        .collect()
}

/// A query and its batch matcher.
struct Case {
    sql: &'static str,
    /// Which events take part, and their partition.
    partition: fn(&Ev) -> Option<String>,
    pattern: Pat,
    conds: Vec<Box<Cond>>,
    within: i64,
    skip_to_next_row: bool,
    /// The output row of a match (rows from its first), or none (filtered out).
    row: fn(&str, &[&Ev], &[u16]) -> Option<Value>,
}

fn cases() -> Vec<Case> {
    // S = 0, L = 1.
    let small_then_large = Case {
        sql: "SELECT * FROM payments MATCH_RECOGNIZE ( \
                PARTITION BY card_id ORDER BY event_time \
                MEASURES FIRST(S.event_id) AS first_small, COUNT(S.*) AS smalls, \
                         SUM(S.amount_minor) AS small_total, MAX(S.amount_minor) AS biggest_small, \
                         L.event_id AS large_id, L.amount_minor AS large_minor \
                ONE ROW PER MATCH AFTER MATCH SKIP PAST LAST ROW \
                PATTERN (S{2,} L) WITHIN INTERVAL '1' MINUTE \
                DEFINE S AS S.amount_minor < 3000, \
                       L AS L.amount_minor > 3 * S.amount_minor)",
        partition: |e| Some(e.card.clone()),
        pattern: Pat::Seq(vec![Pat::Rep(Box::new(Pat::Var(0)), 2, None), Pat::Var(1)]),
        conds: vec![
            Box::new(|rows, _, at| rows[at].amount < 3000),
            Box::new(|rows, m, at| {
                let last_s = of(rows, m, 0).last().map(|e| e.amount);
                last_s.is_some_and(|s| rows[at].amount > 3 * s)
            }),
        ],
        within: 60_000,
        skip_to_next_row: false,
        row: |key, rows, m| {
            let s = of(rows, m, 0);
            let l = of(rows, m, 1);
            Some(json!({
                "card_id": key,
                "first_small": s[0].id,
                "smalls": s.len(),
                "small_total": s.iter().map(|e| e.amount).sum::<i64>(),
                "biggest_small": s.iter().map(|e| e.amount).max(),
                "large_id": l[0].id,
                "large_minor": l[0].amount,
            }))
        },
    };
    // A = 0, D = 1, R = 2, B = 3.
    let alternatives = Case {
        sql: "SELECT * FROM payments MATCH_RECOGNIZE ( \
                PARTITION BY merchant_id ORDER BY event_time \
                MEASURES A.event_id AS a_id, COUNT(D.*) AS declines, COUNT(R.*) AS refunds, \
                         LAST(B.event_id) AS b_id, COUNT(*) AS n, event_id AS last_id \
                AFTER MATCH SKIP TO NEXT ROW \
                PATTERN (A (D | R)+ B?) WITHIN INTERVAL '20' SECOND \
                DEFINE A AS amount_minor > 20000, \
                       D AS D.amount_minor < A.amount_minor AND status = 'declined', \
                       R AS event_type = 'refund', \
                       B AS B.amount_minor > FIRST(A.amount_minor))",
        partition: |e| Some(e.merchant.clone()),
        pattern: Pat::Seq(vec![
            Pat::Var(0),
            Pat::Rep(Box::new(Pat::Alt(vec![Pat::Var(1), Pat::Var(2)])), 1, None),
            Pat::Rep(Box::new(Pat::Var(3)), 0, Some(1)),
        ]),
        conds: vec![
            Box::new(|rows, _, at| rows[at].amount > 20000),
            Box::new(|rows, m, at| {
                let a = of(rows, m, 0)[0].amount;
                rows[at].amount < a && rows[at].status == "declined"
            }),
            Box::new(|rows, _, at| rows[at].event_type == "refund"),
            Box::new(|rows, m, at| rows[at].amount > of(rows, m, 0)[0].amount),
        ],
        within: 20_000,
        skip_to_next_row: true,
        row: |key, rows, m| {
            Some(json!({
                "merchant_id": key,
                "a_id": of(rows, m, 0)[0].id,
                "declines": of(rows, m, 1).len(),
                "refunds": of(rows, m, 2).len(),
                "b_id": of(rows, m, 3).last().map(|e| e.id.clone()),
                "n": m.len(),
                "last_id": rows[m.len() - 1].id,
            }))
        },
    };
    // One partition, a CTE's WHERE, an outer WHERE and SELECT. C = 0.
    let chargebacks = Case {
        sql: "WITH moves AS (SELECT * FROM payments WHERE event_type IN ('capture', 'refund')) \
              SELECT first_id, n, currency FROM moves MATCH_RECOGNIZE ( \
                ORDER BY event_time \
                MEASURES FIRST(C.event_id) AS first_id, COUNT(*) AS n, C.currency AS currency \
                PATTERN (C{2,4}) WITHIN INTERVAL '10' SECOND \
                DEFINE C AS C.currency = FIRST(C.currency)) AS m \
              WHERE n > 2",
        partition: |e| matches!(e.event_type.as_str(), "capture" | "refund").then(String::new),
        pattern: Pat::Rep(Box::new(Pat::Var(0)), 2, Some(4)),
        conds: vec![Box::new(|rows, m, at| {
            // FIRST(C.currency) counts the row tried when it is the first.
            let first = if m.is_empty() { rows[at] } else { rows[0] };
            rows[at].currency == first.currency
        })],
        within: 10_000,
        skip_to_next_row: false,
        row: |_, rows, m| {
            (m.len() > 2).then(|| {
                json!({
                    "first_id": rows[0].id,
                    "n": m.len(),
                    "currency": rows[m.len() - 1].currency,
                })
            })
        },
    };
    vec![small_then_large, alternatives, chargebacks]
}

/// The batch matcher's rows for `case` over `events`.
fn batch_matches(case: &Case, events: &[Ev]) -> Vec<String> {
    let mut parts: BTreeMap<String, Vec<&Ev>> = BTreeMap::new();
    for e in events {
        if let Some(k) = (case.partition)(e) {
            parts.entry(k).or_default().push(e);
        }
    }
    let mut out = Vec::new();
    for (key, mut rows) in parts {
        rows.sort_by(|a, b| a.time.cmp(&b.time).then_with(|| a.id.cmp(&b.id)));
        let mut start = 0;
        while start < rows.len() {
            match preferred(&case.pattern, &rows, start, case.within, &case.conds) {
                Some(m) => {
                    if let Some(v) = (case.row)(&key, &rows[start..], &m) {
                        out.push(v.to_string());
                    }
                    start += if case.skip_to_next_row { 1 } else { m.len() };
                }
                None => start += 1,
            }
        }
    }
    sorted(out)
}

fn canonical(lines: Vec<String>) -> Vec<String> {
    sorted(
        lines
            .iter()
            .map(|l| serde_json::from_str::<Value>(l).unwrap().to_string())
            .collect(),
    )
}

/// Each case's matches over random files equal the batch matcher's.
#[test]
fn matches_equal_the_batch_matcher_over_random_inputs() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(18_04);
    let dir = tempfile::tempdir().unwrap();
    let cases = cases();
    for round in 0..4u64 {
        let (path, batches) = random_file(&mut rng, dir.path(), round, 3_000);
        let evs = events(&batches);
        for case in &cases {
            let expected = batch_matches(case, &evs);
            assert!(
                !expected.is_empty(),
                "round {round}: no match for\n{}",
                case.sql
            );
            let plan = plan_query(case.sql).unwrap_or_else(|e| panic!("{}: {e}", case.sql));
            let (run, how) = replay_randomly(&plan, &path, &mut rng);
            let got = canonical(run.lines);
            assert!(
                got == expected,
                "round {round} ({how}) differs for\n{}\nstreaming {} rows, batch {}; first difference: {:?}",
                case.sql,
                got.len(),
                expected.len(),
                got.iter().zip(&expected).find(|(a, b)| a != b)
            );
        }
    }
}
