//! Sides of a join of streams written as subqueries (or CTEs) of a stream.
//!
//! ```sql
//! WITH auths AS (SELECT * FROM payments WHERE event_type = 'authorization'),
//!      caps  AS (SELECT * FROM payments WHERE event_type = 'capture')
//! SELECT a.payment_id, c.event_time FROM auths a JOIN caps c
//!   ON c.payment_id = a.payment_id
//!  AND c.event_time BETWEEN a.event_time AND a.event_time + INTERVAL '10' MINUTE
//! ```
//! The interval join (sql/join.rs) reads DataFusion's plan of two scans of streams joined; a
//! subquery between the scan and the join is not a shape it reads. A side that only filters
//! a stream, `(SELECT * FROM payments [WHERE p]) AS a` (a CTE read as a table is inlined as
//! such a subquery by sql/with_clause.rs), is the stream itself, `payments AS a`, with `p`
//! (its columns qualified by `a`) moved where it means the same:
//!
//! - in an inner join, into ON (`ON … AND (p)`): a pair exists only when both rows pass;
//! - in a LEFT JOIN, a predicate of the left side into the outer WHERE: it decides which left
//!   rows exist, and a left row failing it must not come out even with nulls, as it would if
//!   the predicate were in ON. A left column is never null-padded, so filtering after the
//!   join drops exactly the rows the subquery drops;
//! - in a LEFT JOIN, a predicate of the right side into ON: a right row failing it matches
//!   nothing, and a left row without a match still comes out with nulls (in WHERE it would
//!   drop those).
//!
//! Any other subquery of a stream on a side of such a join is refused where it is written,
//! naming what to write instead. The rewrite keeps the user's spans, so later errors point at
//! the text as written.

use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{
    BinaryOperator, Distinct, Expr, GroupByExpr, Ident, JoinConstraint, JoinOperator, ObjectName,
    Query, Select, SelectFlavor, SelectItem, SelectItemQualifiedWildcardKind, SetExpr, Spanned,
    TableFactor, visit_expressions, visit_expressions_mut,
};
use datafusion::sql::sqlparser::tokenizer::Span;

use super::window_tvf::plan_error;
use crate::error::{Error, Result};

/// What a side of a join is, as far as this rewrite is concerned.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Side {
    /// A stream read by name.
    Stream,
    /// A subquery whose FROM reads a stream by name (not through a window table function).
    StreamQuery,
    /// Anything else: a reference table, VALUES, a windowed subquery (a window join)…
    Other,
}

/// Rewrites a join of two streams whose sides are subqueries of them into a join of the
/// streams themselves (see the module's documentation); leaves every other query as it is.
/// `streams` are the names of the streams the query may read.
pub(super) fn inline_stream_sides(query: &mut Query, streams: &[&str]) -> Result<()> {
    let SetExpr::Select(select) = query.body.as_mut() else {
        return Ok(());
    };
    let [from] = select.from.as_mut_slice() else {
        return Ok(());
    };
    let [join] = from.joins.as_mut_slice() else {
        return Ok(());
    };
    let (left, right) = (side(&from.relation, streams), side(&join.relation, streams));
    // Only a join of streams: a subquery of the stream joined with a reference table is the
    // table join's (sql/lookup.rs), two windowed subqueries a window join's.
    if left == Side::Other || right == Side::Other || (left, right) == (Side::Stream, Side::Stream)
    {
        return Ok(());
    }
    let first_query = if left == Side::StreamQuery {
        from.relation.span()
    } else {
        join.relation.span()
    };
    let (on, left_outer) = match &mut join.join_operator {
        JoinOperator::Join(c) | JoinOperator::Inner(c) => (c, false),
        JoinOperator::Left(c) | JoinOperator::LeftOuter(c) => (c, true),
        other => {
            let name = match other {
                JoinOperator::Right(_) | JoinOperator::RightOuter(_) => "RIGHT JOIN",
                JoinOperator::FullOuter(_) => "FULL JOIN",
                _ => "this kind of join",
            };
            return Err(plan_error(
                first_query,
                format!(
                    "{name} of streams is not supported; write JOIN (inner) or LEFT JOIN, with the stream whose rows must all come out on the left"
                ),
            ));
        }
    };
    let JoinConstraint::On(on) = on else {
        return Err(plan_error(
            first_query,
            "a join of streams whose side is a subquery takes its condition in ON (ON c.payment_id = a.payment_id AND c.event_time BETWEEN …), not USING or NATURAL",
        ));
    };
    let left_predicate = match left {
        Side::StreamQuery => as_stream(&mut from.relation, streams)?,
        _ => None,
    };
    let right_predicate = match right {
        Side::StreamQuery => as_stream(&mut join.relation, streams)?,
        _ => None,
    };
    if let Some(p) = right_predicate {
        and_into(on, p);
    }
    if let Some(p) = left_predicate {
        if left_outer {
            match &mut select.selection {
                Some(w) => and_into(w, p),
                None => select.selection = Some(p),
            }
        } else {
            and_into(on, p);
        }
    }
    Ok(())
}

