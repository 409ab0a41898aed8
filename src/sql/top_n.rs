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
    Expr, GroupByExpr, Ident, Query, Select, SelectItem, SetExpr, TableFactor, Value,
    WildcardAdditionalOptions, visit_expressions, visit_expressions_mut,
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
    if !bare(mid) {
        return None;
    }
    let SetExpr::Select(mid) = mid.body.as_ref() else {
        return None;
    };
    let plain = mid.selection.is_none() && unadorned(mid);
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
    if !bare(inner) {
        return None;
    }
    let SetExpr::Select(inner) = inner.body.as_ref() else {
        return None;
    };
    if inner.top.is_some() {
        return None;
    }
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
    let aliases: Vec<String> = inner
        .projection
        .iter()
        .filter_map(|item| match item {
            SelectItem::ExprWithAlias { expr, alias }
                if !matches!(expr, Expr::Identifier(id) if id.value == alias.value) =>
            {
                Some(alias.value.clone())
            }
            _ => None,
        })
        .collect();
    if refers_to_items(inner, &aliases) {
        return None;
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
            SelectItem::Wildcard(o) if plain_wildcard(o) => {
                projection.extend(inner.projection.iter().cloned())
            }
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

/// Whether `*` is the plain one (no EXCLUDE, EXCEPT, REPLACE, RENAME, ILIKE or alias), whose
/// columns are the table's as they are.
pub(super) fn plain_wildcard(o: &WildcardAdditionalOptions) -> bool {
    o.opt_ilike.is_none()
        && o.opt_exclude.is_none()
        && o.opt_except.is_none()
        && o.opt_replace.is_none()
        && o.opt_rename.is_none()
        && o.opt_alias.is_none()
}

/// Whether `select` has none of DISTINCT, TOP, GROUP BY, HAVING, QUALIFY or WINDOW: its rows
/// are its FROM's (filtered by its WHERE), one for one.
pub(super) fn unadorned(select: &Select) -> bool {
    select.distinct.is_none()
        && select.top.is_none()
        && select.having.is_none()
        && select.qualify.is_none()
        && select.named_window.is_empty()
        && matches!(&select.group_by, GroupByExpr::Expressions(e, m) if e.is_empty() && m.is_empty())
}

/// Whether `query` has none of ORDER BY, LIMIT, FETCH or WITH around its body.
pub(super) fn bare(query: &Query) -> bool {
    query.with.is_none()
        && query.order_by.is_none()
        && query.limit_clause.is_none()
        && query.fetch.is_none()
}

/// Whether the aggregate's GROUP BY or HAVING names a SELECT item by position or alias (`GROUP
/// BY 1`, `HAVING total > 0`): they would name the folded SELECT list's items instead.
fn refers_to_items(inner: &Select, aliases: &[String]) -> bool {
    let mut refers = false;
    let mut look = |e: &Expr| {
        match e {
            Expr::Value(v) if matches!(v.value, Value::Number(..)) => refers = true,
            Expr::Identifier(id) if aliases.iter().any(|a| a.eq_ignore_ascii_case(&id.value)) => {
                refers = true
            }
            _ => {}
        }
        std::ops::ControlFlow::<()>::Continue(())
    };
    match &inner.group_by {
        GroupByExpr::Expressions(keys, _) => {
            // A number is a position only as a whole key; inside an expression it is a value.
            for k in keys {
                if matches!(k, Expr::Value(v) if matches!(v.value, Value::Number(..))) {
                    return true;
                }
                let _ = visit_expressions(k, |e| match e {
                    Expr::Value(_) => std::ops::ControlFlow::Continue(()),
                    e => look(e),
                });
            }
        }
        GroupByExpr::All(_) => return true,
    }
    if let Some(h) = &inner.having {
        let _ = visit_expressions(h, |e| match e {
            Expr::Value(_) => std::ops::ControlFlow::Continue(()),
            e => look(e),
        });
    }
    refers
}

/// `expr AS name`, or the column itself when it already has that name.
fn named(expr: Expr, name: Ident) -> SelectItem {
    match &expr {
        Expr::Identifier(id) if id.value == name.value => SelectItem::UnnamedExpr(expr),
        _ => SelectItem::ExprWithAlias { expr, alias: name },
    }
}
