//! What DEFINE and MEASURES read of a match: navigations (`FIRST(S.event_id)`, `L.amount_minor`,
//! `COUNT(S.*)`, `SUM(S.amount_minor)`) rewritten into plain columns.
//!
//! DataFusion evaluates the expressions; it knows nothing of pattern variables. So each
//! navigation is replaced by a column `__navK`, whose value the matcher computes from the rows
//! mapped so far (`operators/recognize/matcher.rs`), and the rest of the expression is planned by
//! DataFusion over the event columns plus those. In a DEFINE of `X`, the row being tried is
//! mapped to `X` tentatively: `X.col` and a bare `col` are that row's own column (no
//! navigation), `COUNT(X.*)` counts it, and `S.col` is the last row mapped to `S` before it. In
//! MEASURES, a bare `col` is the match's last row's and `X.col` is `LAST(X.col)`.

use std::ops::ControlFlow;

use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::sql::sqlparser::ast::{
    Expr, FunctionArg, FunctionArgExpr, FunctionArguments, Ident, Spanned, VisitMut, VisitorMut,
};

use super::pattern::variable_name;
use crate::error::Error;
use crate::sql::window_tvf::plan_error;

/// How a navigation reads the rows of a match.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NavKind {
    /// The first row's value.
    First,
    /// The last row's value.
    Last,
    /// How many rows (with a non-null value, given a column).
    Count,
    /// The sum of the values (integers and decimals, checked for overflow).
    Sum,
    /// The least value.
    Min,
    /// The greatest value.
    Max,
    /// The mean of integer values, as a float.
    Avg,
}

/// A value computed from the rows of a (partial) match.
#[derive(Debug, Clone, PartialEq)]
pub struct Nav {
    /// What it computes.
    pub kind: NavKind,
    /// The rows it reads: those mapped to this variable, or every row of the match (`None`).
    pub variable: Option<u16>,
    /// The event column it reads (`None`: `COUNT(*)`).
    pub column: Option<usize>,
    /// Its type.
    pub data_type: DataType,
}

impl Nav {
    /// The navigation as a query writes it (`LAST(S.amount_minor)`, `COUNT(*)`), for errors.
    pub fn describe(&self, variables: &[String], events: &Schema) -> String {
        let var = self.variable.map(|v| variables[v as usize].as_str());
        let arg = match (var, self.column) {
            (Some(v), Some(c)) => format!("{v}.{}", events.field(c).name()),
            (None, Some(c)) => events.field(c).name().clone(),
            (Some(v), None) => format!("{v}.*"),
            (None, None) => "*".into(),
        };
        let kind = match self.kind {
            NavKind::First => "FIRST",
            NavKind::Last => "LAST",
            NavKind::Count => "COUNT",
            NavKind::Sum => "SUM",
            NavKind::Min => "MIN",
            NavKind::Max => "MAX",
            NavKind::Avg => "AVG",
        };
        format!("{kind}({arg})")
    }

    /// The column this navigation is in the rewritten expression's input.
    pub fn field(&self, k: usize) -> Field {
        Field::new(
            nav_name(k),
            self.data_type.clone(),
            self.kind != NavKind::Count,
        )
    }
}

/// The name of navigation `k`'s column.
pub fn nav_name(k: usize) -> String {
    format!("__nav{k}")
}

/// The column of `events` that `ident` names: as written when quoted, else the exact name or
/// one equal to it ignoring case (SQL folds unquoted names).
pub fn column(events: &Schema, ident: &Ident) -> Option<usize> {
    let exact = events.index_of(&ident.value).ok();
    match ident.quote_style {
        Some(_) => exact,
        None => exact.or_else(|| {
            events
                .fields()
                .iter()
                .position(|f| f.name().eq_ignore_ascii_case(&ident.value))
        }),
    }
}

/// Where an expression is.
#[derive(Debug, Clone, Copy)]
pub enum Place {
    /// In the DEFINE of this variable: the current row is tentatively mapped to it.
    Define(u16),
    /// In MEASURES: over the complete match.
    Measures,
}

