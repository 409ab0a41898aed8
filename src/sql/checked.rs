//! Integer arithmetic that fails on overflow instead of wrapping.
//!
//! DataFusion plans `a + b`, `a - b`, `a * b` and `-a` with Arrow's wrapping kernels, so
//! `amount_minor * 1000000` past 2^63 silently turns negative. Every expression the operators
//! evaluate goes through [`checked`], which switches those nodes to the checked kernels: an
//! overflow is then an evaluation error naming the values (`Overflow happened on:
//! 9223372036854775807 * 1000000`), which the operator reports with the query's name. Division
//! and remainder are checked by Arrow already; decimal arithmetic always is.

use std::sync::Arc;

use datafusion::arrow::array::{RecordBatch, RecordBatchOptions};
use datafusion::arrow::datatypes::Schema;
use datafusion::arrow::error::ArrowError;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{DFSchema, ScalarValue};
use datafusion::error::DataFusionError;
use datafusion::execution::context::ExecutionProps;
use datafusion::logical_expr::physical_planning_context::PhysicalPlanningContext;
use datafusion::logical_expr::{Expr, LogicalPlan, Operator};
use datafusion::optimizer::{OptimizerConfig, OptimizerRule};
use datafusion::physical_expr::create_physical_expr;
use datafusion::physical_expr::expressions::{BinaryExpr, Literal, NegativeExpr};
use datafusion::physical_plan::PhysicalExpr;

/// `expr` (over rows of `schema`) with every `+`, `-`, `*` and unary minus checked for overflow.
pub(super) fn checked(
    expr: Arc<dyn PhysicalExpr>,
    schema: &Schema,
) -> datafusion::error::Result<Arc<dyn PhysicalExpr>> {
    Ok(expr
        .transform_up(|e| {
            if let Some(b) = e.downcast_ref::<BinaryExpr>()
                && matches!(
                    b.op(),
                    Operator::Plus | Operator::Minus | Operator::Multiply
                )
            {
                let c = BinaryExpr::new(Arc::clone(b.left()), *b.op(), Arc::clone(b.right()))
                    .with_fail_on_overflow(true);
                return Ok(Transformed::yes(Arc::new(c) as Arc<dyn PhysicalExpr>));
            }
            if let Some(n) = e.downcast_ref::<NegativeExpr>()
                && let Ok(t) = n.arg().data_type(schema)
                && t.is_integer()
                && let Ok(zero) = ScalarValue::new_zero(&t)
            {
                // Arrow's negation wraps (-(-2^63) = -2^63); 0 - a is checked.
                let c = BinaryExpr::new(
                    Arc::new(Literal::new(zero)),
                    Operator::Minus,
                    Arc::clone(n.arg()),
                )
                .with_fail_on_overflow(true);
                return Ok(Transformed::yes(Arc::new(c) as Arc<dyn PhysicalExpr>));
            }
            Ok(Transformed::no(e))
        })?
        .data)
}

/// Refuses a constant integer expression that overflows (`9223372036854775807 + 1`), which
/// DataFusion's simplifier would otherwise fold, with wrapping kernels, into a wrong literal. It
/// runs before the simplifier, on the analysed (typed) plan.
#[derive(Debug)]
pub(super) struct CheckedConstants;

impl OptimizerRule for CheckedConstants {
    fn name(&self) -> &str {
        "checked_constants"
    }

    fn rewrite(
        &self,
        plan: LogicalPlan,
        _config: &dyn OptimizerConfig,
    ) -> datafusion::error::Result<Transformed<LogicalPlan>> {
        plan.apply(|node| {
            node.apply_expressions(|e| {
                e.apply(|x| {
                    check_constant(x)?;
                    Ok(TreeNodeRecursion::Continue)
                })
            })
        })?;
        Ok(Transformed::no(plan))
    }
}

