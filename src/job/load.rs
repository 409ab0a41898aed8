//! Loading an event file into a topic: what `paystream replay FILE --into TOPIC` does with a CSV
//! or Parquet file. Its rows are decoded and validated as any source's are (as payment events, or
//! as a declared source's columns), and each valid event is produced as a JSON record keyed by
//! `card_id` or the declared source's `dedup_key` (so one key's events share a partition);
//! rejected rows go to the dead-letter sink with their reason and row. (JSON Lines are stored as
//! they are, by [`crate::log::pump_lines`].)

use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use crate::decode::Format;
use crate::engine::{RunSpec, Summary};
use crate::error::{Error, Result};
use crate::log::Producer;
use crate::schema::EventSchema;
use crate::sink::{Sink, TopicSink};
use crate::source::FileSource;

/// Decodes `file` (of `format`) as `events` (the payment event, or a declared source's
/// columns) and produces its valid events into `topic` through `producer`, dead-lettering the
/// rest into `dead_letter`; stops early when `stop` is set. The producer is flushed (not
/// finished) when this returns; the caller finishes it.
pub fn load_events(
    file: &Path,
    format: Format,
    events: &Arc<EventSchema>,
    topic: &str,
    producer: Producer,
    dead_letter: Box<dyn Sink>,
    stop: Arc<AtomicBool>,
) -> Result<(Summary, Producer)> {
    let plan = crate::sql::plan_query_in(
        // A stream's name is an identifier (`CREATE SOURCE` checks it).
        &format!("SELECT * FROM {}", events.stream()),
        events,
        events.stream(),
        &crate::sql::WindowLimits::default(),
    )?;
    let shared = Arc::new(Mutex::new(producer));
    let source = FileSource::new(file)
        .format(Some(format))
        .events(Arc::clone(events));
    let mut spec = RunSpec::single(
        Arc::new(source),
        &plan,
        Box::new(TopicSink::keyed(topic, Arc::clone(&shared))),
    );
    spec.dead_letter = dead_letter;
    let summary = crate::engine::run(spec, Default::default(), stop)?.summary;
    let producer = Arc::try_unwrap(shared)
        .map_err(|_| Error::Internal("the topic writer is still in use after the load".into()))?
        .into_inner()
        .expect("producer lock");
    Ok((summary, producer))
}
