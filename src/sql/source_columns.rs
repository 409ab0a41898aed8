//! The column list of a declared source:
//!
//! ```sql
//! CREATE SOURCE orders (
//!     order_id     VARCHAR NOT NULL,
//!     ts           TIMESTAMP NOT NULL,
//!     amount_minor BIGINT,
//!     WATERMARK FOR ts AS ts - INTERVAL '2' SECOND
//! ) WITH (connector = 'file', path = 'orders.jsonl', dedup_key = 'order_id');
//! ```
//! Each column becomes an Arrow field of the stream, named as its JSON member or CSV header
//! cell is; `WATERMARK FOR` names the event-time column and the bounded out-of-orderness, as
//! Flink and RisingWave spell it. Types map to the ones the declared decoder reads
//! ([`crate::decode::ColumnKind`]); money stays integer minor units (`DECIMAL` is refused with
//! that advice). A Kafka source's column may read the record's metadata instead of a payload
//! member: `kafka_offset BIGINT METADATA FROM 'offset'` ([`crate::decode::MetaKey`]).

use datafusion::arrow::datatypes::{DataType, Field};

use crate::time::parse_duration_millis;

/// A parsed column list.
#[derive(Debug, Clone, PartialEq)]
pub struct Columns {
    /// The columns, in order.
    pub fields: Vec<Field>,
    /// `WATERMARK FOR col AS col - INTERVAL …`: the time column and its delay (ms).
    pub watermark: Option<(String, i64)>,
}

/// A column-list error: the byte offset in the list of the item at fault, and the message
/// (what was wrong and what to write); the caller turns the offset into a line.
pub type ColumnsError = (usize, String);

/// Parses the text between `CREATE SOURCE name (` and its closing `)`.
pub fn parse_columns(list: &str) -> Result<Columns, ColumnsError> {
    let mut fields: Vec<Field> = Vec::new();
    let mut watermark = None;
    let mut last = 0;
    for (at, item) in split_top_level(list) {
        let lead = item.len() - item.trim_start().len();
        last = at + lead;
        parse_item(item.trim(), &mut fields, &mut watermark, None).map_err(|m| (at + lead, m))?;
    }
    check_columns(&fields, watermark.as_ref()).map_err(|m| (last, m))?;
    Ok(Columns { fields, watermark })
}

/// Parses the text between `CREATE TABLE name (` and its closing `)`: columns, each may be
/// `PRIMARY KEY`, or a `PRIMARY KEY (a, b)` item. Returns the columns and the key's names.
pub fn parse_table_columns(list: &str) -> Result<(Vec<Field>, Vec<String>), ColumnsError> {
    let mut fields: Vec<Field> = Vec::new();
    let mut watermark = None;
    let mut keys = Vec::new();
    let mut last = 0;
    for (at, item) in split_top_level(list) {
        let lead = item.len() - item.trim_start().len();
        last = at + lead;
        parse_item(item.trim(), &mut fields, &mut watermark, Some(&mut keys))
            .map_err(|m| (at + lead, m))?;
        if watermark.is_some() {
            return Err((
                at + lead,
                "a table has no watermark: its rows are versions valid from their valid_from column, not events".into(),
            ));
        }
    }
    check_columns(&fields, None).map_err(|m| (last, m))?;
    for k in &keys {
        if !fields.iter().any(|f| f.name() == k) {
            return Err((last, format!("PRIMARY KEY ({k}): there is no column `{k}`")));
        }
    }
    Ok((fields, keys))
}

