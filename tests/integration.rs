//! The integration-test binary (one binary, so it links once).

mod cli;
mod dashboard;
mod declared_source;
mod decode_hardening;
mod exactly_once;
mod first_hour;
mod golden;
mod library;
mod library_joins;
mod library_risk;
mod library_scenarios;
mod library_settlement;
mod log_cli;
mod log_hardening;
mod oracle;
mod oracle_tables;
mod queries_over_queries;
mod recognize;
mod run_cli;
mod serve;
mod sketches;
mod slt;
mod sql_hardening;
mod state;
mod util;
mod websocket;
