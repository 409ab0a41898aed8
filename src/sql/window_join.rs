//! Window joins: two windowed aggregates (subqueries, or CTEs inlined as subqueries) joined on
//! their keys and window bounds:
//!
//! ```sql
//! SELECT a.merchant_id, a.window_start, a.n AS authorizations, c.n AS captures
//! FROM (SELECT merchant_id, window_start, window_end, count(*) AS n
//!       FROM TUMBLE(payments, event_time, INTERVAL '1' MINUTE)
//!       WHERE event_type = 'authorization' GROUP BY merchant_id, window_start, window_end) a
//! LEFT JOIN (SELECT merchant_id, window_start, window_end, count(*) AS n
//!       FROM TUMBLE(payments, event_time, INTERVAL '1' MINUTE)
//!       WHERE event_type = 'capture' GROUP BY merchant_id, window_start, window_end) c
//!   ON c.merchant_id = a.merchant_id AND c.window_start = a.window_start
//! ```
//! Each side is planned as the query it is; the outer query is planned by DataFusion over two
//! tables with the sides' result columns, and its join read here: equalities of a left and a
//! right expression are the key (one of them must equate the window bounds), the rest is
//! checked on each pair. The operator is `operators/window_join.rs`.

use std::sync::Arc;

use datafusion::catalog::empty::EmptyTable;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{JoinSide, JoinType};
use datafusion::logical_expr::Operator as BinaryOp;
use datafusion::physical_expr::expressions::{BinaryExpr, Column};
use datafusion::physical_expr::split_conjunction;
use datafusion::physical_expr::utils::collect_columns;
use datafusion::physical_plan::joins::NestedLoopJoinExec;
use datafusion::physical_plan::joins::utils::JoinFilter;
use datafusion::physical_plan::{ExecutionPlan, PhysicalExpr};
use datafusion::sql::sqlparser::ast::{
    Ident, ObjectName, Select, SetExpr, Spanned, Statement, TableFactor,
};
use datafusion::sql::sqlparser::tokenizer::{Span, TokenWithSpan};

use super::WindowLimits;
use super::plan::{PlanKind, Stage, StreamPlan, WindowJoinSpec};
use super::window_tvf::plan_error;
use crate::error::{Error, Result};
use crate::schema::EventSchema;
use crate::table::ReferenceTable;

/// What the planner registers each side's results as.
pub(super) const LEFT: &str = "window join left";
/// See [`LEFT`].
pub(super) const RIGHT: &str = "window join right";

/// The two sides of a window join in `select`'s FROM, as texts of their own (everything else
/// blanked, so positions stay), with the FROM rewritten to read them as tables; `None` when
/// the FROM is not two windowed subqueries joined.
pub(super) fn sides(sql: &str, select: &mut Select) -> Option<(String, String, Span)> {
    let from = select.from.first_mut()?;
    if from.joins.len() != 1 {
        return None;
    }
    let windowed = |f: &TableFactor| match f {
        TableFactor::Derived { subquery, .. } => match subquery.body.as_ref() {
            SetExpr::Select(s) => s
                .from
                .first()
                .is_some_and(|t| matches!(&t.relation, TableFactor::Table { args: Some(_), .. })),
            _ => false,
        },
        _ => false,
    };
    if !windowed(&from.relation) || !windowed(&from.joins[0].relation) {
        return None;
    }
    let text = |f: &TableFactor| {
        let TableFactor::Derived { subquery, .. } = f else {
            unreachable!("checked above")
        };
        // From the subquery's start to the parenthesis that closes it (its span may stop
        // short of a trailing `)`, such as a window function's).
        let start =
            super::with_clause::range(sql, subquery.span().start, subquery.span().start).start;
        let (mut depth, mut quote, mut end) = (0i64, None, sql.len());
        for (i, ch) in sql[start..].char_indices() {
            match (quote, ch) {
                (Some(q), ch) if ch == q => quote = None,
                (Some(_), _) => {}
                (None, '\'' | '"') => quote = Some(ch),
                (None, '(') => depth += 1,
                (None, ')') if depth == 0 => {
                    end = start + i;
                    break;
                }
                (None, ')') => depth -= 1,
                _ => {}
            }
        }
        super::with_clause::blank(sql, |i| (start..end).contains(&i))
    };
    let (left, right) = (text(&from.relation), text(&from.joins[0].relation));
    let at = from.joins[0].relation.span();
    let as_table = |f: &mut TableFactor, name: &str| {
        let TableFactor::Derived { alias, .. } = f else {
            return;
        };
        let alias = alias.take();
        *f = super::window_tvf::plain_table(
            ObjectName::from(vec![Ident::with_quote('"', name)]),
            alias,
        );
    };
    as_table(&mut from.relation, LEFT);
    as_table(&mut from.joins[0].relation, RIGHT);
    Some((left, right, at))
}