/// One item of the list: a column or the WATERMARK clause.
fn parse_item(
    item: &str,
    fields: &mut Vec<Field>,
    watermark: &mut Option<(String, i64)>,
    mut keys: Option<&mut Vec<String>>,
) -> Result<(), String> {
    {
        if item.is_empty() {
            return Err("an empty item in the column list (a stray comma?)".into());
        }
        let words: Vec<&str> = item.split_whitespace().collect();
        let upper = |i: usize| words.get(i).map(|w| w.to_ascii_uppercase());
        if upper(0).as_deref() == Some("WATERMARK") && upper(1).as_deref() == Some("FOR") {
            if watermark.is_some() {
                return Err(
                    "WATERMARK FOR is given twice; a source has one event-time column".into(),
                );
            }
            *watermark = Some(parse_watermark(item)?);
            return Ok(());
        }
        if let Some(keys) = keys.as_deref_mut()
            && upper(0).as_deref() == Some("PRIMARY")
        {
            // `PRIMARY KEY (a, b)`.
            let list = item
                .find('(')
                .zip(item.rfind(')'))
                .filter(|(a, b)| a < b && upper(1).as_deref().is_some_and(|k| k.starts_with("KEY")))
                .map(|(a, b)| &item[a + 1..b])
                .ok_or_else(|| format!("`{item}`: write PRIMARY KEY (column, …)"))?;
            if !keys.is_empty() {
                return Err("the primary key is declared twice; keep one".into());
            }
            for k in list.split(',') {
                keys.push(k.trim().trim_matches('"').to_string());
            }
            return Ok(());
        }
        if matches!(
            upper(0).as_deref(),
            Some("PRIMARY" | "CONSTRAINT" | "UNIQUE")
        ) {
            return Err(format!(
                "`{item}`: key constraints are not declared in the column list; name the column events are deduplicated by with WITH (dedup_key = 'column')"
            ));
        }
        let (name, rest) = column_name(item)?;
        // The type, then the constraints, word by word (`NOT  NULL` across spaces or lines).
        let mut words = column_words(&name, rest)?;
        let meta = take_metadata(&name, &mut words)?;
        if meta.is_some() && keys.is_some() {
            return Err(format!(
                "column `{name}`: a table's columns come from its rows; METADATA columns are for a Kafka source's records"
            ));
        }
        let upper_at = |w: &[String], i: usize| w.get(i).map(|x| x.to_ascii_uppercase());
        let mut not_null = false;
        if let Some(i) = (0..words.len()).find(|i| {
            matches!(
                upper_at(&words, *i).as_deref(),
                Some("NOT" | "NULL" | "PRIMARY" | "DEFAULT" | "UNIQUE" | "REFERENCES" | "CHECK")
            )
        }) {
            let constraints: Vec<String> =
                words[i..].iter().map(|w| w.to_ascii_uppercase()).collect();
            match constraints
                .iter()
                .map(String::as_str)
                .collect::<Vec<_>>()
                .as_slice()
            {
                ["NOT", "NULL"] => not_null = true,
                ["NULL"] => {}
                ["PRIMARY", "KEY"] | ["NOT", "NULL", "PRIMARY", "KEY"] if keys.is_some() => {
                    let keys = keys.as_mut().expect("checked");
                    if !keys.is_empty() {
                        return Err(
                            "the primary key is declared twice; for a key of several columns write PRIMARY KEY (a, b)".into(),
                        );
                    }
                    keys.push(name.clone());
                    not_null = true;
                }
                ["PRIMARY", "KEY", ..] | ["UNIQUE", ..] => {
                    return Err(format!(
                        "column `{name}`: key constraints are not declared in the column list; name the column events are deduplicated by with WITH (dedup_key = '{name}')"
                    ));
                }
                other => {
                    return Err(format!(
                        "column `{name}`: `{}` is not supported; a column is `name TYPE [NOT NULL]` (or, from a Kafka source, `name TYPE METADATA [FROM 'key'] [VIRTUAL]`)",
                        other.join(" ")
                    ));
                }
            }
            words.truncate(i);
        }
        let (data_type, max_chars) = parse_type(&name, &words.join(" "))?;
        if fields.iter().any(|f| f.name() == &name) {
            return Err(format!("column `{name}` is declared twice"));
        }
        if crate::decode::contains_card_number(name.as_bytes()) {
            return Err(
                "a column name looks like a card number; name the column for what it holds".into(),
            );
        }
        if name == crate::schema::WINDOW_START || name == crate::schema::WINDOW_END {
            return Err(format!(
                "`{name}` is the name windows give their bounds; rename the column"
            ));
        }
        let mut field_meta = std::collections::HashMap::new();
        if let Some(n) = max_chars {
            field_meta.insert(crate::decode::MAX_CHARS.to_string(), n.to_string());
        }
        if let Some(key) = meta {
            let kinds = key.kinds();
            if !crate::decode::ColumnKind::of(&data_type).is_some_and(|k| kinds.contains(&k)) {
                return Err(format!(
                    "column `{name}` is {}, but METADATA FROM '{key}' is read as {}; declare {name} {} METADATA FROM '{key}'",
                    sql_name(&data_type),
                    kinds
                        .iter()
                        .map(|k| k.sql())
                        .collect::<Vec<_>>()
                        .join(" or "),
                    kinds[0].sql()
                ));
            }
            field_meta.insert(crate::decode::METADATA.to_string(), key.to_string());
        }
        fields.push(Field::new(name, data_type, !not_null).with_metadata(field_meta));
    }
    Ok(())
}

