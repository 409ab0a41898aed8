//! A query file with several sources, as one query file per set of sources its queries read.
//!
//! A job reads one source, or the several one query reads together (a `UNION ALL` of different
//! streams): its checkpoints record those sources' offsets, its consumer group follows those
//! topics, its dead letters and late events go to its own topics. A file whose queries read
//! different sources therefore runs as several jobs, one per set of sources read (each source
//! alone, mostly), each with the queries that read that set and the sinks they write. Each job's
//! text is the file with every other statement blanked (newlines kept), so its errors point at
//! the file's own lines and columns.
//!
//! Refused, at the statement: a sink written by queries over different sources, two sinks of
//! one topic written from different sources, two sources of one topic, a source no query reads,
//! and, when the file runs as several jobs, a declared `dead_letters` or `late_events` sink
//! (each job has its own).

use std::collections::BTreeSet;

use super::{
    DEAD_LETTERS, LATE_EVENTS, QueryFile, err, parse_query_file, statements, strip_comments, word,
};
use crate::error::Result;
use crate::sql::stream_reads::sources_read;

/// One job's share of a query file: the sources it reads and its statements.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceShare {
    /// The sources its queries read, sorted by name (one, unless a query reads several).
    pub sources: Vec<String>,
    /// The file's text with only this share's statements (and every SET) left.
    pub text: String,
}

impl SourceShare {
    /// The share's part of a job name: its source, or its sources joined by `-`.
    pub fn name(&self) -> String {
        self.sources.join("-")
    }
}

/// Words for a set of sources in messages: `` `a` `` or `` `a` and `b` ``.
fn listed(set: &BTreeSet<String>) -> String {
    let names: Vec<String> = set.iter().map(|s| format!("`{s}`")).collect();
    names.join(" and ")
}

