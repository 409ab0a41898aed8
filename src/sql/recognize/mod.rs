//! `MATCH_RECOGNIZE`: row patterns over each partition of the stream (CEP), planned.
//!
//! ```sql
//! SELECT * FROM payments MATCH_RECOGNIZE (
//!   PARTITION BY card_id ORDER BY event_time
//!   MEASURES FIRST(S.event_id) AS first_small, L.amount_minor AS large_minor
//!   ONE ROW PER MATCH AFTER MATCH SKIP PAST LAST ROW
//!   PATTERN (S{2,} L) WITHIN INTERVAL '1' MINUTE
//!   DEFINE S AS S.amount_minor < 1000, L AS L.amount_minor > 100 * S.amount_minor
//! ) AS m
//! ```
//!
//! The clause is read here into a [`RecognizeSpec`]: the pattern compiled ([`pattern`]), each
//! DEFINE and MEASURE rewritten so that what it reads of the match is a column
//! ([`navigation`]) and planned by DataFusion, and the outer query's WHERE and SELECT planned
//! over the match rows. `operators/recognize` runs it. `WITHIN` (Flink's spelling; sqlparser
//! has none) is cut from the text before parsing ([`strip_within`]): it is required, because
//! it is what bounds a partial match's wait and so the state.

pub mod navigation;
pub mod pattern;

use std::sync::Arc;

use datafusion::arrow::datatypes::{Field, Schema, SchemaRef};
use datafusion::catalog::empty::EmptyTable;
use datafusion::physical_expr::PhysicalSortExpr;
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_plan::empty::EmptyExec;
use datafusion::physical_plan::filter::FilterExec;
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::{ExecutionPlan, PhysicalExpr};
use datafusion::sql::sqlparser::ast::{
    AfterMatchSkip, Expr, FunctionArg, FunctionArgExpr, Ident, ObjectName, RowsPerMatch,
    SelectItem, SetExpr, Spanned, Statement, TableFactor,
};
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::parser::Parser;
use datafusion::sql::sqlparser::tokenizer::{Span, Token, TokenWithSpan, Whitespace};

use self::navigation::{Nav, Place};
use self::pattern::Program;
use super::checked::checked;
use super::plan::{PlanKind, Stage, StreamPlan};
use super::window_tvf::plan_error;
use crate::error::{Error, Result};
use crate::schema::EventSchema;

/// A planned `MATCH_RECOGNIZE`.
#[derive(Debug, Clone)]
pub struct RecognizeSpec {
    /// Conditions an event must pass to take part (the WHERE of a subquery in FROM).
    pub filters: Vec<Arc<dyn PhysicalExpr>>,
    /// `PARTITION BY`: columns of the events (none: one partition).
    pub keys: Vec<Arc<dyn PhysicalExpr>>,
    /// The event-time column.
    pub time: usize,
    /// The order of one partition's rows of one event time: the ORDER BY after the event
    /// time, then the events' tie columns (the id).
    pub ties: Vec<PhysicalSortExpr>,
    /// The compiled pattern.
    pub program: Program,
    /// Each pattern variable's condition, in [`Program::variables`] order.
    pub defines: Vec<Define>,
    /// What the measures read of a match.
    pub measure_navs: Vec<Nav>,
    /// The measures, over the navigations' columns ([`Nav::field`]).
    pub measures: Vec<Arc<dyn PhysicalExpr>>,
    /// The schema the measures are evaluated over.
    pub measure_input: SchemaRef,
    /// The longest time from a match's first row to its last (inclusive).
    pub within: i64,
    /// `AFTER MATCH SKIP TO NEXT ROW` (else `PAST LAST ROW`).
    pub skip_to_next_row: bool,
    /// A match's row: the PARTITION BY columns, then the measures.
    pub match_schema: SchemaRef,
    /// The outer query's WHERE and SELECT over the match rows.
    pub output_stages: Vec<Stage>,
}

/// A pattern variable's DEFINE condition.
#[derive(Debug, Clone)]
pub enum Define {
    /// Not defined: every row fits.
    Always,
    /// Reads the current row alone: evaluated over whole batches of events.
    Row(Arc<dyn PhysicalExpr>),
    /// Reads rows mapped earlier: evaluated per try over the event columns followed by the
    /// navigations' columns.
    Navigated {
        /// The condition.
        expr: Arc<dyn PhysicalExpr>,
        /// What it reads of the match.
        navs: Vec<Nav>,
        /// The events' fields, then the navigations'.
        schema: SchemaRef,
    },
}