/// Takes `METADATA [FROM 'key'] [VIRTUAL]` (Flink's spelling) out of a column's words: the
/// record metadata the column reads instead of a payload member (the column's name when no
/// key is given). `VIRTUAL` changes nothing: no sink writes a source's columns back.
fn take_metadata(
    name: &str,
    words: &mut Vec<String>,
) -> Result<Option<crate::decode::MetaKey>, String> {
    let Some(at) = words
        .iter()
        .position(|w| w.eq_ignore_ascii_case("METADATA"))
    else {
        return Ok(None);
    };
    let mut end = at + 1;
    let key = if words
        .get(end)
        .is_some_and(|w| w.eq_ignore_ascii_case("FROM"))
    {
        // A quoted key: one word of `words` (see [`column_words`]), `''` inside it a quote.
        let key = words
            .get(end + 1)
            .and_then(|w| w.strip_prefix('\''))
            .and_then(|w| w.strip_suffix('\''))
            .map(|k| k.replace("''", "'"))
            .filter(|k| !k.is_empty())
            .ok_or_else(|| {
                format!(
                    "column `{name}`: METADATA FROM takes a quoted key, e.g. {name} BIGINT METADATA FROM 'offset'"
                )
            })?;
        end += 2;
        crate::decode::MetaKey::parse(&key).map_err(|e| format!("column `{name}`: {e}"))?
    } else {
        // Without FROM the column's name is the key, as Flink reads it: the fixed names in any
        // case, a header's name as written (header names are case-sensitive).
        let implicit = match name.get(..7) {
            Some(p) if p.eq_ignore_ascii_case("header.") => format!("header.{}", &name[7..]),
            _ => name.to_ascii_lowercase(),
        };
        crate::decode::MetaKey::parse(&implicit).map_err(|_| {
            format!(
                "column `{name}`: METADATA without FROM reads the record metadata named like the column, and there is none called '{name}'; name it: {name} VARCHAR METADATA FROM 'key' (the keys: {})",
                crate::decode::MetaKey::kinds_listed()
            )
        })?
    };
    if words
        .get(end)
        .is_some_and(|w| w.eq_ignore_ascii_case("VIRTUAL"))
    {
        end += 1;
    }
    words.drain(at..end);
    Ok(Some(key))
}

/// The words of a column's type and constraints: split at whitespace, except that a quoted
/// text (`'header.trace  id'`, `''` a quote inside) is one word, whitespace and all, from its
/// opening to its closing quote.
fn column_words(name: &str, rest: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut chars = rest.char_indices().peekable();
    while let Some(&(i, c)) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
            continue;
        }
        let mut end = rest.len();
        if c == '\'' {
            chars.next();
            let mut closed = false;
            while let Some((j, c)) = chars.next() {
                if c == '\'' {
                    if chars.peek().is_some_and(|(_, n)| *n == '\'') {
                        chars.next();
                    } else {
                        end = j + 1;
                        closed = true;
                        break;
                    }
                }
            }
            if !closed {
                return Err(format!(
                    "column `{name}`: a quoted text is not closed; write e.g. METADATA FROM 'offset'"
                ));
            }
        } else {
            while let Some(&(j, c)) = chars.peek() {
                if c.is_whitespace() {
                    end = j;
                    break;
                }
                chars.next();
            }
        }
        out.push(rest[i..end].to_string());
    }
    Ok(out)
}

