//! SQL text → [`StreamPlan`], using DataFusion for everything a batch engine already does well.
//!
//! ```text
//!  query text ──tokenize──▶ Flink→RisingWave window rewrite ──parse──▶ AST
//!       AST ──extract window TVF──▶ plain `FROM payments` + WindowSpec
//!       AST ──DataFusion (analyzer, simplifier, physical planner)──▶ ExecutionPlan
//!  ExecutionPlan ──lift expressions/aggregates──▶ StreamPlan (our operators run it)
//! ```
//!
//! DataFusion sees the stream as an empty table whose schema carries `window_start` and
//! `window_end`; its plan is never executed. Only a fixed set of plan shapes is accepted: a
//! filter/projection, a windowed aggregate (with filters, projections and per-window rankings
//! above it, also written as an outer query), and window functions over the stream
//! ([`super::over`]). Anything else (ORDER BY, LIMIT, joins, UNION, an unwindowed GROUP BY) is
//! rejected with the construct's position in the query, never run with batch semantics.
//!
//! Rewrites before DataFusion sees the query: `GROUP BY date_trunc(…)` as a tumble,
//! `SELECT DISTINCT` as a grouping (windowed) or a first-seen `row_number()` (unwindowed), and
//! `agg(x) FILTER (WHERE c) OVER …` as `agg(CASE WHEN c THEN x END) OVER …`.

use std::ops::ControlFlow;
use std::sync::Arc;

use datafusion::catalog::empty::EmptyTable;
use datafusion::execution::SessionStateBuilder;
use datafusion::optimizer::simplify_expressions::SimplifyExpressions;
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_expr::utils::collect_columns;
use datafusion::physical_plan::aggregates::{AggregateExec, AggregateMode};
use datafusion::physical_plan::empty::EmptyExec;
use datafusion::physical_plan::filter::FilterExec;
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::{ExecutionPlan, PhysicalExpr};
use datafusion::prelude::{SessionConfig, SessionContext};
use datafusion::sql::sqlparser::ast::{
    Expr, SetExpr, Spanned, Statement, TableFactor, Visit, Visitor,
};
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::parser::Parser;
use datafusion::sql::sqlparser::tokenizer::{Span, Token, TokenWithSpan, Tokenizer};

use super::checked::checked;
use super::plan::{AggregateSpec, CHANGELOG_OP, KeySlot, PlanKind, Stage, StreamPlan};
use super::window_tvf::{
    WindowKind, WindowLimits, extract_window, plan_error, point,
    rewrite_flink_windows_with_partitions,
};
use crate::error::{Error, Result};
use crate::schema::{EventSchema, WINDOW_END, WINDOW_START};
use crate::table::ReferenceTable;

/// Plans a stream query over the built-in payment stream (`payments`).
///
/// Planning never waits on I/O (the stream is an in-memory table stub), so the async DataFusion
/// calls complete on their first poll; polling once keeps this callable from any context, inside
/// an async runtime or not.
pub fn plan_query(sql: &str) -> Result<StreamPlan> {
    plan_query_on(sql, EventSchema::payments().stream())
}

/// Plans a stream query reading the stream called `stream` (a source declared in a query file).
pub fn plan_query_on(sql: &str, stream: &str) -> Result<StreamPlan> {
    plan_query_with(sql, stream, &WindowLimits::default())
}

/// Plans a stream query reading `stream`, with windows bounded by `limits`.
///
/// Parsing, DataFusion's analysis and simplification, and dropping a syntax tree all recurse
/// over the query's expressions, so planning runs on a thread of its own with a large stack: a
/// query too deep to run is then refused ([`MAX_EXPR_DEPTH`]) instead of overflowing the stack.
pub fn plan_query_with(sql: &str, stream: &str, limits: &WindowLimits) -> Result<StreamPlan> {
    plan_query_in(sql, &EventSchema::payments(), stream, limits)
}

/// Plans a stream query reading `stream`, whose events have the schema `events`, with windows
/// bounded by `limits`. The plan carries `events`: the engine runs it only over a source that
/// decodes the same events.
pub fn plan_query_in(
    sql: &str,
    events: &Arc<EventSchema>,
    stream: &str,
    limits: &WindowLimits,
) -> Result<StreamPlan> {
    on_planning_thread(sql, events, stream, limits, &[], &[])
}

/// Runs [`plan_query_async`] on a thread of its own with the planning stack, polling it once
/// (planning never waits on I/O).
fn on_planning_thread(
    sql: &str,
    events: &Arc<EventSchema>,
    stream: &str,
    limits: &WindowLimits,
    catalog: &[(String, Arc<EventSchema>)],
    tables: &[Arc<ReferenceTable>],
) -> Result<StreamPlan> {
    use futures::FutureExt;
    std::thread::scope(|s| {
        let planner = std::thread::Builder::new()
            .name("planner".into())
            .stack_size(PLANNING_STACK)
            .spawn_scoped(s, || {
                plan_query_async(sql, events, stream, limits, catalog, tables)
                    .now_or_never()
                    .unwrap_or_else(|| {
                        Err(Error::Internal(
                            "query planning tried to wait on I/O".into(),
                        ))
                    })
            })
            .map_err(|e| Error::Internal(format!("cannot start the planning thread: {e}")))?;
        planner
            .join()
            .map_err(|_| Error::Internal("query planning panicked".into()))?
    })
}

/// Plans a stream query over one of several streams (the sources a query file declares, by
/// name, with their events): over the stream it reads, or, for a `UNION ALL`, each branch over
/// its own (a union of different streams reads them all; see [`super::UnionSpec::streams`]).
/// A query that names none of them is planned over the first, whose errors then say what is
/// wrong.
pub fn plan_query_among(
    sql: &str,
    streams: &[(String, Arc<EventSchema>)],
    limits: &WindowLimits,
) -> Result<StreamPlan> {
    plan_query_over(sql, streams, &[], limits)
}

/// [`plan_query_among`] with reference tables the query may join (`CREATE TABLE`): a
/// plan that joins one reads it through the same [`ReferenceTable`], so loading or refreshing
/// the table is seen by the running query.
pub fn plan_query_over(
    sql: &str,
    streams: &[(String, Arc<EventSchema>)],
    tables: &[Arc<ReferenceTable>],
    limits: &WindowLimits,
) -> Result<StreamPlan> {
    let names: Vec<String> = streams.iter().map(|(n, _)| n.clone()).collect();
    // The stream the text names first: the FROM stream of a join, the first branch's of a
    // union.
    let read = super::stream_reads::reads_in_order(sql, &names);
    let (name, events) = read
        .first()
        .and_then(|r| streams.iter().find(|(n, _)| n == r))
        .or(streams.first())
        .ok_or_else(|| Error::Internal("a query planned over no stream".into()))?;
    on_planning_thread(sql, events, name, limits, streams, tables)
}

/// Stack of the planning thread. Only touched pages are committed, so a deep stack costs
/// nothing for ordinary queries; it lets the syntax tree of a hostile query (tens of thousands
/// of terms) be parsed, measured and dropped.
const PLANNING_STACK: usize = 512 << 20;

/// Deepest expression nesting a query may have. Evaluation recurses over expressions on the
/// worker threads, whose stacks are small; a chain `a + b + c + …` nests one level per operator.
pub const MAX_EXPR_DEPTH: usize = 128;

fn parse_error(e: impl std::fmt::Display, at_token: Span) -> Error {
    // sqlparser reports "... at Line: 3, Column: 10"; keep its words, which already say where.
    let msg = e.to_string();
    let position = msg
        .rfind(" at Line: ")
        .map(|i| {
            msg[i + 4..]
                .replace("Line: ", "line ")
                .replace("Column: ", "column ")
        })
        .unwrap_or_else(|| super::window_tvf::at(at_token));
    if msg.contains("recursion limit exceeded") {
        return Error::Plan {
            position,
            message: format!(
                "the query nests parentheses, function calls, NOT or unary minus more than {PARSER_DEPTH} levels deep; flatten it (e.g. write a chain of ANDs or ORs without nesting each one in parentheses)"
            ),
        };
    }
    Error::Plan {
        position,
        message: format!("cannot parse the query: {msg}"),
    }
}

/// Most tokens (besides whitespace and comments) in a query.
pub const MAX_TOKENS: usize = 250_000;

/// The parser's recursion limit (sqlparser's default).
const PARSER_DEPTH: usize = 50;

/// Where a query starts (its first token), for errors about the query as a whole.
fn start_of(tokens: &[TokenWithSpan]) -> Span {
    tokens
        .iter()
        .find(|t| !matches!(t.token, Token::Whitespace(_)))
        .map_or_else(|| point(1, 1), |t| t.span)
}

/// Measures expression nesting, stopping at the first expression deeper than
/// [`MAX_EXPR_DEPTH`]; refuses subqueries, which the streaming engine cannot run.
#[derive(Default)]
struct Shape {
    depth: usize,
}

impl Visitor for Shape {
    type Break = Error;

    fn pre_visit_expr(&mut self, e: &Expr) -> ControlFlow<Error> {
        self.depth += 1;
        if self.depth > MAX_EXPR_DEPTH {
            return ControlFlow::Break(plan_error(
                e.span(),
                format!(
                    "the expression nests more than {MAX_EXPR_DEPTH} levels deep (a chain like a + b + c + … nests one level per operator); group its terms in balanced parentheses, e.g. (a + b) + (c + d), or compute parts in separate columns"
                ),
            ));
        }
        if let Expr::Function(f) = e
            && f.over.is_some()
            && f.to_string().to_ascii_uppercase().contains("IGNORE NULLS")
        {
            return ControlFlow::Break(plan_error(
                e.span(),
                "IGNORE NULLS in a window function (OVER) is not supported; filter the NULLs out in WHERE, or use a FILTER (WHERE x IS NOT NULL) on an aggregate",
            ));
        }
        // `IN (SELECT …)` and `EXISTS` over tables are joins (sql/lookup.rs); a value from a
        // subquery is not.
        if matches!(e, Expr::Subquery(_)) {
            return ControlFlow::Break(plan_error(
                e.span(),
                "a subquery as a value is not supported in stream queries; join the table instead (FROM payments p JOIN merchants m ON m.merchant_id = p.merchant_id) and select its column",
            ));
        }
        ControlFlow::Continue(())
    }

    fn post_visit_expr(&mut self, _e: &Expr) -> ControlFlow<Error> {
        self.depth -= 1;
        ControlFlow::Continue(())
    }
}

/// The name of the events' time column.
fn time_column_name(events: &EventSchema) -> String {
    events
        .arrow()
        .field(events.event_time_column())
        .name()
        .clone()
}

/// First token spelling `kw` (a keyword), for errors found after planning.
fn locate(tokens: &[TokenWithSpan], kw: Keyword) -> Span {
    tokens
        .iter()
        .find(|t| matches!(&t.token, Token::Word(w) if w.keyword == kw))
        .map(|t| t.span)
        .unwrap_or_else(|| point(0, 0))
}