/// Rewrites `expr` in place, appending the navigations it reads to `navs` (shared ones reused).
pub fn rewrite(
    expr: &mut Expr,
    place: Place,
    variables: &[String],
    alias: Option<&str>,
    events: &Schema,
    navs: &mut Vec<Nav>,
) -> Result<(), Error> {
    let mut r = Rewriter {
        place,
        variables,
        alias,
        events,
        navs,
    };
    match expr.visit(&mut r) {
        ControlFlow::Break(e) => Err(e),
        ControlFlow::Continue(()) => Ok(()),
    }
}

struct Rewriter<'a> {
    place: Place,
    variables: &'a [String],
    alias: Option<&'a str>,
    events: &'a Schema,
    navs: &'a mut Vec<Nav>,
}

impl Rewriter<'_> {
    fn variable(&self, ident: &Ident) -> Option<u16> {
        let name = variable_name(ident);
        self.variables
            .iter()
            .position(|v| *v == name)
            .map(|v| v as u16)
    }

    fn is_alias(&self, ident: &Ident) -> bool {
        self.alias
            .is_some_and(|a| a.eq_ignore_ascii_case(&ident.value))
    }

    fn column(&self, ident: &Ident) -> Option<usize> {
        column(self.events, ident)
    }

    /// `X.col` or `col` (a column of the events): its variable and column, or an error naming
    /// what it is not.
    fn reference(&self, e: &Expr, what: &str) -> Result<(Option<u16>, usize), Error> {
        let (var, col) = match e {
            Expr::Identifier(c) => (None, c),
            Expr::CompoundIdentifier(ids) if ids.len() == 2 => {
                if self.is_alias(&ids[0]) {
                    (None, &ids[1])
                } else {
                    match self.variable(&ids[0]) {
                        Some(v) => (Some(v), &ids[1]),
                        None => return Err(self.unknown_variable(&ids[0])),
                    }
                }
            }
            other => {
                return Err(plan_error(
                    other.span(),
                    format!(
                        "{what} takes a column of a pattern variable, such as {what}(S.amount_minor); found `{other}`"
                    ),
                ));
            }
        };
        let Some(c) = self.column(col) else {
            return Err(plan_error(
                col.span,
                format!("`{}` is not a column of the stream", col.value),
            ));
        };
        Ok((var, c))
    }

    fn unknown_variable(&self, ident: &Ident) -> Error {
        plan_error(
            ident.span,
            format!(
                "`{}` is not a variable of the PATTERN (its variables: {})",
                ident.value,
                self.variables.join(", ")
            ),
        )
    }

    /// The identifier of navigation `nav` (added unless already there).
    fn nav(&mut self, nav: Nav) -> Expr {
        let k = match self.navs.iter().position(|n| *n == nav) {
            Some(k) => k,
            None => {
                self.navs.push(nav);
                self.navs.len() - 1
            }
        };
        Expr::Identifier(Ident::new(nav_name(k)))
    }

    fn function(
        &mut self,
        f: &datafusion::sql::sqlparser::ast::Function,
    ) -> Result<Option<Expr>, Error> {
        let name = f.name.to_string().to_ascii_uppercase();
        let kind = match name.as_str() {
            "FIRST" => NavKind::First,
            "LAST" => NavKind::Last,
            "COUNT" => NavKind::Count,
            "SUM" => NavKind::Sum,
            "MIN" => NavKind::Min,
            "MAX" => NavKind::Max,
            "AVG" => NavKind::Avg,
            "PREV" | "NEXT" | "CLASSIFIER" | "MATCH_NUMBER" => {
                return Err(plan_error(
                    f.name.span(),
                    format!(
                        "{name}() is not supported in MATCH_RECOGNIZE yet; read the rows mapped to a variable instead (S.amount_minor is the last row mapped to S, FIRST(S.amount_minor) the first)"
                    ),
                ));
            }
            _ => return Ok(None),
        };
        let FunctionArguments::List(list) = &f.args else {
            return Err(plan_error(
                f.span(),
                format!("{name} takes one argument, such as {name}(S.amount_minor)"),
            ));
        };
        if list.args.len() != 1
            || list.duplicate_treatment.is_some()
            || f.over.is_some()
            || f.filter.is_some()
        {
            return Err(plan_error(
                f.span(),
                format!(
                    "{name} in MATCH_RECOGNIZE takes one column of a pattern variable, such as {name}(S.amount_minor), without DISTINCT, FILTER or OVER"
                ),
            ));
        }
        let arg = match &list.args[0] {
            FunctionArg::Unnamed(a) => a,
            other => {
                return Err(plan_error(
                    other.span(),
                    format!("{name} takes its argument by position"),
                ));
            }
        };
        let (variable, column) = match arg {
            FunctionArgExpr::Wildcard if kind == NavKind::Count => (None, None),
            FunctionArgExpr::QualifiedWildcard(obj) if kind == NavKind::Count => {
                let ids: Vec<Ident> = obj.0.iter().filter_map(|p| p.as_ident().cloned()).collect();
                match ids.as_slice() {
                    [x] if self.is_alias(x) => (None, None),
                    [x] => match self.variable(x) {
                        Some(v) => (Some(v), None),
                        None => return Err(self.unknown_variable(x)),
                    },
                    _ => {
                        return Err(plan_error(
                            obj.span(),
                            "COUNT takes a pattern variable's rows, such as COUNT(S.*)",
                        ));
                    }
                }
            }
            FunctionArgExpr::Expr(e) => {
                let (v, c) = self.reference(e, &name)?;
                (v, Some(c))
            }
            other => {
                return Err(plan_error(
                    f.span(),
                    format!("{name} does not take `{other}`; write {name}(S.amount_minor)"),
                ));
            }
        };
        let column_type = column.map(|c| self.events.field(c).data_type().clone());
        let data_type = match (kind, &column_type) {
            (NavKind::Count, _) => DataType::Int64,
            (NavKind::Sum, Some(t)) if t.is_integer() => DataType::Int64,
            (NavKind::Sum, Some(DataType::Decimal128(_, s))) => DataType::Decimal128(38, *s),
            (NavKind::Avg, Some(t)) if t.is_integer() => DataType::Float64,
            (NavKind::Sum | NavKind::Avg, t) => {
                return Err(plan_error(
                    f.span(),
                    format!(
                        "{name} in MATCH_RECOGNIZE adds integer or decimal columns; this one is {}",
                        t.as_ref().map_or("none".to_string(), |t| t.to_string())
                    ),
                ));
            }
            (_, Some(t)) => t.clone(),
            (_, None) => unreachable!("only COUNT takes no column"),
        };
        // In a DEFINE, the variable's own last row (or the match's) is the current row.
        if let (Place::Define(x), NavKind::Last, Some(c)) = (self.place, kind, column)
            && (variable.is_none() || variable == Some(x))
        {
            return Ok(Some(self.current(c)));
        }
        Ok(Some(self.nav(Nav {
            kind,
            variable,
            column,
            data_type,
        })))
    }

    /// The current row's column `c` (a DEFINE's own variable).
    fn current(&self, c: usize) -> Expr {
        Expr::Identifier(Ident::with_quote('"', self.events.field(c).name()))
    }
}

