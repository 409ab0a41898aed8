//! `UNION ALL` of stream queries over the same stream: each branch is planned as a query of its
//! own and their rows go to one output.
//!
//! A branch is cut out of the query text by blanking everything else (newlines kept), so it
//! keeps its line and column: an error in the third branch points into the third branch of the
//! text the user wrote. A `WITH` before the branches is kept in every branch's text, and each
//! branch resolves the names it uses.

use datafusion::arrow::datatypes::DataType;
use datafusion::sql::sqlparser::ast::{Query, SetExpr, Spanned};
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::tokenizer::{Location, Span, Token, TokenWithSpan};

use super::window_tvf::plan_error;
use crate::error::Result;

/// The branches of a top-level `UNION ALL`.
#[derive(Debug)]
pub(super) struct Branches {
    /// Each branch's text: the query's text with all but its `WITH` and the branch blanked.
    pub texts: Vec<String>,
    /// Where each branch starts, for errors about a branch as a whole.
    pub starts: Vec<Span>,
}

fn is_keyword(t: &TokenWithSpan, kw: Keyword) -> bool {
    matches!(&t.token, Token::Word(w) if w.keyword == kw)
}

fn is_blank(t: &TokenWithSpan) -> bool {
    matches!(
        t.token,
        Token::Whitespace(_) | Token::EOF | Token::SemiColon
    )
}

/// The branches of `query` (whose tokens are `tokens`) when its body is a `UNION ALL`; `None`
/// for any other query. `UNION` without `ALL`, `INTERSECT`, `EXCEPT` and `MINUS` are refused here.
pub(super) fn split(
    sql: &str,
    tokens: &[TokenWithSpan],
    query: &Query,
) -> Result<Option<Branches>> {
    let SetExpr::SetOperation { .. } = query.body.as_ref() else {
        return Ok(None);
    };
    // The body's tokens at nesting depth 0: the operators between branches, and where the
    // first branch starts (after the WITH list, whose queries are all in parentheses).
    let mut depth = 0usize;
    let mut body_start: Option<usize> = None;
    // With a WITH: just after a parenthesis closed at depth 0 (a CTE's query, or its column
    // list), where a `,` or `AS` continues the WITH and anything else starts the body.
    let mut after_close = false;
    let mut cuts: Vec<(usize, usize)> = Vec::new();
    let mut i = 0;
    while i < tokens.len() {
        let t = &tokens[i];
        let depth_before = depth;
        match &t.token {
            Token::LParen => depth += 1,
            Token::RParen => depth = depth.saturating_sub(1),
            _ => {}
        }
        if body_start.is_none() && depth_before == 0 && !is_blank(t) {
            match query.with {
                None => body_start = Some(i),
                Some(_) if after_close => {
                    if matches!(t.token, Token::Comma) || is_keyword(t, Keyword::AS) {
                        after_close = false;
                    } else {
                        body_start = Some(i);
                    }
                }
                Some(_) => {}
            }
        }
        if body_start.is_none() && depth_before == 1 && depth == 0 {
            after_close = true;
        }
        if depth == 0 && body_start.is_some() {
            if is_keyword(t, Keyword::INTERSECT)
                || is_keyword(t, Keyword::EXCEPT)
                || is_keyword(t, Keyword::MINUS)
            {
                return Err(plan_error(
                    t.span,
                    "INTERSECT, EXCEPT and MINUS are not supported in stream queries (they would keep every row of a stream to compare); UNION ALL is",
                ));
            }
            if is_keyword(t, Keyword::UNION) {
                let next = (i + 1..tokens.len()).find(|j| !is_blank(&tokens[*j]));
                match next {
                    Some(j) if is_keyword(&tokens[j], Keyword::ALL) => {
                        cuts.push((i, j));
                        i = j + 1;
                        continue;
                    }
                    _ => {
                        return Err(plan_error(
                            t.span,
                            "UNION without ALL removes duplicate rows, which over an unbounded stream means keeping every row forever; write UNION ALL",
                        ));
                    }
                }
            }
        }
        i += 1;
    }
    let (Some(body_start), false) = (body_start, cuts.is_empty()) else {
        return Err(plan_error(
            query.body.span(),
            "write the UNION ALL as SELECT … UNION ALL SELECT …, each SELECT over the stream",
        ));
    };
    let end = tokens
        .iter()
        .rposition(|t| !is_blank(t))
        .map_or(tokens.len(), |p| p + 1);
    // Token ranges of the branches.
    let mut ranges = Vec::with_capacity(cuts.len() + 1);
    let mut from = body_start;
    for (union, all) in &cuts {
        ranges.push((from, *union));
        from = all + 1;
    }
    ranges.push((from, end));
    let starts_of_lines = line_starts(sql);
    let offset = |l: Location| -> usize {
        let line = starts_of_lines
            .get((l.line as usize).saturating_sub(1))
            .copied()
            .unwrap_or(sql.len());
        sql[line..]
            .char_indices()
            .nth((l.column as usize).saturating_sub(1))
            .map_or(sql.len(), |(o, _)| line + o)
    };
    let prefix_end = match query.with {
        Some(_) => offset(tokens[body_start].span.start),
        None => 0,
    };
    let mut texts = Vec::with_capacity(ranges.len());
    let mut starts = Vec::with_capacity(ranges.len());
    for (a, b) in ranges {
        let Some(first) = (a..b).find(|j| !is_blank(&tokens[*j])) else {
            return Err(plan_error(
                tokens[a.min(tokens.len() - 1)].span,
                "a branch of UNION ALL is empty; write a SELECT on each side",
            ));
        };
        let last = (a..b)
            .rev()
            .find(|j| !is_blank(&tokens[*j]))
            .unwrap_or(first);
        starts.push(tokens[first].span);
        let mut keep = vec![(0, prefix_end)];
        // A branch in parentheses is the query inside them.
        if matches!(tokens[first].token, Token::LParen)
            && matches!(tokens[last].token, Token::RParen)
            && closes(tokens, first) == Some(last)
        {
            keep.push((
                offset(tokens[first].span.end),
                offset(tokens[last].span.start),
            ));
        } else {
            keep.push((
                offset(tokens[first].span.start),
                offset(tokens[last].span.end),
            ));
        }
        texts.push(blank_outside(sql, &keep));
    }
    Ok(Some(Branches { texts, starts }))
}