/// Checks the list as a whole: some column, and a watermark on a TIMESTAMP column.
fn check_columns(fields: &[Field], watermark: Option<&(String, i64)>) -> Result<(), String> {
    if fields.is_empty() {
        return Err("the column list declares no column".into());
    }
    if let Some((t, _)) = watermark {
        match fields.iter().find(|f| f.name() == t) {
            None => {
                return Err(format!(
                    "WATERMARK FOR {t}: there is no column `{t}`; declare it, e.g. {t} TIMESTAMP NOT NULL"
                ));
            }
            Some(f) if f.data_type() != &crate::schema::timestamp_type() => {
                return Err(format!(
                    "WATERMARK FOR {t}: `{t}` is {}, not a TIMESTAMP; event time must be a TIMESTAMP column",
                    sql_name(f.data_type())
                ));
            }
            Some(_) => {}
        }
    }
    Ok(())
}

/// The SQL name of a declared column type.
pub fn sql_name(t: &DataType) -> &'static str {
    crate::decode::ColumnKind::of(t).map_or("an unsupported type", |k| k.sql())
}

/// Splits at commas outside parentheses and quotes: (offset, item).
fn split_top_level(s: &str) -> Vec<(usize, &str)> {
    let (mut out, mut depth, mut start, mut quote) = (Vec::new(), 0i32, 0, None);
    for (i, c) in s.char_indices() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '\'' | '"') => quote = Some(c),
            (None, '(') => depth += 1,
            (None, ')') => depth -= 1,
            (None, ',') if depth == 0 => {
                out.push((start, &s[start..i]));
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push((start, &s[start..]));
    out
}

/// The column name at the start of `item` (an identifier, or a double-quoted name) and the rest.
fn column_name(item: &str) -> Result<(String, &str), String> {
    if let Some(q) = item.strip_prefix('"') {
        let end = q
            .find('"')
            .ok_or_else(|| format!("`{item}`: unterminated quoted column name"))?;
        if end == 0 {
            return Err("a column name is empty (\"\")".into());
        }
        return Ok((q[..end].to_string(), &q[end + 1..]));
    }
    let end = item
        .find(|c: char| !(c.is_alphanumeric() || c == '_'))
        .unwrap_or(item.len());
    let name = &item[..end];
    if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
        return Err(format!(
            "expected a column name, found `{item}`; write e.g. amount_minor BIGINT"
        ));
    }
    Ok((name.to_string(), &item[end..]))
}

/// The Arrow type of a declared SQL type, and a `VARCHAR(n)`'s length.
fn parse_type(column: &str, t: &str) -> Result<(DataType, Option<usize>), String> {
    if t.is_empty() {
        return Err(format!(
            "column `{column}` has no type; write e.g. {column} VARCHAR"
        ));
    }
    let norm: String = t.split_whitespace().collect::<Vec<_>>().join(" ");
    // A length or precision in parentheses does not change the type read (`VARCHAR(64)`,
    // `TIMESTAMP(3)`), except for decimals, which are refused below.
    let mut base = String::new();
    let mut depth = 0;
    for c in norm.to_ascii_uppercase().chars() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            c if depth == 0 => base.push(c),
            _ => {}
        }
    }
    let base = base.split_whitespace().collect::<Vec<_>>().join(" ");
    let length = || -> Result<Option<usize>, String> {
        match (norm.find('('), norm.rfind(')')) {
            (Some(a), Some(b)) if a < b => norm[a + 1..b]
                .trim()
                .parse::<usize>()
                .ok()
                .filter(|n| *n > 0)
                .map(Some)
                .ok_or_else(|| {
                    format!("column `{column}` is {norm}: the length must be a positive whole number, e.g. VARCHAR(64)")
                }),
            _ => Ok(None),
        }
    };
    Ok(match base.as_str() {
        "VARCHAR" | "CHAR" | "CHARACTER VARYING" => (DataType::Utf8, length()?),
        "TEXT" | "STRING" => (DataType::Utf8, None),
        "BIGINT" | "INT8" | "LONG" => (DataType::Int64, None),
        "INT" | "INTEGER" | "INT4" => (DataType::Int32, None),
        "DOUBLE" | "DOUBLE PRECISION" | "FLOAT" | "FLOAT8" | "REAL" => (DataType::Float64, None),
        "BOOLEAN" | "BOOL" => (DataType::Boolean, None),
        "TIMESTAMP" | "TIMESTAMPTZ" | "TIMESTAMP WITH TIME ZONE" | "TIMESTAMP_LTZ" => {
            (crate::schema::timestamp_type(), None)
        }
        "DECIMAL" | "NUMERIC" => {
            return Err(format!(
                "column `{column}` is {norm}: money is read as integer minor units with its currency; declare {column} BIGINT (12.50 EUR is 1250)"
            ));
        }
        _ => {
            return Err(format!(
                "column `{column}` has type {norm}, which a source cannot declare; the types are VARCHAR, BIGINT, INT, DOUBLE, BOOLEAN and TIMESTAMP"
            ));
        }
    })
}

