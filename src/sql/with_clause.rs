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
    Expr, FunctionArg, FunctionArgExpr, Query, SelectItem, SetExpr, Spanned, TableAlias,
    TableFactor,
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
    /// The inner bound the outer window follows (`window_start` or `window_end`), or for a CTE
    /// that joins two streams, the time column of its results the outer window names.
    pub bound: String,
    /// The name the outer query's events call that bound (no longer than the bound as written,
    /// padded to its length, so positions hold).
    pub time_column: String,
    /// Whether the CTE joins (its results are pairs, timed by a column of theirs, not a
    /// window's rows).
    pub joins: bool,
    /// Whether the outer query computes window functions (OVER) ordered by the bound: its
    /// events keep every column of the CTE's rows under their names.
    pub over: bool,
    /// Where the time argument is, for errors about it.
    pub bound_span: Span,
}

/// What the outer query's events call the inner window's start, and its end: no longer than
/// the names they replace (padded to their length), so the text keeps its positions.
const INNER_START: &str = "inner_start";
const INNER_END: &str = "inner_end";

/// Resolves `query`'s WITH clause (taken out of it): inlines what it can, or returns the texts
/// of a chained plan.
/// With `chain_reads`, a query reading a CTE that joins (`FROM j`) is chained too; the planner
/// asks again without it when the CTE turns out to be no join of streams.
pub(super) fn resolve(
    sql: &str,
    query: &mut Query,
    stream: &str,
    chain_reads: bool,
) -> Result<Resolved> {
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
        let name = normal(&cte.alias.name);
        let values = matches!(cte.query.body.as_ref(), SetExpr::Values(_));
        if !cte.alias.columns.is_empty() && !values {
            return Err(plan_error(
                cte.alias.span(),
                format!(
                    "a column list on `{name}` is not supported; name the columns with AS in its SELECT"
                ),
            ));
        }
        if name.eq_ignore_ascii_case(stream) || ctes.iter().any(|(n, _, _)| *n == name) {
            return Err(plan_error(
                cte.alias.name.span,
                format!("`{name}` is defined twice (or is the stream's name); rename the CTE"),
            ));
        }
        // A CTE may read the stream or an earlier CTE (inlined into it).
        let mut body = (*cte.query).clone();
        if values && !cte.alias.columns.is_empty() {
            // `t(a, b) AS (VALUES …)`: the rows under the list's names.
            body = named_values(&body, &cte.alias)?;
        }
        inline_query(&mut body, &ctes, stream)?;
        let end = cte.closing_paren_token.0.span.start;
        ctes.push((name, body, Span::new(cte.query.span().start, end)));
    }
    // A window table function over a CTE that only filters the stream (`WITH auths AS (SELECT *
    // FROM payments WHERE event_type = 'authorization') … FROM TUMBLE(auths, event_time, …)`):
    // the window over the stream, the CTE's condition ANDed into the WHERE.
    if let SetExpr::Select(select) = query.body.as_mut()
        && let Some(from) = select.from.first_mut()
        && let TableFactor::Table {
            args: Some(args), ..
        } = &mut from.relation
        && let Some(FunctionArg::Unnamed(FunctionArgExpr::Expr(first))) = args.args.first_mut()
        && let Expr::Identifier(read) = first
        && let Some((_, body, _)) = ctes.iter().find(|(n, _, _)| *n == normal(read))
        && let Some(condition) = stream_filter(body, stream)
    {
        let cte_name = read.clone();
        let mut stream_ident = read.clone();
        stream_ident.value = stream.to_string();
        *first = Expr::Identifier(stream_ident);
        // The query may qualify columns by the CTE's name (`auths.card_id`).
        let mut named = cte_name.clone();
        if let TableFactor::Table { alias, .. } = &mut from.relation {
            match alias {
                Some(a) => named = a.name.clone(),
                None => {
                    *alias = Some(TableAlias {
                        explicit: true,
                        name: cte_name,
                        columns: vec![],
                        at: None,
                    })
                }
            }
        }
        if let Some(mut p) = condition {
            // The CTE's condition may qualify columns by the stream's name: they are now the
            // window's rows, named as the query names them.
            let _ = datafusion::sql::sqlparser::ast::visit_expressions_mut(&mut p, |e| {
                if let Expr::CompoundIdentifier(ids) = e
                    && ids.len() == 2
                    && ids[0].value.eq_ignore_ascii_case(stream)
                {
                    ids[0] = named.clone();
                }
                std::ops::ControlFlow::<()>::Continue(())
            });
            match &mut select.selection {
                Some(w) => super::join_sides::and_into(w, p),
                None => select.selection = Some(p),
            }
        }
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
            .find(|(n, _, _)| matches!(first, Expr::Identifier(i) if normal(i) == *n))
    {
        let joins = joins_streams(body);
        if !joins {
            one_cte(&with, with_span, cte, "a window over")?;
        }
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
        let named = normal(bound);
        let (bound_name, time_column) = match named.as_str() {
            // A join's results are timed by one of their own columns, kept under its name.
            _ if joins => (named.clone(), named.clone()),
            WINDOW_START => (WINDOW_START.to_string(), INNER_START.to_string()),
            WINDOW_END => (WINDOW_END.to_string(), INNER_END.to_string()),
            other => {
                return Err(plan_error(
                    bound.span,
                    format!(
                        "`{other}` is not a time column of `{cte}`: a window over a query's results follows its window's bounds (window_start or window_end); to window the stream itself, read it directly and filter in WHERE: FROM TUMBLE({stream}, …) WHERE …"
                    ),
                ));
            }
        };
        if !joins {
            check_bound(body, &bound_name, cte, bound.span)?;
        }
        let (with_range, inner_sql) = split_texts(sql, &with, with_span, cte, *body_span)?;
        // Blanking keeps every line's characters (one space for one character), and parser
        // positions count characters: the bound's place in the blanked text is found afresh.
        let outer = blank(sql, |i| !with_range.contains(&i));
        let bound_range = range(&outer, bound.span.start, bound.span.end);
        let replacement = format!("{time_column:<width$}", width = bound_range.len());
        if replacement.len() != bound_range.len() || !outer.is_char_boundary(bound_range.end) {
            return Err(plan_error(
                bound.span,
                format!("write the time column as {bound_name}"),
            ));
        }
        let outer_sql = format!(
            "{}{replacement}{}",
            &outer[..bound_range.start],
            &outer[bound_range.end..]
        );
        return Ok(Resolved::Chain(ChainTexts {
            inner_sql,
            outer_sql,
            cte: cte.clone(),
            bound: bound_name,
            time_column,
            joins,
            over: false,
            bound_span: bound.span,
        }));
    }
    // Window functions ordered by a windowed CTE's bound — `ewma_zscore(attempts, 0.2, 5) OVER
    // (PARTITION BY merchant_id ORDER BY window_start)` FROM per_minute: chained too, the CTE's
    // rows the outer query's events, timed by that bound, each window's rows final when they
    // come (Top-N, ordered by a value within each window, stays a stage of the windowed plan).
    // The functions may be in a subquery the outer query filters (an alert rule).
    if let SetExpr::Select(outer) = query.body.as_ref()
        && let Some(select) = over_reader(outer)
        && let Some((cte, body, body_span, _)) = cte_read(select, &ctes)
        && !joins_streams(body)
        && let Some((bound, bound_span)) = over_bound(select, cte)
    {
        one_cte(&with, with_span, cte, "window functions over")?;
        check_bound(body, &bound, cte, bound_span)?;
        let (with_range, inner_sql) = split_texts(sql, &with, with_span, cte, *body_span)?;
        return Ok(Resolved::Chain(ChainTexts {
            inner_sql,
            outer_sql: blank(sql, |i| !with_range.contains(&i)),
            cte: cte.clone(),
            bound: bound.clone(),
            time_column: bound,
            joins: false,
            over: true,
            bound_span,
        }));
    }
    // A query reading a CTE that joins streams (`FROM j`): chained too, its rows the outer
    // query's events, timed by a time column of theirs chosen once the join is planned.
    if chain_reads
        && let SetExpr::Select(select) = query.body.as_ref()
        && let Some((cte, body, body_span, name_span)) = cte_read(select, &ctes)
        && joins_streams(body)
    {
        let (with_range, inner_sql) = split_texts(sql, &with, with_span, cte, *body_span)?;
        return Ok(Resolved::Chain(ChainTexts {
            inner_sql,
            outer_sql: blank(sql, |i| !with_range.contains(&i)),
            cte: cte.clone(),
            bound: String::new(),
            time_column: String::new(),
            joins: true,
            over: false,
            bound_span: name_span,
        }));
    }
    inline_query(query, &ctes, stream)?;
    Ok(Resolved::Inlined)
}

