//! `GROUP BY date_trunc('minute', event_time)` (or `date_bin(INTERVAL '15' MINUTE, event_time)`)
//! over the stream is a tumbling window in all but name: it is planned as one, so it runs
//! incrementally and emits each bucket when the watermark passes its end.
//!
//! ```text
//!  SELECT merchant_id, date_trunc('minute', event_time) AS minute, count(*) FROM payments
//!  GROUP BY merchant_id, date_trunc('minute', event_time)
//!    ─▶ SELECT merchant_id, window_start AS minute, count(*)
//!       FROM TUMBLE(payments, event_time, INTERVAL '60' SECOND) GROUP BY merchant_id, window_start
//! ```
//! Only fixed-size buckets aligned to the epoch qualify (second, minute, hour, day; `date_bin`
//! without an origin); `week`, `month` and the like are refused with what to write instead.

use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{
    Expr, FunctionArg, FunctionArgExpr, FunctionArguments, GroupByExpr, Ident, Select, SelectItem,
    TableFactor, Value, VisitMut, VisitorMut,
};
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::parser::Parser;
use datafusion::sql::sqlparser::tokenizer::Span;

use super::window_tvf::plan_error;
use crate::error::Result;
use crate::schema::WINDOW_START;

/// If `select` reads the stream `stream` (of `events`) directly and groups by a time bucket of
/// its event time, rewrites it into a tumbling window (see the module docs) and returns true.
pub(super) fn bucket_grouping_as_tumble(
    select: &mut Select,
    stream: &str,
    events: &crate::schema::EventSchema,
) -> Result<bool> {
    let time_column = events.arrow().field(events.event_time_column()).name();
    let time_column = time_column.as_str();
    // As DataFusion resolves GROUP BY: a name of the stream's columns is that column, never an
    // alias of the SELECT list.
    let is_column = |name: &str| events.arrow().fields().iter().any(|f| f.name() == name);
    let reads_stream = matches!(
        &select.from[0].relation,
        TableFactor::Table { name, args: None, .. } if name.to_string() == stream
    );
    if !reads_stream {
        return Ok(false);
    }
    // A key that names a SELECT item by its alias (`GROUP BY minute`) or position (`GROUP BY
    // 1`) groups by that item's expression: a bucket there is the same window.
    let items: Vec<(Option<String>, Expr)> = select
        .projection
        .iter()
        .map(|item| match item {
            SelectItem::ExprWithAlias { expr, alias } => (Some(normal(alias)), expr.clone()),
            SelectItem::UnnamedExpr(expr) => (None, expr.clone()),
            _ => (None, Expr::Value(Value::Null.into())),
        })
        .collect();
    if let GroupByExpr::Expressions(keys, _) = &mut select.group_by {
        for k in keys.iter_mut() {
            let named = match &*k {
                Expr::Identifier(id) if !is_column(&normal(id)) => items
                    .iter()
                    .find(|(a, _)| a.as_deref() == Some(normal(id).as_str()))
                    .map(|(_, e)| e),
                Expr::Value(v) => match &v.value {
                    Value::Number(n, _) => n
                        .parse::<usize>()
                        .ok()
                        .and_then(|i| i.checked_sub(1))
                        .and_then(|i| items.get(i))
                        .map(|(_, e)| e),
                    _ => None,
                },
                _ => None,
            };
            if let Some(e) = named
                && bucket(e, time_column)?.is_some()
            {
                *k = e.clone();
            }
        }
    }
    let GroupByExpr::Expressions(keys, _) = &select.group_by else {
        return Ok(false);
    };
    let mut found = None;
    for k in keys {
        if let Some(size) = bucket(k, time_column)? {
            if found.is_some() {
                return Err(plan_error(
                    span_of(k),
                    "only one time bucket can be grouped by; group by one date_trunc or date_bin of the event time",
                ));
            }
            found = Some((k.to_string(), size));
        }
    }
    let Some((target, size)) = found else {
        return Ok(false);
    };
    // Top-level select items keep their name: an unnamed bucket is named as written.
    for item in &mut select.projection {
        if let SelectItem::UnnamedExpr(e) = item
            && e.to_string() == target
        {
            *item = SelectItem::ExprWithAlias {
                expr: e.clone(),
                alias: Ident::with_quote('"', target.clone()),
            };
        }
    }
    let mut replace = Replace { target: &target };
    let _ = select.projection.visit(&mut replace);
    let _ = select.group_by.visit(&mut replace);
    let _ = select.having.visit(&mut replace);
    let tumble = format!("SELECT * FROM TUMBLE({stream}, {time_column}, {size})");
    let parsed = Parser::new(&GenericDialect {})
        .try_with_sql(&tumble)
        .and_then(|mut p| p.parse_query())
        .map_err(|e| plan_error(Span::empty(), format!("cannot plan the time bucket: {e}")))?;
    let datafusion::sql::sqlparser::ast::SetExpr::Select(s) = *parsed.body else {
        return Ok(false);
    };
    select.from[0].relation = s.from[0].relation.clone();
    Ok(true)
}