/// Whether result column `col` of a windowed aggregate `plan` is its window's start (`true`)
/// or end (`false`), followed back through its SELECT list.
fn window_bound(plan: &StreamPlan, col: usize) -> Option<bool> {
    let aggregate = match &plan.kind {
        super::PlanKind::Window { aggregate, .. } => aggregate,
        super::PlanKind::Enriched(e) => match &e.inner.kind {
            super::PlanKind::Window { aggregate, .. } => aggregate,
            _ => return None,
        },
        _ => return None,
    };
    let mut col = col;
    for s in aggregate.output_stages.iter().rev() {
        match s {
            Stage::Filter(_) => {}
            Stage::Project { exprs, .. } => col = exprs.get(col)?.downcast_ref::<Column>()?.index(),
            Stage::Rank {
                schema, functions, ..
            } => {
                if col >= schema.fields().len() - functions.len() {
                    return None;
                }
            }
            Stage::Lookup(_) => return None,
        }
    }
    match aggregate.key_layout.get(col)? {
        super::KeySlot::WindowStart => Some(true),
        super::KeySlot::WindowEnd => Some(false),
        super::KeySlot::Key(_) => None,
    }
}

/// Reads the outer query's plan (stages over a nested-loop join of the two sides' tables).
pub(super) fn lift(
    root: &Arc<dyn ExecutionPlan>,
    left: StreamPlan,
    right: StreamPlan,
    at: Span,
) -> Result<WindowJoinSpec> {
    // A windowed aggregate emits a window's rows once, when it closes (a plain TUMBLE select
    // emits each event as it comes, which has no window to pair).
    let aggregate = |p: &StreamPlan| match &p.kind {
        super::PlanKind::Window { .. } => true,
        super::PlanKind::Enriched(e) => matches!(e.inner.kind, super::PlanKind::Window { .. }),
        _ => false,
    };
    let (Some(lw), Some(rw), true, true) = (
        left.window(),
        right.window(),
        aggregate(&left),
        aggregate(&right),
    ) else {
        return Err(plan_error(
            at,
            "both sides of a window join are windowed aggregates (GROUP BY …, window_start, window_end over TUMBLE or HOP)",
        ));
    };
    if lw.kind != rw.kind || matches!(lw.kind, super::WindowKind::Session { .. }) {
        return Err(plan_error(
            at,
            "the two sides of a window join need the same TUMBLE or HOP windows (the same size and slide); session windows differ per key and cannot be joined",
        ));
    }
    let mut stages = Vec::new();
    let mut node = Arc::clone(root);
    let join_node = loop {
        if node.downcast_ref::<NestedLoopJoinExec>().is_some() {
            break Arc::clone(&node);
        }
        if let Some(p) =
            node.downcast_ref::<datafusion::physical_plan::projection::ProjectionExec>()
        {
            let input = p.input().schema();
            stages.push(Stage::Project {
                exprs: p
                    .expr()
                    .iter()
                    .map(|e| super::checked::checked(Arc::clone(&e.expr), &input))
                    .collect::<datafusion::error::Result<_>>()?,
                schema: p.schema(),
            });
            node = Arc::clone(p.input());
        } else if let Some(f) = node.downcast_ref::<datafusion::physical_plan::filter::FilterExec>()
        {
            stages.push(Stage::Filter(super::checked::checked(
                Arc::clone(f.predicate()),
                &f.input().schema(),
            )?));
            node = Arc::clone(f.input());
        } else {
            return Err(plan_error(
                at,
                "over a window join only WHERE and a SELECT list are supported (no GROUP BY, DISTINCT, OVER, ORDER BY or USING): aggregate inside the two sides, and join them with ON",
            ));
        }
    };
    stages.reverse();
    let join = join_node
        .downcast_ref::<NestedLoopJoinExec>()
        .ok_or_else(|| Error::Internal("a window join without its join".into()))?;
    let left_outer = match join.join_type() {
        JoinType::Inner => false,
        JoinType::Left => true,
        _ => {
            return Err(plan_error(
                at,
                "a window join is JOIN (inner) or LEFT JOIN; write the side whose rows must all come out on the left",
            ));
        }
    };
    let Some(f) = join.filter().cloned() else {
        return Err(plan_error(
            at,
            "a window join needs ON with the keys and window bounds equated (ON c.merchant_id = a.merchant_id AND c.window_start = a.window_start)",
        ));
    };
    let side_of = |e: &Arc<dyn PhysicalExpr>| -> Option<JoinSide> {
        let cols = collect_columns(e);
        let mut sides = cols.iter().map(|c| f.column_indices()[c.index()].side);
        let first = sides.next()?;
        sides.all(|s| s == first).then_some(first)
    };
    let on_side = |e: &Arc<dyn PhysicalExpr>, schema: &datafusion::arrow::datatypes::SchemaRef| {
        Arc::clone(e)
            .transform(|n| {
                if let Some(c) = n.downcast_ref::<Column>() {
                    let i = f.column_indices()[c.index()].index;
                    return Ok(Transformed::yes(
                        Arc::new(Column::new(schema.field(i).name(), i)) as Arc<dyn PhysicalExpr>,
                    ));
                }
                Ok(Transformed::no(n))
            })
            .map(|t| t.data)
    };
    // Which window bound of its aggregate a side's expression is, if it is one: traced back
    // through the side's SELECT list, not taken from a column's name.
    let bound = |e: &Arc<dyn PhysicalExpr>, plan: &StreamPlan| {
        e.downcast_ref::<Column>()
            .and_then(|c| window_bound(plan, f.column_indices()[c.index()].index))
    };
    let (ls, rs) = (&left.output_schema, &right.output_schema);
    let (mut left_keys, mut right_keys, mut rest) = (Vec::new(), Vec::new(), Vec::new());
    let mut on_bounds = false;
    for c in split_conjunction(f.expression()) {
        if let Some(b) = c.downcast_ref::<BinaryExpr>()
            && *b.op() == BinaryOp::Eq
        {
            let pair = match (side_of(b.left()), side_of(b.right())) {
                (Some(JoinSide::Left), Some(JoinSide::Right)) => Some((b.left(), b.right())),
                (Some(JoinSide::Right), Some(JoinSide::Left)) => Some((b.right(), b.left())),
                _ => None,
            };
            if let Some((l, r)) = pair {
                // The same bound on both sides: rows of one window (a start equal to an end
                // pairs windows that close apart).
                on_bounds |= bound(l, &left).is_some() && bound(l, &left) == bound(r, &right);
                left_keys.push(super::checked::checked(on_side(l, ls)?, ls)?);
                right_keys.push(super::checked::checked(on_side(r, rs)?, rs)?);
                continue;
            }
        }
        rest.push(Arc::clone(c));
    }
    if !on_bounds {
        return Err(plan_error(
            at,
            "a window join pairs rows of the same window: equate the window bounds in ON (c.window_start = a.window_start), with both sides selecting window_start (or window_end)",
        ));
    }
    let residual = rest
        .into_iter()
        .reduce(|a, b| Arc::new(BinaryExpr::new(a, BinaryOp::And, b)) as Arc<dyn PhysicalExpr>)
        .map(|e| -> Result<JoinFilter> {
            Ok(JoinFilter::new(
                super::checked::checked(e, f.schema())?,
                f.column_indices().to_vec(),
                Arc::clone(f.schema()),
            ))
        })
        .transpose()?;
    if join.projection().is_some() {
        return Err(Error::Internal(
            "a window join with its own projection".into(),
        ));
    }
    Ok(WindowJoinSpec {
        left,
        right,
        left_outer,
        left_keys,
        right_keys,
        residual,
        joined_schema: join.schema(),
        output_stages: stages,
    })
}