impl VisitorMut for Rewriter<'_> {
    type Break = Error;

    fn pre_visit_expr(&mut self, expr: &mut Expr) -> ControlFlow<Error> {
        let replaced = match expr {
            Expr::Function(f) => match self.function(f) {
                Ok(r) => r,
                Err(e) => return ControlFlow::Break(e),
            },
            Expr::CompoundIdentifier(ids) if ids.len() == 2 => {
                let bare = Expr::Identifier(ids[1].clone());
                match self.reference(&Expr::CompoundIdentifier(ids.clone()), "LAST") {
                    Err(e) => return ControlFlow::Break(e),
                    Ok((variable, c)) => match (self.place, variable) {
                        (Place::Define(x), v) if v.is_none() || v == Some(x) => Some(bare),
                        _ => Some(self.nav(Nav {
                            kind: NavKind::Last,
                            variable,
                            column: Some(c),
                            data_type: self.events.field(c).data_type().clone(),
                        })),
                    },
                }
            }
            // In MEASURES a bare column is the match's last row's; in a DEFINE the current row's.
            Expr::Identifier(id) if matches!(self.place, Place::Measures) => {
                match self.column(id) {
                    Some(c) => Some(self.nav(Nav {
                        kind: NavKind::Last,
                        variable: None,
                        column: Some(c),
                        data_type: self.events.field(c).data_type().clone(),
                    })),
                    None => None,
                }
            }
            _ => None,
        };
        if let Some(r) = replaced {
            *expr = r;
        }
        ControlFlow::Continue(())
    }
}