/// `WITHIN INTERVAL …` cut from a `MATCH_RECOGNIZE`'s text.
#[derive(Debug, Clone, Copy)]
pub struct Within {
    /// The interval, in milliseconds.
    pub millis: i64,
}

/// Where `MATCH_RECOGNIZE`'s `PATTERN` is, for errors about it.
fn pattern_span(tokens: &[TokenWithSpan]) -> Option<Span> {
    clause_word(tokens, "PATTERN")
}

/// Where the first `word` after `MATCH_RECOGNIZE` is.
fn clause_word(tokens: &[TokenWithSpan], word: &str) -> Option<Span> {
    let is = |t: &TokenWithSpan, w: &str| matches!(&t.token, Token::Word(x) if x.quote_style.is_none() && x.value.eq_ignore_ascii_case(w));
    let mr = tokens.iter().position(|t| is(t, "MATCH_RECOGNIZE"))?;
    tokens[mr..].iter().find(|t| is(t, word)).map(|t| t.span)
}

/// Cuts `WITHIN INTERVAL '…' UNIT` following a `MATCH_RECOGNIZE`'s `PATTERN (…)` out of
/// `tokens` (as blanks, so positions stay), returning it. `None` when the text has no
/// `MATCH_RECOGNIZE`.
pub fn strip_within(tokens: &mut [TokenWithSpan]) -> Result<Option<(Within, Span)>> {
    // Each MATCH_RECOGNIZE's (a UNION ALL may hold several; each branch is planned from its
    // own text again): the first's is the query's.
    let mut first = None;
    let mut from = 0;
    while let Some(mr) = (from..tokens.len()).find(|&i| {
        matches!(&tokens[i].token, Token::Word(x) if x.quote_style.is_none() && x.value.eq_ignore_ascii_case("MATCH_RECOGNIZE"))
    }) {
        let within = strip_one(tokens, mr)?;
        first = first.or(within);
        from = mr + 1;
    }
    Ok(first)
}

/// [`strip_within`] for the `MATCH_RECOGNIZE` at token `mr`.
fn strip_one(tokens: &mut [TokenWithSpan], mr: usize) -> Result<Option<(Within, Span)>> {
    let word = |t: &Token, w: &str| matches!(t, Token::Word(x) if x.quote_style.is_none() && x.value.eq_ignore_ascii_case(w));
    let significant = |tokens: &[TokenWithSpan], from: usize| {
        (from..tokens.len()).find(|&i| !matches!(tokens[i].token, Token::Whitespace(_)))
    };
    let Some(p) = (mr..tokens.len()).find(|&i| word(&tokens[i].token, "PATTERN")) else {
        // The parser says what is missing.
        return Ok(None);
    };
    let missing = || {
        plan_error(
            tokens[p].span,
            "MATCH_RECOGNIZE needs WITHIN INTERVAL '…' after PATTERN (…): it bounds how long a partial match waits for its next row, and so the state (PATTERN (S{2,} L) WITHIN INTERVAL '1' MINUTE)",
        )
    };
    // The PATTERN's parentheses.
    let Some(open) = significant(tokens, p + 1).filter(|&i| tokens[i].token == Token::LParen)
    else {
        return Ok(None);
    };
    let mut depth = 0;
    let mut close = None;
    for (i, t) in tokens.iter().enumerate().skip(open) {
        match t.token {
            Token::LParen => depth += 1,
            Token::RParen => {
                depth -= 1;
                if depth == 0 {
                    close = Some(i);
                    break;
                }
            }
            _ => {}
        }
    }
    let Some(close) = close else { return Ok(None) };
    let Some(w) = significant(tokens, close + 1).filter(|&i| word(&tokens[i].token, "WITHIN"))
    else {
        return Err(missing());
    };
    // The interval runs to DEFINE.
    let Some(define) = (w..tokens.len()).find(|&i| word(&tokens[i].token, "DEFINE")) else {
        return Err(plan_error(
            tokens[w].span,
            "WITHIN INTERVAL '…' is followed by DEFINE and the variables' conditions",
        ));
    };
    let span = tokens[w].span.union(&tokens[define - 1].span);
    let text: String = tokens[w + 1..define]
        .iter()
        .map(|t| t.token.to_string())
        .collect();
    let interval = Parser::new(&GenericDialect {})
        .try_with_sql(&text)
        .and_then(|mut p| p.parse_expr())
        .map_err(|e| {
            plan_error(
                span,
                format!("WITHIN takes an interval such as INTERVAL '1' MINUTE: {e}"),
            )
        })?;
    let millis = super::window_tvf::interval_arg(
        &FunctionArg::Unnamed(FunctionArgExpr::Expr(interval)),
        "WITHIN",
    )
    .map_err(|e| match e {
        Error::Plan { message, .. } => plan_error(span, message),
        e => e,
    })?;
    for t in &mut tokens[w..define] {
        t.token = Token::Whitespace(Whitespace::Space);
    }
    Ok(Some((Within { millis }, span)))
}