/// Plans `sql` over `stream` (whose events are `events`); a `UNION ALL`'s branches may read
/// the other streams of `catalog` (empty: only `stream`).
pub(super) async fn plan_query_async(
    sql: &str,
    events: &Arc<EventSchema>,
    stream: &str,
    limits: &WindowLimits,
    catalog: &[(String, Arc<EventSchema>)],
    tables: &[Arc<ReferenceTable>],
) -> Result<StreamPlan> {
    let dialect = GenericDialect {};
    let tokens = Tokenizer::new(&dialect, sql)
        .tokenize_with_location()
        .map_err(|e| parse_error(e, point(0, 0)))?;
    // A syntax tree is dropped recursively, so even the planning thread's stack has a limit:
    // refuse a text too long to be a query before it is parsed.
    if let Some(t) = tokens
        .iter()
        .filter(|t| !matches!(t.token, Token::Whitespace(_)))
        .nth(MAX_TOKENS)
    {
        return Err(plan_error(
            t.span,
            format!(
                "the query is too long: more than {MAX_TOKENS} words, numbers and symbols; split it into several queries"
            ),
        ));
    }
    // `booking_time` reads the watermark each event arrived under: planned over the events
    // with that column, which the operator adds.
    if super::booking::called(&tokens) && !super::booking::booked(events) {
        super::booking::check(&tokens)?;
        let booked = Arc::new(events.with_arrival_watermark());
        let inner = Box::pin(plan_query_async(
            sql, &booked, stream, limits, catalog, tables,
        ))
        .await?;
        if !inner.stream_names().is_empty() {
            return Err(plan_error(
                start_of(&tokens),
                "booking_time in a query over two streams is not supported yet; book the events of one stream",
            ));
        }
        return Ok(StreamPlan {
            sql: sql.to_string(),
            name: "the query".into(),
            output_schema: Arc::clone(&inner.output_schema),
            kind: PlanKind::Booked(Box::new(inner)),
            events: Arc::clone(events),
        });
    }
    // The text's own tokens, for cutting a UNION ALL into branches at their positions.
    let raw_tokens = tokens.clone();
    let (mut tokens, session_partitions) = rewrite_flink_windows_with_partitions(tokens);
    let as_of = super::lookup::strip_as_of(&mut tokens)?;
    let within = super::recognize::strip_within(&mut tokens)?;
    let mut parser = Parser::new(&dialect)
        .with_recursion_limit(PARSER_DEPTH)
        .with_tokens_with_locations(tokens.clone());
    let mut statements = match parser.parse_statements() {
        Ok(s) => s,
        Err(e) => {
            // Where the parser stopped; at the end of the text, just after the last token.
            let at = Some(parser.peek_token().span)
                .filter(|s| s.start.line > 0)
                .or_else(|| {
                    tokens
                        .iter()
                        .rev()
                        .find(|t| !matches!(t.token, Token::Whitespace(_) | Token::EOF))
                        .map(|t| Span::new(t.span.end, t.span.end))
                })
                .unwrap_or_else(|| point(0, 0));
            return Err(parse_error(e, at));
        }
    };
    if statements.len() != 1 {
        return Err(plan_error(
            statements.get(1).map_or(point(1, 1), |s| s.span()),
            format!(
                "expected exactly one SELECT statement, found {}",
                statements.len()
            ),
        ));
    }
    let mut stmt = statements.remove(0);
    if super::booking::booked(events) {
        super::booking::rewrite(&mut stmt)?;
    }
    if let ControlFlow::Break(e) = stmt.visit(&mut Shape::default()) {
        return Err(e);
    }
    over_filters_as_cases(&mut stmt)?;
    let Statement::Query(query) = &mut stmt else {
        return Err(plan_error(stmt.span(), "a stream query must be a SELECT"));
    };
    if let Some(ob) = &query.order_by {
        return Err(plan_error(
            locate(&tokens, Keyword::ORDER).union(&ob.span()),
            "ORDER BY over an unbounded stream would never produce output; remove it (results come out in watermark order)",
        ));
    }
    if query.limit_clause.is_some() || query.fetch.is_some() {
        return Err(plan_error(
            locate(&tokens, Keyword::LIMIT),
            "LIMIT/FETCH over an unbounded stream is not supported",
        ));
    }
    if let Some(branches) = super::union::split(sql, &raw_tokens, query)? {
        return Box::pin(plan_union(
            sql, branches, events, stream, limits, catalog, tables,
        ))
        .await;
    }
    let written = query.clone();
    match super::with_clause::resolve(sql, query, stream, true)? {
        super::with_clause::Resolved::Inlined => {}
        super::with_clause::Resolved::Chain(texts) => {
            if let Some(plan) = Box::pin(plan_chain(
                sql, texts, events, stream, limits, catalog, tables,
            ))
            .await?
            {
                return Ok(plan);
            }
            // A CTE that joins, read as a table, that is no join of streams: inlined.
            *query = written;
            super::with_clause::resolve(sql, query, stream, false)?;
        }
    }
    // A join of streams whose sides are subqueries (or CTEs) filtering them: a join of the
    // streams themselves, which is what the interval join reads.
    let streams: Vec<&str> = std::iter::once(stream)
        .chain(catalog.iter().map(|(c, _)| c.as_str()))
        .collect();
    super::join_sides::inline_stream_sides(query, &streams)?;
    super::over_check::check_query(
        query,
        stream,
        events.arrow().field(events.event_time_column()).name(),
    )?;
    let SetExpr::Select(select) = query.body.as_mut() else {
        return Err(plan_error(
            query.body.span(),
            "this query form (VALUES, or a query in parentheses) is not supported in stream queries; write one SELECT over the stream, or SELECT … UNION ALL SELECT …",
        ));
    };
    super::top_n::fold_ranking_into_aggregate(select);
    if select.from.len() != 1 {
        return Err(plan_error(
            select.span(),
            format!(
                "a stream query reads exactly one stream in FROM (e.g. FROM {stream} or FROM TUMBLE({stream}, ...)); join a table with JOIN … ON (FROM {stream} p JOIN merchants m ON m.merchant_id = p.merchant_id), not a comma"
            ),
        ));
    }
    if super::recognize::is_recognize(&select.from[0].relation) {
        let stmt = stmt.clone();
        return Box::pin(super::recognize::plan(
            sql, stmt, within, &tokens, events, stream,
        ))
        .await;
    }
    // Two windowed aggregates joined side by side.
    if let Some(sides) = super::window_join::sides(sql, select) {
        let stmt = stmt.clone();
        return Box::pin(super::window_join::plan(
            sql, stmt, sides, &tokens, events, stream, limits, tables,
        ))
        .await;
    }
    let time_column = events
        .arrow()
        .field(events.event_time_column())
        .name()
        .clone();
    // A windowed query may be the FROM of the query (Top-N, filters over its rows): its own
    // checks and rewrites apply to it, not to the outer query.
    let inner_windowed = match &mut select.from[0].relation {
        TableFactor::Derived { subquery, .. } => match subquery.body.as_mut() {
            SetExpr::Select(inner) if inner.from.len() == 1 => {
                super::time_grouping::bucket_grouping_as_tumble(inner, stream, events)?;
                let windowed = matches!(
                    &inner.from[0].relation,
                    TableFactor::Table { args: Some(_), .. }
                );
                if windowed {
                    check_session_partitions(inner, &session_partitions)?;
                }
                windowed
            }
            _ => false,
        },
        _ => false,
    };
    if !inner_windowed {
        check_session_partitions(select, &session_partitions)?;
    }
    super::time_grouping::bucket_grouping_as_tumble(select, stream, events)?;
    let distinct = select.distinct.take();
    let from = &mut select.from[0];
    // A join of the stream with itself, or with another stream of the file, is an interval
    // join (sql/join.rs); anything else is a reference table, not supported yet.
    let stream_named = |r: &TableFactor| -> Option<(String, Arc<EventSchema>)> {
        let TableFactor::Table {
            name, args: None, ..
        } = r
        else {
            return None;
        };
        let n = name.to_string();
        let n = n.trim_matches('"');
        if name.0.len() != 1 {
            return None;
        }
        if n.eq_ignore_ascii_case(stream) {
            return Some((stream.to_string(), Arc::clone(events)));
        }
        catalog
            .iter()
            .find(|(c, _)| c.eq_ignore_ascii_case(n))
            .cloned()
    };
    let mut join_sides = None;
    let left_stream = stream_named(&from.relation);
    // What the stream is called in the query: its alias, and its name.
    let stream_alias: Vec<String> = match &from.relation {
        TableFactor::Table { name, alias, .. } => {
            let mut v = vec![name.to_string().trim_matches('"').to_string()];
            v.extend(alias.as_ref().map(|a| a.name.value.clone()));
            v
        }
        TableFactor::Derived { alias, .. } => alias.iter().map(|a| a.name.value.clone()).collect(),
        _ => vec![],
    };
    let joins = from.joins.len();
    // References joined FOR SYSTEM_TIME AS OF the event time, by registered name.
    let mut versioned: Vec<Arc<ReferenceTable>> = Vec::new();
    let mut clauses_used = vec![false; as_of.len()];
    for join in &mut from.joins {
        if let Some(right) = stream_named(&join.relation) {
            match (&left_stream, joins) {
                (Some(l), 1) => {
                    join_sides = Some(super::join::JoinSides {
                        left: l.clone(),
                        right,
                    });
                }
                _ => {
                    return Err(plan_error(
                        locate(&tokens, Keyword::JOIN).union(&join.relation.span()),
                        format!(
                            "JOIN of streams is supported between two of them (FROM {stream} a JOIN {stream} c ON c.payment_id = a.payment_id AND c.event_time BETWEEN a.event_time AND a.event_time + INTERVAL '10' MINUTE); several joins of streams, or a stream joined with window table functions, are not supported yet"
                        ),
                    ));
                }
            }
            if let Some(c) = as_of
                .iter()
                .find(|c| super::lookup::within(c.table, join.relation.span()))
            {
                return Err(plan_error(
                    c.at,
                    "FOR SYSTEM_TIME AS OF joins a reference table's version; a join of streams is bounded by its ON condition's times instead",
                ));
            }
            continue;
        }
        if let TableFactor::Table {
            name,
            args: Some(_),
            ..
        } = &join.relation
        {
            return Err(plan_error(
                name.span(),
                format!(
                    "a window table function ({name}) is read in FROM, not joined: FROM {name}({stream}, …) p JOIN <table> m ON …"
                ),
            ));
        }
        // A reference table (or a query over tables, or VALUES).
        let cx = super::lookup::JoinContext {
            stream,
            time_column: time_column_name(events),
            stream_alias: &stream_alias,
            tables,
            as_of: &as_of,
        };
        let (clause, by_version) = super::lookup::table_relation(&mut join.relation, &cx)?;
        if let Some(i) = clause {
            clauses_used[i] = true;
        }
        if let Some(t) = by_version
            && !versioned.iter().any(|v| Arc::ptr_eq(v, &t))
        {
            versioned.push(t);
        }
    }
    if let Some(i) = clauses_used.iter().position(|u| !u) {
        return Err(plan_error(
            as_of[i].at,
            "FOR SYSTEM_TIME AS OF applies to a reference table joined to the stream (JOIN merchants FOR SYSTEM_TIME AS OF p.event_time AS m ON …)",
        ));
    }
    let mut window = extract_window(&mut from.relation, limits, stream, &time_column)?;
    // `SELECT * FROM (SELECT …, ROW_NUMBER() OVER (PARTITION BY window_start …) AS rn FROM
    // TUMBLE(…) GROUP BY …) WHERE rn <= 5`: the window is the inner query's.
    if window.is_none()
        && let TableFactor::Derived { subquery, .. } = &mut from.relation
        && let SetExpr::Select(inner) = subquery.body.as_mut()
        && inner.from.len() == 1
    {
        window = extract_window(&mut inner.from[0].relation, limits, stream, &time_column)?;
    }
    match &from.relation {
        TableFactor::Table { name, .. } if name.to_string() == stream => {}
        TableFactor::Table { name, .. } => {
            return Err(plan_error(
                name.span(),
                format!("unknown stream `{name}`; the event stream is `{stream}`"),
            ));
        }
        TableFactor::Derived { subquery, .. } => {
            check_inner_query(subquery, stream, &tokens)?;
        }
        other => {
            return Err(plan_error(
                other.span(),
                format!(
                    "subqueries and other table expressions are not supported in FROM; read `{stream}` or a window over it"
                ),
            ));
        }
    }

    if let Some(d) = distinct {
        distinct_as_grouping(select, d, window.is_some(), &tokens, events)?;
    }

    let schema = if window.is_some() {
        Arc::clone(events.windowed())
    } else {
        Arc::clone(events.arrow())
    };
    let ctx = planning_context();
    ctx.register_table(stream, Arc::new(EmptyTable::new(Arc::clone(&schema))))?;
    for t in tables {
        if t.name().eq_ignore_ascii_case(stream)
            || catalog
                .iter()
                .any(|(c, _)| c.eq_ignore_ascii_case(t.name()))
        {
            return Err(plan_error(
                start_of(&tokens),
                format!(
                    "table `{}` has the name of a stream; name the table apart",
                    t.name()
                ),
            ));
        }
        ctx.register_table(
            t.name(),
            Arc::new(EmptyTable::new(super::lookup::registered_schema(t, false))),
        )?;
    }
    for t in &versioned {
        ctx.register_table(
            super::lookup::as_of_name(t.name()).as_str(),
            Arc::new(EmptyTable::new(super::lookup::registered_schema(t, true))),
        )?;
    }
    if let Some(s) = &join_sides
        && s.right.0 != stream
    {
        ctx.register_table(
            s.right.0.as_str(),
            Arc::new(EmptyTable::new(Arc::clone(s.right.1.arrow()))),
        )?;
    }
    let state = ctx.state();
    let (physical, not_in) = match physical_plan(&state, stmt.clone()).await {
        Ok(p) => p,
        Err(e) => return Err(df_plan_error(&e, &tokens, &state, &stmt, events.windowed()).await),
    };
    let mut output_schema = physical.schema();
    let lookups = Lookups { tables, not_in };
    let mut kind = lift(&physical, window, &tokens, events, join_sides, lookups)?;
    let updating = match &mut kind {
        PlanKind::Enriched(e) => matches!(e.inner.kind, PlanKind::Updating(_)),
        k => matches!(k, PlanKind::Updating(_)),
    };
    if updating {
        // A changelog: each row says what it does to its key.
        if output_schema.fields().find(CHANGELOG_OP).is_some() {
            return Err(plan_error(
                locate(&tokens, Keyword::SELECT),
                format!(
                    "a GROUP BY without a window emits a changelog whose last column is `{CHANGELOG_OP}` (insert, update or delete); name your column `{CHANGELOG_OP}` otherwise"
                ),
            ));
        }
        let mut fields: Vec<datafusion::arrow::datatypes::FieldRef> =
            output_schema.fields().iter().cloned().collect();
        fields.push(Arc::new(datafusion::arrow::datatypes::Field::new(
            CHANGELOG_OP,
            datafusion::arrow::datatypes::DataType::Utf8,
            false,
        )));
        output_schema = Arc::new(datafusion::arrow::datatypes::Schema::new(fields));
    }
    if let PlanKind::Enriched(e) = &mut kind {
        e.inner.sql = sql.to_string();
        e.inner.output_schema = Arc::clone(&output_schema);
    }
    Ok(StreamPlan {
        sql: sql.to_string(),
        name: "the query".into(),
        kind,
        output_schema,
        events: Arc::clone(events),
    })
}

