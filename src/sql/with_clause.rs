//! `WITH` in a stream query: named subqueries, and windows over a windowed query's results.
//!
//! ```sql
//! WITH per_minute AS (
//!   SELECT merchant_id, window_start, window_end, sum(amount_minor) AS total
//!   FROM TUMBLE(payments, event_time, INTERVAL '1' MINUTE)
//!   GROUP BY merchant_id, window_start, window_end)
//! SELECT merchant_id, window_start, window_end, max(total) AS busiest_minute
//! FROM TUMBLE(per_minute, window_start, INTERVAL '1' HOUR)
//! GROUP BY merchant_id, window_start, window_end;
//! ```
//! A CTE the query reads as a table (`FROM per_minute`, or inside a subquery) is inlined as the
//! subquery it names, which the planner already runs. A window table function over a CTE is a
//! query over a windowed query's results ([`crate::sql::ChainSpec`]): the CTE is planned as its
//! own query over the stream, the outer query over the CTE's result rows, timed by the inner
//! window bound the function names (`window_start` or `window_end`), whose place the outer
//! window's bounds take. Both are planned from the original text with everything else blanked
//! out, so their errors point at the user's line and column.

use datafusion::arrow::datatypes::{Field, Schema};
use datafusion::sql::sqlparser::ast::{
    Expr, FunctionArg, FunctionArgExpr, Query, SetExpr, Spanned, TableAlias, TableFactor,
};
use datafusion::sql::sqlparser::tokenizer::{Location, Span};

use super::window_tvf::{WindowKind, plan_error};
use crate::error::Result;
use crate::schema::{WINDOW_END, WINDOW_START};

/// What a `WITH` clause turned into.
pub(super) enum Resolved {
    /// Every CTE the query reads was inlined into it; plan it as it now is.
    Inlined,
    /// A window over a CTE's results: plan the two texts and chain them.
    Chain(ChainTexts),
}

/// The two queries of a window over a windowed CTE, each the original text with the rest
/// blanked out (so positions are the user's).
pub(super) struct ChainTexts {
    /// The CTE's SELECT.
    pub inner_sql: String,
    /// The outer query, its window's time argument renamed to [`ChainTexts::time_column`].
    pub outer_sql: String,
    /// The CTE's name: the stream the outer query reads.
    pub cte: String,
    /// The inner bound the outer window follows (`window_start` or `window_end`).
    pub bound: &'static str,
    /// The name the outer query's events call that bound (same length, so positions hold).
    pub time_column: &'static str,
    /// Where the time argument is, for errors about it.
    pub bound_span: Span,
}

/// What the outer query's events call the inner window's start, and its end: as long as the
/// names they replace, so the text keeps its positions.
const INNER_START: &str = "_inner_start";
const INNER_END: &str = "_inner_end";