/// `target AND (p)`, in place; both parenthesized so that an OR in either stays whole.
pub(super) fn and_into(target: &mut Expr, p: Expr) {
    let old = std::mem::replace(
        target,
        Expr::Value(datafusion::sql::sqlparser::ast::Value::Null.into()),
    );
    *target = Expr::BinaryOp {
        left: Box::new(nested(old)),
        op: BinaryOperator::And,
        right: Box::new(nested(p)),
    };
}

fn nested(e: Expr) -> Expr {
    match e {
        Expr::Nested(_) | Expr::Identifier(_) | Expr::CompoundIdentifier(_) => e,
        e => Expr::Nested(Box::new(e)),
    }
}

/// Whether `name` is one of `streams`, as the planner matches a stream's name.
fn is_stream(name: &ObjectName, streams: &[&str]) -> bool {
    let n = name.to_string();
    let n = n.trim_matches('"');
    name.0.len() == 1 && streams.iter().any(|s| s.eq_ignore_ascii_case(n))
}

fn side(f: &TableFactor, streams: &[&str]) -> Side {
    match f {
        TableFactor::Table {
            name, args: None, ..
        } if is_stream(name, streams) => Side::Stream,
        TableFactor::Derived { subquery, .. } => match subquery.body.as_ref() {
            SetExpr::Select(s)
                if s.from.iter().any(|t| {
                    std::iter::once(&t.relation)
                        .chain(t.joins.iter().map(|j| &j.relation))
                        .any(|r| side(r, streams) != Side::Other)
                }) =>
            {
                Side::StreamQuery
            }
            _ => Side::Other,
        },
        _ => Side::Other,
    }
}

/// What to write instead of a side the rewrite cannot take.
const SHAPE: &str = "a side of a join of streams may be (SELECT * FROM <stream> WHERE …) AS a, or a CTE of that form; select columns, and group or aggregate, in the outer query";

fn refuse(at: Span, fallback: Span, what: &str) -> Error {
    let at = if at == Span::empty() { fallback } else { at };
    plan_error(
        at,
        format!("{what} in a side of a join of streams is not supported: {SHAPE}"),
    )
}

/// A name as SQL means it: an unquoted identifier folded to lower case (as DataFusion folds
/// it), a quoted one as written.
fn normal(i: &Ident) -> String {
    match i.quote_style {
        None => i.value.to_ascii_lowercase(),
        Some(_) => i.value.clone(),
    }
}