/// The DataFusion context a query is planned in: one partition, no physical optimisation
/// (the plan is read, never run), `IN` / `EXISTS` decorrelated into joins, constants checked
/// for overflow, and exact integer sums.
pub(super) fn planning_context() -> SessionContext {
    let mut config = SessionConfig::new()
        .with_target_partitions(1)
        .with_information_schema(false);
    // Positions of unknown columns and functions in DataFusion's errors.
    config.options_mut().sql_parser.collect_spans = true;
    let state = SessionStateBuilder::new()
        .with_config(config)
        .with_default_features()
        .with_optimizer_rules(vec![
            // `IN (SELECT …)` and `EXISTS` as semi and anti joins (lookups of a table).
            Arc::new(
                datafusion::optimizer::decorrelate_predicate_subquery::DecorrelatePredicateSubquery::new(),
            ),
            Arc::new(super::checked::CheckedConstants),
            Arc::new(SimplifyExpressions::new()),
        ])
        .with_physical_optimizer_rules(vec![])
        .build();
    let ctx = SessionContext::new_with_state(state);
    // Sums of integers are exact (128 bits), not DataFusion's wrapping 64-bit sum.
    ctx.register_udaf(crate::operators::exact_sum_udaf());
    crate::functions::register(&ctx);
    ctx
}

/// `UNION ALL`: each branch planned over its stream (the one of `catalog` it reads, else
/// `stream`) as a query of its own; the result has the first branch's column names, each
/// column nullable if it is in any branch.
async fn plan_union(
    sql: &str,
    branches: super::union::Branches,
    events: &Arc<EventSchema>,
    stream: &str,
    limits: &WindowLimits,
    catalog: &[(String, Arc<EventSchema>)],
    tables: &[Arc<ReferenceTable>],
) -> Result<StreamPlan> {
    let mut plans = Vec::with_capacity(branches.texts.len());
    // Per branch, the stream it reads, by name.
    let mut reads: Vec<(String, Arc<EventSchema>)> = Vec::with_capacity(branches.texts.len());
    let names: Vec<String> = catalog.iter().map(|(n, _)| n.clone()).collect();
    for (i, text) in branches.texts.iter().enumerate() {
        let read = super::stream_reads::sources_read(text, &names);
        if read.len() > 1 {
            let list: Vec<String> = read.iter().map(|s| format!("`{s}`")).collect();
            return Err(plan_error(
                branches.starts[i],
                format!(
                    "this branch of UNION ALL reads the streams {}; each branch reads one stream, so write one branch per stream (a join of two streams is a query of its own)",
                    list.join(" and ")
                ),
            ));
        }
        let (stream, events) = match catalog.iter().find(|(n, _)| read.contains(n)) {
            Some((n, e)) => (n.as_str(), e),
            None => (stream, events),
        };
        reads.push((stream.to_string(), Arc::clone(events)));
        let plan = match Box::pin(plan_query_async(text, events, stream, limits, &[], tables)).await
        {
            // A later branch's names are not the result's, so `SELECT 'x', 0, 0` may repeat
            // one: DataFusion wants them unique, so its unnamed items are named and it is
            // planned again (positions are kept by the first attempt's errors).
            Err(e) if i > 0 && e.to_string().contains("unique expression names") => {
                match super::union::named_items(text) {
                    Some(named) => {
                        Box::pin(plan_query_async(
                            &named,
                            events,
                            stream,
                            limits,
                            &[],
                            tables,
                        ))
                        .await?
                    }
                    None => return Err(e),
                }
            }
            r => r?,
        };
        if matches!(plan.kind, PlanKind::Updating(_)) {
            return Err(plan_error(
                branches.starts[i],
                "a GROUP BY without a window (a changelog) cannot be a branch of UNION ALL: its rows update keys of their own; write it as a query of its own",
            ));
        }
        plans.push(plan);
    }
    let first = Arc::clone(&plans[0].output_schema);
    let width = first.fields().len();
    let columns = |n: usize| match n {
        1 => "1 column".to_string(),
        n => format!("{n} columns"),
    };
    for (plan, start) in plans.iter().zip(&branches.starts) {
        let n = plan.output_schema.fields().len();
        if n != width {
            return Err(plan_error(
                *start,
                format!(
                    "this branch of UNION ALL has {} and the first has {}; every branch must select the same number of columns, in the same order",
                    columns(n),
                    columns(width)
                ),
            ));
        }
    }
    let types: Vec<Vec<datafusion::arrow::datatypes::DataType>> = plans
        .iter()
        .map(|p| {
            p.output_schema
                .fields()
                .iter()
                .map(|f| f.data_type().clone())
                .collect()
        })
        .collect();
    let union_types =
        super::union::column_types(&types.iter().map(Vec::as_slice).collect::<Vec<_>>());
    let mut nullable = vec![false; width];
    let mut casts = Vec::with_capacity(plans.len());
    for (plan, start) in plans.iter().zip(&branches.starts) {
        let mut branch_casts = Vec::with_capacity(width);
        for (j, f) in plan.output_schema.fields().iter().enumerate() {
            let to = &union_types[j];
            let cast = super::union::cast_to(f.data_type(), to).map_err(|()| {
                plan_error(
                    *start,
                    format!(
                        "column {} (`{}`) is {} in this branch of UNION ALL and {} in another; CAST it to one type in every branch",
                        j + 1,
                        first.field(j).name(),
                        super::union::type_name(f.data_type()),
                        super::union::type_name(to)
                    ),
                )
            })?;
            nullable[j] |= f.is_nullable() || cast.is_some();
            branch_casts.push(cast);
        }
        casts.push(branch_casts);
    }
    let fields: Vec<datafusion::arrow::datatypes::Field> = first
        .fields()
        .iter()
        .zip(union_types.iter().zip(&nullable))
        .map(|(f, (t, n))| datafusion::arrow::datatypes::Field::new(f.name(), t.clone(), *n))
        .collect();
    // The streams read, sorted by name (the order a run's source delivers them in).
    let mut streams: Vec<(String, Arc<EventSchema>)> = Vec::new();
    for r in &reads {
        if !streams.iter().any(|(n, _)| *n == r.0) {
            streams.push(r.clone());
        }
    }
    streams.sort_by(|a, b| a.0.cmp(&b.0));
    let branch_streams = reads
        .iter()
        .map(|(n, _)| streams.iter().position(|(m, _)| m == n).unwrap_or(0))
        .collect();
    let events = Arc::clone(&streams[0].1);
    if streams.len() == 1 {
        streams.clear();
    }
    Ok(StreamPlan {
        sql: sql.to_string(),
        name: "the query".into(),
        output_schema: Arc::new(datafusion::arrow::datatypes::Schema::new(fields)),
        kind: PlanKind::Union(Box::new(super::plan::UnionSpec {
            branches: plans,
            casts,
            streams,
            branch_streams,
        })),
        events,
    })
}

/// A window over a windowed CTE's results: the CTE planned over the stream (or, for a CTE
/// that joins two sources, over both), the outer query over the CTE's rows
/// ([`super::with_clause`]).
#[allow(clippy::too_many_arguments)]
async fn plan_chain(
    sql: &str,
    mut texts: super::with_clause::ChainTexts,
    events: &Arc<EventSchema>,
    stream: &str,
    limits: &WindowLimits,
    catalog: &[(String, Arc<EventSchema>)],
    tables: &[Arc<ReferenceTable>],
) -> Result<Option<StreamPlan>> {
    let inner = Box::pin(plan_query_async(
        &texts.inner_sql,
        events,
        stream,
        limits,
        catalog,
        tables,
    ))
    .await?;
    let windowed = match &inner.kind {
        PlanKind::Enriched(e) => &e.inner.kind,
        k => k,
    };
    if texts.joins && texts.bound.is_empty() {
        // `FROM j` over anything but a join of streams (a table join, say) is the subquery
        // it names, as any CTE read as a table.
        let PlanKind::IntervalJoin(j) = windowed else {
            return Ok(None);
        };
        // `FROM j` names no time: the join's rows are timed by the first of their columns
        // that is a side's event time, never null (a LEFT JOIN's right side can be).
        let time = inner
            .output_schema
            .fields()
            .iter()
            .find(|f| !f.is_nullable() && join_event_time(j, &inner, f.name()).is_some());
        let Some(time) = time else {
            return Err(plan_error(
                texts.bound_span,
                format!(
                    "a query over `{}` orders its rows by an event time of theirs, and `{}` selects none that is never null; select one side's event time (a.event_time AS authorized_at)",
                    texts.cte, texts.cte
                ),
            ));
        };
        texts.bound = time.name().clone();
        texts.time_column = time.name().clone();
    }
    let lag = match windowed {
        PlanKind::IntervalJoin(j) if texts.joins => interval_join_lag(j, &inner, &texts)?,
        _ if texts.joins => {
            return Err(plan_error(
                texts.bound_span,
                format!(
                    "a window over `{}` needs it to join two streams with a time bound (an interval join); to window the stream joined with a table, write the window in one query: FROM TUMBLE({stream}, event_time, …) p JOIN … GROUP BY …, window_start, window_end",
                    texts.cte
                ),
            ));
        }
        PlanKind::Window { window, .. } => super::with_clause::lag(window.kind, &texts)?,
        _ => {
            return Err(plan_error(
                texts.bound_span,
                format!(
                    "`{}` is not a windowed aggregate; a window over a query's results needs one (GROUP BY …, window_start, window_end over TUMBLE, HOP or SESSION)",
                    texts.cte
                ),
            ));
        }
    };
    let (schema, columns) = super::with_clause::outer_events(&inner.output_schema, &texts)?;
    let outer_events = Arc::new(if texts.over {
        EventSchema::window_rows(texts.cte.clone(), Arc::new(schema), &texts.time_column)?
    } else {
        EventSchema::declared(
            texts.cte.clone(),
            Arc::new(schema),
            None,
            &texts.time_column,
        )?
    });
    let outer = Box::pin(plan_query_async(
        &texts.outer_sql,
        &outer_events,
        &texts.cte,
        limits,
        &[],
        tables,
    ))
    .await?;
    Ok(Some(StreamPlan {
        sql: sql.to_string(),
        name: "the query".into(),
        output_schema: Arc::clone(&outer.output_schema),
        kind: PlanKind::Chain(Box::new(super::plan::ChainSpec {
            inner,
            columns,
            lag,
            outer,
        })),
        events: Arc::clone(events),
    }))
}

/// Which side's event time (left: true) the join's result column `name` is, selected as it
/// is: the chain's lag holds only for such a column (a computed time, `a.event_time -
/// INTERVAL …` or `date_trunc(…)`, could trail the watermark by more).
fn join_event_time(
    j: &super::join::IntervalJoinSpec,
    inner: &StreamPlan,
    name: &str,
) -> Option<bool> {
    let at = inner.output_schema.index_of(name).ok()?;
    let mut projections = j.output_stages.iter().filter_map(|s| match s {
        Stage::Project { exprs, .. } => Some(exprs),
        _ => None,
    });
    let (Some(exprs), None) = (projections.next(), projections.next()) else {
        return None;
    };
    let col = exprs
        .get(at)?
        .downcast_ref::<datafusion::physical_expr::expressions::Column>()?;
    let width = j.left_events.arrow().fields().len();
    if col.index() == j.left_events.event_time_column() {
        Some(true)
    } else if col.index() == width + j.right_events.event_time_column() {
        Some(false)
    } else {
        None
    }
}

