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
//! `window_end`; its plan is never executed. Only a fixed set of plan shapes is accepted; anything
//! else (ORDER BY, LIMIT, joins, OVER, UNION, an unwindowed GROUP BY) is rejected with the
//! construct's position in the query, never run with batch semantics.

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
use datafusion::sql::sqlparser::ast::{SetExpr, Spanned, Statement, TableFactor};
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::parser::Parser;
use datafusion::sql::sqlparser::tokenizer::{Span, Token, TokenWithSpan, Tokenizer};

use super::plan::{AggregateSpec, KeySlot, PlanKind, Stage, StreamPlan};
use super::window_tvf::{WindowKind, extract_window, plan_error, point, rewrite_flink_windows};
use crate::error::{Error, Result};
use crate::schema::{WINDOW_END, WINDOW_START, event_schema, windowed_schema};

/// The name of the event stream a query reads.
pub const STREAM: &str = "payments";

/// Plans a stream query.
///
/// Planning never waits on I/O (the stream is an in-memory table stub), so the async DataFusion
/// calls complete on their first poll; polling once keeps this callable from any context, inside
/// an async runtime or not.
pub fn plan_query(sql: &str) -> Result<StreamPlan> {
    plan_query_on(sql, STREAM)
}

/// Plans a stream query reading the stream called `stream` (a source declared in a query file).
pub fn plan_query_on(sql: &str, stream: &str) -> Result<StreamPlan> {
    use futures::FutureExt;
    plan_query_async(sql, stream)
        .now_or_never()
        .unwrap_or_else(|| {
            Err(Error::Internal(
                "query planning tried to wait on I/O".into(),
            ))
        })
}

fn parse_error(e: impl std::fmt::Display) -> Error {
    // sqlparser reports "... at Line: 3, Column: 10"; keep its words, which already say where.
    let msg = e.to_string();
    let position = msg
        .rfind(" at Line: ")
        .map(|i| {
            msg[i + 4..]
                .replace("Line: ", "line ")
                .replace("Column: ", "column ")
        })
        .unwrap_or_else(|| "the query".into());
    Error::Plan {
        position,
        message: format!("cannot parse the query: {msg}"),
    }
}

/// First token spelling `kw` (a keyword), for errors found after planning.
fn locate(tokens: &[TokenWithSpan], kw: Keyword) -> Span {
    tokens
        .iter()
        .find(|t| matches!(&t.token, Token::Word(w) if w.keyword == kw))
        .map(|t| t.span)
        .unwrap_or_else(|| point(0, 0))
}

