//! SQL: stream query text → a [`StreamPlan`] the operators can run.
//!
//! Third stage on the data's path (source → decode → **sql** → operators → sink): parsing and
//! planning are DataFusion's; this module adds window table functions and refuses what cannot be
//! computed incrementally.

mod booking;
mod checked;
mod codes;
mod columns_read;
mod join;
mod join_sides;
mod lookup;
mod over;
mod over_check;
mod plan;
mod planner;
pub mod query_file;
pub mod recognize;
mod shipped;
pub mod source_columns;
pub(crate) mod stream_reads;
mod time_grouping;
mod time_shift;
mod top_n;
mod union;
mod window_join;
mod window_tvf;
mod with_clause;

pub use self::columns_read::columns_read;
pub use self::join::IntervalJoinSpec;
pub use self::over::{Frame, FunctionKind, OverFunction, OverSpec};
pub use self::plan::{
    AggregateSpec, CHANGELOG_OP, ChainSpec, EnrichedSpec, KeySlot, OP_DELETE, OP_INSERT, OP_UPDATE,
    Partitioning, PlanKind, Stage, StreamPlan, UnionSpec, UpdatingSpec, WindowJoinSpec,
    apply_stages, apply_stages_selected, apply_stages_timed,
};
pub(crate) use self::planner::window_only_aggregate;
pub use self::planner::{
    MAX_EXPR_DEPTH, MAX_TOKENS, plan_query, plan_query_among, plan_query_in, plan_query_on,
    plan_query_over, plan_query_with,
};
pub use self::shipped::{LIBRARY_QUERIES, SHIPPED_QUERIES};
pub use self::window_tvf::{WindowKind, WindowLimits, WindowSpec, to_risingwave_spelling};
