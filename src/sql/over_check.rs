//! Where an `OVER` refusal points: the checks of [`super::over`] that can be made on the
//! syntax tree are made here first, so their errors name the very function, `PARTITION BY`
//! or `ORDER BY` at fault.
//!
//! The over planner sees DataFusion's physical window expressions, which have no positions
//! and are grouped by window, not in the order the query writes them; a refusal found there
//! could only point at the first `OVER` of the text. The same rules, checked here in text
//! order, point at the second function's `PARTITION BY` when it differs from the first's.

use datafusion::sql::sqlparser::ast::{
    Expr, NamedWindowExpr, Query, Select, SetExpr, Spanned, TableFactor, WindowSpec, WindowType,
};

use super::window_tvf::plan_error;
use crate::error::Result;

/// Checks every SELECT of `query` that reads `stream` directly.
pub(super) fn check_query(query: &Query, stream: &str, time_column: &str) -> Result<()> {
    let SetExpr::Select(select) = query.body.as_ref() else {
        return Ok(());
    };
    for from in &select.from {
        if let TableFactor::Derived { subquery, .. } = &from.relation {
            check_query(subquery, stream, time_column)?;
        }
    }
    let reads_stream = matches!(
        select.from.as_slice(),
        [f] if matches!(&f.relation, TableFactor::Table { name, args: None, .. }
            if name.to_string().eq_ignore_ascii_case(stream))
    );
    // A window function over a grouped SELECT ranks its groups (Top-N per window), which
    // the over planner does not handle.
    let grouped = !matches!(
        &select.group_by,
        datafusion::sql::sqlparser::ast::GroupByExpr::Expressions(e, _) if e.is_empty()
    );
    if reads_stream && !grouped {
        check_select(select, time_column)?;
    }
    Ok(())
}

/// The window of a function's `OVER`, a named window resolved.
pub(super) fn spec_of<'a>(select: &'a Select, over: &'a WindowType) -> Option<&'a WindowSpec> {
    let mut name = match over {
        WindowType::WindowSpec(s) => return Some(s),
        WindowType::NamedWindow(n) => n,
    };
    // A named window may name another one; a cycle ends after as many steps as there are.
    for _ in 0..=select.named_window.len() {
        let def = select
            .named_window
            .iter()
            .find(|d| d.0.value == name.value)?;
        match &def.1 {
            NamedWindowExpr::WindowSpec(s) => return Some(s),
            NamedWindowExpr::NamedWindow(n) => name = n,
        }
    }
    None
}

fn check_select(select: &Select, time_column: &str) -> Result<()> {
    let mut functions = Vec::new();
    for item in &select.projection {
        let _ = datafusion::sql::sqlparser::ast::visit_expressions(item, |e| {
            if let Expr::Function(f) = e
                && let Some(over) = &f.over
            {
                functions.push((f.clone(), over.clone()));
            }
            std::ops::ControlFlow::<()>::Continue(())
        });
    }
    let mut first_partition: Option<Vec<String>> = None;
    for (f, over) in &functions {
        let Some(spec) = spec_of(select, over) else {
            continue;
        };
        let name = f.name.to_string().to_ascii_lowercase();
        let Some(first) = spec.order_by.first() else {
            return Err(plan_error(
                f.span(),
                format!(
                    "{name}() OVER without ORDER BY reads the whole partition, which never ends on a stream; add ORDER BY {time_column} (and a frame such as RANGE BETWEEN INTERVAL '1' HOUR PRECEDING AND CURRENT ROW)"
                ),
            ));
        };
        let is_time = match &first.expr {
            Expr::Identifier(i) => i.value.eq_ignore_ascii_case(time_column),
            Expr::CompoundIdentifier(p) => p
                .last()
                .is_some_and(|i| i.value.eq_ignore_ascii_case(time_column)),
            _ => false,
        };
        if !is_time || first.options.asc == Some(false) {
            return Err(plan_error(
                first.expr.span(),
                format!(
                    "window functions over a stream must ORDER BY {time_column} (ascending) first: rows are computed in event-time order; other columns may follow it to break ties"
                ),
            ));
        }
        let partition: Vec<String> = spec
            .partition_by
            .iter()
            .map(|e| e.to_string().to_ascii_lowercase())
            .collect();
        match &first_partition {
            None => first_partition = Some(partition),
            Some(p) if *p == partition => {}
            Some(_) => {
                let at = spec
                    .partition_by
                    .first()
                    .map_or_else(|| f.span(), |e| e.span());
                return Err(plan_error(
                    at,
                    "window functions with different PARTITION BY in one query are not supported: each key needs its own state; write one query per PARTITION BY",
                ));
            }
        }
    }
    Ok(())
}