/// How far the rows of an interval join, timed by their column `texts.bound`, trail the
/// watermark ([`super::plan::ChainSpec::lag`]). A pair comes out when its second row arrives,
/// not behind the watermark `W`: then `L.time ≥ W − upper` (the right row came second, and
/// `R.time − L.time ≤ upper`) and `R.time ≥ W + lower`; an unmatched left row of a left join
/// comes out once `W` passes `L.time + upper`. So the outer watermark trails by the larger of
/// `upper` and `−lower`, and no row is ever late for the outer window.
fn interval_join_lag(
    j: &super::join::IntervalJoinSpec,
    inner: &StreamPlan,
    texts: &super::with_clause::ChainTexts,
) -> Result<i64> {
    if join_event_time(j, inner, &texts.bound).is_none() {
        return Err(plan_error(
            texts.bound_span,
            format!(
                "`{}` is not an event time of a side of `{}`'s join, selected as it is; window the join's rows by `a.event_time` or `c.event_time` (under any name), and compute other times in the outer query",
                texts.bound, texts.cte
            ),
        ));
    }
    if let Ok(f) = inner.output_schema.field_with_name(&texts.bound)
        && f.is_nullable()
    {
        return Err(plan_error(
            texts.bound_span,
            format!(
                "`{}` can be null in `{}` (a LEFT JOIN's unmatched rows have no right side); time the window by the left side's event time",
                texts.bound, texts.cte
            ),
        ));
    }
    Ok(j.upper.max(j.lower.saturating_neg()).max(0))
}

/// DataFusion's physical plan of a statement (never executed: only its expressions are used),
/// and for each anti join on the plan's spine, top first, whether it is a `NOT IN` (the
/// physical plan no longer says).
pub(super) async fn physical_plan(
    state: &datafusion::execution::SessionState,
    stmt: Statement,
) -> datafusion::error::Result<(Arc<dyn ExecutionPlan>, Vec<bool>)> {
    let logical = state
        .statement_to_plan(datafusion::sql::parser::Statement::Statement(Box::new(
            stmt,
        )))
        .await?;
    let logical = state.optimize(&logical)?;
    if let Some(name) = window_only_aggregate(&logical) {
        return Err(datafusion::error::DataFusionError::Plan(format!(
            "{name} is a window function: use it with OVER (PARTITION BY … ORDER BY event_time …), not as an aggregate of a GROUP BY (its result depends on the order of the values)"
        )));
    }
    let mut not_in = Vec::new();
    anti_joins(&logical, &mut not_in);
    let physical = state
        .query_planner()
        .create_physical_plan(&logical, state)
        .await?;
    Ok((physical, not_in))
}

/// An order-dependent function (`ewma_zscore`, `ewma`, `mad_zscore`) used as a GROUP BY
/// aggregate anywhere in `plan`: its name.
pub(crate) fn window_only_aggregate(
    plan: &datafusion::logical_expr::LogicalPlan,
) -> Option<String> {
    use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
    use datafusion::logical_expr::{Expr, LogicalPlan};
    let mut found = None;
    let _ = plan.apply(|node| {
        if let LogicalPlan::Aggregate(a) = node {
            for e in &a.aggr_expr {
                let _ = e.apply(|e| {
                    if let Expr::AggregateFunction(f) = e
                        && matches!(f.func.name(), "ewma_zscore" | "ewma" | "mad_zscore")
                    {
                        found = Some(f.func.name().to_string());
                        return Ok(TreeNodeRecursion::Stop);
                    }
                    Ok(TreeNodeRecursion::Continue)
                });
            }
        }
        Ok(if found.is_some() {
            TreeNodeRecursion::Stop
        } else {
            TreeNodeRecursion::Continue
        })
    });
    found
}

/// Whether each anti join down the left spine of `plan` is null-aware (a `NOT IN`).
fn anti_joins(plan: &datafusion::logical_expr::LogicalPlan, out: &mut Vec<bool>) {
    use datafusion::logical_expr::LogicalPlan;
    match plan {
        LogicalPlan::Join(j) => {
            if j.join_type == datafusion::common::JoinType::LeftAnti {
                out.push(j.null_aware);
            }
            anti_joins(&j.left, out);
        }
        other => {
            for i in other.inputs() {
                anti_joins(i, out);
            }
        }
    }
}

/// A DataFusion planning error as a query error with a line and column: DataFusion's own
/// position when it has one (unknown columns and functions), else the first clause that fails
/// on its own (a type mismatch in a WHERE, a select item), else the query's start. An internal
/// DataFusion error is never shown raw: it says it is a bug.
pub(super) async fn df_plan_error(
    e: &datafusion::error::DataFusionError,
    tokens: &[TokenWithSpan],
    state: &datafusion::execution::SessionState,
    stmt: &Statement,
    columns: &datafusion::arrow::datatypes::SchemaRef,
) -> Error {
    use datafusion::error::DataFusionError;
    let span = match e.diagnostic().and_then(|d| d.span) {
        Some(s) => point(s.start.line, s.start.column),
        None => match failing_clause(state, stmt).await {
            Some(s) => s,
            None => start_of(tokens),
        },
    };
    match e.find_root() {
        DataFusionError::Internal(_) => plan_error(span, INTERNAL),
        DataFusionError::NotImplemented(m)
            if m.contains("InSubquery") || m.contains("Exists") || m.contains("Subquery") =>
        {
            plan_error(
                span,
                "IN (SELECT …) and EXISTS are supported as conditions of WHERE (joined with AND); elsewhere (in the SELECT list, ON, CASE or FILTER) join the table instead",
            )
        }
        DataFusionError::NotImplemented(m) => plan_error(
            span,
            format!("not supported in stream queries: {}", first_line(m)),
        ),
        root => {
            let msg = root.strip_backtrace();
            let msg = first_line(&msg);
            let msg = ["Error during planning: ", "Schema error: ", "Arrow error: "]
                .iter()
                .fold(msg, |m, p| m.strip_prefix(p).unwrap_or(m));
            if let Some(m) = signature_mismatch(msg) {
                return plan_error(span, m);
            }
            if msg.contains("Internal error") || msg.contains("DataFusion") {
                return plan_error(span, INTERNAL);
            }
            // A literal that cannot become its comparison's type (`amount_minor > 'abc'`).
            if let Some(rest) = msg.strip_prefix("Cast error: Cannot cast string ") {
                return plan_error(
                    span,
                    format!(
                        "the literal {} is compared with or assigned to a column of another type; write a value of the column's type (a number without quotes for an amount), or CAST the column",
                        rest.split(" to value of ").next().unwrap_or(rest)
                    ),
                );
            }
            if msg.starts_with("No field named") {
                let columns: Vec<String> = columns
                    .fields()
                    .iter()
                    .map(|f| f.name().to_string())
                    .collect();
                return plan_error(
                    span,
                    format!(
                        "{} The stream's columns are {} (window_start and window_end with a window in FROM)",
                        msg,
                        columns.join(", ")
                    ),
                );
            }
            plan_error(span, msg.to_string())
        }
    }
}

/// What an internal planner error says instead of DataFusion's text.
const INTERNAL: &str = "the query could not be planned (an internal planner error: this is a bug in paystream, please report it with the query); rewriting the construct at this position may avoid it";

/// DataFusion's "Function 'f' failed to match any signature" (a list of every signature's
/// complaint) as one sentence.
fn signature_mismatch(msg: &str) -> Option<String> {
    if !msg.contains("failed to match any signature") {
        return None;
    }
    let name = msg.split('\'').nth(1).unwrap_or("the function");
    let received = msg
        .split("but received ")
        .nth(1)
        .and_then(|r| r.split(" (DataType").next())
        .map(|r| format!(", not {r}"))
        .unwrap_or_default();
    let wanted: Vec<&str> = msg
        .split("requires ")
        .skip(1)
        .filter_map(|r| r.split(", but").next())
        .collect();
    Some(format!(
        "`{name}` does not accept these arguments: it takes {}{received}",
        if wanted.is_empty() {
            "other types".to_string()
        } else {
            wanted.join(", ")
        }
    ))
}

/// The first line of a message, without hints about DataFusion's build (DataFusion appends
/// plans and hints on further lines).
fn first_line(m: &str) -> &str {
    let line = m.lines().next().unwrap_or(m);
    let line = match line.find(" Hint:") {
        Some(i) if line[i..].contains("DataFusion") => &line[..i],
        _ => line,
    };
    line.trim_end()
}

/// The first clause of a failed SELECT that fails to plan on its own — its WHERE, a select
/// item, a GROUP BY key or its HAVING — as where to point the error.
async fn failing_clause(
    state: &datafusion::execution::SessionState,
    stmt: &Statement,
) -> Option<Span> {
    use datafusion::sql::sqlparser::ast::{GroupByExpr, SelectItem, Value};
    let Statement::Query(query) = stmt else {
        return None;
    };
    let SetExpr::Select(select) = query.body.as_ref() else {
        return None;
    };
    let one = || SelectItem::UnnamedExpr(Expr::value(Value::Number("1".into(), false)));
    let no_group = GroupByExpr::Expressions(vec![], vec![]);
    let mut candidates = Vec::new();
    if let Some(w) = &select.selection {
        let mut c = select.as_ref().clone();
        c.projection = vec![one()];
        c.group_by = no_group.clone();
        c.having = None;
        candidates.push((w.span(), c));
    }
    for item in &select.projection {
        let mut c = select.as_ref().clone();
        c.projection = vec![item.clone()];
        c.selection = None;
        c.having = None;
        candidates.push((item.span(), c));
    }
    if let GroupByExpr::Expressions(keys, _) = &select.group_by {
        for k in keys {
            let mut c = select.as_ref().clone();
            c.projection = vec![one()];
            c.selection = None;
            c.group_by = GroupByExpr::Expressions(vec![k.clone()], vec![]);
            c.having = None;
            candidates.push((k.span(), c));
        }
    }
    if let Some(h) = &select.having {
        let mut c = select.as_ref().clone();
        c.projection = vec![one()];
        c.selection = None;
        candidates.push((h.span(), c));
    }
    for (span, c) in candidates {
        let mut q = query.as_ref().clone();
        q.body = Box::new(SetExpr::Select(Box::new(c)));
        if span.start.line > 0
            && physical_plan(state, Statement::Query(Box::new(q)))
                .await
                .is_err()
        {
            return Some(span);
        }
    }
    None
}

fn references(expr: &Arc<dyn PhysicalExpr>, idx: &[usize]) -> bool {
    collect_columns(expr)
        .iter()
        .any(|c| idx.contains(&c.index()))
}

/// Flink's `SESSION(TABLE s PARTITION BY k, …)`: sessions here are per GROUP BY key, so each
/// partition key must be one (a key grouped by but not partitioned by splits sessions further,
/// as in Flink when the GROUP BY has more keys).
fn check_session_partitions(
    select: &datafusion::sql::sqlparser::ast::Select,
    partitions: &[(String, Span)],
) -> Result<()> {
    use datafusion::sql::sqlparser::ast::GroupByExpr;
    let grouped: Vec<String> = match &select.group_by {
        GroupByExpr::Expressions(e, _) => e.iter().map(|x| x.to_string()).collect(),
        GroupByExpr::All(_) => vec![],
    };
    let distinct: Vec<String> = match select.distinct {
        Some(_) => select.projection.iter().map(|x| x.to_string()).collect(),
        None => vec![],
    };
    for (key, span) in partitions {
        let named = |g: &String| g.eq_ignore_ascii_case(key);
        if !grouped.iter().any(named) && !distinct.iter().any(named) {
            return Err(plan_error(
                *span,
                format!(
                    "SESSION … PARTITION BY {key}: sessions are kept per GROUP BY key here, so {key} must also be in the GROUP BY (e.g. GROUP BY {key}, window_start, window_end)"
                ),
            ));
        }
    }
    Ok(())
}

