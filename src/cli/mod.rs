//! Subcommands of the binary that work with the embedded log: `topic`, `produce`, `consume`
//! (and `run`, the continuous query). Kept apart from `main.rs` so each file stays readable.

pub(crate) mod demo;
pub(crate) mod log_cmds;
pub(crate) mod run_cmd;
pub(crate) mod surprises;
