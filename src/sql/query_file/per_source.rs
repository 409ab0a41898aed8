//! A query file with several sources, as one query file per source.
//!
//! A job reads one source: its checkpoints record that source's offsets, its consumer group
//! follows that topic, its dead letters and late events go to that source's topics. A file that
//! declares several sources therefore runs as several jobs, one per source, each with the
//! queries that read it and the sinks they write. Each job's text is the file with every other
//! statement blanked (newlines kept), so its errors point at the file's own lines and columns.
//!
//! Refused, at the statement: a query that reads two sources (a join or a union of different
//! streams is not supported yet), a sink written by queries over two sources, and a declared
//! `dead_letters` or `late_events` sink (each source has its own).

use std::collections::BTreeSet;

use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};

use super::{
    DEAD_LETTERS, LATE_EVENTS, QueryFile, err, parse_query_file, statements, strip_comments, word,
};
use crate::error::Result;

/// One source's share of a query file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceShare {
    /// The source.
    pub source: String,
    /// The file's text with only this source's statements (and every SET) left.
    pub text: String,
}

/// The names of `sources` that `select` reads: a name after FROM, JOIN or TABLE, or as the
/// first argument of a window table function (`TUMBLE(orders, …)`), in any case. A column, an
/// alias or a CTE spelled like a source is not a read of it.
fn sources_read(select: &str, sources: &[String]) -> BTreeSet<String> {
    let Ok(tokens) = Tokenizer::new(&GenericDialect {}, select).tokenize() else {
        return BTreeSet::new();
    };
    let code: Vec<&Token> = tokens
        .iter()
        .filter(|t| !matches!(t, Token::Whitespace(_)))
        .collect();
    let word = |t: Option<&&Token>, any: &[&str]| matches!(t, Some(Token::Word(w)) if any.iter().any(|k| w.value.eq_ignore_ascii_case(k)));
    let mut read = BTreeSet::new();
    for (i, t) in code.iter().enumerate() {
        let Token::Word(w) = t else {
            continue;
        };
        let Some(source) = sources.iter().find(|s| s.eq_ignore_ascii_case(&w.value)) else {
            continue;
        };
        let before = i.checked_sub(1).and_then(|j| code.get(j));
        let tvf_argument = matches!(before, Some(Token::LParen))
            && word(
                i.checked_sub(2).and_then(|j| code.get(j)),
                &["TUMBLE", "HOP", "SESSION", "CUMULATE"],
            );
        if word(before, &["FROM", "JOIN", "TABLE"]) || tvf_argument {
            read.insert(source.clone());
        }
    }
    read
}