/// `SELECT DISTINCT cols` over a window is `GROUP BY cols, window_start, window_end`: each
/// distinct row once per window, emitted when the window closes. Over the unwindowed stream it
/// is each row the first time it is seen ([`distinct_as_first_seen`]). `DISTINCT ON` picks rows
/// by an order a stream does not have: refused.
fn distinct_as_grouping(
    select: &mut datafusion::sql::sqlparser::ast::Select,
    distinct: datafusion::sql::sqlparser::ast::Distinct,
    windowed: bool,
    tokens: &[TokenWithSpan],
    events: &EventSchema,
) -> Result<()> {
    use datafusion::sql::sqlparser::ast::{Distinct, GroupByExpr, Ident, SelectItem};
    let at = locate(tokens, Keyword::DISTINCT);
    if let Distinct::On(_) = distinct {
        return Err(plan_error(
            at,
            "SELECT DISTINCT ON is not supported in stream queries; to keep one row per key and window, GROUP BY the key over a window and pick values with first_value(x ORDER BY event_time)",
        ));
    }
    let grouped = match &select.group_by {
        GroupByExpr::Expressions(e, m) => !e.is_empty() || !m.is_empty(),
        GroupByExpr::All(_) => true,
    };
    if grouped || select.having.is_some() {
        return Err(plan_error(
            at,
            "SELECT DISTINCT with GROUP BY or HAVING is not supported; the GROUP BY already gives each group once per window, so remove DISTINCT",
        ));
    }
    // An aggregate in the list would become a grouping key, which no plan can evaluate.
    let aggregates: Vec<String> =
        datafusion::functions_aggregate::all_default_aggregate_functions()
            .iter()
            .flat_map(|f| std::iter::once(f.name().to_string()).chain(f.aliases().iter().cloned()))
            .collect();
    let mut found = None;
    let _ = datafusion::sql::sqlparser::ast::visit_expressions(&select.projection, |e| {
        if let Expr::Function(f) = e
            && let Some(name) = f.name.0.last().map(|p| p.to_string().to_ascii_lowercase())
            && aggregates.iter().any(|a| a.eq_ignore_ascii_case(&name))
        {
            found = Some((name, e.span()));
            return ControlFlow::Break(());
        }
        ControlFlow::Continue(())
    });
    if let Some((name, span)) = found {
        return Err(plan_error(
            span,
            format!(
                "SELECT DISTINCT with an aggregate ({name}) is not supported; GROUP BY the columns over the window instead, e.g. SELECT merchant_id, window_start, count(*) FROM TUMBLE(...) GROUP BY merchant_id, window_start"
            ),
        ));
    }
    let mut keys = Vec::with_capacity(select.projection.len() + 2);
    for item in &select.projection {
        match item {
            SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. } => {
                keys.push(e.clone())
            }
            other => {
                return Err(plan_error(
                    other.span(),
                    "SELECT DISTINCT * is not supported in stream queries; list the columns, e.g. SELECT DISTINCT merchant_id, card_id, window_start FROM TUMBLE(...)",
                ));
            }
        }
    }
    if !windowed {
        return distinct_as_first_seen(select, keys, events);
    }
    for bound in [WINDOW_START, WINDOW_END] {
        let named =
            |e: &Expr| matches!(e, Expr::Identifier(i) if i.value.eq_ignore_ascii_case(bound));
        if !keys.iter().any(named) {
            keys.push(Expr::Identifier(Ident::new(bound)));
        }
    }
    select.group_by = GroupByExpr::Expressions(keys, vec![]);
    Ok(())
}

/// `agg(x) FILTER (WHERE c) OVER …` as `agg(CASE WHEN c THEN x END) OVER …` (`count(*)` as
/// `count(CASE WHEN c THEN 1 END)`): the same for every aggregate that ignores NULLs — all the
/// window aggregates the engine runs — and DataFusion keeps a window aggregate's FILTER where
/// the engine cannot read it.
fn over_filters_as_cases(stmt: &mut Statement) -> Result<()> {
    use datafusion::sql::sqlparser::ast::{FunctionArg, FunctionArgExpr, FunctionArguments};
    let mut failed = None;
    let _ = datafusion::sql::sqlparser::ast::visit_expressions_mut(stmt, |e| {
        let Expr::Function(f) = e else {
            return ControlFlow::<()>::Continue(());
        };
        let (Some(_), Some(cond)) = (&f.over, &f.filter) else {
            return ControlFlow::Continue(());
        };
        let span = cond.span();
        let cond = cond.to_string();
        let FunctionArguments::List(list) = &mut f.args else {
            return ControlFlow::Continue(());
        };
        for arg in &mut list.args {
            let inner = match arg {
                FunctionArg::Unnamed(FunctionArgExpr::Wildcard) => "1".to_string(),
                FunctionArg::Unnamed(FunctionArgExpr::Expr(x)) => x.to_string(),
                _ => {
                    failed = Some(plan_error(
                        span,
                        "FILTER on this window function is not supported; write the condition into its argument, e.g. sum(CASE WHEN status = 'declined' THEN amount_minor END) OVER w",
                    ));
                    return ControlFlow::Break(());
                }
            };
            let case = Parser::new(&GenericDialect {})
                .try_with_sql(&format!("CASE WHEN {cond} THEN {inner} END"))
                .and_then(|mut p| p.parse_expr());
            match case {
                Ok(c) => *arg = FunctionArg::Unnamed(FunctionArgExpr::Expr(c)),
                Err(e) => {
                    failed = Some(parse_error(e, span));
                    return ControlFlow::Break(());
                }
            }
        }
        f.filter = None;
        ControlFlow::Continue(())
    });
    failed.map_or(Ok(()), Err)
}

/// A subquery in FROM (`SELECT * FROM (SELECT …, count(*) OVER w AS n FROM payments) WHERE
/// n > 10`): it must read the stream itself, as one SELECT without a window table function (a
/// query over windowed results is not supported yet). The outer query then filters and
/// projects its rows.
fn check_inner_query(
    query: &datafusion::sql::sqlparser::ast::Query,
    stream: &str,
    tokens: &[TokenWithSpan],
) -> Result<()> {
    if query.with.is_some() || query.order_by.is_some() || query.limit_clause.is_some() {
        return Err(plan_error(
            query.span(),
            "a subquery in FROM cannot have WITH, ORDER BY or LIMIT on a stream; remove them",
        ));
    }
    let SetExpr::Select(select) = query.body.as_ref() else {
        return Err(plan_error(
            query.body.span(),
            "a subquery in FROM must be one SELECT over the stream (UNION ALL is supported at the top of a query, not inside FROM)",
        ));
    };
    if select.from.len() != 1 || !select.from[0].joins.is_empty() {
        return Err(plan_error(
            select.span(),
            format!("a subquery in FROM reads exactly one stream (FROM {stream}), without joins"),
        ));
    }
    if select.distinct.is_some() {
        return Err(plan_error(
            locate(tokens, Keyword::DISTINCT),
            "SELECT DISTINCT inside a subquery is not supported; put it in the outer query",
        ));
    }
    match &select.from[0].relation {
        TableFactor::Table {
            name, args: None, ..
        } if name.to_string() == stream => Ok(()),
        TableFactor::Table {
            name,
            args: Some(_),
            ..
        } => Err(plan_error(
            name.span(),
            "a query over a windowed query (a window table function inside a subquery) is not supported yet; aggregate over the window in one query",
        )),
        TableFactor::Table { name, .. } => Err(plan_error(
            name.span(),
            format!("unknown stream `{name}`; the event stream is `{stream}`"),
        )),
        TableFactor::Derived { subquery, .. } => check_inner_query(subquery, stream, tokens),
        other => Err(plan_error(
            other.span(),
            format!("a subquery in FROM reads `{stream}` or another subquery"),
        )),
    }
}

/// First word `word` (case-insensitive) of the query, for errors found after planning.
fn locate_word(tokens: &[TokenWithSpan], word: &str) -> Span {
    tokens
        .iter()
        .find(|t| matches!(&t.token, Token::Word(w) if w.value.eq_ignore_ascii_case(word)))
        .map(|t| t.span)
        .unwrap_or_else(|| locate(tokens, Keyword::OVER))
}

/// Window functions over a windowed aggregate's rows (`ROW_NUMBER() OVER (PARTITION BY
/// window_start, window_end ORDER BY total DESC)`: Top-N per window) as a [`Stage::Rank`]. A
/// window's rows are emitted together, once, when it closes, so a partition that includes a
/// window bound is whole in every batch the stage sees; anything else is refused.
fn lift_rank(
    top: &Arc<dyn ExecutionPlan>,
    tokens: &[TokenWithSpan],
    session: bool,
    ws_idx: usize,
) -> Result<(Vec<Stage>, Arc<dyn ExecutionPlan>)> {
    use datafusion::physical_plan::sorts::sort::SortExec;
    use datafusion::physical_plan::windows::{BoundedWindowAggExec, WindowAggExec};
    // One stage per window node (one per ORDER BY), top first as `lift` collects them.
    let mut node = Arc::clone(top);
    let mut windows = Vec::new();
    loop {
        let any = node.as_ref();
        let (exprs, input) = if let Some(w) = any.downcast_ref::<BoundedWindowAggExec>() {
            (w.window_expr().to_vec(), Arc::clone(w.input()))
        } else if let Some(w) = any.downcast_ref::<WindowAggExec>() {
            (w.window_expr().to_vec(), Arc::clone(w.input()))
        } else if let Some(s) = any.downcast_ref::<SortExec>() {
            node = Arc::clone(s.input());
            continue;
        } else {
            break;
        };
        windows.push((exprs, node.schema(), input.schema()));
        node = input;
    }
    // Only over aggregated rows: a plain row of a TUMBLE has no complete window to rank in.
    let mut below = Arc::clone(&node);
    loop {
        if below.downcast_ref::<AggregateExec>().is_some() {
            break;
        }
        let children = below.children();
        match children.as_slice() {
            [child]
                if below.downcast_ref::<ProjectionExec>().is_some()
                    || below.downcast_ref::<FilterExec>().is_some() =>
            {
                below = Arc::clone(child);
            }
            _ => {
                return Err(plan_error(
                    locate(tokens, Keyword::OVER),
                    "window functions (OVER) over a window table function are not supported yet unless they rank a windowed aggregate's rows (Top-N per window); use OVER over the stream itself, or aggregate over a window",
                ));
            }
        }
    }
    let is_bound = |c: usize| window_bound_of(&node, c, ws_idx, session);
    let ranks = windows
        .iter()
        .map(|(exprs, schema, input)| rank_stage(exprs, schema, input, tokens, &is_bound))
        .collect::<Result<Vec<_>>>()?;
    Ok((ranks, node))
}

/// Whether column `c` of `plan`'s output is the window bound a ranking may partition by: traced
/// through projections that pass columns on unchanged and filters down to the aggregate's
/// grouping by `window_start` (index `ws_idx` of the windowed events) or `window_end` (only
/// `window_end` for sessions). A name proves nothing: an inner query may call anything
/// `window_start`.
fn window_bound_of(plan: &Arc<dyn ExecutionPlan>, c: usize, ws_idx: usize, session: bool) -> bool {
    let mut node = Arc::clone(plan);
    let mut c = c;
    loop {
        if let Some(p) = node.downcast_ref::<ProjectionExec>() {
            match p
                .expr()
                .get(c)
                .and_then(|e| e.expr.downcast_ref::<Column>())
            {
                Some(col) => c = col.index(),
                None => return false,
            }
            node = Arc::clone(p.input());
        } else if let Some(f) = node.downcast_ref::<FilterExec>() {
            node = Arc::clone(f.input());
        } else if let Some(agg) = node.downcast_ref::<AggregateExec>() {
            let partial = match agg.mode() {
                AggregateMode::Final | AggregateMode::FinalPartitioned => {
                    match agg.input().downcast_ref::<AggregateExec>() {
                        Some(p) => p,
                        None => return false,
                    }
                }
                _ => agg,
            };
            let Some((expr, _)) = partial.group_expr().expr().get(c) else {
                return false;
            };
            return expr.downcast_ref::<Column>().is_some_and(|col| {
                col.index() == ws_idx + 1 || (!session && col.index() == ws_idx)
            });
        } else {
            return false;
        }
    }
}

/// One window node over aggregated rows as a [`Stage::Rank`] producing `schema` from `input`.
fn rank_stage(
    exprs: &[Arc<dyn datafusion::physical_expr::window::WindowExpr>],
    schema: &datafusion::arrow::datatypes::SchemaRef,
    input: &datafusion::arrow::datatypes::SchemaRef,
    tokens: &[TokenWithSpan],
    is_bound: &dyn Fn(usize) -> bool,
) -> Result<Stage> {
    use super::plan::RankKind;
    use datafusion::physical_expr::window::StandardWindowExpr;
    use datafusion::physical_plan::windows::WindowUDFExpr;
    let mut functions = Vec::new();
    let (partition, order) = (
        exprs[0].partition_by().to_vec(),
        exprs[0].order_by().to_vec(),
    );
    for w in exprs {
        let name = w
            .as_any()
            .downcast_ref::<StandardWindowExpr>()
            .and_then(|s| {
                s.get_standard_func_expr()
                    .as_any()
                    .downcast_ref::<WindowUDFExpr>()
            })
            .map(|u| u.fun().name().to_string())
            .unwrap_or_default();
        functions.push(match name.as_str() {
            "row_number" => RankKind::RowNumber,
            "rank" => RankKind::Rank,
            "dense_rank" => RankKind::DenseRank,
            _ => {
                return Err(plan_error(
                    locate(tokens, Keyword::OVER),
                    "over a windowed aggregate, only row_number(), rank() and dense_rank() OVER (PARTITION BY window_start, … ORDER BY …) are supported (Top-N per window); compute other values in the aggregate",
                ));
            }
        });
    }
    // Sessions that share a start may close at different times; sessions that share an end
    // close together. Tumbling and hopping windows close by start and end alike.
    let whole_windows = partition.iter().any(|p| {
        p.downcast_ref::<Column>()
            .is_some_and(|c| c.index() < input.fields().len() && is_bound(c.index()))
    });
    if !whole_windows || order.is_empty() {
        return Err(plan_error(
            locate(tokens, Keyword::OVER),
            "a ranking over a windowed aggregate must PARTITION BY window_start or window_end (window_end for SESSION windows: each window is ranked when it closes) and ORDER BY what to rank by, e.g. ROW_NUMBER() OVER (PARTITION BY window_start, window_end ORDER BY total DESC)",
        ));
    }
    Ok(Stage::Rank {
        partition: partition
            .into_iter()
            .map(|p| checked(p, input))
            .collect::<datafusion::error::Result<_>>()?,
        order: order
            .into_iter()
            .map(|o| {
                Ok(datafusion::physical_expr::PhysicalSortExpr {
                    expr: checked(o.expr, input)?,
                    options: o.options,
                })
            })
            .collect::<datafusion::error::Result<_>>()?,
        functions,
        schema: Arc::clone(schema),
    })
}

