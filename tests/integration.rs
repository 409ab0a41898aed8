//! The integration-test binary (one binary, so it links once).

mod cli;
mod golden;
mod oracle;
mod slt;
mod state;
mod util;