/// The CTE `select` reads as its one plain table (`FROM per_minute`, no join): its name, body,
/// the body's span, and where the FROM names it.
fn cte_read<'a>(
    select: &datafusion::sql::sqlparser::ast::Select,
    ctes: &'a [(String, Query, Span)],
) -> Option<(&'a String, &'a Query, &'a Span, Span)> {
    let [from] = select.from.as_slice() else {
        return None;
    };
    if !from.joins.is_empty() {
        return None;
    }
    let TableFactor::Table {
        name, args: None, ..
    } = &from.relation
    else {
        return None;
    };
    let [part] = name.0.as_slice() else {
        return None;
    };
    let ident = part.as_ident()?;
    ctes.iter()
        .find(|(n, _, _)| normal(ident) == *n)
        .map(|(n, body, span)| (n, body, span, name.span()))
}

/// Refuses a WITH of more than CTE `cte` for a chained plan (`what` it is, for the message):
/// the chain plans `cte` alone, so the steps before it belong inside it.
fn one_cte(
    with: &datafusion::sql::sqlparser::ast::With,
    with_span: Span,
    cte: &str,
    what: &str,
) -> Result<()> {
    if with.cte_tables.len() <= 1 {
        return Ok(());
    }
    let other = with
        .cte_tables
        .iter()
        .find(|c| normal(&c.alias.name) != cte)
        .map_or(with_span, |c| c.alias.name.span);
    let takes = if what.starts_with("window functions") {
        "take"
    } else {
        "takes"
    };
    Err(plan_error(
        other,
        format!(
            "{what} `{cte}` {takes} one CTE; write the steps before it inside `{cte}` as subqueries"
        ),
    ))
}