/// Replaces the derived table `f`, `(SELECT * FROM s [AS t] [WHERE p]) AS a`, by `s AS a`;
/// returns `p` with its columns qualified by `a`. Refuses any other shape.
fn as_stream(f: &mut TableFactor, streams: &[&str]) -> Result<Option<Expr>> {
    let whole = f.span();
    let TableFactor::Derived {
        lateral,
        subquery,
        alias,
        sample,
    } = f
    else {
        return Ok(None);
    };
    if *lateral {
        return Err(refuse(whole, whole, "LATERAL"));
    }
    if sample.is_some() {
        return Err(refuse(whole, whole, "TABLESAMPLE"));
    }
    let Some(alias) = alias.take() else {
        return Err(plan_error(
            whole,
            "a subquery side of a join of streams needs a name: (SELECT * FROM payments WHERE …) AS a",
        ));
    };
    if !alias.columns.is_empty() || alias.at.is_some() {
        return Err(refuse(alias.span(), whole, "column names after the alias"));
    }
    // Every clause of the query is named here (no `..`), so a clause a newer parser adds is
    // refused until it is considered.
    let Query {
        with,
        body,
        order_by,
        limit_clause,
        fetch,
        locks,
        for_clause,
        settings,
        format_clause,
        pipe_operators,
    } = subquery.as_mut();
    if let Some(w) = with {
        return Err(refuse(w.span(), whole, "WITH"));
    }
    if let Some(o) = order_by {
        return Err(refuse(o.span(), whole, "ORDER BY"));
    }
    if let Some(l) = limit_clause {
        return Err(refuse(l.span(), whole, "LIMIT"));
    }
    if let Some(l) = fetch {
        return Err(refuse(l.span(), whole, "FETCH"));
    }
    if !locks.is_empty()
        || for_clause.is_some()
        || settings.is_some()
        || format_clause.is_some()
        || !pipe_operators.is_empty()
    {
        return Err(refuse(whole, whole, "this clause"));
    }
    let SetExpr::Select(select) = body.as_mut() else {
        return Err(refuse(body.span(), whole, "this query form"));
    };
    let (stream, inner_alias, selection) = plain_select(select, whole, streams)?;
    // The names by which the subquery's WHERE may qualify its columns.
    let own = |q: &Ident| {
        q.value
            .eq_ignore_ascii_case(&stream.to_string().replace('"', ""))
            || inner_alias.as_ref().is_some_and(|a| normal(a) == normal(q))
    };
    let predicate = match selection {
        Some(mut p) => {
            qualify(&mut p, &alias.name, &own)?;
            Some(p)
        }
        None => None,
    };
    *f = super::window_tvf::plain_table(stream, Some(alias));
    Ok(predicate)
}