/// An error if `e` is integer arithmetic over constants that overflows.
fn check_constant(e: &Expr) -> datafusion::error::Result<()> {
    let arithmetic = match e {
        Expr::BinaryExpr(b) => {
            matches!(b.op, Operator::Plus | Operator::Minus | Operator::Multiply)
        }
        Expr::Negative(_) => true,
        _ => false,
    };
    if !arithmetic || e.any_column_refs() || e.is_volatile() {
        return Ok(());
    }
    let schema = DFSchema::empty();
    let Ok(physical) = create_physical_expr(
        e,
        &schema,
        &ExecutionProps::new(),
        &PhysicalPlanningContext::default(),
    ) else {
        return Ok(());
    };
    let empty = Schema::empty();
    let batch = RecordBatch::try_new_with_options(
        Arc::new(empty.clone()),
        vec![],
        &RecordBatchOptions::new().with_row_count(Some(1)),
    )?;
    match checked(physical, &empty)?.evaluate(&batch) {
        Err(err) => match err.find_root() {
            DataFusionError::ArrowError(a, _)
                if matches!(**a, ArrowError::ArithmeticOverflow(_)) =>
            {
                let ArrowError::ArithmeticOverflow(a) = &**a else {
                    unreachable!()
                };
                Err(DataFusionError::Plan(format!(
                    "integer overflow: {a} does not fit in a 64-bit integer; results are never wrapped around. Compute in decimals instead, e.g. CAST(9223372036854775807 AS DECIMAL(38, 0)) + 1"
                )))
            }
            // Anything else is the simplifier's (and the query's) business.
            _ => Ok(()),
        },
        Ok(_) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::{Int64Array, RecordBatch};
    use datafusion::arrow::datatypes::{DataType, Field};
    use datafusion::physical_expr::expressions::{Column, lit};

    use super::*;

    #[test]
    fn overflowing_arithmetic_is_an_error_naming_the_values() {
        let schema = Arc::new(Schema::new(vec![Field::new("a", DataType::Int64, false)]));
        let batch = RecordBatch::try_new(
            Arc::clone(&schema),
            vec![Arc::new(Int64Array::from(vec![1, i64::MIN]))],
        )
        .unwrap();
        let a: Arc<dyn PhysicalExpr> = Arc::new(Column::new("a", 0));
        let times = Arc::new(BinaryExpr::new(
            Arc::clone(&a),
            Operator::Multiply,
            lit(1_000_000i64),
        ));
        let plus = Arc::new(BinaryExpr::new(
            Arc::clone(&a),
            Operator::Plus,
            lit(i64::MAX),
        ));
        let neg = Arc::new(NegativeExpr::new(Arc::clone(&a)));
        for (e, values) in [
            (
                times as Arc<dyn PhysicalExpr>,
                "-9223372036854775808 * 1000000",
            ),
            (plus, "1 + 9223372036854775807"),
            (neg, "0 - -9223372036854775808"),
        ] {
            // Wrapped before, silently.
            assert!(e.evaluate(&batch).is_ok());
            let c = checked(e, &schema).unwrap();
            let err = c.evaluate(&batch).unwrap_err().to_string();
            assert!(err.contains("Overflow") && err.contains(values), "{err}");
        }
    }

    #[test]
    fn constant_overflow_is_refused_at_planning_not_folded_into_a_wrapped_literal() {
        for (sql, values) in [
            (
                "SELECT event_id, 9223372036854775807 + 1 AS x FROM payments",
                "9223372036854775807 + 1",
            ),
            (
                "SELECT event_id FROM payments\nWHERE amount_minor > 3037000500 * 3037000500",
                "3037000500 * 3037000500",
            ),
        ] {
            let e = crate::sql::plan_query(sql).unwrap_err().to_string();
            assert!(
                e.contains("integer overflow") && e.contains(values),
                "{sql}: {e}"
            );
            assert!(e.contains("line "), "{sql}: {e}");
        }
        assert!(
            crate::sql::plan_query("SELECT event_id, 9223372036854775806 + 1 AS x FROM payments")
                .is_ok()
        );
    }
}