/// Cuts `text` into one query file per set of sources its queries read; a file with one
/// source, or whose queries all read the same sources, is returned whole.
pub fn split_by_source(text: &str) -> Result<Vec<SourceShare>> {
    let file: QueryFile = parse_query_file(text)?;
    let names: Vec<String> = file.sources.iter().map(|s| s.name.clone()).collect();
    if names.len() <= 1 {
        return Ok(vec![SourceShare {
            sources: names.first().cloned().into_iter().collect(),
            text: text.to_string(),
        }]);
    }
    // Two sources of one topic would share its dead-letter and late topics, and its group.
    for (i, s) in file.sources.iter().enumerate() {
        if let Some(t) = s.connector.log_topic()
            && let Some(other) = file.sources[..i]
                .iter()
                .find(|o| o.connector.log_topic() == Some(t))
        {
            return Err(err(
                s.line,
                format!(
                    "sources `{}` and `{}` both read topic `{t}`; declare it once and write every query over that source",
                    other.name, s.name
                ),
            ));
        }
    }
    // Which sources each INSERT reads, and so each sink.
    let mut reads: Vec<BTreeSet<String>> = Vec::with_capacity(file.inserts.len());
    let mut sink_sources: Vec<(String, BTreeSet<String>)> = Vec::new();
    for ins in &file.inserts {
        let mut read = sources_read(&ins.select, &names);
        if read.is_empty() {
            // Planning says what is wrong with a query that names no source.
            read.insert(names[0].clone());
        }
        match sink_sources.iter().find(|(k, _)| *k == ins.sink) {
            Some((_, other)) if *other != read => {
                return Err(err(
                    ins.line,
                    format!(
                        "sink `{}` is written by queries over {} and over {}; queries over different sources run as jobs of their own, so give each its own sink",
                        ins.sink,
                        listed(other),
                        listed(&read)
                    ),
                ));
            }
            Some(_) => {}
            None => sink_sources.push((ins.sink.clone(), read.clone())),
        }
        reads.push(read);
    }
    // The jobs: one per set of sources read, in the order their first source is declared.
    let mut sets: Vec<BTreeSet<String>> = Vec::new();
    for r in &reads {
        if !sets.contains(r) {
            sets.push(r.clone());
        }
    }
    let first_declared = |set: &BTreeSet<String>| {
        names
            .iter()
            .position(|n| set.contains(n))
            .unwrap_or(usize::MAX)
    };
    sets.sort_by_key(|s| (first_declared(s), s.len()));
    if sets.len() > 1 {
        for s in &file.sinks {
            if s.name == DEAD_LETTERS || s.name == LATE_EVENTS {
                return Err(err(
                    s.line,
                    format!(
                        "this file runs as several jobs (its queries read different sources), and each job's rejected and late events go to its own topics (`<topic>.dlq`, `<topic>.late`); remove CREATE SINK {}",
                        s.name
                    ),
                ));
            }
        }
    }
    // Sinks of different names may write one topic: one writer per topic, so one job.
    let sink_topic = |name: &str| {
        file.sinks
            .iter()
            .find(|s| s.name == name)
            .and_then(|s| s.connector.log_topic().map(|t| (t.to_string(), s.line)))
    };
    for (i, (sink, set)) in sink_sources.iter().enumerate() {
        let Some((topic, line)) = sink_topic(sink) else {
            continue;
        };
        for (other, other_set) in &sink_sources[..i] {
            if other_set != set && sink_topic(other).is_some_and(|(t, _)| t == topic) {
                return Err(err(
                    line,
                    format!(
                        "sinks `{other}` and `{sink}` both write topic `{topic}`, from queries over {} and over {}; queries over different sources run as jobs of their own, and a topic has one writer: give each its own topic",
                        listed(other_set),
                        listed(set)
                    ),
                ));
            }
        }
    }
    for s in &file.sources {
        if !reads.iter().any(|r| r.contains(&s.name)) {
            return Err(err(
                s.line,
                format!(
                    "no query reads source `{}`; remove it, or add an INSERT INTO … SELECT … FROM {}",
                    s.name, s.name
                ),
            ));
        }
    }
    if sets.len() == 1 {
        return Ok(vec![SourceShare {
            sources: sets.remove(0).into_iter().collect(),
            text: text.to_string(),
        }]);
    }
    // Each statement, in file order, with the jobs it belongs to.
    enum Owner {
        /// Every job's (a SET).
        All,
        /// The jobs that read this source.
        Source(String),
        /// The job of exactly these sources.
        Set(BTreeSet<String>),
    }
    let code = strip_comments(text);
    let mut owned: Vec<(usize, usize, Owner)> = Vec::new();
    let mut insert = 0;
    for (offset, stmt) in statements(&code) {
        let s = stmt.trim_start();
        if s.trim().is_empty() {
            continue;
        }
        let (w1, rest) = word(s);
        let owner = match w1.to_ascii_uppercase().as_str() {
            "CREATE" => {
                let (kind, rest) = word(rest);
                let (name, _) = word(rest);
                let name = name.trim_matches('"');
                match kind.to_ascii_uppercase().as_str() {
                    "SOURCE" => Owner::Source(name.to_string()),
                    // A table is read by any job that joins it.
                    "TABLE" => Owner::All,
                    // A sink no query writes goes with the first job (it opens nothing).
                    _ => Owner::Set(
                        sink_sources
                            .iter()
                            .find(|(k, _)| k == name)
                            .map_or_else(|| sets[0].clone(), |(_, s)| s.clone()),
                    ),
                }
            }
            "INSERT" => {
                insert += 1;
                match reads.get(insert - 1) {
                    Some(r) => Owner::Set(r.clone()),
                    None => Owner::All,
                }
            }
            _ => Owner::All,
        };
        // The statement and its `;`.
        let end = (offset + stmt.len() + 1).min(code.len());
        owned.push((offset, end, owner));
    }
    // The original text (comments and all: the stripped copy has the same byte offsets, but
    // a comment's characters became one space per byte), one blank per blanked character.
    Ok(sets
        .iter()
        .map(|set| {
            let mut out: Vec<char> = Vec::with_capacity(text.len());
            let mut at = 0;
            for (start, end, owner) in &owned {
                out.extend(text[at..*start].chars());
                let keep = match owner {
                    Owner::All => true,
                    Owner::Source(s) => set.contains(s),
                    Owner::Set(s) => s == set,
                };
                out.extend(
                    text[*start..*end]
                        .chars()
                        .map(|c| if keep || c == '\n' { c } else { ' ' }),
                );
                at = *end;
            }
            out.extend(text[at..].chars());
            SourceShare {
                sources: set.iter().cloned().collect(),
                text: out.into_iter().collect(),
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "CREATE SOURCE payments WITH (connector = 'log', topic = 'payments');
CREATE SOURCE orders (order_id VARCHAR NOT NULL, ts TIMESTAMP NOT NULL, amount_minor BIGINT)
  WITH (connector = 'log', topic = 'orders', event_time = 'ts');
CREATE SINK big WITH (connector = 'log', topic = 'big');
CREATE SINK per_minute WITH (connector = 'log', topic = 'per_minute');
SET workers = '1';
-- orders first
INSERT INTO per_minute SELECT window_start, count(*) AS n FROM TUMBLE(orders, ts, INTERVAL '1' MINUTE) GROUP BY window_start;
INSERT INTO big SELECT event_id FROM payments WHERE amount_minor > 100;
";

    #[test]
    fn each_source_keeps_its_statements_at_their_places() {
        let shares = split_by_source(FILE).unwrap();
        assert_eq!(shares.len(), 2);
        for s in &shares {
            assert_eq!(s.text.lines().count(), FILE.lines().count());
            let f = parse_query_file(&s.text).unwrap();
            assert_eq!(f.sources.len(), 1);
            assert_eq!(vec![f.sources[0].name.clone()], s.sources);
            assert_eq!(f.settings.get("workers").map(String::as_str), Some("1"));
            assert_eq!(f.inserts.len(), 1);
        }
        let payments = parse_query_file(&shares[0].text).unwrap();
        assert_eq!(payments.inserts[0].sink, "big");
        assert_eq!(payments.inserts[0].line, 9);
        assert_eq!(payments.sinks.len(), 1);
        let orders = parse_query_file(&shares[1].text).unwrap();
        assert_eq!(orders.inserts[0].sink, "per_minute");
        assert_eq!(orders.inserts[0].line, 8);
    }

    #[test]
    fn a_query_over_two_sources_is_a_job_of_its_own_and_a_shared_sink_is_refused() {
        let two = FILE.replace(
            "INSERT INTO big SELECT event_id FROM payments WHERE amount_minor > 100;",
            "INSERT INTO big SELECT event_id FROM payments WHERE amount_minor > 100\n  UNION ALL SELECT order_id FROM orders;",
        );
        let shares = split_by_source(&two).unwrap();
        let sets: Vec<String> = shares.iter().map(SourceShare::name).collect();
        assert_eq!(sets, ["orders-payments", "orders"]);
        let both = parse_query_file(&shares[0].text).unwrap();
        assert_eq!(both.sources.len(), 2);
        assert_eq!(both.inserts.len(), 1);
        assert_eq!(both.inserts[0].sink, "big");
        let orders = parse_query_file(&shares[1].text).unwrap();
        assert_eq!(orders.sources.len(), 1);
        assert_eq!(orders.inserts[0].sink, "per_minute");
        // Every query over both: the file is one job, and may name its dead letters.
        let one = two.replace(
            "SELECT window_start, count(*) AS n FROM TUMBLE(orders, ts, INTERVAL '1' MINUTE) GROUP BY window_start;",
            "SELECT order_id FROM orders UNION ALL SELECT event_id FROM payments;",
        );
        let one = format!("{one}CREATE SINK dead_letters WITH (connector = 'log', topic = 'd');\n");
        let shares = split_by_source(&one).unwrap();
        assert_eq!(shares.len(), 1);
        assert_eq!(shares[0].text, one);
        let mixed = two.replace("INSERT INTO per_minute", "INSERT INTO big");
        let e = split_by_source(&mixed).unwrap_err().to_string();
        assert!(e.contains("line 9") && e.contains("own sink"), "{e}");
        let shared = FILE.replace("INSERT INTO big", "INSERT INTO per_minute");
        let e = split_by_source(&shared).unwrap_err().to_string();
        assert!(e.contains("line 9") && e.contains("own sink"), "{e}");
        let dlq =
            format!("{FILE}CREATE SINK dead_letters WITH (connector = 'log', topic = 'd');\n");
        let e = split_by_source(&dlq).unwrap_err().to_string();
        assert!(e.contains("line 10") && e.contains("own topics"), "{e}");
    }

    #[test]
    fn reads_are_told_from_names_in_other_roles_and_topics_are_not_shared() {
        // A column and an alias spelled like the other source are not reads of it.
        let alias = FILE.replace(
            "SELECT event_id FROM payments",
            "SELECT event_id AS orders, count(*) FILTER (WHERE amount_minor > 1) AS orders2 FROM payments",
        );
        assert_eq!(split_by_source(&alias).unwrap().len(), 2);
        let same_topic = FILE.replace("topic = 'per_minute'", "topic = 'big'");
        let e = split_by_source(&same_topic).unwrap_err().to_string();
        assert!(
            e.contains("line 4") && e.contains("both write topic `big`"),
            "{e}"
        );
        let unread = FILE.replace("INSERT INTO per_minute", "-- INSERT INTO per_minute");
        let e = split_by_source(&unread).unwrap_err().to_string();
        assert!(
            e.contains("line 2") && e.contains("no query reads source `orders`"),
            "{e}"
        );
        let one_topic = FILE.replace("topic = 'orders'", "topic = 'payments'");
        let e = split_by_source(&one_topic).unwrap_err().to_string();
        assert!(e.contains("both read topic `payments`"), "{e}");
        // Comments stay, and a character of several bytes in one moves no column.
        let commented = FILE.replace("-- orders first", "/* commandes café */ -- orders first");
        let shares = split_by_source(&commented).unwrap();
        assert!(shares[1].text.contains("/* commandes café */"));
        assert_eq!(shares[1].text.chars().count(), commented.chars().count());
    }

    #[test]
    fn one_source_is_the_file_itself() {
        let one = "CREATE SOURCE payments WITH (connector = 'log', topic = 'payments');\nINSERT INTO x SELECT * FROM payments;";
        let shares = split_by_source(one).unwrap();
        assert_eq!(
            shares,
            vec![SourceShare {
                sources: vec!["payments".into()],
                text: one.into()
            }]
        );
    }
}
