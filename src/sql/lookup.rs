//! Joins of the stream with reference tables: reading DataFusion's plan of
//! `FROM payments p JOIN merchants m ON m.merchant_id = p.merchant_id` (and of `IN (SELECT …)`,
//! `EXISTS`, `VALUES`) into a [`LookupJoin`] stage.
//!
//! DataFusion plans such a join as a nested-loop join whose filter is the whole ON condition
//! (or the subquery's correlation, for `IN` and `EXISTS`); its right side reads tables only:
//! every leaf is a table's scan (an empty leaf whose schema names the table) or constant rows.
//! Equalities of an event expression and a table expression are the key; the rest of the
//! condition is checked on each pair. The right side's plan is kept whole and run over the
//! tables' rows when they change (`operators/lookup_join.rs`).
//!
//! `FOR SYSTEM_TIME AS OF p.event_time` is not in DataFusion's dialect: [`strip_as_of`] takes it
//! out of the query's tokens and the planner registers that reference under a name of its own,
//! whose scan reads every version of the table.

use std::sync::Arc;

use datafusion::arrow::datatypes::{Schema, SchemaRef};
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{JoinSide, JoinType};
use datafusion::logical_expr::Operator as BinaryOp;
use datafusion::physical_expr::expressions::{BinaryExpr, Column};
use datafusion::physical_expr::split_conjunction;
use datafusion::physical_expr::utils::collect_columns;
use datafusion::physical_plan::joins::NestedLoopJoinExec;
use datafusion::physical_plan::joins::utils::{ColumnIndex, JoinFilter};
use datafusion::physical_plan::{ExecutionPlan, PhysicalExpr};
use datafusion::sql::sqlparser::ast::{Spanned, TableFactor};
use datafusion::sql::sqlparser::tokenizer::{Span, Token, TokenWithSpan, Whitespace};

use super::window_tvf::plan_error;
use crate::error::{Error, Result};
use crate::operators::{AS_OF_METADATA, AsOf, LookupJoin, LookupKind, TABLE_METADATA};
use crate::schema::EventSchema;
use crate::table::ReferenceTable;

/// A `FOR SYSTEM_TIME AS OF …` taken out of the query text.
#[derive(Debug, Clone)]
pub(super) struct AsOfClause {
    /// The span of the table name it follows.
    pub table: Span,
    /// The span of the clause.
    pub at: Span,
    /// The time expression's words (`p`, `event_time`), or `PROCTIME` for `PROCTIME()`.
    pub words: Vec<String>,
}