/// Whether `select` reads a `MATCH_RECOGNIZE`.
pub fn is_recognize(relation: &TableFactor) -> bool {
    matches!(relation, TableFactor::MatchRecognize { .. })
}

/// Plans `stmt`, whose one FROM item is a `MATCH_RECOGNIZE` over `stream`.
pub(super) async fn plan(
    sql: &str,
    mut stmt: Statement,
    within: Option<(Within, Span)>,
    tokens: &[TokenWithSpan],
    events: &Arc<EventSchema>,
    stream: &str,
) -> Result<StreamPlan> {
    let Statement::Query(query) = &mut stmt else {
        unreachable!("checked by the caller")
    };
    let SetExpr::Select(select) = query.body.as_mut() else {
        unreachable!("checked by the caller")
    };
    let from = &mut select.from[0];
    if let Some(j) = from.joins.first() {
        return Err(plan_error(
            j.relation.span(),
            "a JOIN with MATCH_RECOGNIZE is not supported; join the tables in a subquery the pattern reads, or to the matches downstream",
        ));
    }
    let relation_span = from.relation.span();
    let TableFactor::MatchRecognize {
        table,
        partition_by,
        order_by,
        measures,
        rows_per_match,
        after_match_skip,
        pattern,
        symbols,
        alias,
    } = &mut from.relation
    else {
        unreachable!("checked by the caller")
    };
    let Some((within, _)) = within else {
        return Err(plan_error(
            pattern_span(tokens).unwrap_or(relation_span),
            "MATCH_RECOGNIZE needs WITHIN INTERVAL '…' after PATTERN (…): it bounds how long a partial match waits for its next row, and so the state (PATTERN (S{2,} L) WITHIN INTERVAL '1' MINUTE)",
        ));
    };
    let arrow = Arc::clone(events.arrow());
    let time = events.event_time_column();
    let time_name = arrow.field(time).name().clone();
    let ctx = super::planner::planning_context();
    ctx.register_table(stream, Arc::new(EmptyTable::new(Arc::clone(&arrow))))?;
    let state = ctx.state();

    // The rows the pattern reads: the stream, or a subquery filtering it.
    let filters = input_filters(table, stream, &state, events).await?;
    if let Some(RowsPerMatch::AllRows(_)) = rows_per_match {
        return Err(plan_error(
            clause_word(tokens, "ALL").unwrap_or(relation_span),
            "ALL ROWS PER MATCH is not supported yet; write ONE ROW PER MATCH and select what you need of the rows as MEASURES (FIRST(S.event_id), COUNT(S.*), …)",
        ));
    }
    let skip_to_next_row = match after_match_skip {
        None | Some(AfterMatchSkip::PastLastRow) => false,
        Some(AfterMatchSkip::ToNextRow) => true,
        Some(other) => {
            return Err(plan_error(
                clause_word(tokens, "AFTER").unwrap_or(relation_span),
                format!(
                    "{other} is not supported; write AFTER MATCH SKIP PAST LAST ROW or AFTER MATCH SKIP TO NEXT ROW"
                ),
            ));
        }
    };
    let column_of = |e: &Expr, what: &str| -> Result<usize> {
        let name = match e {
            Expr::Identifier(i) => i,
            Expr::CompoundIdentifier(ids) if ids.len() == 2 => &ids[1],
            other => {
                return Err(plan_error(
                    other.span(),
                    format!("{what} takes columns of the stream; found `{other}`"),
                ));
            }
        };
        navigation::column(&arrow, name).ok_or_else(|| {
            plan_error(
                name.span,
                format!("`{}` is not a column of `{stream}`", name.value),
            )
        })
    };
    let mut key_columns = Vec::new();
    for e in partition_by.iter() {
        let c = column_of(e, "PARTITION BY")?;
        if !key_columns.contains(&c) {
            key_columns.push(c);
        }
    }
    // ORDER BY the event time first; the rest only break its ties.
    let order_span = order_by
        .first()
        .map(|o| o.expr.span())
        .unwrap_or(relation_span);
    let mut order = order_by.iter();
    match order.next() {
        Some(o)
            if column_of(&o.expr, "ORDER BY").ok() == Some(time)
                && o.options.asc != Some(false) => {}
        _ => {
            return Err(plan_error(
                order_span,
                format!(
                    "MATCH_RECOGNIZE over a stream orders each partition by its event time: ORDER BY {time_name} (then, if you like, columns that break its ties)"
                ),
            ));
        }
    }
    let mut ties = Vec::new();
    for o in order {
        let c = column_of(&o.expr, "ORDER BY")?;
        ties.push(PhysicalSortExpr {
            expr: Arc::new(Column::new(arrow.field(c).name(), c)),
            options: datafusion::arrow::compute::SortOptions {
                descending: o.options.asc == Some(false),
                nulls_first: o
                    .options
                    .nulls_first
                    .unwrap_or(o.options.asc == Some(false)),
            },
        });
    }
    for c in events.tie_columns() {
        ties.push(PhysicalSortExpr {
            expr: Arc::new(Column::new(arrow.field(c).name(), c)),
            options: Default::default(),
        });
    }

    let program = pattern::compile(pattern)
        .map_err(|m| plan_error(pattern_span(tokens).unwrap_or(relation_span), m))?;
    let alias_name = alias.as_ref().map(|a| a.name.value.clone());
    let input_alias = match table.as_ref() {
        TableFactor::Table { alias, .. } | TableFactor::Derived { alias, .. } => {
            alias.as_ref().map(|a| a.name.value.clone())
        }
        _ => None,
    };

    // DEFINE: each variable's condition, what it reads of the match rewritten as columns.
    let mut defines = vec![Define::Always; program.variables.len()];
    let mut defined = vec![false; program.variables.len()];
    for d in symbols.iter_mut() {
        let name = pattern::variable_name(&d.symbol);
        let Some(v) = program.variables.iter().position(|x| *x == name) else {
            return Err(plan_error(
                d.symbol.span,
                format!(
                    "DEFINE {} names no variable of the PATTERN (its variables: {})",
                    d.symbol.value,
                    program.variables.join(", ")
                ),
            ));
        };
        if std::mem::replace(&mut defined[v], true) {
            return Err(plan_error(
                d.symbol.span,
                format!("{} is defined twice", d.symbol.value),
            ));
        }
        let mut navs = Vec::new();
        navigation::rewrite(
            &mut d.definition,
            Place::Define(v as u16),
            &program.variables,
            input_alias.as_deref(),
            &arrow,
            &mut navs,
        )?;
        let fields: Vec<Field> = arrow
            .fields()
            .iter()
            .map(|f| f.as_ref().clone())
            .chain(navs.iter().enumerate().map(|(k, n)| n.field(k)))
            .collect();
        let schema = Arc::new(Schema::new(fields));
        let written: Vec<String> = navs
            .iter()
            .map(|n| n.describe(&program.variables, &arrow))
            .collect();
        let expr = single_expr(
            &state,
            d.definition.clone(),
            &schema,
            tokens,
            events,
            &written,
        )
        .await?;
        defines[v] = if navs.is_empty() {
            Define::Row(expr)
        } else {
            Define::Navigated { expr, navs, schema }
        };
    }

    // MEASURES, over the complete match.
    let mut measure_navs = Vec::new();
    let mut measure_exprs = Vec::new();
    for m in measures.iter_mut() {
        navigation::rewrite(
            &mut m.expr,
            Place::Measures,
            &program.variables,
            input_alias.as_deref(),
            &arrow,
            &mut measure_navs,
        )?;
        measure_exprs.push((m.expr.clone(), m.alias.value.clone()));
    }
    let measure_input = Arc::new(Schema::new(
        measure_navs
            .iter()
            .enumerate()
            .map(|(k, n)| n.field(k))
            .collect::<Vec<_>>(),
    ));
    let mut measure_fields = Vec::new();
    let mut measure_physical = Vec::new();
    for (e, name) in measure_exprs {
        let written: Vec<String> = measure_navs
            .iter()
            .map(|n| n.describe(&program.variables, &arrow))
            .collect();
        let p = single_expr(&state, e, &measure_input, tokens, events, &written).await?;
        let t = p.data_type(&measure_input)?;
        measure_fields.push(Field::new(name, t, true));
        measure_physical.push(p);
    }
    let match_fields: Vec<Field> = key_columns
        .iter()
        .map(|c| arrow.field(*c).as_ref().clone())
        .chain(measure_fields)
        .collect();
    let mut seen = std::collections::HashSet::new();
    for f in &match_fields {
        if !seen.insert(f.name().to_ascii_lowercase()) {
            return Err(plan_error(
                relation_span,
                format!(
                    "two columns of the match rows are called `{}` (PARTITION BY columns come first, then the MEASURES); rename the measure",
                    f.name()
                ),
            ));
        }
    }
    let match_schema = Arc::new(Schema::new(match_fields));

    // The outer query, over the match rows as a table.
    let table_name = alias_name.unwrap_or_else(|| stream.to_string());
    from.relation = super::window_tvf::plain_table(
        ObjectName::from(vec![Ident::new(table_name.clone())]),
        None,
    );
    let outer_ctx = super::planner::planning_context();
    outer_ctx.register_table(
        table_name.as_str(),
        Arc::new(EmptyTable::new(Arc::clone(&match_schema))),
    )?;
    let outer_state = outer_ctx.state();
    let physical = match super::planner::physical_plan(&outer_state, stmt.clone()).await {
        Ok((p, _)) => p,
        Err(e) => {
            return Err(super::planner::df_plan_error(
                &e,
                tokens,
                &outer_state,
                &stmt,
                &match_schema,
            )
            .await);
        }
    };
    let output_stages = row_stages(&physical).ok_or_else(|| {
        plan_error(
            relation_span,
            "a query over MATCH_RECOGNIZE's matches may filter (WHERE) and select columns of them; aggregate the matches in a query downstream",
        )
    })?;
    let output_schema = physical.schema();
    let keys = key_columns
        .iter()
        .map(|c| Arc::new(Column::new(arrow.field(*c).name(), *c)) as Arc<dyn PhysicalExpr>)
        .collect();
    Ok(StreamPlan {
        sql: sql.to_string(),
        name: "the query".into(),
        kind: PlanKind::Recognize(Box::new(RecognizeSpec {
            filters,
            keys,
            time,
            ties,
            program,
            defines,
            measure_navs,
            measures: measure_physical,
            measure_input,
            within: within.millis,
            skip_to_next_row,
            match_schema,
            output_stages,
        })),
        output_schema,
        events: Arc::clone(events),
    })
}