/// The stream, its alias inside the subquery, and the WHERE of `SELECT * FROM <stream> [AS t]
/// [WHERE …]`; refuses every other clause.
fn plain_select(
    select: &mut Select,
    whole: Span,
    streams: &[&str],
) -> Result<(ObjectName, Option<Ident>, Option<Expr>)> {
    // Every clause is named here (no `..`): see `as_stream`.
    let Select {
        select_token: _,
        optimizer_hints,
        distinct,
        select_modifiers,
        top,
        top_before_distinct: _,
        projection,
        exclude,
        into,
        from,
        lateral_views,
        prewhere,
        selection,
        connect_by,
        group_by,
        cluster_by,
        distribute_by,
        sort_by,
        having,
        named_window,
        qualify: qualify_clause,
        window_before_qualify: _,
        value_table_mode,
        flavor,
    } = select;
    if !matches!(distinct, None | Some(Distinct::All)) {
        return Err(refuse(whole, whole, "DISTINCT"));
    }
    match group_by {
        GroupByExpr::Expressions(e, m) if e.is_empty() && m.is_empty() => {}
        g => return Err(refuse(g.span(), whole, "GROUP BY")),
    }
    if let Some(h) = having {
        return Err(refuse(h.span(), whole, "HAVING"));
    }
    if let Some(w) = named_window.first() {
        return Err(refuse(w.span(), whole, "WINDOW"));
    }
    if let Some(q) = qualify_clause {
        return Err(refuse(q.span(), whole, "QUALIFY"));
    }
    if !optimizer_hints.is_empty()
        || select_modifiers.is_some()
        || top.is_some()
        || exclude.is_some()
        || into.is_some()
        || !lateral_views.is_empty()
        || prewhere.is_some()
        || !connect_by.is_empty()
        || !cluster_by.is_empty()
        || !distribute_by.is_empty()
        || !sort_by.is_empty()
        || value_table_mode.is_some()
        || *flavor != SelectFlavor::Standard
    {
        return Err(refuse(whole, whole, "this clause"));
    }
    let [table] = from.as_slice() else {
        return Err(refuse(whole, whole, "a FROM of several relations"));
    };
    if let Some(j) = table.joins.first() {
        return Err(refuse(j.span(), whole, "a join"));
    }
    let TableFactor::Table {
        name,
        alias: inner_alias,
        args: None,
        with_hints,
        version: None,
        with_ordinality: false,
        partitions,
        json_path: None,
        sample: None,
        index_hints,
    } = &table.relation
    else {
        return Err(refuse(table.relation.span(), whole, "this FROM"));
    };
    if !is_stream(name, streams)
        || !with_hints.is_empty()
        || !partitions.is_empty()
        || !index_hints.is_empty()
    {
        return Err(refuse(table.relation.span(), whole, "this FROM"));
    }
    let inner_alias = match inner_alias {
        Some(a) if !a.columns.is_empty() || a.at.is_some() => {
            return Err(refuse(a.span(), whole, "column names after the alias"));
        }
        Some(a) => Some(a.name.clone()),
        None => None,
    };
    let plain = super::top_n::plain_wildcard;
    let star = match projection.as_slice() {
        [SelectItem::Wildcard(o)] => plain(o),
        [SelectItem::QualifiedWildcard(SelectItemQualifiedWildcardKind::ObjectName(q), o)] => {
            plain(o)
                && match q.0.as_slice() {
                    [part] => part.as_ident().is_some_and(|i| {
                        i.value
                            .eq_ignore_ascii_case(&name.to_string().replace('"', ""))
                            || inner_alias.as_ref().is_some_and(|a| normal(a) == normal(i))
                    }),
                    _ => false,
                }
        }
        _ => false,
    };
    if !star {
        let at = projection
            .iter()
            .map(|p| p.span())
            .reduce(|a, b| a.union(&b))
            .unwrap_or(whole);
        return Err(refuse(at, whole, "a SELECT list other than *"));
    }
    Ok((name.clone(), inner_alias, selection.take()))
}

/// Qualifies every column of `p` (the WHERE of a side `(SELECT * FROM s [AS t] …) AS a`) by
/// `a`: `col` and `s.col` / `t.col` become `a.col`, since the side now reads `s AS a`. The
/// qualifier takes the column's span, so errors about the column point at it as written.
fn qualify(p: &mut Expr, alias: &Ident, own: &dyn Fn(&Ident) -> bool) -> Result<()> {
    // A nested query has names of its own; not worth telling apart here.
    if let ControlFlow::Break(at) = visit_expressions(p, |e| match e {
        Expr::Subquery(_) | Expr::InSubquery { .. } | Expr::Exists { .. } | Expr::Lambda(_) => {
            ControlFlow::Break(e.span())
        }
        _ => ControlFlow::Continue(()),
    }) {
        return Err(plan_error(
            at,
            "a subquery (IN, EXISTS) in the WHERE of a side of a join of streams is not supported; write that condition in the outer query's WHERE",
        ));
    }
    let qualifier = |col: &Ident| Ident {
        value: alias.value.clone(),
        quote_style: alias.quote_style,
        span: col.span,
    };
    let outcome = visit_expressions_mut(p, |e| {
        match e {
            Expr::Identifier(col) => {
                let col = col.clone();
                *e = Expr::CompoundIdentifier(vec![qualifier(&col), col]);
            }
            Expr::CompoundIdentifier(parts) => match parts.as_mut_slice() {
                [q, col] if own(q) => *q = qualifier(col),
                _ => {
                    let at = e.span();
                    return ControlFlow::Break(plan_error(
                        at,
                        format!(
                            "`{e}` in the WHERE of a side of a join of streams names neither that side's stream nor its alias; write the column alone"
                        ),
                    ));
                }
            },
            _ => {}
        }
        ControlFlow::Continue(())
    });
    match outcome {
        ControlFlow::Break(e) => Err(e),
        ControlFlow::Continue(()) => Ok(()),
    }
}
