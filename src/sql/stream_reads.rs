//! Which of a query file's streams a query reads, told from the words of its text.
//!
//! Used before planning: to cut a file of several sources into jobs by the streams their
//! queries read (`query_file/per_source.rs`), and to plan each branch of a `UNION ALL` over
//! the stream it reads (`planner.rs`).

use std::collections::BTreeSet;

use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};

/// The names of `sources` that `select` reads: a name after FROM, JOIN or TABLE, or as the
/// first argument of a window table function (`TUMBLE(orders, …)`), in any case. A column, an
/// alias or a CTE spelled like a source is not a read of it.
pub(crate) fn sources_read(select: &str, sources: &[String]) -> BTreeSet<String> {
    reads_in_order(select, sources).into_iter().collect()
}

/// The names of `sources` that `select` reads ([`sources_read`]), in the order the text
/// first names them (the FROM stream before a joined one), each once.
pub(crate) fn reads_in_order(select: &str, sources: &[String]) -> Vec<String> {
    let Ok(tokens) = Tokenizer::new(&GenericDialect {}, select).tokenize() else {
        return Vec::new();
    };
    let code: Vec<&Token> = tokens
        .iter()
        .filter(|t| !matches!(t, Token::Whitespace(_)))
        .collect();
    let word = |t: Option<&&Token>, any: &[&str]| matches!(t, Some(Token::Word(w)) if any.iter().any(|k| w.value.eq_ignore_ascii_case(k)));
    let mut read: Vec<String> = Vec::new();
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
        if (word(before, &["FROM", "JOIN", "TABLE"]) || tvf_argument) && !read.contains(source) {
            read.push(source.clone());
        }
    }
    read
}