/// Blanks out each `FOR SYSTEM_TIME AS OF <time>` (time: a column, qualified or not, or
/// `PROCTIME()`), keeping every other token at its position.
pub(super) fn strip_as_of(tokens: &mut [TokenWithSpan]) -> Result<Vec<AsOfClause>> {
    let mut found = Vec::new();
    let significant = |tokens: &[TokenWithSpan], from: usize| {
        (from..tokens.len()).find(|&i| !matches!(tokens[i].token, Token::Whitespace(_)))
    };
    let is_word = |t: &Token, w: &str| matches!(t, Token::Word(x) if x.value.eq_ignore_ascii_case(w) && x.quote_style.is_none());
    let mut i = 0;
    while i < tokens.len() {
        if !is_word(&tokens[i].token, "FOR") {
            i += 1;
            continue;
        }
        let mut at = i;
        let mut ok = true;
        for w in ["SYSTEM_TIME", "AS", "OF"] {
            match significant(tokens, at + 1) {
                Some(j) if is_word(&tokens[j].token, w) => at = j,
                _ => {
                    ok = false;
                    break;
                }
            }
        }
        if !ok {
            i += 1;
            continue;
        }
        // The table name: the word before FOR.
        let table = (0..i)
            .rev()
            .find(|&j| !matches!(tokens[j].token, Token::Whitespace(_)))
            .filter(|&j| matches!(tokens[j].token, Token::Word(_)))
            .map(|j| tokens[j].span);
        let start = tokens[i].span;
        let Some(table) = table else {
            return Err(plan_error(
                start,
                "FOR SYSTEM_TIME AS OF follows a table's name: JOIN merchants FOR SYSTEM_TIME AS OF p.event_time AS m",
            ));
        };
        // The time: word(.word)* or PROCTIME().
        let mut words = Vec::new();
        let mut end = at;
        let mut j = significant(tokens, at + 1);
        while let Some(k) = j {
            match &tokens[k].token {
                Token::Word(w)
                    if words.is_empty() || matches!(tokens[end].token, Token::Period) =>
                {
                    words.push(w.value.clone());
                    end = k;
                }
                Token::Period
                    if !words.is_empty() && matches!(tokens[end].token, Token::Word(_)) =>
                {
                    end = k;
                }
                _ => break,
            }
            j = significant(tokens, k + 1);
        }
        // `PROCTIME()`.
        if words.len() == 1
            && words[0].eq_ignore_ascii_case("PROCTIME")
            && let Some(l) = significant(tokens, end + 1)
            && matches!(tokens[l].token, Token::LParen)
            && let Some(r) = significant(tokens, l + 1)
            && matches!(tokens[r].token, Token::RParen)
        {
            end = r;
            words = vec!["PROCTIME".into()];
        }
        if words.is_empty() || matches!(tokens[end].token, Token::Period) {
            return Err(plan_error(
                tokens[at].span,
                "FOR SYSTEM_TIME AS OF takes the stream's event-time column (FOR SYSTEM_TIME AS OF p.event_time)",
            ));
        }
        let clause = start.union(&tokens[end].span);
        for t in &mut tokens[i..=end] {
            t.token = Token::Whitespace(Whitespace::Space);
        }
        found.push(AsOfClause {
            table,
            at: clause,
            words,
        });
        i = end + 1;
    }
    Ok(found)
}

/// The name the planner registers a versioned reference to `table` under.
pub(super) fn as_of_name(table: &str) -> String {
    format!("{table} (as of event time)")
}

/// The schema a table is registered with: its columns, named as the table's scan (and, for
/// `FOR SYSTEM_TIME AS OF`, as a scan of every version).
pub(super) fn registered_schema(table: &ReferenceTable, as_of: bool) -> SchemaRef {
    let mut meta = std::collections::HashMap::new();
    meta.insert(TABLE_METADATA.to_string(), table.name().to_string());
    if as_of {
        meta.insert(AS_OF_METADATA.to_string(), "true".to_string());
    }
    Arc::new(Schema::new_with_metadata(
        table.schema().fields().clone(),
        meta,
    ))
}

/// Whether `plan` reads tables and constants only (no stream): a leaf without rows is a
/// table's scan when its schema names the table.
pub(super) fn reads_tables_only(plan: &Arc<dyn ExecutionPlan>) -> bool {
    if plan.children().is_empty() {
        return plan.name() != "EmptyExec" || plan.schema().metadata().contains_key(TABLE_METADATA);
    }
    plan.children().into_iter().all(reads_tables_only)
}

/// The tables `plan` scans, by name, from `tables`.
fn tables_in(
    plan: &Arc<dyn ExecutionPlan>,
    tables: &[Arc<ReferenceTable>],
    out: &mut Vec<Arc<ReferenceTable>>,
) {
    if let Some(name) = plan.schema().metadata().get(TABLE_METADATA)
        && plan.children().is_empty()
        && let Some(t) = tables.iter().find(|t| t.name() == name)
        && !out.iter().any(|o| Arc::ptr_eq(o, t))
    {
        out.push(Arc::clone(t));
    }
    for c in plan.children() {
        tables_in(c, tables, out);
    }
}