/// A stack of window nodes (`OVER`), as one [`OverSpec`]: returns it with the node below the
/// stack (its input).
fn lift_over(
    top: &Arc<dyn ExecutionPlan>,
    tokens: &[TokenWithSpan],
    events: &Arc<EventSchema>,
) -> Result<(super::over::OverSpec, Arc<dyn ExecutionPlan>)> {
    use datafusion::physical_plan::sorts::sort::SortExec;
    use datafusion::physical_plan::windows::{BoundedWindowAggExec, WindowAggExec};
    let mut execs = Vec::new();
    let mut node = Arc::clone(top);
    loop {
        let any = node.as_ref();
        if let Some(w) = any.downcast_ref::<BoundedWindowAggExec>() {
            execs.push(w.window_expr().to_vec());
            node = Arc::clone(w.input());
        } else if let Some(w) = any.downcast_ref::<WindowAggExec>() {
            execs.push(w.window_expr().to_vec());
            node = Arc::clone(w.input());
        } else if let Some(s) = any.downcast_ref::<SortExec>() {
            node = Arc::clone(s.input());
        } else {
            break;
        }
    }
    execs.reverse();
    // `FROM (SELECT * FROM payments …)` puts a projection of every column, unchanged, under
    // the window functions: look through it. Any other projection computes or reorders columns.
    if let Some(p) = node.downcast_ref::<ProjectionExec>() {
        let identity = p.expr().len() == events.arrow().fields().len()
            && p.expr().iter().enumerate().all(|(i, e)| {
                e.expr
                    .downcast_ref::<Column>()
                    .is_some_and(|c| c.index() == i)
            });
        if !identity {
            return Err(plan_error(
                locate(tokens, Keyword::OVER),
                "window functions (OVER) over a subquery's computed or selected columns are not supported yet; put the window functions in the query that reads the stream, and filter or project their results outside",
            ));
        }
        node = Arc::clone(p.input());
    }
    let input_schema = node.schema();
    if input_schema.fields().len() != events.arrow().fields().len() {
        return Err(plan_error(
            locate(tokens, Keyword::OVER),
            "window functions (OVER) over computed columns are not supported yet; compute the value inside the function's argument",
        ));
    }
    let slices: Vec<&[Arc<dyn datafusion::physical_expr::window::WindowExpr>]> =
        execs.iter().map(|e| e.as_slice()).collect();
    let (keys, ties, functions) =
        super::over::lift_window_functions(&slices, input_schema.fields().len(), events)
            .map_err(|r| plan_error(locate_word(tokens, &r.word), r.message))?;
    let keys: Vec<Arc<dyn PhysicalExpr>> = keys
        .into_iter()
        .map(|k| checked(k, &input_schema))
        .collect::<datafusion::error::Result<_>>()?;
    let key_fields = keys
        .iter()
        .enumerate()
        .map(|(i, k)| {
            Ok(datafusion::arrow::datatypes::Field::new(
                format!("key{i}"),
                k.data_type(&input_schema)?,
                k.nullable(&input_schema)?,
            ))
        })
        .collect::<datafusion::error::Result<Vec<_>>>()?;
    let functions = functions
        .into_iter()
        .map(|mut f| {
            f.arg = f.arg.map(|a| checked(a, &input_schema)).transpose()?;
            Ok(f)
        })
        .collect::<datafusion::error::Result<Vec<_>>>()?;
    Ok((
        super::over::OverSpec {
            events: Arc::clone(events),
            input_stages: vec![],
            keys,
            key_schema: Arc::new(datafusion::arrow::datatypes::Schema::new(key_fields)),
            ties,
            functions,
            window_schema: top.schema(),
            output_stages: vec![],
            state_ttl: None,
        },
        node,
    ))
}

/// `SELECT DISTINCT a, b FROM payments WHERE …` over the unwindowed stream: each distinct row
/// the first time it is seen, as
///
/// ```sql
/// SELECT __d0 AS a, __d1 AS b FROM (
///   SELECT a AS __d0, b AS __d1,
///          row_number() OVER (PARTITION BY a, b ORDER BY event_time, event_id) AS __rn
///   FROM payments WHERE …) WHERE __rn = 1
/// ```
///
/// — emitted once the watermark passes that first event, with its state kept for the state TTL
/// (the dedup TTL by default) after the row was last seen. An unnamed expression is named as
/// written.
fn distinct_as_first_seen(
    select: &mut datafusion::sql::sqlparser::ast::Select,
    keys: Vec<Expr>,
    events: &EventSchema,
) -> Result<()> {
    use datafusion::sql::sqlparser::ast::{
        Ident, SelectItem, SetExpr as Body, TableFactor as Factor,
    };
    let names: Vec<String> = select
        .projection
        .iter()
        .map(|item| {
            // As DataFusion names them: an unquoted name in lower case.
            let name = |i: &Ident| match i.quote_style {
                Some(_) => i.value.clone(),
                None => i.value.to_lowercase(),
            };
            match item {
                SelectItem::ExprWithAlias { alias, .. } => name(alias),
                SelectItem::UnnamedExpr(Expr::Identifier(i)) => name(i),
                SelectItem::UnnamedExpr(Expr::CompoundIdentifier(p)) => {
                    p.last().map_or_else(String::new, name)
                }
                other => other.to_string(),
            }
        })
        .collect();
    let time = events
        .arrow()
        .field(events.event_time_column())
        .name()
        .clone();
    // Which row of a group is first does not matter (only the keys are output), but the
    // order is total all the same.
    let order: Vec<String> = std::iter::once(time)
        .chain(
            events
                .tie_columns()
                .into_iter()
                .map(|c| events.arrow().field(c).name().clone()),
        )
        .map(|c| format!("\"{}\"", c.replace('"', "\"\"")))
        .collect();
    let partition: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
    let row_number = Parser::new(&GenericDialect {})
        .try_with_sql(&format!(
            "row_number() OVER (PARTITION BY {} ORDER BY {})",
            partition.join(", "),
            order.join(", ")
        ))
        .and_then(|mut p| p.parse_expr())
        .map_err(|e| parse_error(e, select.span()))?;
    let mut inner = select.clone();
    inner.projection = keys
        .into_iter()
        .enumerate()
        .map(|(i, expr)| SelectItem::ExprWithAlias {
            expr,
            alias: Ident::new(format!("__d{i}")),
        })
        .collect();
    inner.projection.push(SelectItem::ExprWithAlias {
        expr: row_number,
        alias: Ident::new("__rn"),
    });
    let outer_items: Vec<String> = names
        .iter()
        .enumerate()
        .map(|(i, n)| format!("__d{i} AS \"{}\"", n.replace('"', "\"\"")))
        .collect();
    let outer = Parser::new(&GenericDialect {})
        .try_with_sql(&format!(
            "SELECT {} FROM (SELECT 1) AS __distinct WHERE __rn = 1",
            outer_items.join(", ")
        ))
        .and_then(|mut p| p.parse_query())
        .map_err(|e| parse_error(e, select.span()))?;
    let Body::Select(mut outer) = *outer.body else {
        return Err(Error::Internal("DISTINCT rewrite".into()));
    };
    let Factor::Derived { subquery, .. } = &mut outer.from[0].relation else {
        return Err(Error::Internal("DISTINCT rewrite".into()));
    };
    *subquery.body = Body::Select(Box::new(inner));
    *select = *outer;
    Ok(())
}

/// An order-sensitive aggregate (`first_value(x ORDER BY event_time)`, `array_agg(… ORDER BY
/// …)`) as a stream runs it: events reach it in arrival order, not in its ORDER BY, so it must
/// compare orderings itself (not trust its input to be sorted), and ties are broken by the
/// event id, so the result does not depend on arrival order, batch sizes or worker counts. An
/// order-insensitive aggregate is returned as it is.
fn ordered_for_streams(
    a: Arc<datafusion::physical_expr::aggregate::AggregateFunctionExpr>,
    input_schema: &datafusion::arrow::datatypes::SchemaRef,
    events: &EventSchema,
) -> Result<Arc<datafusion::physical_expr::aggregate::AggregateFunctionExpr>> {
    use datafusion::physical_expr::PhysicalSortExpr;
    use datafusion::physical_expr::aggregate::AggregateExprBuilder;
    if a.order_bys().is_empty() {
        return Ok(a);
    }
    let mut order = a.order_bys().to_vec();
    for tie in events.tie_columns() {
        let present = order.iter().any(|o| {
            o.expr
                .downcast_ref::<Column>()
                .is_some_and(|c| c.index() == tie)
        });
        if !present {
            let name = events.arrow().field(tie).name();
            order.push(PhysicalSortExpr::new_default(Arc::new(Column::new(
                name, tie,
            ))));
        }
    }
    let rebuilt = AggregateExprBuilder::new(Arc::new(a.fun().clone()), a.expressions())
        .order_by(order)
        .schema(Arc::clone(input_schema))
        .alias(a.name().to_string())
        .with_ignore_nulls(a.ignore_nulls())
        .with_distinct(a.is_distinct())
        .with_reversed(a.is_reversed())
        .build()?;
    let rebuilt = Arc::new(rebuilt);
    Ok(
        match Arc::clone(&rebuilt).with_beneficial_ordering(false)? {
            Some(unsorted) => Arc::new(unsorted),
            None => rebuilt,
        },
    )
}

/// What joins with reference tables need: the tables, and whether each anti join is a NOT IN.
struct Lookups<'a> {
    tables: &'a [Arc<ReferenceTable>],
    not_in: Vec<bool>,
}