/// The index of the parenthesis closing the one at `open`.
fn closes(tokens: &[TokenWithSpan], open: usize) -> Option<usize> {
    let mut depth = 0usize;
    for (j, t) in tokens.iter().enumerate().skip(open) {
        match t.token {
            Token::LParen => depth += 1,
            Token::RParen => {
                depth -= 1;
                if depth == 0 {
                    return Some(j);
                }
            }
            _ => {}
        }
    }
    None
}

/// `branch` (a query's text) with every unnamed item of its SELECT list named `_column_<n>`:
/// a later branch's names are not the union's, and DataFusion refuses repeated ones. `None` when
/// the text does not parse as one SELECT (its errors then stand as they were).
pub(super) fn named_items(branch: &str) -> Option<String> {
    use datafusion::sql::sqlparser::ast::{Ident, SelectItem, Statement};
    use datafusion::sql::sqlparser::dialect::GenericDialect;
    use datafusion::sql::sqlparser::parser::Parser;
    let mut stmts = Parser::parse_sql(&GenericDialect {}, branch).ok()?;
    let Some(Statement::Query(q)) = stmts.first_mut() else {
        return None;
    };
    let SetExpr::Select(select) = q.body.as_mut() else {
        return None;
    };
    for (j, item) in select.projection.iter_mut().enumerate() {
        if let SelectItem::UnnamedExpr(expr) = item {
            *item = SelectItem::ExprWithAlias {
                expr: expr.clone(),
                alias: Ident::new(format!("_column_{}", j + 1)),
            };
        }
    }
    Some(stmts[0].to_string())
}

/// Byte offset of each line's start.
fn line_starts(sql: &str) -> Vec<usize> {
    std::iter::once(0)
        .chain(sql.match_indices('\n').map(|(i, _)| i + 1))
        .collect()
}

/// `sql` with every character outside the byte ranges `keep` turned into a space (newlines
/// stay, so lines and columns do not move).
fn blank_outside(sql: &str, keep: &[(usize, usize)]) -> String {
    sql.char_indices()
        .map(|(i, c)| {
            if c == '\n' || keep.iter().any(|(a, b)| (*a..*b).contains(&i)) {
                c
            } else {
                ' '
            }
        })
        .collect()
}

/// How a type is spelled in SQL, for errors.
pub(super) fn type_name(t: &DataType) -> String {
    match t {
        DataType::Null => "NULL".into(),
        DataType::Dictionary(_, v) => type_name(v),
        DataType::Decimal128(p, s) => format!("DECIMAL({p}, {s})"),
        DataType::Timestamp(datafusion::arrow::datatypes::TimeUnit::Millisecond, None) => {
            "TIMESTAMP".into()
        }
        DataType::Int32 => "INT".into(),
        DataType::Float64 => "DOUBLE".into(),
        t => match crate::decode::ColumnKind::of(t) {
            Some(k) => k.sql().into(),
            None => t.to_string(),
        },
    }
}