/// `WATERMARK FOR ts AS ts - INTERVAL '2' SECOND` (or `INTERVAL '2 seconds'`, or `AS ts` for
/// no delay) → the column and the delay in ms.
fn parse_watermark(item: &str) -> Result<(String, i64), String> {
    let example = "WATERMARK FOR ts AS ts - INTERVAL '5' SECOND";
    let bad = |what: &str| format!("`{item}`: {what}; write e.g. {example}");
    let words: Vec<&str> = item.split_whitespace().collect();
    if words.len() < 4
        || !words[1].eq_ignore_ascii_case("FOR")
        || !words[3].eq_ignore_ascii_case("AS")
    {
        return Err(bad("expected WATERMARK FOR column AS column - INTERVAL …"));
    }
    let column = words[2].trim_matches('"').to_string();
    let expr = words[4..].join(" ");
    let rest = expr
        .strip_prefix(words.get(4).copied().unwrap_or(""))
        .map(str::trim)
        .unwrap_or("");
    if words.get(4).map(|w| w.trim_matches('"')) != Some(column.as_str()) {
        return Err(bad(&format!(
            "the watermark must be the event-time column `{column}` minus a delay"
        )));
    }
    if rest.is_empty() {
        return Ok((column, 0));
    }
    let interval = rest
        .strip_prefix('-')
        .map(str::trim)
        .and_then(|r| {
            r.get(..8)
                .filter(|k| k.eq_ignore_ascii_case("INTERVAL"))
                .map(|_| r[8..].trim())
        })
        .ok_or_else(|| bad("expected `- INTERVAL '…'` after the column"))?;
    let q = interval
        .strip_prefix('\'')
        .ok_or_else(|| bad("the interval needs a quoted amount"))?;
    let end = q.find('\'').ok_or_else(|| bad("unterminated interval"))?;
    let text = format!("{} {}", &q[..end], q[end + 1..].trim());
    let ms = parse_duration_millis(&text).map_err(|e| bad(&e))?;
    Ok((column, ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_types_and_the_watermark_are_read() {
        let c = parse_columns(
            "\n  order_id VARCHAR(64) NOT NULL,\n  ts TIMESTAMP(3) NOT NULL,\n  amount_minor BIGINT,\n  qty integer null, score DOUBLE PRECISION, gift BOOLEAN, \"Note\" text,\n  WATERMARK FOR ts AS ts - INTERVAL '2' SECOND\n",
        )
        .unwrap();
        let names: Vec<&str> = c.fields.iter().map(|f| f.name().as_str()).collect();
        assert_eq!(
            names,
            [
                "order_id",
                "ts",
                "amount_minor",
                "qty",
                "score",
                "gift",
                "Note"
            ]
        );
        assert!(
            !c.fields[0].is_nullable() && c.fields[2].is_nullable() && c.fields[3].is_nullable()
        );
        assert_eq!(c.fields[1].data_type(), &crate::schema::timestamp_type());
        assert_eq!(c.fields[3].data_type(), &DataType::Int32);
        assert_eq!(c.fields[4].data_type(), &DataType::Float64);
        assert_eq!(c.watermark, Some(("ts".into(), 2_000)));
        assert_eq!(
            c.fields[0]
                .metadata()
                .get(crate::decode::MAX_CHARS)
                .map(String::as_str),
            Some("64")
        );
        // Constraints word by word; a column may be called `watermark`.
        let c = parse_columns(
            "ts TIMESTAMP NOT  \n NULL, watermark DOUBLE NULL, WATERMARK FOR ts AS ts",
        )
        .unwrap();
        assert!(!c.fields[0].is_nullable() && c.fields[1].is_nullable());
        assert_eq!(c.fields[1].name(), "watermark");
        // An error says where its item starts.
        let list = "a INT,\n  b BLOB";
        let (at, _) = parse_columns(list).unwrap_err();
        assert_eq!(&list[at..], "b BLOB");
        for (w, ms) in [
            ("WATERMARK FOR ts AS ts - INTERVAL '5 seconds'", 5_000),
            ("watermark for ts as ts - interval '1' MINUTE", 60_000),
            ("WATERMARK FOR ts AS ts", 0),
        ] {
            let c = parse_columns(&format!("ts TIMESTAMP, {w}")).unwrap();
            assert_eq!(c.watermark, Some(("ts".into(), ms)), "{w}");
        }
    }

    #[test]
    fn what_cannot_be_declared_is_refused_with_what_to_write() {
        for (list, needle) in [
            ("amount DECIMAL(12, 2)", "BIGINT (12.50 EUR is 1250)"),
            ("x BLOB", "the types are VARCHAR, BIGINT"),
            ("x", "has no type"),
            ("a INT, a BIGINT", "declared twice"),
            ("a INT,, b INT", "stray comma"),
            ("ts TIMESTAMP, WATERMARK FOR t AS t", "no column `t`"),
            ("ts BIGINT, WATERMARK FOR ts AS ts", "not a TIMESTAMP"),
            (
                "ts TIMESTAMP, WATERMARK FOR ts AS other - INTERVAL '1' SECOND",
                "minus a delay",
            ),
            (
                "ts TIMESTAMP, WATERMARK FOR ts AS ts - INTERVAL '1' FORTNIGHT",
                "unknown unit",
            ),
            ("ts TIMESTAMP, PRIMARY KEY (ts)", "dedup_key"),
            ("window_start TIMESTAMP", "rename the column"),
            ("\"4111111111111111\" VARCHAR", "looks like a card number"),
            ("id VARCHAR PRIMARY KEY", "dedup_key = 'id'"),
            ("id VARCHAR DEFAULT 'x'", "not supported"),
            ("\"\" VARCHAR", "empty"),
            ("id VARCHAR(0)", "positive whole number"),
            (
                "o VARCHAR METADATA FROM 'offset'",
                "declare o BIGINT METADATA",
            ),
            ("p DOUBLE METADATA FROM 'partition'", "INT or BIGINT"),
            ("k VARCHAR METADATA FROM 'epoch'", "'header.<name>'"),
            ("k VARCHAR METADATA FROM key", "a quoted key"),
            ("v VARCHAR METADATA", "there is none called 'v'"),
            ("k VARCHAR METADATA FROM 'header.a b", "not closed"),
            ("k VARCHAR METADATA FROM header", "a quoted key"),
            ("k VARCHAR METADATA FROM", "a quoted key"),
        ] {
            let e = parse_columns(list).unwrap_err().1;
            assert!(e.contains(needle), "{list}: {e}");
        }
        let e = parse_table_columns("k VARCHAR METADATA FROM 'key'")
            .unwrap_err()
            .1;
        assert!(e.contains("Kafka source"), "{e}");
    }

    #[test]
    fn metadata_columns_name_what_they_read() {
        let c = parse_columns(
            "id VARCHAR NOT NULL, k VARCHAR METADATA FROM 'key', OFFSET BIGINT metadata VIRTUAL,\n ts TIMESTAMP NOT NULL METADATA FROM 'timestamp', tr VARCHAR(36) METADATA FROM 'header.trace-id', sp VARCHAR METADATA FROM 'header.it''s a  b', \"header.X-Trace\" VARCHAR METADATA, WATERMARK FOR ts AS ts",
        )
        .unwrap();
        let meta: Vec<Option<&str>> = c
            .fields
            .iter()
            .map(|f| {
                f.metadata()
                    .get(crate::decode::METADATA)
                    .map(String::as_str)
            })
            .collect();
        assert_eq!(
            meta,
            [
                None,
                Some("key"),
                Some("offset"),
                Some("timestamp"),
                Some("header.trace-id"),
                Some("header.it's a  b"),
                Some("header.X-Trace"),
            ]
        );
        assert!(!c.fields[3].is_nullable());
        assert_eq!(
            c.fields[4]
                .metadata()
                .get(crate::decode::MAX_CHARS)
                .map(String::as_str),
            Some("36")
        );
    }
}