/// The interval of a tumbling window equal to grouping by `e`, if `e` is a time bucket of
/// `time_column`; an error if it is one that no fixed window equals.
fn bucket(e: &Expr, time_column: &str) -> Result<Option<String>> {
    let Expr::Function(f) = e else {
        return Ok(None);
    };
    let name = f.name.to_string().to_ascii_lowercase();
    if name != "date_trunc" && name != "date_bin" {
        return Ok(None);
    }
    let FunctionArguments::List(list) = &f.args else {
        return Ok(None);
    };
    let args: Vec<&Expr> = list
        .args
        .iter()
        .filter_map(|a| match a {
            FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) => Some(e),
            _ => None,
        })
        .collect();
    let is_time =
        |e: &Expr| matches!(e, Expr::Identifier(i) if i.value.eq_ignore_ascii_case(time_column));
    if args.len() < 2 || !is_time(args[1]) {
        return Ok(None);
    }
    if name == "date_bin" {
        // An origin on the epoch's grid of the stride (midnight for 15 minutes) bins as the
        // epoch does: the same windows.
        if let Some(origin) = args.get(2) {
            let stride = super::window_tvf::interval_arg(
                &FunctionArg::Unnamed(FunctionArgExpr::Expr(args[0].clone())),
                "date_bin's stride",
            )?;
            let aligned = timestamp_literal_ms(origin).map(|o| o.rem_euclid(stride) == 0);
            if aligned != Some(true) {
                return Err(plan_error(
                    span_of(e),
                    format!(
                        "date_bin's origin {origin} is {} the epoch's grid of its stride, which stream windows follow; use an origin on it (midnight, for a stride that divides a day), drop the origin, or use TUMBLE(payments, event_time, INTERVAL …)",
                        if aligned.is_some() {
                            "off"
                        } else {
                            "not a TIMESTAMP '…' literal on"
                        }
                    ),
                ));
            }
        }
        return Ok(Some(args[0].to_string()));
    }
    let unit = match args[0] {
        Expr::Value(v) => match &v.value {
            Value::SingleQuotedString(s) => s.to_ascii_lowercase(),
            _ => return Ok(None),
        },
        _ => return Ok(None),
    };
    let seconds = match unit.as_str() {
        "second" => 1,
        "minute" => 60,
        "hour" => 3_600,
        "day" => 86_400,
        other => {
            return Err(plan_error(
                span_of(e),
                format!(
                    "date_trunc('{other}', …) buckets are not all the same length, so they are not a stream window; group by date_trunc of second, minute, hour or day, or use TUMBLE(payments, event_time, INTERVAL …)"
                ),
            ));
        }
    };
    Ok(Some(format!("INTERVAL '{seconds}' SECOND")))
}

/// An identifier as DataFusion names it: lower case unless quoted.
fn normal(i: &Ident) -> String {
    match i.quote_style {
        Some(_) => i.value.clone(),
        None => i.value.to_ascii_lowercase(),
    }
}

/// Epoch milliseconds of `TIMESTAMP '2026-11-01 00:00:00'` (no offset: UTC, as DataFusion
/// reads it) or of a string literal in RFC 3339.
fn timestamp_literal_ms(e: &Expr) -> Option<i64> {
    let text = match e {
        Expr::TypedString(t) => t.value.value.clone().into_string()?,
        Expr::Value(v) => v.value.clone().into_string()?,
        _ => return None,
    };
    let text = text.trim();
    // Digits below the millisecond would be dropped by the parse: an origin with any is refused.
    if let Some((_, fraction)) = text.split_once('.')
        && fraction
            .bytes()
            .take_while(u8::is_ascii_digit)
            .skip(3)
            .any(|d| d != b'0')
    {
        return None;
    }
    crate::time::parse_rfc3339_millis(text)
        .or_else(|| crate::time::parse_rfc3339_millis(&format!("{text}Z")))
        .or_else(|| crate::time::parse_rfc3339_millis(&format!("{text}:00Z")))
}

fn span_of(e: &Expr) -> Span {
    use datafusion::sql::sqlparser::ast::Spanned;
    e.span()
}

/// Replaces every occurrence of the bucket expression by `window_start`.
struct Replace<'a> {
    target: &'a str,
}

impl VisitorMut for Replace<'_> {
    type Break = ();

    fn post_visit_expr(&mut self, e: &mut Expr) -> ControlFlow<()> {
        if e.to_string() == self.target {
            *e = Expr::Identifier(Ident::new(WINDOW_START));
        }
        ControlFlow::Continue(())
    }
}
