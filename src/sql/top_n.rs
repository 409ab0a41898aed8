//! Top-N per window in its usual spelling: a ranking over a windowed aggregate's rows, filtered
//! by rank one level up.
//!
//! ```sql
//! SELECT * FROM (
//!   SELECT merchant_id, window_start, window_end, total,
//!          ROW_NUMBER() OVER (PARTITION BY window_start, window_end ORDER BY total DESC) AS rk
//!   FROM (SELECT merchant_id, window_start, window_end, sum(amount_minor) AS total
//!         FROM TUMBLE(payments, event_time, INTERVAL '10' MINUTE)
//!         GROUP BY merchant_id, window_start, window_end))
//! WHERE rk <= 5
//! ```
//! The planner runs a ranking written in the aggregate's own SELECT (a [`super::Stage::Rank`]
//! over its rows) and a filter over that; here the middle query, which only names the
//! aggregate's columns and ranks them, is folded into the aggregate: each name of an aggregate's
//! column becomes the expression it names (`total` → `sum(amount_minor)`), which is what the
//! ranking reads either way. A middle query that does more (a WHERE, a GROUP BY, a column the
//! aggregate does not have) is left as written, for the planner to judge.

use datafusion::sql::sqlparser::ast::{
    Expr, Ident, Select, SelectItem, SetExpr, TableFactor, visit_expressions_mut,
};

/// Folds `SELECT … FROM (SELECT <names and rankings> FROM (<windowed aggregate>))` into
/// `SELECT … FROM (<windowed aggregate with the rankings>)` when it can (see the module doc).
pub(super) fn fold_ranking_into_aggregate(top: &mut Select) {
    let Some(folded) = folded(top) else {
        return;
    };
    if let TableFactor::Derived { subquery, .. } = &mut top.from[0].relation {
        *subquery.body = SetExpr::Select(Box::new(folded));
    }
}

/// The aggregate with the middle query's SELECT list, or `None` when the shape is not the one
/// folded.
fn folded(top: &Select) -> Option<Select> {
    let [from] = top.from.as_slice() else {
        return None;
    };
    let TableFactor::Derived { subquery: mid, .. } = &from.relation else {
        return None;
    };
    if mid.with.is_some() || mid.order_by.is_some() || mid.limit_clause.is_some() {
        return None;
    }
    let SetExpr::Select(mid) = mid.body.as_ref() else {
        return None;
    };
    let plain = mid.selection.is_none()
        && mid.having.is_none()
        && mid.qualify.is_none()
        && mid.distinct.is_none()
        && mid.named_window.is_empty()
        && matches!(&mid.group_by, datafusion::sql::sqlparser::ast::GroupByExpr::Expressions(e, m) if e.is_empty() && m.is_empty());
    let [inner_from] = mid.from.as_slice() else {
        return None;
    };
    if !plain || !inner_from.joins.is_empty() {
        return None;
    }
    let TableFactor::Derived {
        subquery: inner, ..
    } = &inner_from.relation
    else {
        return None;
    };
    if inner.with.is_some() || inner.order_by.is_some() || inner.limit_clause.is_some() {
        return None;
    }
    let SetExpr::Select(inner) = inner.body.as_ref() else {
        return None;
    };
    // The aggregate over a window table function.
    let windowed = matches!(
        inner.from.as_slice(),
        [f] if f.joins.is_empty() && matches!(f.relation, TableFactor::Table { args: Some(_), .. })
    );
    if !windowed {
        return None;
    }
    // The aggregate's columns by name, each with the expression it is.
    let mut columns: Vec<(String, Expr)> = Vec::new();
    for item in &inner.projection {
        match item {
            SelectItem::UnnamedExpr(e @ Expr::Identifier(id)) => {
                columns.push((id.value.clone(), e.clone()));
            }
            SelectItem::UnnamedExpr(e @ Expr::CompoundIdentifier(ids)) => {
                columns.push((ids.last()?.value.clone(), e.clone()));
            }
            SelectItem::ExprWithAlias { expr, alias } => {
                columns.push((alias.value.clone(), expr.clone()));
            }
            // A column named by its expression's text, or `*`: not folded.
            _ => return None,
        }
    }
    let find = |name: &Ident| {
        columns
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(&name.value))
            .map(|(_, e)| e.clone())
    };
    // Every name the middle query reads is one of the aggregate's columns.
    let substitute = |e: &mut Expr| -> Option<()> {
        let mut unknown = false;
        let _ = visit_expressions_mut(e, |x| {
            let name = match x {
                Expr::Identifier(id) => Some(id.clone()),
                Expr::CompoundIdentifier(ids) => ids.last().cloned(),
                _ => None,
            };
            if let Some(name) = name {
                match find(&name) {
                    Some(expr) => *x = expr,
                    None => unknown = true,
                }
            }
            std::ops::ControlFlow::<()>::Continue(())
        });
        (!unknown).then_some(())
    };
    let mut projection = Vec::new();
    for item in &mid.projection {
        match item {
            SelectItem::Wildcard(_) => projection.extend(inner.projection.iter().cloned()),
            SelectItem::UnnamedExpr(Expr::Identifier(id)) => {
                projection.push(named(find(id)?, id.clone()));
            }
            SelectItem::UnnamedExpr(Expr::CompoundIdentifier(ids)) => {
                let id = ids.last()?;
                projection.push(named(find(id)?, id.clone()));
            }
            SelectItem::ExprWithAlias { expr, alias } => {
                let mut expr = expr.clone();
                substitute(&mut expr)?;
                projection.push(named(expr, alias.clone()));
            }
            // An unnamed expression would be named by its text, which folding changes.
            _ => return None,
        }
    }
    let mut folded = inner.as_ref().clone();
    folded.projection = projection;
    Some(folded)
}

/// `expr AS name`, or the column itself when it already has that name.
fn named(expr: Expr, name: Ident) -> SelectItem {
    match &expr {
        Expr::Identifier(id) if id.value == name.value => SelectItem::UnnamedExpr(expr),
        _ => SelectItem::ExprWithAlias { expr, alias: name },
    }
}