/// Where the stream's window bounds are in the join's input as DataFusion planned it, when
/// they are not in the rows the join sees when it runs (before a windowed aggregate, which
/// assigns them itself): `window_start`'s index.
#[derive(Debug, Clone, Copy)]
pub(super) struct NoWindowColumns(pub usize);

/// `i` (a column of the join's input as planned) as a column of the rows it sees.
fn without_window(i: usize, w: Option<NoWindowColumns>, at: Span) -> Result<usize> {
    match w {
        Some(NoWindowColumns(ws)) if i == ws || i == ws + 1 => Err(plan_error(
            at,
            "a join with a table cannot read window_start or window_end: join on the event's columns",
        )),
        Some(NoWindowColumns(ws)) if i > ws + 1 => Ok(i - 2),
        _ => Ok(i),
    }
}

/// Reads a join of the stream (or of a join chain over it) with a table side.
pub(super) fn lift_lookup(
    join: &NestedLoopJoinExec,
    events: &Arc<EventSchema>,
    tables: &[Arc<ReferenceTable>],
    window: Option<NoWindowColumns>,
    not_in: bool,
    at: Span,
) -> Result<LookupJoin> {
    let kind = match join.join_type() {
        JoinType::Inner => LookupKind::Inner,
        JoinType::Left => LookupKind::Left,
        JoinType::LeftSemi => LookupKind::Semi,
        JoinType::LeftAnti if not_in => LookupKind::NotIn,
        JoinType::LeftAnti => LookupKind::Anti,
        JoinType::LeftMark => {
            return Err(plan_error(
                at,
                "IN (SELECT …) or EXISTS under OR is not supported; write it as a condition of its own in WHERE (… AND card_id IN (SELECT card_id FROM blocked_cards))",
            ));
        }
        other => {
            let name = match other {
                JoinType::Right => "RIGHT JOIN",
                JoinType::Full => "FULL JOIN",
                _ => "this kind of join",
            };
            return Err(plan_error(
                at,
                format!(
                    "{name} of the stream with a table is not supported; write JOIN or LEFT JOIN with the stream on the left (FROM payments p LEFT JOIN merchants m ON …)"
                ),
            ));
        }
    };
    if join.projection().is_some() {
        return Err(Error::Internal(
            "a lookup join with its own projection".into(),
        ));
    }
    let right = Arc::clone(join.right());
    let right_schema = right.schema();
    let left_schema = join.left().schema();
    // The left rows as the join sees them when it runs.
    let left_runs = match window {
        Some(NoWindowColumns(ws)) => without_fields(&left_schema, ws),
        None => Arc::clone(&left_schema),
    };
    // A versioned scan: `FOR SYSTEM_TIME AS OF` on a keyed table.
    let as_of_table = right
        .schema()
        .metadata()
        .contains_key(AS_OF_METADATA)
        .then(|| right_schema.metadata().get(TABLE_METADATA).cloned())
        .flatten()
        .and_then(|name| tables.iter().find(|t| t.name() == name).cloned());
    if let Some(t) = &as_of_table {
        if t.decl().primary_key.is_empty() && t.schema().index_of(crate::table::VALID_FROM).is_ok()
        {
            return Err(plan_error(
                at,
                format!(
                    "a join FOR SYSTEM_TIME AS OF picks a key's version by valid_from, and table `{}` has no PRIMARY KEY: declare its key (… PRIMARY KEY) or join it without FOR SYSTEM_TIME AS OF",
                    t.name()
                ),
            ));
        }
        // The event's time where the stream's is: not over a subquery that moved it.
        let time = events.event_time_column();
        let expected = events.arrow().field(time);
        let moved = left_schema
            .fields()
            .get(time)
            .is_none_or(|f| f.name() != expected.name() || f.data_type() != expected.data_type());
        if moved {
            return Err(plan_error(
                at,
                "FOR SYSTEM_TIME AS OF joins the stream itself (FROM payments p JOIN t FOR SYSTEM_TIME AS OF p.event_time …), not a subquery of it",
            ));
        }
    }
    let versioned = as_of_table.filter(|t| !t.decl().primary_key.is_empty());
    let (mut event_keys, mut table_keys) = (Vec::new(), Vec::new());
    let mut rest: Vec<Arc<dyn PhysicalExpr>> = Vec::new();
    let side_of = |e: &Arc<dyn PhysicalExpr>, f: &JoinFilter| -> Option<JoinSide> {
        let cols = collect_columns(e);
        let mut sides = cols.iter().map(|c| f.column_indices()[c.index()].side);
        let first = sides.next()?;
        sides.all(|s| s == first).then_some(first)
    };
    let filter = join.filter().cloned();
    if let Some(f) = &filter {
        for c in split_conjunction(f.expression()) {
            if let Some(b) = c.downcast_ref::<BinaryExpr>()
                && *b.op() == BinaryOp::Eq
            {
                let (l, r) = (side_of(b.left(), f), side_of(b.right(), f));
                let pair = match (l, r) {
                    (Some(JoinSide::Left), Some(JoinSide::Right)) => Some((b.left(), b.right())),
                    (Some(JoinSide::Right), Some(JoinSide::Left)) => Some((b.right(), b.left())),
                    _ => None,
                };
                if let Some((ev, tb)) = pair {
                    // A temporal join finds a key's versions by the table's key alone.
                    let on_key = match &versioned {
                        Some(t) => {
                            column_of(tb, f).is_some_and(|c| t.decl().primary_key.contains(&c))
                        }
                        None => true,
                    };
                    if on_key {
                        event_keys.push(side_expr(ev, f, &left_schema, &left_runs, window, at)?);
                        table_keys.push(side_expr(tb, f, &right_schema, &right_schema, None, at)?);
                        continue;
                    }
                }
            }
            rest.push(Arc::clone(c));
        }
    }
    let as_of = match &versioned {
        Some(t) => {
            let keyed: Vec<usize> = table_keys
                .iter()
                .filter_map(|k| k.downcast_ref::<Column>().map(|c| c.index()))
                .collect();
            let pk = &t.decl().primary_key;
            if let Some(missing) = pk.iter().find(|k| !keyed.contains(k)) {
                return Err(plan_error(
                    at,
                    format!(
                        "a join FOR SYSTEM_TIME AS OF matches the table's primary key: add {}.{} = <the event's column> to ON",
                        t.name(),
                        t.schema().field(*missing).name()
                    ),
                ));
            }
            Some(AsOf {
                event_time: events.event_time_column(),
                valid_from: t.decl().valid_from(),
            })
        }
        None => None,
    };
    if not_in && (!rest.is_empty() || event_keys.len() != 1) {
        return Err(plan_error(
            at,
            "NOT IN over a subquery that refers to the outer query is not supported; write NOT EXISTS (SELECT 1 FROM … WHERE …)",
        ));
    }
    let residual = match (
        filter,
        rest.into_iter()
            .reduce(|a, b| Arc::new(BinaryExpr::new(a, BinaryOp::And, b)) as Arc<dyn PhysicalExpr>),
    ) {
        (Some(f), Some(expr)) => {
            // Left columns as the join sees them when it runs.
            let indices = f
                .column_indices()
                .iter()
                .map(|ci| {
                    Ok(ColumnIndex {
                        index: match ci.side {
                            JoinSide::Left => without_window(ci.index, window, at)?,
                            _ => ci.index,
                        },
                        side: ci.side,
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            let expr = super::checked::checked(expr, f.schema())?;
            Some(JoinFilter::new(expr, indices, Arc::clone(f.schema())))
        }
        _ => None,
    };
    let mut found = Vec::new();
    tables_in(&right, tables, &mut found);
    // The joined rows as the join produces them when it runs.
    let planned = join.schema();
    let schema = match window {
        Some(NoWindowColumns(ws)) => without_fields(&planned, ws),
        None => Arc::new(Schema::new(planned.fields().clone())),
    };
    Ok(LookupJoin::new(
        kind, event_keys, table_keys, residual, as_of, right, found, schema,
    ))
}

/// `schema` without the window bounds at `ws` and `ws + 1` (and without metadata).
fn without_fields(schema: &SchemaRef, ws: usize) -> SchemaRef {
    Arc::new(Schema::new(
        schema
            .fields()
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != ws && *i != ws + 1)
            .map(|(_, f)| Arc::clone(f))
            .collect::<Vec<_>>(),
    ))
}

/// The column of one side a filter expression is, if it is a bare column.
fn column_of(e: &Arc<dyn PhysicalExpr>, f: &JoinFilter) -> Option<usize> {
    e.downcast_ref::<Column>()
        .map(|c| f.column_indices()[c.index()].index)
}

/// A filter expression reading one side, over that side's rows (the left's as it runs).
fn side_expr(
    e: &Arc<dyn PhysicalExpr>,
    f: &JoinFilter,
    schema: &SchemaRef,
    runs: &SchemaRef,
    window: Option<NoWindowColumns>,
    at: Span,
) -> Result<Arc<dyn PhysicalExpr>> {
    let mut bad = None;
    let rewritten = Arc::clone(e)
        .transform(|node| {
            if let Some(c) = node.downcast_ref::<Column>() {
                let ci = &f.column_indices()[c.index()];
                let name = schema.field(ci.index).name().clone();
                let index = match without_window(ci.index, window, at) {
                    Ok(i) => i,
                    Err(e) => {
                        bad = Some(e);
                        ci.index
                    }
                };
                return Ok(Transformed::yes(
                    Arc::new(Column::new(&name, index)) as Arc<dyn PhysicalExpr>
                ));
            }
            Ok(Transformed::no(node))
        })?
        .data;
    if let Some(e) = bad {
        return Err(e);
    }
    Ok(super::checked::checked(rewritten, runs)?)
}

/// `e` with each column at index `i` moved to `at(i)`.
fn moved(
    e: &Arc<dyn PhysicalExpr>,
    at: &dyn Fn(usize) -> usize,
) -> datafusion::error::Result<Arc<dyn PhysicalExpr>> {
    Ok(Arc::clone(e)
        .transform(|node| {
            if let Some(c) = node.downcast_ref::<Column>() {
                return Ok(Transformed::yes(
                    Arc::new(Column::new(c.name(), at(c.index()))) as Arc<dyn PhysicalExpr>,
                ));
            }
            Ok(Transformed::no(node))
        })?
        .data)
}

/// A windowed aggregate over joined rows, its columns moved from DataFusion's order (the
/// window bounds after the stream's columns) to the joined events' (after the tables'): its
/// keys, arguments, FILTERs and the filters between the join and it.
pub(super) fn move_columns_of_aggregate(
    agg: &mut super::plan::AggregateSpec,
    stages: &mut [super::plan::Stage],
    at: &dyn Fn(usize) -> usize,
) -> Result<()> {
    use super::plan::Stage;
    for k in &mut agg.keys {
        *k = moved(k, at)?;
    }
    for f in agg.filters.iter_mut().flatten() {
        *f = moved(f, at)?;
    }
    for a in &mut agg.aggregates {
        let args = a
            .expressions()
            .iter()
            .map(|e| moved(e, at))
            .collect::<datafusion::error::Result<Vec<_>>>()?;
        let order = a
            .order_bys()
            .iter()
            .map(|o| moved(&o.expr, at))
            .collect::<datafusion::error::Result<Vec<_>>>()?;
        if let Some(m) = a.with_new_expressions(args, order) {
            *a = Arc::new(m);
        }
    }
    for s in stages.iter_mut() {
        match s {
            Stage::Filter(p) => *p = moved(p, at)?,
            _ => {
                return Err(Error::Internal(
                    "a projection between a join and its windowed aggregate".into(),
                ));
            }
        }
    }
    Ok(())
}

/// What the joins of a query with tables need to know of it.
pub(super) struct JoinContext<'a> {
    /// The stream's name.
    pub stream: &'a str,
    /// The name of its time column.
    pub time_column: String,
    /// What the query calls the stream: its name, and its alias.
    pub stream_alias: &'a [String],
    /// The declared tables.
    pub tables: &'a [Arc<ReferenceTable>],
    /// The `FOR SYSTEM_TIME AS OF` clauses taken out of the text.
    pub as_of: &'a [AsOfClause],
}

/// Whether `inner` lies within `outer`.
pub(super) fn within(inner: Span, outer: Span) -> bool {
    let at = |l: datafusion::sql::sqlparser::tokenizer::Location| (l.line, l.column);
    at(outer.start) <= at(inner.start) && at(inner.end) <= at(outer.end)
}

/// Checks a joined relation that names a table: the table exists, and a `FOR SYSTEM_TIME AS
/// OF` after it names the stream's time, in which case the reference is renamed to the table's
/// scan of every version. Returns the index of its clause and the table it joins by version.
pub(super) fn table_relation(
    relation: &mut TableFactor,
    cx: &JoinContext<'_>,
) -> Result<(Option<usize>, Option<Arc<ReferenceTable>>)> {
    let (stream, tables, as_of, stream_alias) = (cx.stream, cx.tables, cx.as_of, cx.stream_alias);
    let mut found = (None, None);
    if let TableFactor::Table {
        name,
        alias,
        args: None,
        ..
    } = relation
    {
        let written = name.to_string();
        let written = written.trim_matches('"').to_string();
        let Some(table) = tables
            .iter()
            .find(|t| t.name().eq_ignore_ascii_case(&written))
        else {
            let known: Vec<String> = tables.iter().map(|t| format!("`{}`", t.name())).collect();
            let known = match known.is_empty() {
                true => String::new(),
                false => format!(" (the declared tables are {})", known.join(", ")),
            };
            return Err(plan_error(
                name.span(),
                format!(
                    "unknown table `{written}`{known}; a join reads the stream `{stream}` with a reference table: declare it with CREATE TABLE {written} (…) WITH (connector = 'file', path = '…')"
                ),
            ));
        };
        let clause = as_of.iter().position(|c| within(c.table, name.span()));
        if let Some(i) = clause {
            found.0 = Some(i);
            let c = &as_of[i];
            // The stream's time: `event_time`, or qualified by the stream's alias or name.
            let time_ok = match c.words.as_slice() {
                [t] => t.eq_ignore_ascii_case(&cx.time_column),
                [q, t] => {
                    t.eq_ignore_ascii_case(&cx.time_column)
                        && stream_alias.iter().any(|a| a.eq_ignore_ascii_case(q))
                }
                _ => false,
            };
            let proctime = c.words == ["PROCTIME"];
            if !time_ok && !proctime {
                return Err(plan_error(
                    c.at,
                    format!(
                        "FOR SYSTEM_TIME AS OF takes the stream's event-time column (FOR SYSTEM_TIME AS OF p.{}), so a replay joins the versions the live run joined",
                        cx.time_column
                    ),
                ));
            }
            if time_ok {
                // Registered under a name of its own, whose scan reads every version.
                if alias.is_none() {
                    *alias = Some(datafusion::sql::sqlparser::ast::TableAlias {
                        explicit: true,
                        at: None,
                        name: datafusion::sql::sqlparser::ast::Ident::new(table.name()),
                        columns: vec![],
                    });
                }
                *name = datafusion::sql::sqlparser::ast::ObjectName::from(vec![
                    datafusion::sql::sqlparser::ast::Ident::with_quote(
                        '"',
                        super::lookup::as_of_name(table.name()),
                    ),
                ]);
                found.1 = Some(Arc::clone(table));
            }
        }
    }
    Ok(found)
}
