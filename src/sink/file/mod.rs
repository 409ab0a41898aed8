//! `connector = 'file'`: JSON Lines part files committed per checkpoint ([`PartFileSink`]) for
//! a checkpointed job, else one file appended to; a terminal, pipe or socket (`/dev/stdout`) is
//! written straight through.

mod part_files;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

pub use self::part_files::{PartFileSink, PartFiles, SharedPartFiles};

use super::{Sink, SinkConnector, SinkContext, WriterSink};
use crate::connector::{OptionError, SinkEntry, from_options};
use crate::error::Result;

/// The registry's line for this connector.
pub(crate) const CONNECTOR: SinkEntry = SinkEntry {
    name: "file",
    example: "connector = 'file', path = 'out.jsonl'",
    declare,
};

/// `WITH (…)` options of a file sink.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSinkOptions {
    /// The file (part files `PATH.part-N.jsonl` beside it for a job over a log), or a stream.
    pub path: PathBuf,
}

/// A declared file sink.
#[derive(Debug, Clone)]
struct Declared {
    path: PathBuf,
}

fn declare(
    _name: &str,
    options: &BTreeMap<String, String>,
) -> Result<Arc<dyn SinkConnector>, OptionError> {
    let o: FileSinkOptions = from_options(options)?;
    Ok(Arc::new(Declared { path: o.path }))
}

/// Whether `path` is a character device, a FIFO or a socket (`/dev/stdout`, a named pipe).
pub fn is_stream(path: &Path) -> bool {
    use std::os::unix::fs::FileTypeExt;
    std::fs::metadata(path).is_ok_and(|m| {
        let t = m.file_type();
        t.is_char_device() || t.is_fifo() || t.is_socket()
    })
}

impl SinkConnector for Declared {
    fn name(&self) -> &'static str {
        CONNECTOR.name
    }

    fn describe(&self) -> String {
        format!("file {}", self.path.display())
    }

    fn file_path(&self) -> Option<&Path> {
        Some(&self.path)
    }

    fn where_to_look(&self) -> String {
        format!(
            "They are in {} with reason and source offset.",
            self.path.display()
        )
    }

    fn committed_results(
        &self,
        _sink_offsets: &BTreeMap<String, Vec<u64>>,
    ) -> Result<Option<String>> {
        if is_stream(&self.path) {
            return Ok(None);
        }
        let parts = PartFiles::open(&self.path)?.committed_parts()?;
        Ok((!parts.is_empty())
            .then(|| format!("file {} ({} part files)", self.path.display(), parts.len())))
    }

    fn open(&self, ctx: &mut SinkContext<'_>) -> Result<Box<dyn Sink>> {
        Ok(if is_stream(&self.path) {
            // A terminal, a pipe or another device is a stream, not a directory of part files:
            // rows go straight to it as they come (at-least-once, as for a file source).
            Box::new(WriterSink::append("sink", &self.path)?)
        } else if ctx.exactly_once {
            let files = Arc::new(Mutex::new(PartFiles::open(&self.path)?));
            Box::new(PartFileSink::new(files))
        } else {
            Box::new(WriterSink::append("sink", &self.path)?)
        })
    }
}