/// Walks the physical plan top-down, turning each accepted node into a stage.
fn lift(
    root: &Arc<dyn ExecutionPlan>,
    window: Option<super::window_tvf::WindowSpec>,
    tokens: &[TokenWithSpan],
    events: &Arc<EventSchema>,
    join_sides: Option<super::join::JoinSides>,
    lookups: Lookups<'_>,
) -> Result<PlanKind> {
    let mut join_sides = join_sides;
    let Lookups { tables, not_in } = lookups;
    let mut not_in = std::collections::VecDeque::from(not_in);
    let stream_events = Arc::clone(events);
    let ws_idx = events.window_start_column();
    // Without a window there are no bounds (a joined table's columns follow the stream's).
    let window_cols = match window {
        Some(_) => [ws_idx, ws_idx + 1],
        None => [usize::MAX - 1, usize::MAX],
    };
    // Over events joined to tables, a stateful operator's events are the joined rows.
    let joined = joined_events(root, events, window.is_some())?;
    let events = joined.as_ref().unwrap_or(events);
    let mut stages = Vec::new();
    let mut above_aggregate: Option<Vec<Stage>> = None;
    let mut aggregate: Option<AggregateSpec> = None;
    let mut over: Option<super::over::OverSpec> = None;
    let mut node = Arc::clone(root);
    loop {
        let any = node.as_ref();
        let name = node.name();
        if (name == "BoundedWindowAggExec" || name == "WindowAggExec")
            && window.is_some()
            && aggregate.is_none()
            && over.is_none()
        {
            // Over a windowed aggregate's rows: Top-N per window.
            let session = matches!(
                window.as_ref().map(|w| w.kind),
                Some(WindowKind::Session { .. })
            );
            let (ranks, input) = lift_rank(&node, tokens, session, ws_idx)?;
            stages.extend(ranks);
            node = input;
        } else if name == "BoundedWindowAggExec" || name == "WindowAggExec" {
            if aggregate.is_some() {
                return Err(plan_error(
                    locate(tokens, Keyword::GROUP).union(&locate(tokens, Keyword::SELECT)),
                    "an aggregate over window function (OVER) results is not supported yet; filter or project them, or aggregate over a window of the stream",
                ));
            }
            if window.is_some() || over.is_some() {
                return Err(plan_error(
                    locate(tokens, Keyword::OVER),
                    "window functions (OVER) over a window table function are not supported yet; use OVER over the stream itself, or aggregate over a window",
                ));
            }
            let (spec, input) = lift_over(&node, tokens, events)?;
            over = Some(spec);
            above_aggregate = Some(std::mem::take(&mut stages));
            node = input;
        } else if let Some(p) = any.downcast_ref::<ProjectionExec>() {
            let input = p.input().schema();
            stages.push(Stage::Project {
                exprs: p
                    .expr()
                    .iter()
                    .map(|e| checked(Arc::clone(&e.expr), &input))
                    .collect::<datafusion::error::Result<_>>()?,
                schema: p.schema(),
            });
            node = Arc::clone(p.input());
        } else if let Some(f) = any.downcast_ref::<FilterExec>() {
            if f.projection().is_some() {
                return Err(Error::Internal(
                    "unexpected projection inside a filter".into(),
                ));
            }
            stages.push(Stage::Filter(checked(
                Arc::clone(f.predicate()),
                &f.input().schema(),
            )?));
            node = Arc::clone(f.input());
        } else if let Some(agg) = any.downcast_ref::<AggregateExec>() {
            if over.is_some() {
                return Err(plan_error(
                    locate(tokens, Keyword::OVER),
                    "window functions (OVER) over aggregated rows (such as Top-N per window) are not supported yet; use OVER over the stream's events",
                ));
            }
            if above_aggregate.is_some() {
                return Err(plan_error(
                    locate(tokens, Keyword::SELECT),
                    "nested aggregations (an aggregate over an aggregate, or COUNT(DISTINCT) rewritten as one) are not supported",
                ));
            }
            let partial = match agg.mode() {
                AggregateMode::Final | AggregateMode::FinalPartitioned => {
                    agg.input().downcast_ref::<AggregateExec>().ok_or_else(|| {
                        Error::Internal("final aggregate without a partial one".into())
                    })?
                }
                _ => agg,
            };
            if contains_aggregate(partial.input()) {
                return Err(plan_error(
                    locate(tokens, Keyword::SELECT),
                    "an aggregate over a windowed query's results needs a window of its own: name the windowed query and window its rows, WITH per_minute AS (SELECT …, window_start, window_end FROM TUMBLE(…) GROUP BY …) SELECT … FROM TUMBLE(per_minute, window_start, INTERVAL '1' HOUR) GROUP BY …, window_start, window_end",
                ));
            }
            let group = partial.group_expr();
            if group.has_grouping_set() {
                return Err(plan_error(
                    locate(tokens, Keyword::GROUP),
                    "GROUPING SETS, ROLLUP and CUBE are not supported in stream queries",
                ));
            }
            let mut keys = Vec::new();
            let mut key_fields = Vec::new();
            let mut key_layout = Vec::new();
            let input_schema = partial.input_schema();
            for (expr, name) in group.expr() {
                let slot = expr.downcast_ref::<Column>().and_then(|c| {
                    if c.index() == window_cols[0] {
                        Some(KeySlot::WindowStart)
                    } else if c.index() == window_cols[1] {
                        Some(KeySlot::WindowEnd)
                    } else {
                        None
                    }
                });
                match slot {
                    Some(s) => key_layout.push(s),
                    None => {
                        if references(expr, &window_cols) {
                            return Err(window_use_error(tokens));
                        }
                        key_layout.push(KeySlot::Key(keys.len()));
                        key_fields.push(datafusion::arrow::datatypes::Field::new(
                            name,
                            expr.data_type(&input_schema)?,
                            expr.nullable(&input_schema)?,
                        ));
                        keys.push(checked(Arc::clone(expr), &input_schema)?);
                    }
                }
            }
            if window.is_some()
                && !key_layout
                    .iter()
                    .any(|k| matches!(k, KeySlot::WindowStart | KeySlot::WindowEnd))
            {
                return Err(plan_error(
                    locate(tokens, Keyword::GROUP),
                    format!(
                        "a windowed aggregate must GROUP BY {WINDOW_START} and/or {WINDOW_END}; without them windows would be merged"
                    ),
                ));
            }
            for a in partial.aggr_expr() {
                if a.expressions().iter().any(|e| references(e, &window_cols)) {
                    return Err(window_use_error(tokens));
                }
            }
            for f in partial.filter_expr().iter().flatten() {
                if references(f, &window_cols) {
                    return Err(window_use_error(tokens));
                }
            }
            let mut aggregates = Vec::with_capacity(partial.aggr_expr().len());
            for a in partial.aggr_expr() {
                let args = a
                    .expressions()
                    .into_iter()
                    .map(|e| checked(e, &input_schema))
                    .collect::<datafusion::error::Result<_>>()?;
                let order = a.order_bys().iter().map(|o| Arc::clone(&o.expr)).collect();
                let a = match a.with_new_expressions(args, order) {
                    Some(c) => Arc::new(c),
                    None => Arc::clone(a),
                };
                aggregates.push(ordered_for_streams(a, &input_schema, events)?);
            }
            let filters = partial
                .filter_expr()
                .iter()
                .map(|f| f.clone().map(|f| checked(f, &input_schema)).transpose())
                .collect::<datafusion::error::Result<_>>()?;
            aggregate = Some(AggregateSpec {
                events: Arc::clone(events),
                input_stages: vec![],
                keys,
                key_schema: Arc::new(datafusion::arrow::datatypes::Schema::new(key_fields)),
                key_layout,
                aggregates,
                filters,
                output_schema: agg.schema(),
                output_stages: vec![],
            });
            above_aggregate = Some(std::mem::take(&mut stages));
            node = Arc::clone(partial.input());
        } else if let Some(j) =
            any.downcast_ref::<datafusion::physical_plan::joins::NestedLoopJoinExec>()
            && super::lookup::reads_tables_only(j.right())
        {
            // A reference table (or IN / EXISTS over one): a stage before whatever is above.
            if aggregate.is_none() && over.is_none() && contains_stateful(j.left()) {
                return Err(plan_error(
                    locate(tokens, Keyword::SELECT),
                    "a join with a table (or IN / EXISTS over one) over an aggregate's or window function's rows is not supported yet; join the table in the FROM the aggregation reads, or filter with HAVING on the aggregate's own columns",
                ));
            }
            let at = match j.join_type() {
                datafusion::common::JoinType::LeftSemi
                | datafusion::common::JoinType::LeftAnti
                | datafusion::common::JoinType::LeftMark => locate(tokens, Keyword::WHERE),
                _ => locate(tokens, Keyword::JOIN),
            };
            // Before a windowed aggregate, the rows have no window bounds yet.
            let strip = (window.is_some() && aggregate.is_some())
                .then_some(super::lookup::NoWindowColumns(ws_idx));
            let is_anti = *j.join_type() == datafusion::common::JoinType::LeftAnti;
            let null_aware = is_anti && not_in.pop_front().unwrap_or(false);
            let join =
                super::lookup::lift_lookup(j, &stream_events, tables, strip, null_aware, at)?;
            // WHERE conditions on the stream's own columns filter the events before the join
            // (the same rows for every kind of join: they read no table column).
            // (The join's left input may be narrower than the stream: a subquery of it.)
            let width = stream_events
                .arrow()
                .fields()
                .len()
                .min(j.left().schema().fields().len());
            let mut below = None;
            if let Some(Stage::Filter(p)) = stages.last().cloned() {
                let (events_only, rest): (Vec<_>, Vec<_>) =
                    datafusion::physical_expr::split_conjunction(&p)
                        .into_iter()
                        .cloned()
                        .partition(|c| {
                            let cols = collect_columns(c);
                            !cols.is_empty() && cols.iter().all(|x| x.index() < width)
                        });
                let and = |v: Vec<Arc<dyn PhysicalExpr>>| {
                    v.into_iter().reduce(|a, b| {
                        Arc::new(datafusion::physical_expr::expressions::BinaryExpr::new(
                            a,
                            datafusion::logical_expr::Operator::And,
                            b,
                        )) as Arc<dyn PhysicalExpr>
                    })
                };
                if !events_only.is_empty() {
                    stages.pop();
                    if let Some(r) = and(rest) {
                        stages.push(Stage::Filter(r));
                    }
                    below = and(events_only);
                }
            }
            stages.push(Stage::Lookup(Arc::new(join)));
            if let Some(b) = below {
                stages.push(Stage::Filter(b));
            }
            node = Arc::clone(j.left());
        } else if let Some(j) =
            any.downcast_ref::<datafusion::physical_plan::joins::NestedLoopJoinExec>()
        {
            if matches!(
                j.join_type(),
                datafusion::common::JoinType::LeftSemi
                    | datafusion::common::JoinType::LeftAnti
                    | datafusion::common::JoinType::LeftMark
            ) {
                return Err(plan_error(
                    locate(tokens, Keyword::WHERE),
                    "IN (SELECT …) and EXISTS read reference tables (CREATE TABLE) or VALUES; a subquery over the stream is not supported (join the stream with itself within a time bound instead)",
                ));
            }
            let at = locate(tokens, Keyword::JOIN);
            if aggregate.is_some() || over.is_some() || window.is_some() {
                return Err(plan_error(
                    at,
                    "aggregates and window functions over a join are not supported yet in one SELECT; name the join's rows in a WITH and window them by one of their times: WITH j AS (SELECT a.merchant_id, c.event_time AS captured_at FROM … JOIN …) SELECT merchant_id, window_start, count(*) FROM TUMBLE(j, captured_at, INTERVAL '1' MINUTE) GROUP BY merchant_id, window_start, window_end",
                ));
            }
            let sides = join_sides.take().ok_or_else(|| {
                plan_error(
                    at,
                    "a join reads the stream on both sides (FROM payments a JOIN payments c ON …), or a reference table (CREATE TABLE) or VALUES on its right; a subquery of the stream is not supported there",
                )
            })?;
            let spec = super::join::lift_join(j, stages, sides, super::join::JoinAt(at))?;
            return Ok(PlanKind::IntervalJoin(Box::new(spec)));
        } else if any.downcast_ref::<EmptyExec>().is_some() {
            break;
        } else {
            return Err(unsupported_node(node.name(), tokens));
        }
    }
    stages.reverse();
    // Joins with tables under a stateful operator run first, as the operator's input.
    let last_lookup = stages.iter().rposition(|s| matches!(s, Stage::Lookup(_)));
    let enrich = match last_lookup {
        Some(k) if over.is_some() || aggregate.is_some() => {
            let post = stages.split_off(k + 1);
            Some(std::mem::replace(&mut stages, post))
        }
        _ => None,
    };
    if let Some(pre) = &enrich
        && pre.iter().any(|s| matches!(s, Stage::Project { .. }))
    {
        return Err(plan_error(
            locate(tokens, Keyword::JOIN),
            "a join under an aggregate or window function reads the stream itself (FROM payments p JOIN merchants m ON …), not a subquery of it; filter in WHERE instead",
        ));
    }
    if enrich.is_some()
        && window.is_some()
        && let Some(agg) = aggregate.as_mut()
    {
        // DataFusion's rows have the window bounds after the stream's columns; the joined
        // events have them after the tables'.
        let (ew, jw) = (ws_idx, events.arrow().fields().len());
        let at = move |i: usize| match i {
            i if i < ew => i,
            i if i < ew + 2 => jw + (i - ew),
            i => i - 2,
        };
        super::lookup::move_columns_of_aggregate(agg, &mut stages, &at)?;
    }
    let kind = lift_tail(stages, over, aggregate, above_aggregate, window, tokens)?;
    Ok(match enrich {
        Some(pre) => {
            let inner_events = Arc::clone(events);
            PlanKind::Enriched(Box::new(super::plan::EnrichedSpec {
                stages: specialize_stages(pre)?,
                inner: StreamPlan {
                    sql: String::new(),
                    name: "the query".into(),
                    kind,
                    output_schema: Arc::clone(&root.schema()),
                    events: inner_events,
                },
            }))
        }
        None => kind,
    })
}

/// The events a stateful operator sees when tables are joined to the stream below it: the
/// stream's columns, then the tables' (`None`: no such join).
fn joined_events(
    root: &Arc<dyn ExecutionPlan>,
    events: &Arc<EventSchema>,
    windowed: bool,
) -> Result<Option<Arc<EventSchema>>> {
    let mut node = Arc::clone(root);
    // Only a join under an aggregate or window function gives its events.
    let mut under = false;
    loop {
        under |=
            node.downcast_ref::<AggregateExec>().is_some() || node.name().contains("WindowAggExec");
        if let Some(j) = node.downcast_ref::<datafusion::physical_plan::joins::NestedLoopJoinExec>()
            && under
        {
            if !super::lookup::reads_tables_only(j.right()) {
                return Ok(None);
            }
            let skip = if windowed { 2 } else { 0 };
            let extra: Vec<datafusion::arrow::datatypes::FieldRef> = j
                .schema()
                .fields()
                .iter()
                .skip(events.arrow().fields().len() + skip)
                .cloned()
                .collect();
            return Ok(Some(Arc::new(events.joined(&extra)?)));
        }
        let children = node.children();
        if children.len() != 1 {
            return Ok(None);
        }
        node = Arc::clone(children[0]);
    }
}