/// The SELECT that reads the rows window functions run over: `select` itself, or the subquery
/// it reads (`SELECT * FROM (SELECT …, f(x) OVER (…) AS z FROM per_minute) WHERE z > 4`).
fn over_reader(
    select: &datafusion::sql::sqlparser::ast::Select,
) -> Option<&datafusion::sql::sqlparser::ast::Select> {
    let [from] = select.from.as_slice() else {
        return None;
    };
    match &from.relation {
        TableFactor::Derived { subquery, .. } if from.joins.is_empty() => {
            match subquery.body.as_ref() {
                SetExpr::Select(inner) if subquery.with.is_none() => Some(inner),
                _ => None,
            }
        }
        _ => Some(select),
    }
}

/// The window bound (`window_start` or `window_end`) the first window function of `select`
/// orders by first, and where it is written.
fn over_bound(
    select: &datafusion::sql::sqlparser::ast::Select,
    cte: &str,
) -> Option<(String, Span)> {
    let mut found = None;
    for item in &select.projection {
        let _ = datafusion::sql::sqlparser::ast::visit_expressions(item, |e| {
            if let Expr::Function(f) = e
                && let Some(over) = &f.over
                && let Some(spec) = super::over_check::spec_of(select, over)
                && let Some(first) = spec.order_by.first()
                && let Some(i) = match &first.expr {
                    Expr::Identifier(i) => Some(i),
                    // `per_minute.window_start`
                    Expr::CompoundIdentifier(parts)
                        if parts.len() == 2 && normal(&parts[0]) == cte =>
                    {
                        parts.last()
                    }
                    _ => None,
                }
                && matches!(normal(i).as_str(), WINDOW_START | WINDOW_END)
            {
                found = Some((normal(i), i.span));
                return std::ops::ControlFlow::Break(());
            }
            std::ops::ControlFlow::Continue(())
        });
        if found.is_some() {
            break;
        }
    }
    found
}