/// The conditions of the rows the pattern reads: none for the stream itself, the WHERE of
/// `(SELECT * FROM stream WHERE …)`.
async fn input_filters(
    table: &TableFactor,
    stream: &str,
    state: &datafusion::execution::SessionState,
    events: &Arc<EventSchema>,
) -> Result<Vec<Arc<dyn PhysicalExpr>>> {
    let refused = |span: Span| {
        plan_error(
            span,
            format!(
                "MATCH_RECOGNIZE reads the stream (FROM {stream} MATCH_RECOGNIZE (…)) or a CTE filtering it (WITH auths AS (SELECT * FROM {stream} WHERE event_type = 'authorization') SELECT * FROM auths MATCH_RECOGNIZE (…))"
            ),
        )
    };
    match table {
        TableFactor::Table {
            name, args: None, ..
        } if name
            .to_string()
            .trim_matches('"')
            .eq_ignore_ascii_case(stream) =>
        {
            Ok(vec![])
        }
        TableFactor::Derived { subquery, .. } => {
            let SetExpr::Select(s) = subquery.body.as_ref() else {
                return Err(refused(subquery.span()));
            };
            let plain = s.projection.len() == 1
                && matches!(s.projection[0], SelectItem::Wildcard(_))
                && s.from.len() == 1
                && s.from[0].joins.is_empty()
                && matches!(&s.from[0].relation, TableFactor::Table { name, args: None, .. } if name.to_string().trim_matches('"').eq_ignore_ascii_case(stream))
                && s.group_by
                    == datafusion::sql::sqlparser::ast::GroupByExpr::Expressions(vec![], vec![])
                && s.having.is_none()
                && s.distinct.is_none()
                && subquery.with.is_none();
            if !plain {
                return Err(refused(subquery.span()));
            }
            let Some(cond) = &s.selection else {
                return Ok(vec![]);
            };
            let expr = single_expr(state, cond.clone(), events.arrow(), &[], events, &[]).await?;
            Ok(vec![expr])
        }
        other => Err(refused(other.span())),
    }
}

