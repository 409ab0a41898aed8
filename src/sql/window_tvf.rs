//! Window table functions: `TUMBLE`, `HOP` and `SESSION` in FROM, in both spellings.
//!
//! ```text
//! FROM TUMBLE(payments, event_time, INTERVAL '1' MINUTE)                              -- RisingWave
//! FROM TABLE(TUMBLE(TABLE payments, DESCRIPTOR(event_time), INTERVAL '1' MINUTE))     -- Flink
//! ```
//!
//! The Flink spelling is first rewritten token by token into the RisingWave one (tokens keep their
//! original positions, so errors still point into the user's text). The parsed window call is then
//! replaced by the bare stream name and described by a [`WindowSpec`]: DataFusion plans the rest
//! of the query against the stream's schema extended with `window_start` and `window_end`, and the
//! streaming operator supplies those columns.

use datafusion::sql::sqlparser::ast::{
    Expr, FunctionArg, FunctionArgExpr, ObjectName, Spanned, TableFactor, Value,
};
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::tokenizer::{Location, Span, Token, TokenWithSpan, Word};

use crate::error::Error;
use crate::time::parse_duration_millis;

/// The kind of window and its sizes, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowKind {
    /// Fixed, non-overlapping windows of `size`.
    Tumble {
        /// Window length.
        size: i64,
    },
    /// Windows of `size` starting every `slide`.
    Hop {
        /// Distance between window starts.
        slide: i64,
        /// Window length.
        size: i64,
    },
    /// Per-key activity sessions closed by a `gap` without events.
    Session {
        /// Inactivity gap that closes a session.
        gap: i64,
    },
}

/// A window table function found in a query's FROM clause.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowSpec {
    /// The windowing.
    pub kind: WindowKind,
    /// The stream the window reads (e.g. `payments`).
    pub stream: String,
    /// The event-time column (e.g. `event_time`).
    pub time_column: String,
    /// `SET dense_windows = 'true'` (TUMBLE only): every key seen emits a row for each window,
    /// with no events in it too, until it has been quiet for `state_ttl`.
    pub dense: bool,
    /// How long a key without events stays dense (`SET state_ttl`; `None`: the source's dedup
    /// TTL).
    pub state_ttl: Option<i64>,
}

/// Largest interval accepted at all: 100 years in milliseconds (window bounds are event time ±
/// these sizes, which keeps that arithmetic far from overflowing).
const MAX_WINDOW_MS: i64 = 100 * 366 * 86_400_000;

/// Bounds on windows, so that no query holds state that grows without bound or fires windows
/// faster than it can merge them. Query files raise them with `SET max_window_size = '…'`,
/// `SET max_session_gap = '…'` and `SET max_hop_ratio = '…'`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowLimits {
    /// Longest TUMBLE or HOP window, ms: its groups stay in memory until it closes.
    pub max_size: i64,
    /// Longest SESSION gap, ms: a key's session (and its state) lasts at least this long after
    /// its last event, so a gap of years never closes and never frees.
    pub max_gap: i64,
    /// Most panes per HOP window: size / slide (size / gcd(slide, size) when the slide does not
    /// divide the size). Each event is in size / slide windows, and each window fired merges
    /// this many panes.
    pub max_hop_ratio: i64,
}

impl Default for WindowLimits {
    fn default() -> Self {
        WindowLimits {
            max_size: 31 * 86_400_000,
            max_gap: 86_400_000,
            max_hop_ratio: 10_000,
        }
    }
}