/// The type of each column of the union: the first branch's, or where it is NULL (an untyped
/// `NULL AS x`), the first other branch's that is not; strings encoded differently in different
/// branches (a dictionary column beside a plain one) are plain strings, since a dictionary's
/// keys may not hold the other branches' values.
pub(super) fn column_types(branches: &[&[DataType]]) -> Vec<DataType> {
    (0..branches[0].len())
        .map(|j| {
            let mut typed = branches
                .iter()
                .map(|b| &b[j])
                .filter(|t| **t != DataType::Null);
            let Some(first) = typed.next() else {
                return DataType::Null;
            };
            match typed.all(|t| t == first) {
                true => first.clone(),
                false if stringy(first) => DataType::Utf8,
                false => first.clone(),
            }
        })
        .collect()
}

fn stringy(t: &DataType) -> bool {
    match t {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => true,
        DataType::Dictionary(_, v) => stringy(v),
        _ => false,
    }
}

/// The type a branch's column of type `from` is cast to so it fits the union's `to`,
/// `Ok(None)` when it already does, `Err(())` when it does not fit.
pub(super) fn cast_to(from: &DataType, to: &DataType) -> std::result::Result<Option<DataType>, ()> {
    if from == to {
        Ok(None)
    } else if *from == DataType::Null || (stringy(from) && stringy(to)) {
        Ok(Some(to.clone()))
    } else {
        Err(())
    }
}

#[cfg(test)]
mod tests {
    use datafusion::sql::sqlparser::ast::Statement;
    use datafusion::sql::sqlparser::dialect::GenericDialect;
    use datafusion::sql::sqlparser::parser::Parser;
    use datafusion::sql::sqlparser::tokenizer::Tokenizer;

    use super::*;

    fn branches(sql: &str) -> Result<Option<Branches>> {
        let tokens = Tokenizer::new(&GenericDialect {}, sql)
            .tokenize_with_location()
            .unwrap();
        let Statement::Query(q) = Parser::parse_sql(&GenericDialect {}, sql)
            .unwrap()
            .remove(0)
        else {
            panic!()
        };
        split(sql, &tokens, &q)
    }

    #[test]
    fn branches_keep_their_positions_and_the_with_clause() {
        let sql = "WITH big AS (SELECT * FROM payments WHERE amount_minor > 10)\nSELECT event_id FROM big\nUNION ALL (SELECT event_id FROM payments WHERE é = 'x')\nUNION ALL SELECT 'y' FROM payments;";
        // A parenthesised first branch after a WITH (whose CTE has a column list) too.
        let paren = "WITH big (id) AS (SELECT event_id FROM payments), small AS (SELECT 1)\n(SELECT id FROM big) UNION ALL SELECT event_id FROM payments";
        let b = branches(paren).unwrap().unwrap();
        assert_eq!(
            b.texts[0].lines().nth(1).unwrap().trim(),
            "SELECT id FROM big"
        );
        assert_eq!(
            b.texts[1].lines().nth(1).unwrap().trim(),
            "SELECT event_id FROM payments"
        );
        assert!(b.texts[1].starts_with("WITH big (id) AS"));
        let b = branches(sql).unwrap().unwrap();
        assert_eq!(b.texts.len(), 3);
        for t in &b.texts {
            assert_eq!(t.lines().count(), sql.lines().count());
            assert_eq!(t.chars().count(), sql.chars().count());
            assert!(t.starts_with("WITH big AS (SELECT"));
        }
        assert_eq!(
            b.texts[0].lines().nth(1).unwrap(),
            "SELECT event_id FROM big"
        );
        assert_eq!(
            b.texts[1].lines().nth(2).unwrap().trim(),
            "SELECT event_id FROM payments WHERE é = 'x'"
        );
        assert_eq!(
            b.texts[2].lines().nth(3).unwrap().trim(),
            "SELECT 'y' FROM payments"
        );
        assert_eq!((b.starts[2].start.line, b.starts[2].start.column), (4, 11));
    }

    #[test]
    fn other_set_operations_are_refused_and_plain_queries_are_not_unions() {
        assert!(branches("SELECT 1 FROM payments").unwrap().is_none());
        for (sql, says) in [
            (
                "SELECT a FROM payments UNION SELECT a FROM payments",
                "UNION ALL",
            ),
            (
                "SELECT a FROM payments EXCEPT SELECT a FROM payments",
                "EXCEPT",
            ),
            (
                "SELECT a FROM payments MINUS SELECT a FROM payments",
                "MINUS",
            ),
            (
                "SELECT a FROM payments UNION ALL SELECT a FROM payments INTERSECT SELECT a FROM payments",
                "INTERSECT",
            ),
        ] {
            let e = branches(sql).unwrap_err().to_string();
            assert!(e.contains(says), "{sql}: {e}");
        }
    }
}
