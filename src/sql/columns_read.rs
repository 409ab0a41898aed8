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
    let code: Vec<&Token> = tokens
        .iter()
        .filter(|t| !matches!(t, Token::Whitespace(_)))
        .collect();
    let mut words = Vec::new();
    for (i, t) in code.iter().enumerate() {
        let (prev, next) = (i.checked_sub(1).map(|p| code[p]), code.get(i + 1).copied());
        match t {
            Token::Word(w) if w.keyword == Keyword::NATURAL => return None,
            Token::Word(w) => words.push(w.value.to_ascii_lowercase()),
            // `count(*)` reads no column, nor does a product; any other `*` is a wildcard
            // (`SELECT *`, `t.*`, `, *`, `DISTINCT ON (a) *`, `TOP 5 *`).
            Token::Mul if matches!(prev, Some(Token::LParen)) => {}
            Token::Mul if !(ends_operand(prev) && starts_operand(next)) => return None,
            _ => {}
        }
    }
    Some(words)
}

/// Whether `t` can end the left operand of a product.
fn ends_operand(t: Option<&Token>) -> bool {
    match t {
        Some(Token::Word(w)) => !matches!(
            w.keyword,
            Keyword::SELECT | Keyword::DISTINCT | Keyword::ALL | Keyword::TOP
        ),
        Some(Token::Number(..) | Token::RParen | Token::SingleQuotedString(_)) => true,
        _ => false,
    }
}

/// Whether `t` can start the right operand of a product.
fn starts_operand(t: Option<&Token>) -> bool {
    match t {
        Some(Token::Word(w)) => !matches!(
            w.keyword,
            Keyword::FROM
                | Keyword::EXCLUDE
                | Keyword::EXCEPT
                | Keyword::REPLACE
                | Keyword::RENAME
                | Keyword::ILIKE
                | Keyword::AS
                | Keyword::INTO
        ),
        Some(
            Token::Number(..)
            | Token::LParen
            | Token::SingleQuotedString(_)
            | Token::Minus
            | Token::Plus,
        ) => true,
        _ => false,
    }
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
            "SELECT DISTINCT ON (card_id) * FROM payments",
            "SELECT TOP 5 * FROM payments",
            "SELECT merchant_id, p.*FROM payments p",
            "SELECT amount_minor * FROM payments",
            "SELECT fee_minor, *",
            "SELECT a.event_id FROM payments a NATURAL JOIN payments b",
            "SELECT 'unterminated FROM payments",
        ] {
            assert_eq!(reads(all), None, "{all}");
        }
        assert_eq!(
            reads(
                "SELECT count(*) * 2 AS n, 3 * fee_minor, fee_minor * -1, (1) * (2) FROM payments"
            ),
            Some(vec!["fee_minor".into()])
        );
    }
}
