//! Which columns a query may read from its stream, told from the words of its text.
//!
//! The decoder builds only the columns some query of a run reads
//! ([`crate::decode::Projection`]): copying values nobody reads into Arrow columns was a third
//! of decoding (settlement reads three of the payment event's eleven string columns). The
//! answer may name more than is read — any word spelled like a column counts, an alias or a
//! string in a comment too — but never less: a query that can reach columns without naming
//! them (`SELECT *`, `p.*`, `NATURAL JOIN`) reads all of them.

use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};

/// The words of `sql` that may name a column, lower-cased; `None` when the query may read
/// every column: a wildcard (`*` where a select item stands, `t.*`), a `NATURAL` join, or
/// text that does not tokenize.
pub fn columns_read(sql: &str) -> Option<Vec<String>> {
    let tokens = Tokenizer::new(&GenericDialect {}, sql).tokenize().ok()?;
    let mut words = Vec::new();
    let mut prev: Option<&Token> = None;
    for t in &tokens {
        match t {
            Token::Whitespace(_) => continue,
            Token::Word(w) if w.keyword == Keyword::NATURAL => return None,
            Token::Word(w) => words.push(w.value.to_ascii_lowercase()),
            // `count(*)` reads no column; `*` anywhere else but as a product is a wildcard.
            Token::Mul => match prev {
                Some(Token::LParen) => {}
                Some(Token::Word(w))
                    if !matches!(
                        w.keyword,
                        Keyword::SELECT | Keyword::DISTINCT | Keyword::ALL
                    ) => {}
                Some(Token::Number(..) | Token::RParen | Token::SingleQuotedString(_)) => {}
                _ => return None,
            },
            _ => {}
        }
        prev = Some(t);
    }
    Some(words)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reads(sql: &str) -> Option<Vec<String>> {
        columns_read(sql).map(|mut w| {
            w.retain(|w| crate::schema::FIELD_NAMES.contains(&w.as_str()));
            w.sort();
            w.dedup();
            w
        })
    }

    #[test]
    fn named_columns_are_read_and_wildcards_read_all() {
        assert_eq!(
            reads(
                "SELECT merchant_id, count(*) AS n, sum(amount_minor * 2) FROM TUMBLE(payments, event_time, INTERVAL '1' MINUTE) WHERE p.\"Currency\" = 'EUR' GROUP BY 1"
            ),
            Some(vec![
                "amount_minor".into(),
                "currency".into(),
                "event_time".into(),
                "merchant_id".into()
            ])
        );
        for all in [
            "SELECT * FROM payments",
            "SELECT DISTINCT * FROM payments",
            "SELECT card_id, * FROM payments",
            "SELECT p.* FROM payments p",
            "SELECT count(S.*) FROM payments",
            "SELECT * EXCLUDE (card_id) FROM payments",
            "SELECT a.event_id FROM payments a NATURAL JOIN payments b",
            "SELECT 'unterminated FROM payments",
        ] {
            assert_eq!(reads(all), None, "{all}");
        }
        assert_eq!(
            reads("SELECT count(*) * 2 AS n, 3 * fee_minor FROM payments"),
            Some(vec!["fee_minor".into()])
        );
    }
}