/// The rest of [`lift`]: the plan kind from what the walk found.
fn lift_tail(
    stages: Vec<Stage>,
    over: Option<super::over::OverSpec>,
    aggregate: Option<AggregateSpec>,
    mut above_aggregate: Option<Vec<Stage>>,
    window: Option<super::window_tvf::WindowSpec>,
    tokens: &[TokenWithSpan],
) -> Result<PlanKind> {
    let ws_idx = match (&aggregate, &window) {
        (Some(a), Some(_)) => a.events.window_start_column(),
        _ => usize::MAX - 2,
    };
    let window_cols = [ws_idx, ws_idx + 1];
    if let Some(mut spec) = over {
        let mut above = above_aggregate.take().unwrap_or_default();
        above.reverse();
        if stages.iter().any(|s| matches!(s, Stage::Project { .. })) {
            return Err(plan_error(
                locate(tokens, Keyword::OVER),
                "window functions (OVER) over computed columns are not supported yet; compute the value inside the function's argument",
            ));
        }
        spec.input_stages = specialize_stages(stages)?;
        spec.output_stages = specialize_stages(above)?;
        return Ok(PlanKind::Over(spec));
    }
    match (aggregate, above_aggregate) {
        (Some(mut agg), Some(mut above)) => {
            above.reverse();
            if stages.iter().any(|s| stage_references(s, &window_cols)) {
                return Err(window_use_error(tokens));
            }
            agg.input_stages = specialize_stages(stages)?;
            agg.filters = agg
                .filters
                .into_iter()
                .map(|f| f.map(super::codes::specialize).transpose())
                .collect::<datafusion::error::Result<_>>()?;
            agg.output_stages = above;
            Ok(match window {
                Some(window) => PlanKind::Window {
                    window,
                    aggregate: agg,
                },
                // Over the whole stream: running aggregates, a changelog.
                None => {
                    if agg
                        .input_stages
                        .iter()
                        .any(|s| matches!(s, Stage::Project { .. }))
                    {
                        return Err(plan_error(
                            locate(tokens, Keyword::FROM),
                            "a GROUP BY without a window reads the stream itself; aggregate FROM the stream (filter in WHERE) instead of over a subquery",
                        ));
                    }
                    let output_keys = super::plan::UpdatingSpec::keys_in_output(&agg);
                    if output_keys.is_none() && !agg.keys.is_empty() {
                        return Err(plan_error(
                            locate(tokens, Keyword::SELECT),
                            "a GROUP BY without a window emits a changelog, each row keyed by its group: select every GROUP BY column as it is (SELECT merchant_id, currency, … GROUP BY merchant_id, currency)",
                        ));
                    }
                    PlanKind::Updating(Box::new(super::plan::UpdatingSpec {
                        output_keys,
                        aggregate: agg,
                        state_ttl: None,
                    }))
                }
            })
        }
        _ => {
            if let Some(w) = &window
                && !matches!(w.kind, WindowKind::Tumble { .. })
            {
                return Err(plan_error(
                    locate(tokens, Keyword::FROM),
                    "HOP and SESSION windows need an aggregation: GROUP BY window_start, window_end (and your keys)",
                ));
            }
            Ok(PlanKind::Map {
                window,
                stages: specialize_stages(stages)?,
            })
        }
    }
}

/// Whether an aggregation or window function is anywhere in `plan`.
fn contains_stateful(plan: &Arc<dyn ExecutionPlan>) -> bool {
    plan.downcast_ref::<AggregateExec>().is_some()
        || plan.name().contains("WindowAggExec")
        || plan.children().into_iter().any(contains_stateful)
}

/// Whether an aggregation is anywhere in `plan`.
fn contains_aggregate(plan: &Arc<dyn ExecutionPlan>) -> bool {
    plan.downcast_ref::<AggregateExec>().is_some()
        || plan.children().into_iter().any(contains_aggregate)
}

/// Stages over event batches, with code-column comparisons specialised ([`super::codes`]).
fn specialize_stages(stages: Vec<Stage>) -> Result<Vec<Stage>> {
    use super::codes::specialize;
    Ok(stages
        .into_iter()
        .map(|s| match s {
            Stage::Filter(p) => specialize(p).map(Stage::Filter),
            Stage::Project { exprs, schema } => exprs
                .into_iter()
                .map(specialize)
                .collect::<datafusion::error::Result<_>>()
                .map(|exprs| Stage::Project { exprs, schema }),
            rank @ Stage::Rank { .. } => Ok(rank),
            lookup @ Stage::Lookup(_) => Ok(lookup),
        })
        .collect::<datafusion::error::Result<_>>()?)
}

fn stage_references(s: &Stage, idx: &[usize]) -> bool {
    match s {
        Stage::Filter(p) => references(p, idx),
        Stage::Project { exprs, .. } => exprs.iter().any(|e| references(e, idx)),
        Stage::Rank {
            partition, order, ..
        } => partition
            .iter()
            .chain(order.iter().map(|o| &o.expr))
            .any(|e| references(e, idx)),
        Stage::Lookup(j) => j.event_keys.iter().any(|e| references(e, idx)),
    }
}

fn window_use_error(tokens: &[TokenWithSpan]) -> Error {
    let span = tokens
        .iter()
        .find(|t| matches!(&t.token, Token::Word(w) if w.value.eq_ignore_ascii_case(WINDOW_START) || w.value.eq_ignore_ascii_case(WINDOW_END)))
        .map_or_else(|| point(0, 0), |t| t.span);
    plan_error(
        span,
        format!(
            "{WINDOW_START}/{WINDOW_END} of a windowed aggregate can only be used as GROUP BY keys (and selected or filtered in HAVING), not in WHERE or inside aggregates"
        ),
    )
}

fn unsupported_node(name: &str, tokens: &[TokenWithSpan]) -> Error {
    if name.contains("Join") {
        return plan_error(
            locate(tokens, Keyword::JOIN),
            "a join is written JOIN … ON with its keys equated (JOIN merchants m ON m.merchant_id = p.merchant_id; a join of streams adds a time bound: c.event_time BETWEEN a.event_time AND a.event_time + INTERVAL '10' MINUTE); USING, NATURAL and comma joins are not supported",
        );
    }
    let (kw, what) = match name {
        n if n.contains("Window") => (Keyword::OVER, "window functions (OVER)"),
        n if n.contains("Join") => (Keyword::JOIN, "joins"),
        n if n.contains("Sort") => (Keyword::ORDER, "ORDER BY"),
        n if n.contains("Limit") => (Keyword::LIMIT, "LIMIT"),
        n if n.contains("Union") => (Keyword::UNION, "UNION"),
        _ => (Keyword::SELECT, "this construct"),
    };
    plan_error(
        locate(tokens, kw),
        format!("{what} cannot run on an unbounded stream yet (plan node {name})"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_a_tumbling_aggregate_in_both_spellings() {
        for from in [
            "TUMBLE(payments, event_time, INTERVAL '1' MINUTE)",
            "TABLE(TUMBLE(TABLE payments, DESCRIPTOR(event_time), INTERVAL '1' MINUTE))",
        ] {
            let sql = format!(
                "SELECT merchant_id, window_start, window_end, count(*) AS n, sum(amount_minor) FILTER (WHERE event_type = 'capture') AS captured \
                 FROM {from} WHERE currency = 'EUR' GROUP BY merchant_id, window_start, window_end HAVING count(*) > 1"
            );
            let plan = plan_query(&sql).unwrap();
            let PlanKind::Window { window, aggregate } = &plan.kind else {
                panic!("{:?}", plan.kind)
            };
            assert_eq!(window.kind, WindowKind::Tumble { size: 60_000 });
            assert_eq!(
                aggregate.key_layout,
                vec![KeySlot::Key(0), KeySlot::WindowStart, KeySlot::WindowEnd]
            );
            // count(*) appears twice (SELECT and HAVING) but is computed once.
            assert_eq!(aggregate.aggregates.len(), 2);
            assert_eq!(plan.output_schema.field(3).name(), "n");
        }
    }

    #[test]
    fn rejects_non_streaming_constructs_with_positions() {
        let cases = [
            (
                "SELECT * FROM payments ORDER BY event_time",
                "ORDER BY",
                "line 1, column 24",
            ),
            (
                "SELECT * FROM payments p JOIN merchants m ON p.merchant_id = m.id",
                "unknown table `merchants`",
                "line 1, column 31",
            ),
            (
                "SELECT *\nFROM refunds",
                "unknown stream",
                "line 2, column 6",
            ),
            (
                "SELECT * FROM payments LIMIT 5",
                "LIMIT",
                "line 1, column 24",
            ),
            (
                "SELECT card_id, count(*) OVER (PARTITION BY card_id) FROM payments",
                "OVER",
                "line 1",
            ),
            ("SELECT nope FROM payments", "nope", "query error"),
            (
                "SELECT * FROM HOP(payments, event_time, INTERVAL '60' SECOND, INTERVAL '10' SECOND)",
                "slide",
                "line 1",
            ),
        ];
        for (sql, needle, pos) in cases {
            let e = plan_query(sql).unwrap_err().to_string();
            assert!(e.contains(needle) && e.contains(pos), "{sql}: {e}");
        }
    }

    #[test]
    fn no_internal_error_or_plan_dump_reaches_the_user_and_every_error_has_a_position() {
        let tumble = "FROM TUMBLE(payments, event_time, INTERVAL '1' MINUTE)";
        let queries = [
            "SELECT DISTINCT merchant_id FROM payments".to_string(),
            format!("SELECT DISTINCT ON (merchant_id) merchant_id, window_start {tumble}"),
            format!("SELECT DISTINCT * {tumble}"),
            format!("SELECT DISTINCT count(*) AS n, window_start {tumble}"),
            "SELECT DISTINCT ON (merchant_id) merchant_id FROM payments".into(),
            "SELECT event_id FROM payments WHERE amount_minor IN (SELECT 1)".into(),
            "SELECT event_id FROM payments WHERE EXISTS (SELECT 1)".into(),
            "SELECT (SELECT 1) AS one FROM payments".into(),
            "SELECT event_id FROM payments WHERE amount_minor > ALL (SELECT 1)".into(),
            "SELECT unnest([1, 2]) FROM payments".into(),
            "SELECT * FROM payments QUALIFY row_number() OVER () = 1".into(),
            "SELECT lag(amount_minor) OVER () FROM payments".into(),
            "SELECT nope FROM payments".into(),
            "SELECT nope(amount_minor) FROM payments".into(),
            "SELECT amount_minor + event_time FROM payments".into(),
            "SELECT event_id FROM payments WHERE amount_minor = 'abc'".into(),
            "SELECT event_id FROM payments WHERE currency".into(),
            format!("SELECT sum(currency) {tumble} GROUP BY window_start"),
            format!("SELECT count(*) {tumble} GROUP BY window_start HAVING nope > 1"),
            format!("SELECT merchant_id, count(*) {tumble} GROUP BY window_start"),
            format!(
                "SELECT array_agg(event_id ORDER BY event_time) AS ids {tumble} GROUP BY window_start"
            ),
            format!("SELECT grouping(merchant_id) {tumble} GROUP BY merchant_id, window_start"),
            "SELECT * FROM payments, payments".into(),
            "SELECT * FROM payments CROSS JOIN payments".into(),
            "SELECT event_id FROM payments GROUP BY GROUPING SETS ((event_id))".into(),
            "SELECT event_id FROM payments EXCEPT SELECT event_id FROM payments".into(),
            "SELECT event_id FROM payments LIMIT 1 OFFSET 2".into(),
            "WITH x AS (SELECT 1) SELECT * FROM x".into(),
            "VALUES (1)".into(),
            "SELECT 1".into(),
            "SELECT * FROM unnest([1])".into(),
            "SELECT * FROM generate_series(1, 3)".into(),
            "INSERT INTO x SELECT 1".into(),
            "SELECT event_id FROM payments; SELECT 1".into(),
            "".into(),
            ";".into(),
            "SELECT".into(),
            "SELECT event_id FROM payments WHERE".into(),
        ];
        for sql in &queries {
            if let Err(e) = plan_query(sql) {
                let m = e.to_string();
                eprintln!("{sql}\n    {m}");
                assert!(
                    !m.contains("Internal error")
                        && !m.contains("DataFusion")
                        && !m.contains('\n')
                        && m.contains("line "),
                    "{sql}: {m}"
                );
            }
        }
    }

    #[test]
    fn distinct_over_the_stream_names_columns_as_a_plain_select_does() {
        let plan = plan_query(
            "SELECT DISTINCT Merchant_Id, currency AS \"Cur\", amount_minor AS Amount FROM payments",
        )
        .unwrap();
        assert!(matches!(plan.kind, PlanKind::Over(_)));
        let names: Vec<&str> = plan
            .output_schema
            .fields()
            .iter()
            .map(|f| f.name().as_str())
            .collect();
        assert_eq!(names, ["merchant_id", "Cur", "amount"]);
    }

    #[test]
    fn plain_queries_are_maps() {
        let plan = plan_query(
            "SELECT event_id, amount_minor * 2 AS twice FROM payments WHERE amount_minor > 100",
        )
        .unwrap();
        assert!(matches!(plan.kind, PlanKind::Map { window: None, .. }));
        assert_eq!(plan.output_schema.field(1).name(), "twice");
    }
}