/// Cuts `text` into one query file per source; a file with one source is returned whole.
pub fn split_by_source(text: &str) -> Result<Vec<SourceShare>> {
    let file: QueryFile = parse_query_file(text)?;
    let names: Vec<String> = file.sources.iter().map(|s| s.name.clone()).collect();
    if names.len() <= 1 {
        return Ok(vec![SourceShare {
            source: names.first().cloned().unwrap_or_default(),
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
    for s in &file.sinks {
        if s.name == DEAD_LETTERS || s.name == LATE_EVENTS {
            return Err(err(
                s.line,
                format!(
                    "with several sources, each source's rejected and late events go to its own topics (`<topic>.dlq`, `<topic>.late`); remove CREATE SINK {}",
                    s.name
                ),
            ));
        }
    }
    // Which source each INSERT reads, and so each sink.
    let mut reads: Vec<String> = Vec::with_capacity(file.inserts.len());
    let mut sink_source: Vec<(String, String)> = Vec::new();
    for ins in &file.inserts {
        let read = sources_read(&ins.select, &names);
        let source = match read.len() {
            // Planning says what is wrong with a query that names no source.
            0 => names[0].clone(),
            1 => read.into_iter().next().expect("one"),
            _ => {
                let list: Vec<String> = read.into_iter().map(|s| format!("`{s}`")).collect();
                return Err(err(
                    ins.line,
                    format!(
                        "this query reads the sources {}; a query over several sources (a join, or a union of different streams) is not supported yet: write one query per source",
                        list.join(" and ")
                    ),
                ));
            }
        };
        match sink_source.iter().find(|(k, _)| *k == ins.sink) {
            Some((_, other)) if *other != source => {
                return Err(err(
                    ins.line,
                    format!(
                        "sink `{}` is written by queries over the sources `{other}` and `{source}`; each source runs as a job of its own, so give each its own sink",
                        ins.sink
                    ),
                ));
            }
            Some(_) => {}
            None => sink_source.push((ins.sink.clone(), source.clone())),
        }
        reads.push(source);
    }
    // Sinks of different names may write one topic: one writer per topic, so one source.
    let sink_topic = |name: &str| {
        file.sinks
            .iter()
            .find(|s| s.name == name)
            .and_then(|s| s.connector.log_topic().map(|t| (t.to_string(), s.line)))
    };
    for (i, (sink, source)) in sink_source.iter().enumerate() {
        let Some((topic, line)) = sink_topic(sink) else {
            continue;
        };
        for (other, other_source) in &sink_source[..i] {
            if other_source != source && sink_topic(other).is_some_and(|(t, _)| t == topic) {
                return Err(err(
                    line,
                    format!(
                        "sinks `{other}` and `{sink}` both write topic `{topic}`, from queries over the sources `{other_source}` and `{source}`; each source runs as a job of its own, and a topic has one writer: give each its own topic"
                    ),
                ));
            }
        }
    }
    for s in &file.sources {
        if !reads.contains(&s.name) {
            return Err(err(
                s.line,
                format!(
                    "no query reads source `{}`; remove it, or add an INSERT INTO … SELECT … FROM {}",
                    s.name, s.name
                ),
            ));
        }
    }
    // Each statement, in file order, with the source it belongs to (`None`: every source's).
    let code = strip_comments(text);
    let mut owned: Vec<(usize, usize, Option<String>)> = Vec::new();
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
                    "SOURCE" => Some(name.to_string()),
                    // A sink no query writes goes with the first source (it opens nothing).
                    _ => Some(
                        sink_source
                            .iter()
                            .find(|(k, _)| k == name)
                            .map_or_else(|| names[0].clone(), |(_, s)| s.clone()),
                    ),
                }
            }
            "INSERT" => {
                insert += 1;
                reads.get(insert - 1).cloned()
            }
            _ => None,
        };
        // The statement and its `;`.
        let end = (offset + stmt.len() + 1).min(code.len());
        owned.push((offset, end, owner));
    }
    // The original text (comments and all: the stripped copy has the same byte offsets, but
    // a comment's characters became one space per byte), one blank per blanked character.
    Ok(names
        .iter()
        .map(|source| {
            let mut out: Vec<char> = Vec::with_capacity(text.len());
            let mut at = 0;
            for (start, end, owner) in &owned {
                out.extend(text[at..*start].chars());
                let keep = owner.as_ref().is_none_or(|o| o == source);
                out.extend(
                    text[*start..*end]
                        .chars()
                        .map(|c| if keep || c == '\n' { c } else { ' ' }),
                );
                at = *end;
            }
            out.extend(text[at..].chars());
            SourceShare {
                source: source.clone(),
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
            assert_eq!(f.sources[0].name, s.source);
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
    fn a_query_over_two_sources_and_a_shared_sink_are_refused() {
        let two = FILE.replace(
            "FROM payments WHERE",
            "FROM payments WHERE event_id IN (SELECT order_id FROM orders) AND",
        );
        let e = split_by_source(&two).unwrap_err().to_string();
        assert!(
            e.contains("line 9") && e.contains("`orders` and `payments`"),
            "{e}"
        );
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
                source: "payments".into(),
                text: one.into()
            }]
        );
    }
}