/// When a CTE's (inlined) body is `SELECT * FROM <stream> [WHERE p]` — the stream's events,
/// filtered — its condition (`Some(None)` without one).
fn stream_filter(body: &Query, stream: &str) -> Option<Option<Expr>> {
    if !super::top_n::bare(body) {
        return None;
    }
    let SetExpr::Select(s) = body.body.as_ref() else {
        return None;
    };
    let plain = super::top_n::unadorned(s)
        && matches!(s.projection.as_slice(), [SelectItem::Wildcard(o)] if super::top_n::plain_wildcard(o));
    let reads_stream = matches!(
        s.from.as_slice(),
        [f] if f.joins.is_empty() && matches!(&f.relation, TableFactor::Table { name, args: None, alias: None, .. }
            if name.0.len() == 1 && name.to_string().trim_matches('"').eq_ignore_ascii_case(stream))
    );
    (plain && reads_stream).then(|| s.selection.clone())
}

/// Whether a CTE's (inlined) body joins: its rows are pairs of a join, not of one stream.
fn joins_streams(body: &Query) -> bool {
    matches!(body.body.as_ref(), SetExpr::Select(s) if s.from.iter().any(|f| !f.joins.is_empty()))
}

/// The byte range of the WITH clause, and the text of CTE `cte`'s query planned on its own
/// ([`inner_text`]), checked to parse as a query.
fn split_texts(
    sql: &str,
    with: &datafusion::sql::sqlparser::ast::With,
    with_span: Span,
    cte: &str,
    body_span: Span,
) -> Result<(std::ops::Range<usize>, String)> {
    let last = with
        .cte_tables
        .last()
        .map_or(with_span.end, |c| c.closing_paren_token.0.span.end);
    let inner_sql = inner_text(sql, with, with_span, cte, body_span);
    if !balanced(&inner_sql) {
        return Err(plan_error(
            body_span,
            format!("write `{cte}` AS (SELECT …) without extra parentheses around its SELECT"),
        ));
    }
    Ok((range(sql, with_span.start, last), inner_sql))
}

/// The text of CTE `cte`'s query planned on its own: its body, after the CTEs defined before
/// it (which it may read), everything else blanked so positions stay the user's.
fn inner_text(
    sql: &str,
    with: &datafusion::sql::sqlparser::ast::With,
    with_span: Span,
    cte: &str,
    body_span: Span,
) -> String {
    let body_range = range(sql, body_span.start, body_span.end);
    let at = with
        .cte_tables
        .iter()
        .position(|c| normal(&c.alias.name) == cte)
        .unwrap_or(0);
    let before = match at {
        0 => 0..0,
        k => range(
            sql,
            with_span.start,
            with.cte_tables[k - 1].closing_paren_token.0.span.end,
        ),
    };
    blank(sql, |i| body_range.contains(&i) || before.contains(&i))
}

/// `VALUES …` as `SELECT * FROM (VALUES …) AS t(a, b)`: a constant table with named columns.
fn named_values(
    values: &Query,
    alias: &datafusion::sql::sqlparser::ast::TableAlias,
) -> Result<Query> {
    use datafusion::sql::sqlparser::dialect::GenericDialect;
    use datafusion::sql::sqlparser::parser::Parser;
    let text = format!("SELECT * FROM ({values}) AS {alias}");
    let mut parser = Parser::new(&GenericDialect {})
        .try_with_sql(&text)
        .map_err(|e| plan_error(alias.span(), e.to_string()))?;
    parser
        .parse_query()
        .map(|q| *q)
        .map_err(|e| plan_error(alias.span(), e.to_string()))
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
            let n = match name.0.as_slice() {
                [part] => part.as_ident().map(normal),
                _ => None,
            };
            if let Some((cte, body, _)) = ctes.iter().find(|(c, _, _)| Some(c) == n.as_ref()) {
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
                && ctes.iter().any(|(c, _, _)| *c == normal(i))
            {
                return Err(plan_error(
                    name.span(),
                    format!(
                        "a window over `{}` must be the outer query's own FROM: one window over a windowed CTE per query (a chain of three windows, or such a window inside a subquery, is not supported yet)",
                        i.value
                    ),
                ));
            }
            let _ = stream;
            Ok(())
        }
        TableFactor::Derived { subquery, .. } => inline_query(subquery, ctes, stream),
        // The rows a pattern reads.
        TableFactor::MatchRecognize { table, .. } => inline_factor(table, ctes, stream),
        _ => Ok(()),
    }
}