/// `expr` planned by DataFusion over rows of `schema` (overflow-checked).
async fn single_expr(
    state: &datafusion::execution::SessionState,
    expr: Expr,
    schema: &SchemaRef,
    tokens: &[TokenWithSpan],
    events: &Arc<EventSchema>,
    navs: &[String],
) -> Result<Arc<dyn PhysicalExpr>> {
    const TABLE: &str = "__recognize_rows";
    let span = expr.span();
    let mut stmt = Parser::new(&GenericDialect {})
        .try_with_sql(&format!("SELECT 1 FROM {TABLE}"))
        .and_then(|mut p| p.parse_statement())
        .map_err(|e| Error::Internal(format!("the expression template does not parse: {e}")))?;
    if let Statement::Query(q) = &mut stmt
        && let SetExpr::Select(s) = q.body.as_mut()
    {
        s.projection = vec![SelectItem::UnnamedExpr(expr)];
    }
    let ctx = datafusion::prelude::SessionContext::new_with_state(state.clone());
    let _ = ctx.deregister_table(TABLE);
    ctx.register_table(TABLE, Arc::new(EmptyTable::new(Arc::clone(schema))))?;
    let state = ctx.state();
    let physical = match super::planner::physical_plan(&state, stmt.clone()).await {
        Ok((p, _)) => p,
        Err(e) => {
            // In the user's words: no internal table, each navigation as written.
            return Err(
                match super::planner::df_plan_error(&e, tokens, &state, &stmt, events.arrow()).await
                {
                    Error::Plan { position, message } => {
                        let mut message = message.replace(&format!("{TABLE}."), "");
                        for (k, text) in navs.iter().enumerate().rev() {
                            message = message.replace(&navigation::nav_name(k), text);
                        }
                        Error::Plan { position, message }
                    }
                    other => other,
                },
            );
        }
    };
    let Some(p) = physical.downcast_ref::<ProjectionExec>() else {
        return Err(plan_error(
            span,
            "an aggregate or window function is not allowed here; FIRST, LAST, COUNT, SUM, MIN, MAX and AVG read a pattern variable's rows",
        ));
    };
    let input = p.input().schema();
    if input.fields().len() != schema.fields().len() {
        return Err(Error::Internal(
            "the expression's input lost columns in planning".into(),
        ));
    }
    Ok(checked(Arc::clone(&p.expr()[0].expr), &input)?)
}

/// The filters and projections of `plan` over the match rows, bottom first; `None` when it does
/// anything else (an aggregate, a window function).
fn row_stages(plan: &Arc<dyn ExecutionPlan>) -> Option<Vec<Stage>> {
    let mut stages = Vec::new();
    let mut node = Arc::clone(plan);
    loop {
        if let Some(p) = node.downcast_ref::<ProjectionExec>() {
            let input = p.input().schema();
            stages.push(Stage::Project {
                exprs: p
                    .expr()
                    .iter()
                    .map(|e| checked(Arc::clone(&e.expr), &input))
                    .collect::<datafusion::error::Result<_>>()
                    .ok()?,
                schema: p.schema(),
            });
            node = Arc::clone(p.input());
        } else if let Some(f) = node.downcast_ref::<FilterExec>() {
            if f.projection().is_some() {
                return None;
            }
            stages.push(Stage::Filter(
                checked(Arc::clone(f.predicate()), &f.input().schema()).ok()?,
            ));
            node = Arc::clone(f.input());
        } else if node.downcast_ref::<EmptyExec>().is_some() {
            break;
        } else {
            return None;
        }
    }
    stages.reverse();
    Some(stages)
}