/// Resolves `query`'s WITH clause (taken out of it): inlines what it can, or returns the texts
/// of a chained plan.
pub(super) fn resolve(sql: &str, query: &mut Query, stream: &str) -> Result<Resolved> {
    let Some(with) = query.with.take() else {
        return Ok(Resolved::Inlined);
    };
    let with_span = with.with_token.0.span;
    if with.recursive {
        return Err(plan_error(
            with_span,
            "WITH RECURSIVE is not supported on a stream; name each step as its own CTE",
        ));
    }
    let mut ctes: Vec<(String, Query, Span)> = Vec::new();
    for cte in &with.cte_tables {
        let name = cte.alias.name.value.clone();
        if !cte.alias.columns.is_empty() {
            return Err(plan_error(
                cte.alias.span(),
                format!(
                    "a column list on `{name}` is not supported; name the columns with AS in its SELECT"
                ),
            ));
        }
        if name == stream || ctes.iter().any(|(n, _, _)| *n == name) {
            return Err(plan_error(
                cte.alias.name.span,
                format!("`{name}` is defined twice (or is the stream's name); rename the CTE"),
            ));
        }
        // A CTE may read the stream or an earlier CTE (inlined into it).
        let mut body = (*cte.query).clone();
        inline_query(&mut body, &ctes, stream)?;
        let end = cte.closing_paren_token.0.span.start;
        ctes.push((name, body, Span::new(cte.query.span().start, end)));
    }
    // A window table function over a CTE in the outer FROM: a chained plan.
    if let SetExpr::Select(select) = query.body.as_ref()
        && let Some(from) = select.from.first()
        && let TableFactor::Table {
            name,
            args: Some(args),
            ..
        } = &from.relation
        && let Some(FunctionArg::Unnamed(FunctionArgExpr::Expr(first))) = args.args.first()
        && let Some((cte, body, body_span)) = ctes
            .iter()
            .find(|(n, _, _)| matches!(first, Expr::Identifier(i) if i.value == *n))
    {
        if with.cte_tables.len() > 1 {
            return Err(plan_error(
                with_span,
                format!(
                    "a window over `{cte}` takes one CTE; write the steps before it inside `{cte}` as subqueries"
                ),
            ));
        }
        // The CTE reads only the stream (an inlined CTE would not keep its text's positions).
        let _ = body;
        let Some(FunctionArg::Unnamed(FunctionArgExpr::Expr(Expr::Identifier(bound)))) =
            args.args.get(1)
        else {
            return Err(plan_error(
                name.span(),
                format!(
                    "{name}({cte}, …) needs the inner window's bound as its time column: {name}({cte}, window_start, …) or {name}({cte}, window_end, …)"
                ),
            ));
        };
        let (bound_name, time_column) = match bound.value.as_str() {
            WINDOW_START => (WINDOW_START, INNER_START),
            WINDOW_END => (WINDOW_END, INNER_END),
            other => {
                return Err(plan_error(
                    bound.span,
                    format!(
                        "`{other}` is not a time column of `{cte}`; a window over a windowed query's results follows one of its bounds: window_start or window_end"
                    ),
                ));
            }
        };
        let last = with
            .cte_tables
            .last()
            .map_or(with_span.end, |c| c.closing_paren_token.0.span.end);
        let with_range = range(sql, with_span.start, last);
        let body_range = range(sql, body_span.start, body_span.end);
        let bound_range = range(sql, bound.span.start, bound.span.end);
        let mut outer: Vec<u8> = blank(sql, |i| !with_range.contains(&i)).into_bytes();
        let replacement = format!("{time_column:<width$}", width = bound_range.len());
        if replacement.len() != bound_range.len() {
            return Err(plan_error(
                bound.span,
                format!("write the time column as {bound_name}, without quotes"),
            ));
        }
        outer[bound_range].copy_from_slice(replacement.as_bytes());
        return Ok(Resolved::Chain(ChainTexts {
            inner_sql: blank(sql, |i| body_range.contains(&i)),
            outer_sql: String::from_utf8(outer).expect("ASCII replaced ASCII"),
            cte: cte.clone(),
            bound: bound_name,
            time_column,
            bound_span: bound.span,
        }));
    }
    inline_query(query, &ctes, stream)?;
    Ok(Resolved::Inlined)
}

/// Replaces each FROM of `query` (and of its subqueries) that names a CTE by that CTE.
fn inline_query(query: &mut Query, ctes: &[(String, Query, Span)], stream: &str) -> Result<()> {
    if let SetExpr::Select(select) = query.body.as_mut() {
        for from in &mut select.from {
            inline_factor(&mut from.relation, ctes, stream)?;
            for j in &mut from.joins {
                inline_factor(&mut j.relation, ctes, stream)?;
            }
        }
    }
    Ok(())
}