fn gcd(a: i64, b: i64) -> i64 {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// The divisor of `size` closest to `slide` that keeps size / slide within `max_ratio`.
fn suggest_slide(slide: i64, size: i64, max_ratio: i64) -> i64 {
    let min = (size + max_ratio - 1) / max_ratio;
    let mut best = size;
    let mut d = 1;
    while d * d <= size {
        if size % d == 0 {
            for c in [d, size / d] {
                if c >= min && (c - slide).abs() < (best - slide).abs() {
                    best = c;
                }
            }
        }
        d += 1;
    }
    best
}

/// Refuses a window beyond `limits`, pointing at the interval and saying what to write instead.
fn check_limits(
    kind: WindowKind,
    args: &[FunctionArg],
    limits: &WindowLimits,
) -> Result<(), Error> {
    use crate::operators::millis_text as ms;
    let too_long = |arg: &FunctionArg, what: &str, size: i64| {
        plan_error(
            arg.span(),
            format!(
                "the {what} ({}) is longer than the {} bound: its groups stay in memory until the window closes, and the first result comes only after that; use a shorter window, or raise the bound with SET max_window_size = '{}' in a query file",
                ms(size),
                ms(limits.max_size),
                ms(size)
            ),
        )
    };
    match kind {
        WindowKind::Tumble { size } if size > limits.max_size => {
            Err(too_long(&args[2], "TUMBLE size", size))
        }
        WindowKind::Hop { size, .. } if size > limits.max_size => {
            Err(too_long(&args[3], "HOP size", size))
        }
        WindowKind::Hop { slide, size } => {
            let pane = gcd(slide, size);
            let ratio = size / pane;
            if ratio <= limits.max_hop_ratio {
                return Ok(());
            }
            let suggested = suggest_slide(slide, size, limits.max_hop_ratio);
            let why = if size % slide == 0 {
                format!(
                    "every event would be in {ratio} windows, and a window of {ratio} panes would fire every {}",
                    ms(slide)
                )
            } else {
                format!(
                    "the slide does not divide the size, so windows are merged from panes of gcd(slide, size) = {} — {ratio} per window",
                    ms(pane)
                )
            };
            Err(plan_error(
                args[2].span(),
                format!(
                    "HOP with a slide of {} over a size of {}: {why}, more than the bound of {} (size / slide); use a slide that divides the size, e.g. INTERVAL '{}' MILLISECOND, or TUMBLE, or raise the bound with SET max_hop_ratio = '{ratio}' in a query file",
                    ms(slide),
                    ms(size),
                    limits.max_hop_ratio,
                    suggested
                ),
            ))
        }
        WindowKind::Session { gap } if gap > limits.max_gap => Err(plan_error(
            args[2].span(),
            format!(
                "the SESSION gap ({}) is longer than the {} bound: a key's session stays open (and in memory) until a whole gap passes without its events, so sessions would hardly ever close; use a shorter gap, or raise the bound with SET max_session_gap = '{}' in a query file",
                ms(gap),
                ms(limits.max_gap),
                ms(gap)
            ),
        )),
        _ => Ok(()),
    }
}

/// Formats a span's start as `line L, column C`.
pub(super) fn at(span: Span) -> String {
    if span.start.line == 0 {
        "the query".to_string()
    } else {
        format!("line {}, column {}", span.start.line, span.start.column)
    }
}

pub(crate) fn plan_error(span: Span, message: impl Into<String>) -> Error {
    Error::Plan {
        position: at(span),
        message: message.into(),
    }
}

fn is_kw(t: &TokenWithSpan, kw: Keyword) -> bool {
    matches!(&t.token, Token::Word(Word { keyword, quote_style: None, .. }) if *keyword == kw)
}

fn is_word(t: &TokenWithSpan, name: &str) -> bool {
    matches!(&t.token, Token::Word(w) if w.quote_style.is_none() && w.value.eq_ignore_ascii_case(name))
}

fn next_non_ws(tokens: &[TokenWithSpan], mut i: usize) -> Option<usize> {
    while i < tokens.len() {
        if !matches!(tokens[i].token, Token::Whitespace(_)) {
            return Some(i);
        }
        i += 1;
    }
    None
}

/// Index of the `)` matching the `(` at `open`.
fn matching_paren(tokens: &[TokenWithSpan], open: usize) -> Option<usize> {
    let mut depth = 0usize;
    for (i, t) in tokens.iter().enumerate().skip(open) {
        match t.token {
            Token::LParen => depth += 1,
            Token::RParen => {
                depth -= 1;
                if depth == 0 {
                    return Some(i);
                }
            }
            _ => {}
        }
    }
    None
}

/// Rewrites `TABLE(F(TABLE s, DESCRIPTOR(c), ...))` (or `F(TABLE s, …)` alone) into
/// `F(s, c, ...)` for F in TUMBLE/HOP/SESSION, keeping every surviving token's original span.
pub(super) fn rewrite_flink_windows(tokens: Vec<TokenWithSpan>) -> Vec<TokenWithSpan> {
    rewrite_flink_windows_with_partitions(tokens).0
}

/// [`rewrite_flink_windows`], also removing Flink's `TABLE s PARTITION BY k1[, k2 …]` (or
/// `PARTITION BY (k1, k2)`) from a SESSION call and returning those keys with their spans:
/// sessions here are per GROUP BY key, so the planner checks every one is grouped by. The
/// call may also stand without the outer `TABLE(…)`: `SESSION(TABLE payments PARTITION BY
/// card_id, DESCRIPTOR(event_time), INTERVAL '30' SECOND)`.
pub(super) fn rewrite_flink_windows_with_partitions(
    tokens: Vec<TokenWithSpan>,
) -> (Vec<TokenWithSpan>, Vec<(String, Span)>) {
    let mut partitions = Vec::new();
    let mut toks = tokens;
    let mut i = 0;
    let is_window = |t: &TokenWithSpan| ["TUMBLE", "HOP", "SESSION"].iter().any(|n| is_word(t, n));
    while i < toks.len() {
        let is_window_call = is_kw(&toks[i], Keyword::TABLE)
            && next_non_ws(&toks, i + 1).is_some_and(|p| toks[p].token == Token::LParen)
            && {
                let p = next_non_ws(&toks, i + 1).unwrap();
                next_non_ws(&toks, p + 1).is_some_and(|f| is_window(&toks[f]))
            };
        if is_window_call {
            let outer_open = next_non_ws(&toks, i + 1).unwrap();
            let Some(outer_close) = matching_paren(&toks, outer_open) else {
                break;
            };
            // Drop the outer `TABLE (` ... `)`.
            toks.remove(outer_close);
            toks.drain(i..=outer_open);
            let f = next_non_ws(&toks, i).unwrap();
            if !unwrap_window_call(&mut toks, f, &mut partitions) {
                break;
            }
            i = f + 1;
            continue;
        }
        // The call without Flink's outer `TABLE(…)`: `SESSION(TABLE payments PARTITION BY …,
        // DESCRIPTOR(event_time), …)`.
        let bare_call = is_window(&toks[i])
            && next_non_ws(&toks, i + 1).is_some_and(|p| {
                toks[p].token == Token::LParen
                    && next_non_ws(&toks, p + 1).is_some_and(|t| is_kw(&toks[t], Keyword::TABLE))
            });
        if bare_call && !unwrap_window_call(&mut toks, i, &mut partitions) {
            break;
        }
        i += 1;
    }
    (toks, partitions)
}

/// Inside the window call whose name is `toks[f]`: drops `TABLE` before the stream and
/// `PARTITION BY` keys (noting them in `partitions`), and unwraps `DESCRIPTOR(c)`. `false` when
/// the call's parentheses do not close (the parser then says where).
fn unwrap_window_call(
    toks: &mut Vec<TokenWithSpan>,
    f: usize,
    partitions: &mut Vec<(String, Span)>,
) -> bool {
    let Some(open) = next_non_ws(toks, f + 1) else {
        return false;
    };
    let Some(close) = matching_paren(toks, open) else {
        return false;
    };
    let mut j = open + 1;
    let mut end = close;
    while j < end {
        if is_kw(&toks[j], Keyword::PARTITION)
            && let Some(by) = next_non_ws(toks, j + 1)
            && is_kw(&toks[by], Keyword::BY)
        {
            // Up to DESCRIPTOR: the keys, possibly in parentheses, separated by commas.
            let mut k = by + 1;
            while k < end && !is_word(&toks[k], "DESCRIPTOR") {
                if let Token::Word(w) = &toks[k].token {
                    partitions.push((w.value.clone(), toks[k].span));
                }
                k += 1;
            }
            // Keep the comma before DESCRIPTOR: drop from PARTITION to the last key.
            let last = (j..k)
                .rev()
                .find(|x| matches!(toks[*x].token, Token::Word(_) | Token::RParen))
                .unwrap_or(j);
            toks.drain(j..=last);
            end -= last - j + 1;
            continue;
        }
        if is_kw(&toks[j], Keyword::TABLE) {
            toks.remove(j);
            end -= 1;
            while j < end && matches!(toks[j].token, Token::Whitespace(_)) {
                toks.remove(j);
                end -= 1;
            }
            continue;
        }
        if is_word(&toks[j], "DESCRIPTOR")
            && let Some(p) = next_non_ws(toks, j + 1)
            && toks[p].token == Token::LParen
            && let Some(q) = matching_paren(toks, p)
        {
            toks.remove(q);
            toks.drain(j..=p);
            end -= q - j + 1 - (q - p - 1);
            continue;
        }
        j += 1;
    }
    true
}

fn ident_arg(arg: &FunctionArg, what: &str, call_span: Span) -> Result<String, Error> {
    match arg {
        FunctionArg::Unnamed(FunctionArgExpr::Expr(Expr::Identifier(id))) => Ok(id.value.clone()),
        FunctionArg::Unnamed(FunctionArgExpr::Expr(Expr::CompoundIdentifier(ids))) => {
            Ok(ids.last().map(|i| i.value.clone()).unwrap_or_default())
        }
        other => Err(plan_error(
            other.span().union_opt(&Some(call_span)),
            format!("expected {what} (a name), found `{other}`"),
        )),
    }
}

pub(super) fn interval_arg(arg: &FunctionArg, what: &str) -> Result<i64, Error> {
    let span = arg.span();
    let bad = |detail: String| {
        plan_error(
            span,
            format!("{what} must be an interval such as INTERVAL '1' MINUTE: {detail}"),
        )
    };
    let FunctionArg::Unnamed(FunctionArgExpr::Expr(Expr::Interval(iv))) = arg else {
        return Err(bad(format!("found `{arg}`")));
    };
    let text = match iv.value.as_ref() {
        Expr::Value(v) => match &v.value {
            Value::SingleQuotedString(s) | Value::DoubleQuotedString(s) => s.clone(),
            Value::Number(n, _) => n.to_string(),
            other => return Err(bad(format!("unsupported value {other}"))),
        },
        other => return Err(bad(format!("unsupported value {other}"))),
    };
    let text = match &iv.leading_field {
        Some(unit) => format!("{} {}", text.trim(), unit.to_string().to_ascii_lowercase()),
        None => text,
    };
    if iv.last_field.is_some() {
        return Err(bad("ranges like HOUR TO MINUTE are not supported".into()));
    }
    let ms = parse_duration_millis(&text).map_err(bad)?;
    if ms <= 0 {
        return Err(bad("it must be positive".into()));
    }
    // Window bounds are event time ± these sizes; a century keeps that arithmetic far from
    // overflowing i64 milliseconds.
    if ms > MAX_WINDOW_MS {
        return Err(bad("it must be at most 100 years".into()));
    }
    Ok(ms)
}

/// If `factor` is a window table function, replaces it by the bare stream name and returns its
/// description.
pub(super) fn extract_window(
    factor: &mut TableFactor,
    limits: &WindowLimits,
    events: &str,
    event_time: &str,
) -> Result<Option<WindowSpec>, Error> {
    let TableFactor::Table {
        name, args, alias, ..
    } = factor
    else {
        return Ok(None);
    };
    let Some(args) = args else { return Ok(None) };
    let fname = name.to_string().to_ascii_uppercase();
    let span = name.span();
    let a = &args.args;
    let expect_args = |n: usize, form: &str| {
        if a.len() == n {
            Ok(())
        } else {
            Err(plan_error(
                span,
                format!("{fname} takes {n} arguments: {form}; found {}", a.len()),
            ))
        }
    };
    let kind = match fname.as_str() {
        "TUMBLE" => {
            expect_args(3, "TUMBLE(stream, time_column, INTERVAL size)")?;
            WindowKind::Tumble {
                size: interval_arg(&a[2], "the TUMBLE size")?,
            }
        }
        "HOP" => {
            expect_args(4, "HOP(stream, time_column, INTERVAL slide, INTERVAL size)")?;
            let slide = interval_arg(&a[2], "the HOP slide")?;
            let size = interval_arg(&a[3], "the HOP size")?;
            if slide > size {
                return Err(plan_error(
                    a[2].span(),
                    format!(
                        "the HOP slide ({slide} ms) is larger than its size ({size} ms); HOP takes the slide first, then the size"
                    ),
                ));
            }
            WindowKind::Hop { slide, size }
        }
        "SESSION" => {
            expect_args(3, "SESSION(stream, time_column, INTERVAL gap)")?;
            WindowKind::Session {
                gap: interval_arg(&a[2], "the SESSION gap")?,
            }
        }
        _ => {
            return Err(plan_error(
                span,
                format!(
                    "unknown table function {fname}; the streaming window functions are TUMBLE, HOP and SESSION"
                ),
            ));
        }
    };
    check_limits(kind, a, limits)?;
    let stream = ident_arg(&a[0], "the stream", span)?;
    if stream != events {
        return Err(plan_error(
            Some(a[0].span())
                .filter(|s| s.start.line > 0)
                .unwrap_or(span),
            format!("unknown stream `{stream}`; the event stream is `{events}`"),
        ));
    }
    let time_column = ident_arg(&a[1], "the time column", span)?;
    if time_column != event_time {
        return Err(plan_error(
            Some(a[1].span())
                .filter(|s| s.start.line > 0)
                .unwrap_or(span),
            format!(
                "`{time_column}` is not the event-time column; windows are computed over `{event_time}`, e.g. {fname}({stream}, {event_time}, …)"
            ),
        ));
    }
    let spec = WindowSpec {
        kind,
        stream: stream.clone(),
        time_column,
        dense: false,
        state_ttl: None,
    };
    *factor = plain_table(
        ObjectName::from(vec![datafusion::sql::sqlparser::ast::Ident::new(stream)]),
        alias.take(),
    );
    Ok(Some(spec))
}

/// The query text with Flink-style window calls rewritten to the RisingWave spelling.
pub fn to_risingwave_spelling(sql: &str) -> Result<String, Error> {
    use datafusion::sql::sqlparser::dialect::GenericDialect;
    use datafusion::sql::sqlparser::tokenizer::Tokenizer;
    let tokens = Tokenizer::new(&GenericDialect {}, sql)
        .tokenize_with_location()
        .map_err(|e| plan_error(point(0, 0), e.to_string()))?;
    Ok(rewrite_flink_windows(tokens)
        .iter()
        .map(|t| t.token.to_string())
        .collect())
}

/// A span covering a single token position (for constructs that have no AST span).
pub(super) fn point(line: u64, column: u64) -> Span {
    Span::new(Location::new(line, column), Location::new(line, column))
}

/// `name [AS alias]` as a FROM item: what a window function, a join side or a window join's
/// subquery is rewritten to once it names a stream.
pub(super) fn plain_table(
    name: ObjectName,
    alias: Option<datafusion::sql::sqlparser::ast::TableAlias>,
) -> TableFactor {
    TableFactor::Table {
        name,
        alias,
        args: None,
        with_hints: vec![],
        version: None,
        with_ordinality: false,
        partitions: vec![],
        json_path: None,
        sample: None,
        index_hints: vec![],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::sql::sqlparser::dialect::GenericDialect;
    use datafusion::sql::sqlparser::tokenizer::Tokenizer;

    fn rewrite(sql: &str) -> String {
        let toks = Tokenizer::new(&GenericDialect {}, sql)
            .tokenize_with_location()
            .unwrap();
        rewrite_flink_windows(toks)
            .iter()
            .map(|t| t.token.to_string())
            .collect()
    }

    #[test]
    fn flink_spelling_becomes_risingwave_spelling() {
        assert_eq!(
            rewrite(
                "SELECT * FROM TABLE(TUMBLE(TABLE payments, DESCRIPTOR(event_time), INTERVAL '1' MINUTE)) x"
            ),
            "SELECT * FROM TUMBLE(payments, event_time, INTERVAL '1' MINUTE) x"
        );
        assert_eq!(
            rewrite(
                "FROM TABLE(HOP(TABLE payments, DESCRIPTOR(event_time), INTERVAL '10' SECOND, INTERVAL '60' SECOND))"
            ),
            "FROM HOP(payments, event_time, INTERVAL '10' SECOND, INTERVAL '60' SECOND)"
        );
        assert_eq!(rewrite("SELECT a FROM t"), "SELECT a FROM t");
    }
}
