//! What several subcommands share: duration flags, optional output files, summary lines.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use paystream::sink::{NullSink, Sink, WriterSink};
use paystream::time::parse_duration_millis;

pub(crate) fn duration(what: &str, s: &str) -> anyhow::Result<i64> {
    parse_duration_millis(s).map_err(|e| anyhow::anyhow!("invalid {what}: {e}"))
}

pub(crate) fn output_sink(option: &str, path: Option<&Path>) -> anyhow::Result<Box<dyn Sink>> {
    Ok(match path {
        Some(p) => Box::new(WriterSink::create(option, p)?),
        None => Box::new(NullSink),
    })
}

/// A command stopped by Ctrl-C or SIGTERM before its input ended: its summary says
/// `interrupted=true` and it exits 130, so a script can tell it from a complete run.
#[derive(Debug, thiserror::Error)]
#[error("interrupted")]
pub(crate) struct Interrupted;

/// An error and its causes, `: `-separated, each cause said once: a message that already ends
/// with its cause (`cannot write out.jsonl: No such file or directory`) is not followed by that
/// cause again, as anyhow's `{:#}` would.
pub(crate) fn error_text(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if out.ends_with(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

/// Prints a summary line, marked `interrupted=true` (and an [`Interrupted`] error, exit 130)
/// when a signal stopped the command early.
pub(crate) fn finish_summary(line: String, stop: &AtomicBool) -> anyhow::Result<()> {
    if stop.load(Ordering::Relaxed) {
        eprintln!("{line} interrupted=true");
        return Err(Interrupted.into());
    }
    eprintln!("{line}");
    Ok(())
}