fn inline_factor(
    factor: &mut TableFactor,
    ctes: &[(String, Query, Span)],
    stream: &str,
) -> Result<()> {
    match factor {
        TableFactor::Table {
            name,
            args: None,
            alias,
            ..
        } => {
            let n = name.to_string();
            if let Some((cte, body, _)) = ctes.iter().find(|(c, _, _)| *c == n) {
                let alias = alias.take().unwrap_or_else(|| TableAlias {
                    explicit: true,
                    name: datafusion::sql::sqlparser::ast::Ident::new(cte.clone()),
                    columns: vec![],
                    at: None,
                });
                *factor = TableFactor::Derived {
                    lateral: false,
                    subquery: Box::new(body.clone()),
                    alias: Some(alias),
                    sample: None,
                };
            }
            Ok(())
        }
        TableFactor::Table {
            name,
            args: Some(args),
            ..
        } => {
            if let Some(FunctionArg::Unnamed(FunctionArgExpr::Expr(Expr::Identifier(i)))) =
                args.args.first()
                && ctes.iter().any(|(c, _, _)| *c == i.value)
            {
                return Err(plan_error(
                    name.span(),
                    format!(
                        "a window over `{}` must be the outer query's FROM (a window over a windowed query's results); it cannot be nested in a subquery",
                        i.value
                    ),
                ));
            }
            let _ = stream;
            Ok(())
        }
        TableFactor::Derived { subquery, .. } => inline_query(subquery, ctes, stream),
        _ => Ok(()),
    }
}

/// Byte range of `[from, to)` (parser locations) in `sql`.
fn range(sql: &str, from: Location, to: Location) -> std::ops::Range<usize> {
    offset(sql, from)..offset(sql, to)
}

/// Byte offset of a parser location (1-based line and character column) in `sql`.
fn offset(sql: &str, at: Location) -> usize {
    let mut line_start = 0;
    for _ in 1..at.line {
        match sql[line_start..].find('\n') {
            Some(i) => line_start += i + 1,
            None => return sql.len(),
        }
    }
    sql[line_start..]
        .char_indices()
        .nth(at.column.saturating_sub(1) as usize)
        .map_or(sql.len(), |(i, _)| line_start + i)
}

/// `sql` with every character whose byte offset `keep` refuses blanked (newlines stay).
fn blank(sql: &str, keep: impl Fn(usize) -> bool) -> String {
    sql.char_indices()
        .map(|(i, c)| if c == '\n' || keep(i) { c } else { ' ' })
        .collect()
}

/// The schema of the outer query's events: the inner results without their window bounds,
/// but for the one the outer window follows, renamed; with, for each column, the inner result
/// column it is.
pub(super) fn outer_events(inner: &Schema, texts: &ChainTexts) -> Result<(Schema, Vec<usize>)> {
    let mut fields: Vec<Field> = Vec::new();
    let mut columns = Vec::new();
    let mut time = None;
    for (i, f) in inner.fields().iter().enumerate() {
        let name = f.name().as_str();
        if name == texts.bound {
            if f.data_type() != &crate::schema::timestamp_type() {
                break;
            }
            time = Some(fields.len());
            fields.push(Field::new(texts.time_column, f.data_type().clone(), false));
            columns.push(i);
        } else if name != WINDOW_START && name != WINDOW_END {
            fields.push(f.as_ref().clone());
            columns.push(i);
        }
    }
    if time.is_none() {
        return Err(plan_error(
            texts.bound_span,
            format!(
                "`{}` has no column {} (a window bound); select it in {}'s SELECT and GROUP BY",
                texts.cte, texts.bound, texts.cte
            ),
        ));
    }
    Ok((Schema::new(fields), columns))
}

/// How far the outer events' time lags the watermark ([`crate::sql::ChainSpec::lag`]).
pub(super) fn lag(inner: WindowKind, texts: &ChainTexts) -> Result<i64> {
    Ok(match (inner, texts.bound) {
        (_, WINDOW_END) => -1,
        (WindowKind::Tumble { size } | WindowKind::Hop { size, .. }, _) => size - 1,
        (WindowKind::Session { .. }, _) => {
            return Err(plan_error(
                texts.bound_span,
                format!(
                    "a session's start says nothing of when it closes; window `{}`'s sessions by their end: window_end",
                    texts.cte
                ),
            ));
        }
    })
}
