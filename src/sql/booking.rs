//! `booking_time(event_time, INTERVAL '7' DAY)`: when money is booked, given how late it came.
//!
//! A settlement books each event on its own business day while that day may still be
//! corrected; an event more than the allowed lateness behind the stream (the watermark it
//! arrived under) is booked at that watermark instead — into the day still open — and counted
//! there as an adjustment, so no money is dropped and no day closed long ago moves:
//!
//! ```sql
//! business_date(booking_time(p.event_time, INTERVAL '7' DAY), m.tz, m.close_time)
//! sum(amount_minor) FILTER (WHERE booking_time(p.event_time, INTERVAL '7' DAY) > p.event_time)
//! ```
//!
//! The watermark an event arrived under is the router's, per row (`EventBatch`), so a replay
//! of the same input books every event as the live run did. A query that calls the function is
//! planned over the events plus a column [`ARRIVAL_WATERMARK`] (NULL before the stream has a
//! watermark) that the operator adds ([`super::PlanKind::Booked`]), and the call is rewritten
//! to `CASE WHEN t < arrival − lateness THEN arrival ELSE t END`, evaluated as any expression.

use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{
    Expr, FunctionArg, FunctionArgExpr, FunctionArguments, Spanned, Statement,
};
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::parser::Parser;
use datafusion::sql::sqlparser::tokenizer::{Token, TokenWithSpan};

use super::window_tvf::plan_error;
use crate::error::{Error, Result};
pub(super) use crate::schema::ARRIVAL_WATERMARK;

const NAME: &str = "booking_time";

/// Whether `events` carry [`ARRIVAL_WATERMARK`]: the query is planned over the booked events.
pub(super) fn booked(events: &crate::schema::EventSchema) -> bool {
    events.arrow().index_of(ARRIVAL_WATERMARK).is_ok()
}

/// Whether the query text calls `booking_time` (the word followed by a parenthesis).
pub(super) fn called(tokens: &[TokenWithSpan]) -> bool {
    let significant: Vec<&Token> = tokens
        .iter()
        .map(|t| &t.token)
        .filter(|t| !matches!(t, Token::Whitespace(_)))
        .collect();
    significant.windows(2).any(|w| {
        matches!(w[0], Token::Word(x) if x.quote_style.is_none() && x.value.eq_ignore_ascii_case(NAME))
            && *w[1] == Token::LParen
    })
}

/// Refuses what a query calling `booking_time` cannot do yet: `SELECT *` (it would show the
/// arrival watermark column) and `UNION ALL` (each branch is planned apart).
pub(super) fn check(tokens: &[TokenWithSpan]) -> Result<()> {
    let significant: Vec<&TokenWithSpan> = tokens
        .iter()
        .filter(|t| !matches!(t.token, Token::Whitespace(_)))
        .collect();
    for (i, t) in significant.iter().enumerate() {
        match &t.token {
            Token::Word(w) if w.quote_style.is_none() && w.value.eq_ignore_ascii_case("UNION") => {
                return Err(plan_error(
                    t.span,
                    "booking_time in a UNION ALL is not supported yet; run each branch as a query of its own",
                ));
            }
            // `*` right after SELECT or a comma, or `alias.*` there (not a product, not
            // MATCH_RECOGNIZE's `COUNT(S.*)`).
            Token::Mul
                if i > 0
                    && match &significant[i - 1].token {
                        Token::Comma => true,
                        Token::Word(w) => w.value.eq_ignore_ascii_case("SELECT"),
                        Token::Period => {
                            i >= 3
                                && match &significant[i - 3].token {
                                    Token::Comma => true,
                                    Token::Word(w) => w.value.eq_ignore_ascii_case("SELECT"),
                                    _ => false,
                                }
                        }
                        _ => false,
                    } =>
            {
                return Err(plan_error(
                    t.span,
                    "SELECT * is not supported in a query calling booking_time; list the columns you want",
                ));
            }
            _ => {}
        }
    }
    Ok(())
}

/// Rewrites every `booking_time(t, lateness)` in `stmt` over [`ARRIVAL_WATERMARK`].
pub(super) fn rewrite(stmt: &mut Statement) -> Result<()> {
    let mut failed: Option<Error> = None;
    let _ = datafusion::sql::sqlparser::ast::visit_expressions_mut(stmt, |e| {
        let Expr::Function(f) = e else {
            return ControlFlow::Continue(());
        };
        if !f.name.to_string().eq_ignore_ascii_case(NAME) {
            return ControlFlow::Continue(());
        }
        let args = match &f.args {
            FunctionArguments::List(l) if l.args.len() == 2 && f.over.is_none() => &l.args,
            _ => {
                failed = Some(usage(f.span()));
                return ControlFlow::Break(());
            }
        };
        let (
            FunctionArg::Unnamed(FunctionArgExpr::Expr(time)),
            FunctionArg::Unnamed(FunctionArgExpr::Expr(lateness @ Expr::Interval(_))),
        ) = (&args[0], &args[1])
        else {
            failed = Some(usage(f.span()));
            return ControlFlow::Break(());
        };
        let (time, lateness) = (time.clone(), lateness.clone());
        // The arrival watermark of the time's own row: `a.event_time` reads `a`'s (a join of
        // the stream with itself has two).
        let arrival = match &time {
            Expr::CompoundIdentifier(ids) if ids.len() == 2 => {
                format!("{}.{ARRIVAL_WATERMARK}", ids[0])
            }
            _ => ARRIVAL_WATERMARK.to_string(),
        };
        let template = format!("CASE WHEN __t < {arrival} - __i THEN {arrival} ELSE __t END");
        let mut case = match Parser::new(&GenericDialect {})
            .try_with_sql(&template)
            .and_then(|mut p| p.parse_expr())
        {
            Ok(c) => c,
            Err(e) => {
                failed = Some(Error::Internal(format!(
                    "the booking_time template does not parse: {e}"
                )));
                return ControlFlow::Break(());
            }
        };
        let _ = datafusion::sql::sqlparser::ast::visit_expressions_mut(&mut case, |x| {
            if let Expr::Identifier(id) = x {
                match id.value.as_str() {
                    "__t" => *x = time.clone(),
                    "__i" => *x = lateness.clone(),
                    _ => {}
                }
            }
            ControlFlow::<()>::Continue(())
        });
        *e = Expr::Nested(Box::new(case));
        ControlFlow::Continue(())
    });
    failed.map_or(Ok(()), Err)
}

fn usage(span: datafusion::sql::sqlparser::tokenizer::Span) -> Error {
    plan_error(
        span,
        "booking_time takes an event time and the allowed lateness as an interval: booking_time(p.event_time, INTERVAL '7' DAY)",
    )
}