async fn plan_query_async(sql: &str, stream: &str) -> Result<StreamPlan> {
    let dialect = GenericDialect {};
    let tokens = Tokenizer::new(&dialect, sql)
        .tokenize_with_location()
        .map_err(parse_error)?;
    let tokens = rewrite_flink_windows(tokens);
    let mut statements = Parser::new(&dialect)
        .with_tokens_with_locations(tokens.clone())
        .parse_statements()
        .map_err(parse_error)?;
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
    if query.with.is_some() {
        return Err(plan_error(
            locate(&tokens, Keyword::WITH),
            "WITH (common table expressions) is not supported in stream queries yet",
        ));
    }
    let SetExpr::Select(select) = query.body.as_mut() else {
        return Err(plan_error(
            query.body.span(),
            "UNION/INTERSECT/EXCEPT and VALUES are not supported in stream queries; write one SELECT",
        ));
    };
    if select.from.len() != 1 {
        return Err(plan_error(
            select.span(),
            format!(
                "a stream query reads exactly one stream in FROM (e.g. FROM {stream} or FROM TUMBLE({stream}, ...))"
            ),
        ));
    }
    let from = &mut select.from[0];
    if let Some(join) = from.joins.first() {
        return Err(plan_error(
            locate(&tokens, Keyword::JOIN).union(&join.relation.span()),
            "JOIN is not supported by the streaming engine yet (joins with reference tables are planned); remove the join",
        ));
    }
    let window = extract_window(&mut from.relation)?;
    match &from.relation {
        TableFactor::Table { name, .. } if name.to_string() == stream => {}
        TableFactor::Table { name, .. } => {
            return Err(plan_error(
                name.span(),
                format!("unknown stream `{name}`; the event stream is `{stream}`"),
            ));
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
    if let Some(w) = &window
        && w.time_column != "event_time"
    {
        return Err(plan_error(
            from.relation.span(),
            format!(
                "`{}` is not an event-time column; windows are computed over `event_time`",
                w.time_column
            ),
        ));
    }

    let schema = if window.is_some() {
        windowed_schema()
    } else {
        event_schema()
    };
    let config = SessionConfig::new()
        .with_target_partitions(1)
        .with_information_schema(false);
    let state = SessionStateBuilder::new()
        .with_config(config)
        .with_default_features()
        .with_optimizer_rules(vec![Arc::new(SimplifyExpressions::new())])
        .with_physical_optimizer_rules(vec![])
        .build();
    let ctx = SessionContext::new_with_state(state);
    ctx.register_table(stream, Arc::new(EmptyTable::new(Arc::clone(&schema))))?;
    let state = ctx.state();
    let logical = state
        .statement_to_plan(datafusion::sql::parser::Statement::Statement(Box::new(
            stmt,
        )))
        .await
        .map_err(|e| df_plan_error(&e))?;
    let physical = state
        .create_physical_plan(&logical)
        .await
        .map_err(|e| df_plan_error(&e))?;
    let output_schema = physical.schema();
    let kind = lift(&physical, window, &tokens)?;
    Ok(StreamPlan {
        sql: sql.to_string(),
        kind,
        output_schema,
    })
}

fn df_plan_error(e: &datafusion::error::DataFusionError) -> Error {
    let span = e
        .diagnostic()
        .and_then(|d| d.span)
        .map_or_else(|| point(0, 0), |s| point(s.start.line, s.start.column));
    let msg = e.to_string();
    let msg = msg
        .strip_prefix("Error during planning: ")
        .or_else(|| msg.strip_prefix("Schema error: "))
        .unwrap_or(&msg);
    plan_error(span, msg.to_string())
}

fn references(expr: &Arc<dyn PhysicalExpr>, idx: &[usize]) -> bool {
    collect_columns(expr)
        .iter()
        .any(|c| idx.contains(&c.index()))
}

/// Walks the physical plan top-down, turning each accepted node into a stage.
fn lift(
    root: &Arc<dyn ExecutionPlan>,
    window: Option<super::window_tvf::WindowSpec>,
    tokens: &[TokenWithSpan],
) -> Result<PlanKind> {
    let ws_idx = event_schema().fields().len();
    let window_cols = [ws_idx, ws_idx + 1];
    let mut stages = Vec::new();
    let mut above_aggregate: Option<Vec<Stage>> = None;
    let mut aggregate: Option<AggregateSpec> = None;
    let mut node = Arc::clone(root);
    loop {
        let any = node.as_ref();
        if let Some(p) = any.downcast_ref::<ProjectionExec>() {
            stages.push(Stage::Project {
                exprs: p.expr().iter().map(|e| Arc::clone(&e.expr)).collect(),
                schema: p.schema(),
            });
            node = Arc::clone(p.input());
        } else if let Some(f) = any.downcast_ref::<FilterExec>() {
            if f.projection().is_some() {
                return Err(Error::Internal(
                    "unexpected projection inside a filter".into(),
                ));
            }
            stages.push(Stage::Filter(Arc::clone(f.predicate())));
            node = Arc::clone(f.input());
        } else if let Some(agg) = any.downcast_ref::<AggregateExec>() {
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
            if window.is_none() {
                return Err(plan_error(
                    locate(tokens, Keyword::GROUP).union(&locate(tokens, Keyword::SELECT)),
                    "an aggregate over the unbounded stream would never be final; aggregate over a window, e.g. FROM TUMBLE(payments, event_time, INTERVAL '1' MINUTE) ... GROUP BY window_start, window_end",
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
                        keys.push(Arc::clone(expr));
                    }
                }
            }
            if !key_layout
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
            aggregate = Some(AggregateSpec {
                input_stages: vec![],
                keys,
                key_schema: Arc::new(datafusion::arrow::datatypes::Schema::new(key_fields)),
                key_layout,
                aggregates: partial.aggr_expr().to_vec(),
                filters: partial.filter_expr().to_vec(),
                output_schema: agg.schema(),
                output_stages: vec![],
            });
            above_aggregate = Some(std::mem::take(&mut stages));
            node = Arc::clone(partial.input());
        } else if any.downcast_ref::<EmptyExec>().is_some() {
            break;
        } else {
            return Err(unsupported_node(node.name(), tokens));
        }
    }
    stages.reverse();
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
            Ok(PlanKind::Window {
                window: window.expect("checked above"),
                aggregate: agg,
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
        })
        .collect::<datafusion::error::Result<_>>()?)
}

fn stage_references(s: &Stage, idx: &[usize]) -> bool {
    match s {
        Stage::Filter(p) => references(p, idx),
        Stage::Project { exprs, .. } => exprs.iter().any(|e| references(e, idx)),
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
                "SELECT count(*) FROM payments",
                "would never be final",
                "line 1",
            ),
            (
                "SELECT * FROM payments p JOIN merchants m ON p.merchant_id = m.id",
                "JOIN",
                "line 1, column 26",
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
    fn plain_queries_are_maps() {
        let plan = plan_query(
            "SELECT event_id, amount_minor * 2 AS twice FROM payments WHERE amount_minor > 100",
        )
        .unwrap();
        assert!(matches!(plan.kind, PlanKind::Map { window: None, .. }));
        assert_eq!(plan.output_schema.field(1).name(), "twice");
    }
}