/// A window join: each side planned as the query it is, then the outer query over their
/// results ([`super::window_join`]).
#[allow(clippy::too_many_arguments)]
pub(super) async fn plan(
    sql: &str,
    stmt: Statement,
    sides: (String, String, Span),
    tokens: &[TokenWithSpan],
    events: &Arc<EventSchema>,
    stream: &str,
    limits: &WindowLimits,
    tables: &[Arc<ReferenceTable>],
) -> Result<StreamPlan> {
    let (left_sql, right_sql, at) = sides;
    let left = Box::pin(super::planner::plan_query_async(
        &left_sql,
        events,
        stream,
        limits,
        &[],
        tables,
    ))
    .await?;
    let right = Box::pin(super::planner::plan_query_async(
        &right_sql,
        events,
        stream,
        limits,
        &[],
        tables,
    ))
    .await?;
    let ctx = super::planner::planning_context();
    ctx.register_table(
        LEFT,
        Arc::new(EmptyTable::new(Arc::clone(&left.output_schema))),
    )?;
    ctx.register_table(
        RIGHT,
        Arc::new(EmptyTable::new(Arc::clone(&right.output_schema))),
    )?;
    let state = ctx.state();
    let (physical, _) = match super::planner::physical_plan(&state, stmt.clone()).await {
        Ok(p) => p,
        Err(e) => {
            return Err(super::planner::df_plan_error(
                &e,
                tokens,
                &state,
                &stmt,
                &left.output_schema,
            )
            .await);
        }
    };
    let output_schema = physical.schema();
    let spec = lift(&physical, left, right, at)?;
    Ok(StreamPlan {
        sql: sql.to_string(),
        name: "the query".into(),
        kind: PlanKind::WindowJoin(Box::new(spec)),
        output_schema,
        events: Arc::clone(events),
    })
}