/// A name as SQL means it: an unquoted identifier folded to lower case (as DataFusion folds
/// it), a quoted one as written.
fn normal(i: &datafusion::sql::sqlparser::ast::Ident) -> String {
    match i.quote_style {
        None => i.value.to_ascii_lowercase(),
        Some(_) => i.value.clone(),
    }
}

/// Whether the parentheses of `sql` outside quotes balance.
fn balanced(sql: &str) -> bool {
    let (mut depth, mut quote) = (0i64, None);
    for c in sql.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '\'' | '"') => quote = Some(c),
            (None, '(') => depth += 1,
            (None, ')') => {
                depth -= 1;
                if depth < 0 {
                    return false;
                }
            }
            _ => {}
        }
    }
    depth == 0
}

/// The CTE's `bound` column must be the window's own bound, selected as it is: the outer
/// watermark's lag is worked out from what the bound is, and another expression named like
/// it (`window_start AS window_end`, `window_end - INTERVAL …`) would make rows arrive behind
/// the outer window, or null.
fn check_bound(body: &Query, bound: &str, cte: &str, at: Span) -> Result<()> {
    use datafusion::sql::sqlparser::ast::SelectItem;
    let SetExpr::Select(select) = body.body.as_ref() else {
        return Ok(());
    };
    let is_bound = |e: &Expr, name: &str| match e {
        Expr::Identifier(i) => normal(i) == name,
        Expr::CompoundIdentifier(p) => p.last().is_some_and(|i| normal(i) == name),
        _ => false,
    };
    for item in &select.projection {
        // A column named like a window bound must be that bound (aliased to itself at most).
        let ok = match item {
            SelectItem::ExprWithAlias { expr, alias } => {
                let a = normal(alias);
                !(a == WINDOW_START || a == WINDOW_END) || is_bound(expr, &a)
            }
            _ => true,
        };
        if !ok {
            return Err(plan_error(
                item.span().union(&at),
                format!(
                    "`{cte}`'s {bound} must be its window's own {bound}, selected unchanged (a window over `{cte}`'s results follows it); give other columns other names"
                ),
            ));
        }
    }
    Ok(())
}

/// Byte range of `[from, to)` (parser locations) in `sql`.
pub(super) fn range(sql: &str, from: Location, to: Location) -> std::ops::Range<usize> {
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
pub(super) fn blank(sql: &str, keep: impl Fn(usize) -> bool) -> String {
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
            fields.push(Field::new(&texts.time_column, f.data_type().clone(), false));
            columns.push(i);
        } else if texts.joins || texts.over || (name != WINDOW_START && name != WINDOW_END) {
            fields.push(f.as_ref().clone());
            columns.push(i);
        }
    }
    if time.is_none() && texts.joins {
        return Err(plan_error(
            texts.bound_span,
            format!(
                "`{}` has no TIMESTAMP column {}; select the event time of one side of its join under that name (c.event_time AS {})",
                texts.cte, texts.bound, texts.bound
            ),
        ));
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
    Ok(match (inner, texts.bound.as_str()) {
        (_, WINDOW_END) => -1,
        (WindowKind::Tumble { size } | WindowKind::Hop { size, .. }, _) => size - 1,
        (WindowKind::Session { .. }, _) if texts.over => {
            return Err(plan_error(
                texts.bound_span,
                "a session's start says nothing of when it closes; order by the sessions' end instead: ORDER BY window_end",
            ));
        }
        (WindowKind::Session { .. }, _) => {
            return Err(plan_error(
                texts.bound_span,
                format!(
                    "a session's start says nothing of when it closes; time the outer window by the sessions' end instead: TUMBLE({}, window_end, …)",
                    texts.cte
                ),
            ));
        }
    })
}
