//! `PATTERN (…)` of a `MATCH_RECOGNIZE`, compiled to a backtracking program.
//!
//! The row pattern is a regular expression over the partition's rows, each pattern variable a
//! "character" whose DEFINE condition a row must satisfy. As in a regex engine, it compiles to a
//! small program of [`Inst`]s run by a backtracking matcher (`operators/recognize/matcher.rs`):
//! backtracking, not an automaton, because SQL's match is the *preferred* one (greedy
//! quantifiers, alternatives left to right), and because a DEFINE condition may read the rows
//! already mapped to other variables, so a row's fit depends on the path that reached it.
//!
//! Refused: anchors (`^`, `$`), exclusion (`{- -}`), `PERMUTE`, and a pattern (or a quantified
//! part of one) that can match no row at all — an empty match is no event a rule can report, and
//! an empty loop would never end.

use datafusion::sql::sqlparser::ast::{
    MatchRecognizePattern as P, MatchRecognizeSymbol, RepetitionQuantifier as Q,
};

/// One step of a compiled pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inst {
    /// The next row must satisfy the variable's DEFINE condition; it is then mapped to it.
    Row(u16),
    /// Go on at the first target; if that path fails, at the second (the first is preferred).
    Split(u32, u32),
    /// Go on at the target.
    Jump(u32),
    /// A match is complete.
    Match,
}

/// A compiled pattern and the variables its [`Inst::Row`]s name (in order of first appearance,
/// upper-cased as SQL folds unquoted names).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Program {
    /// The instructions; execution starts at 0.
    pub insts: Vec<Inst>,
    /// The pattern variables.
    pub variables: Vec<String>,
}

/// Longest program a pattern may compile to (counted quantifiers are written out).
const MAX_INSTS: usize = 4096;

/// The name a pattern variable is known by: SQL folds unquoted names, so `s` and `S` are one.
pub fn variable_name(ident: &datafusion::sql::sqlparser::ast::Ident) -> String {
    match ident.quote_style {
        Some(_) => ident.value.clone(),
        None => ident.value.to_ascii_uppercase(),
    }
}

/// Compiles `pattern`, or says what is not supported and what to write instead.
pub fn compile(pattern: &P) -> Result<Program, String> {
    if nullable(pattern) {
        return Err(format!(
            "PATTERN ({pattern}) can match no row at all; make at least one variable required (S+ rather than S*)"
        ));
    }
    let mut c = Compiler::default();
    c.emit_pattern(pattern)?;
    c.push(Inst::Match)?;
    Ok(Program {
        insts: c.insts,
        variables: c.variables,
    })
}

/// Whether `p` can match no row.
fn nullable(p: &P) -> bool {
    match p {
        P::Symbol(_) | P::Exclude(_) | P::Permute(_) => false,
        P::Concat(ps) => ps.iter().all(nullable),
        P::Alternation(ps) => ps.iter().any(nullable),
        P::Group(p) => nullable(p),
        P::Repetition(p, q) => bounds(q).0 == 0 || nullable(p),
    }
}

/// A quantifier's least and greatest count (`None`: unbounded).
fn bounds(q: &Q) -> (u32, Option<u32>) {
    match *q {
        Q::ZeroOrMore => (0, None),
        Q::OneOrMore => (1, None),
        Q::AtMostOne => (0, Some(1)),
        Q::Exactly(n) => (n, Some(n)),
        Q::AtLeast(n) => (n, None),
        Q::AtMost(m) => (0, Some(m)),
        Q::Range(n, m) => (n, Some(m)),
    }
}

#[derive(Default)]
struct Compiler {
    insts: Vec<Inst>,
    variables: Vec<String>,
}

impl Compiler {
    fn push(&mut self, i: Inst) -> Result<u32, String> {
        if self.insts.len() >= MAX_INSTS {
            return Err(format!(
                "the PATTERN is too long once its counts are written out (more than {MAX_INSTS} steps); use smaller counts such as {{2,10}}"
            ));
        }
        self.insts.push(i);
        Ok(self.insts.len() as u32 - 1)
    }

    fn pc(&self) -> u32 {
        self.insts.len() as u32
    }

    fn emit_pattern(&mut self, p: &P) -> Result<(), String> {
        match p {
            P::Symbol(MatchRecognizeSymbol::Named(ident)) => {
                let name = variable_name(ident);
                let v = match self.variables.iter().position(|v| *v == name) {
                    Some(v) => v,
                    None => {
                        if self.variables.len() == 64 {
                            return Err("a PATTERN may name at most 64 variables".into());
                        }
                        self.variables.push(name);
                        self.variables.len() - 1
                    }
                };
                self.push(Inst::Row(v as u16))?;
            }
            P::Symbol(s) => {
                return Err(format!(
                    "the anchor `{s}` is not supported in PATTERN; a stream partition has no end, so match from any row (drop the anchor)"
                ));
            }
            P::Exclude(s) => {
                return Err(format!(
                    "exclusion ({{- {s} -}}) is not supported in PATTERN; it only hides rows from ALL ROWS PER MATCH, and matches here give ONE ROW PER MATCH"
                ));
            }
            P::Permute(_) => {
                return Err(
                    "PERMUTE is not supported in PATTERN; write the orders as alternatives: (A B | B A)"
                        .into(),
                );
            }
            P::Concat(ps) => {
                for p in ps {
                    self.emit_pattern(p)?;
                }
            }
            P::Group(p) => self.emit_pattern(p)?,
            P::Alternation(ps) => {
                let mut to_end = Vec::new();
                for (i, p) in ps.iter().enumerate() {
                    if i + 1 == ps.len() {
                        self.emit_pattern(p)?;
                        break;
                    }
                    let split = self.push(Inst::Split(0, 0))?;
                    self.emit_pattern(p)?;
                    to_end.push(self.push(Inst::Jump(0))?);
                    let next = self.pc();
                    self.insts[split as usize] = Inst::Split(split + 1, next);
                }
                let end = self.pc();
                for j in to_end {
                    self.insts[j as usize] = Inst::Jump(end);
                }
            }
            // `S+?` parses as `(S+)?`: a reluctant quantifier, which SQL matches differently.
            P::Repetition(body, q) if matches!(**body, P::Repetition(..)) => {
                return Err(format!(
                    "`{body}{q}` reads as a reluctant quantifier, which is not supported; use a greedy one ({body}), or put the quantified part in parentheses if you mean a repetition of it"
                ));
            }
            P::Repetition(body, q) => {
                let (min, max) = bounds(q);
                if let Some(max) = max
                    && max < min
                {
                    return Err(format!(
                        "the quantifier {q} asks for at least {min} and at most {max} rows; write the smaller count first"
                    ));
                }
                if max == Some(0) {
                    return Err(format!(
                        "the quantifier {q} matches no row; remove that part of the PATTERN"
                    ));
                }
                if nullable(body) {
                    return Err(format!(
                        "the quantified part ({body}){q} can repeat without matching a row; make its inside match at least one row"
                    ));
                }
                for _ in 0..min {
                    self.emit_pattern(body)?;
                }
                match max {
                    // Greedy: another round preferred over leaving the loop.
                    None => {
                        let split = self.push(Inst::Split(0, 0))?;
                        self.emit_pattern(body)?;
                        self.push(Inst::Jump(split))?;
                        let exit = self.pc();
                        self.insts[split as usize] = Inst::Split(split + 1, exit);
                    }
                    Some(max) => {
                        let mut splits = Vec::new();
                        for _ in min..max {
                            splits.push(self.push(Inst::Split(0, 0))?);
                            self.emit_pattern(body)?;
                        }
                        let exit = self.pc();
                        for s in splits {
                            self.insts[s as usize] = Inst::Split(s + 1, exit);
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use datafusion::sql::sqlparser::ast::TableFactor;
    use datafusion::sql::sqlparser::dialect::GenericDialect;
    use datafusion::sql::sqlparser::parser::Parser;

    use super::*;

    /// The PATTERN of `MATCH_RECOGNIZE (… PATTERN (<pattern>) DEFINE A AS true)`.
    pub(crate) fn parse(pattern: &str) -> P {
        let sql = format!(
            "SELECT * FROM t MATCH_RECOGNIZE (ORDER BY x PATTERN ({pattern}) DEFINE A AS true)"
        );
        let stmt = Parser::new(&GenericDialect {})
            .try_with_sql(&sql)
            .unwrap()
            .parse_statement()
            .unwrap();
        let datafusion::sql::sqlparser::ast::Statement::Query(q) = stmt else {
            panic!()
        };
        let datafusion::sql::sqlparser::ast::SetExpr::Select(s) = *q.body else {
            panic!()
        };
        let TableFactor::MatchRecognize { pattern, .. } = &s.from[0].relation else {
            panic!()
        };
        pattern.clone()
    }

    #[test]
    fn quantifiers_are_written_out_greedily() {
        let p = compile(&parse("S{2,3} L")).unwrap();
        assert_eq!(p.variables, vec!["S", "L"]);
        use Inst::*;
        assert_eq!(
            p.insts,
            vec![Row(0), Row(0), Split(3, 4), Row(0), Row(1), Match]
        );
        let p = compile(&parse("a b+ | c")).unwrap();
        assert_eq!(p.variables, vec!["A", "B", "C"]);
        assert_eq!(
            p.insts,
            vec![
                Split(1, 7),
                Row(0),
                Row(1),
                Split(4, 6),
                Row(1),
                Jump(3),
                Jump(8),
                Row(2),
                Match
            ]
        );
    }

    #[test]
    fn patterns_that_match_no_row_are_refused() {
        for (p, says) in [
            ("A*", "can match no row"),
            ("A? B*", "can match no row"),
            ("(A?)+ B", "can repeat without matching"),
            ("A{3,2}", "smaller count first"),
            ("^ A", "anchor"),
            ("PERMUTE(A, B)", "PERMUTE"),
            ("B A{0}", "matches no row"),
            ("S+? L", "reluctant"),
            ("A{2,3}? B", "reluctant"),
        ] {
            let e = compile(&parse(p)).unwrap_err();
            assert!(e.contains(says), "{p}: {e}");
        }
        assert!(compile(&parse("A{1000} B{1000,5000}")).is_err());
    }
}
