//! `paystream replay`: an event file through one query, or loaded into a topic (`--into`).

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{Context, bail};
use paystream::engine::{RunHandle, RunState, defaults};
use paystream::sink::{Sink, WriterSink};
use paystream::sql::query_file::parse_replay_query;
use paystream::{EventSchema, FileSource, Format, RunOptions, RunSpec};

use super::common::{duration, finish_summary, output_sink};
use super::signals::stop_on_signal;

#[derive(clap::Args)]
pub(crate) struct ReplayArgs {
    /// The event file; `-` reads standard input (JSON Lines unless `--format csv`).
    file: PathBuf,
    /// The SQL file holding the stream query: a SELECT over the stream `payments`, or a
    /// `CREATE SOURCE name (columns…, WATERMARK FOR ts AS ts - INTERVAL '5' SECOND)` followed by
    /// a SELECT over `name` (the file is then decoded into those columns; the declaration's
    /// WITH (…) is optional, its dedup_key, watermark and other time options apply).
    /// `CREATE TABLE name (…) WITH (connector = 'file', path = '…')` statements before the
    /// SELECT declare reference tables it may join (a relative path is relative to the working
    /// directory). With --into, only its CREATE SOURCE is read: the columns CSV and Parquet rows are
    /// decoded into.
    #[arg(long, short, required_unless_present = "into")]
    query: Option<PathBuf>,
    /// Instead of running a query, load the file into this topic of the embedded log (JSON
    /// Lines as they are; CSV and Parquet rows as JSON events — payment events, or the columns
    /// of the --query file's CREATE SOURCE — invalid rows to --dead-letter).
    #[arg(long, value_name = "TOPIC")]
    into: Option<String>,
    /// Result file (JSON Lines); standard output when absent.
    #[arg(long, short)]
    output: Option<PathBuf>,
    /// File for rejected records: reason, detail, file and line, redacted raw record.
    #[arg(long)]
    dead_letter: Option<PathBuf>,
    /// File for late events (arrived after their window fired).
    #[arg(long)]
    late: Option<PathBuf>,
    /// Bounded out-of-orderness: watermark = max event time seen - delay [default: 5s, or the
    /// query file's WATERMARK FOR].
    #[arg(long)]
    watermark_delay: Option<String>,
    /// Worker threads (default: all cores).
    #[arg(long)]
    workers: Option<usize>,
    /// `max`, or N to replay N times faster than event time (for demos).
    #[arg(long, default_value = "max")]
    speed: String,
    /// Input format when the extension does not tell: json, csv or parquet.
    #[arg(long)]
    format: Option<String>,
    /// Rows per batch.
    #[arg(long, default_value_t = defaults::BATCH_SIZE)]
    batch_size: usize,
    /// How long (in event time) event ids are remembered for deduplication [default: 1h, or the
    /// query file's dedup_ttl].
    #[arg(long)]
    dedup_ttl: Option<String>,
    /// How long (in event time) a window function (OVER) keeps a key's state after its last
    /// event, for functions whose state never ends by itself (row_number, lag, frames from
    /// UNBOUNDED PRECEDING); the dedup TTL when absent.
    #[arg(long)]
    state_ttl: Option<String>,
    /// Event times further than this ahead of the watermark are dead-lettered [default: 5m, or
    /// the query file's max_skew].
    #[arg(long)]
    max_skew: Option<String>,
    /// Fail (exit 1) when more than 1% of the records were dead-lettered or late, instead of
    /// only warning.
    #[arg(long)]
    strict: bool,
}

/// Where `-` (standard input) is read from: the process's own stdin as a file, so the reader
/// needs no second code path.
const STDIN_PATH: &str = "/dev/stdin";

pub(crate) fn replay(mut a: ReplayArgs, data: &super::log_cmds::DataDir) -> anyhow::Result<()> {
    if a.file.as_os_str() == "-" {
        match a.format.as_deref() {
            Some("parquet") => bail!(
                "Parquet cannot be read from standard input (its footer is at the end): pass the file's path"
            ),
            // JSON Lines unless the flag or the query's declared source says otherwise.
            None if a.into.is_some() => a.format = Some("json".into()),
            _ => {}
        }
        a.file = PathBuf::from(STDIN_PATH);
    }
    if let Some(topic) = a.into.as_deref() {
        let events = match &a.query {
            None => EventSchema::payments(),
            Some(q) => declared_events(q)?,
        };
        return super::log_cmds::load_file(
            data,
            &a.file,
            a.format.as_deref(),
            &events,
            topic,
            a.dead_letter.as_deref(),
            a.strict,
        );
    }
    let query = a.query.as_ref().expect("clap requires --query or --into");
    let sql = std::fs::read_to_string(query)
        .with_context(|| format!("cannot read the query file {}", query.display()))?;
    let mut opts = RunOptions::default();
    let mut format = None;
    let parsed = parse_replay_query(&sql).with_context(|| format!("in {}", query.display()))?;
    let declared = parsed.source.as_ref();
    // The file's `SET`s, as `run` reads them (already checked).
    let set = |key: &str| parsed.settings.get(key);
    let set_ms = |key: &str| -> anyhow::Result<Option<i64>> {
        set(key)
            .map(|v| duration(&format!("SET {key}"), v))
            .transpose()
    };
    // A flag wins over the declaration, which wins over the file's SET, which wins over the
    // default (as in `run`, a source's own option overrides a SET).
    let setting = |flag: &str,
                   given: &Option<String>,
                   declared: Option<i64>,
                   default: &str|
     -> anyhow::Result<(i64, String)> {
        let key = flag[2..].replace('-', "_");
        match (given, declared) {
            (Some(v), _) => Ok((duration(flag, v)?, flag.to_string())),
            (None, Some(ms)) => {
                let what = match parsed.source.as_ref() {
                    Some(s) if s.watermark_clause && key == "watermark_delay" => {
                        "WATERMARK FOR".to_string()
                    }
                    _ => key.clone(),
                };
                Ok((ms, format!("{what} in {}", query.display())))
            }
            (None, None) => match set_ms(&key)? {
                Some(ms) => Ok((ms, format!("SET {key} in {}", query.display()))),
                None => Ok((duration(flag, default)?, flag.to_string())),
            },
        }
    };
    let (delay, delay_from) = setting(
        "--watermark-delay",
        &a.watermark_delay,
        declared.and_then(|s| s.watermark_delay),
        defaults::WATERMARK_DELAY_TEXT,
    )?;
    let (skew, skew_from) = setting(
        "--max-skew",
        &a.max_skew,
        declared.and_then(|s| s.max_skew),
        defaults::MAX_SKEW_TEXT,
    )?;
    opts.watermark_delay = delay;
    opts.max_skew = skew;
    opts.dedup_ttl = setting(
        "--dedup-ttl",
        &a.dedup_ttl,
        declared.and_then(|s| s.dedup_ttl),
        defaults::DEDUP_TTL_TEXT,
    )?
    .0;
    paystream::operators::check_max_skew(
        opts.watermark_delay,
        opts.max_skew,
        &delay_from,
        &skew_from,
    )?;
    let (events, stream) = match declared {
        Some(s) => {
            file_has_no_metadata(&s.events)?;
            (Arc::clone(&s.events), s.name.clone())
        }
        None => (EventSchema::payments(), "payments".to_string()),
    };
    let tables: Vec<Arc<paystream::table::ReferenceTable>> = parsed
        .tables
        .iter()
        .map(|t| paystream::table::ReferenceTable::new(t.clone()))
        .collect();
    let plan = paystream::sql::plan_query_over(
        &parsed.select,
        &[(stream.clone(), Arc::clone(&events))],
        &tables,
        &parsed.window_limits(),
    )
    .with_context(|| format!("in {}", query.display()))?
    .named(format!("the query in {}", query.display()));
    // A missing or bad table stops the replay before it reads an event.
    for t in &tables {
        t.attach_log(&data.data_dir);
    }
    paystream::table::load_all(&tables)?;
    // The file's state TTL and dense windows, then the flag over its TTL.
    let plan = parsed
        .with_settings(plan)
        .map_err(|m| anyhow::anyhow!("in {}: {m}", query.display()))?;
    let plan = match &a.state_ttl {
        Some(t) => plan.with_state_ttl(duration("--state-ttl", t)?),
        None => plan,
    };
    let workers = match (a.workers, set("workers")) {
        (Some(w), _) => Some(w),
        (None, Some(w)) => Some(w.parse().context("SET workers")?),
        (None, None) => None,
    };
    if let Some(w) = workers {
        if w == 0 {
            bail!("--workers must be at least 1");
        }
        opts.workers = w;
    }
    if a.batch_size == 0 {
        bail!("--batch-size must be at least 1");
    }
    opts.batch_size = a.batch_size;
    opts.speed = match a.speed.as_str() {
        "max" => None,
        n => Some(
            n.parse::<f64>()
                .ok()
                .filter(|v| *v > 0.0)
                .with_context(|| {
                    format!("invalid --speed {n:?}: use `max` or a positive number")
                })?,
        ),
    };
    if let Some(f) = &a.format {
        format = Some(
            Format::from_name(f)
                .with_context(|| format!("unknown --format {f:?}: use json, csv or parquet"))?,
        );
    }
    // A declared source's `format` applies when the flag does not say.
    if format.is_none() {
        format = declared.and_then(|s| s.connector.format());
    }
    if a.file.as_os_str() == STDIN_PATH {
        if format == Some(Format::Parquet) {
            bail!(
                "Parquet cannot be read from standard input (its footer is at the end): pass the file's path"
            );
        }
        format.get_or_insert(Format::JsonLines);
    }
    if !a.file.exists() {
        bail!(
            "the event file {} does not exist (use `-` for standard input)",
            a.file.display()
        );
    }
    // A declaration naming another file: say which one is read (`run` reads the declared one).
    if let Some(s) = declared
        && let Some(p) = s.connector.file_path()
        && !p.as_os_str().is_empty()
    {
        let same = |p: &std::path::Path| {
            std::fs::canonicalize(p).ok() == std::fs::canonicalize(&a.file).ok()
        };
        let beside_query = query.parent().map(|d| d.join(p));
        if !same(p) && !beside_query.as_deref().is_some_and(same) {
            eprintln!(
                "note: replaying {}; the declaration of `{}` in {} names {}, which `paystream run` reads and this replay does not",
                a.file.display(),
                s.name,
                query.display(),
                p.display()
            );
        }
    }
    let results: Box<dyn Sink> = match &a.output {
        Some(p) => Box::new(WriterSink::create("--output", p)?),
        None => Box::new(WriterSink::stdout()),
    };
    let source = FileSource::new(&a.file).format(format).events(events);
    let mut spec = RunSpec::single(Arc::new(source), &plan, results);
    spec.dead_letter = output_sink("--dead-letter", a.dead_letter.as_deref())?;
    spec.late = output_sink("--late", a.late.as_deref())?;
    spec.options = opts;
    let total = std::fs::metadata(&a.file).map(|m| m.len()).unwrap_or(0);
    let stop = stop_on_signal();
    let handle = paystream::engine::spawn_run("replay", spec, Some(Arc::clone(&stop)));
    let summary = with_progress(total, handle)?.summary;
    let hints = super::surprises::Hints {
        dead_letters: match &a.dead_letter {
            Some(p) => format!("They are in {} with reason and line.", p.display()),
            None => {
                "Re-run with --dead-letter FILE to see each one with its reason and line.".into()
            }
        },
        late: format!(
            "Their event times were behind the watermark (the latest event time seen minus {delay_from}, {}): if the file is far out of order, raise --watermark-delay; {}",
            paystream::operators::millis_text(delay),
            match &a.late {
                Some(p) => format!("they are in {}.", p.display()),
                None => "--late FILE lists them.".into(),
            }
        ),
    };
    finish_summary(summary.line(), &stop)?;
    super::surprises::report(&summary, &hints, a.strict)
}

/// Refuses a declared source's `METADATA FROM '…'` columns: a file's records carry none.
fn file_has_no_metadata(events: &EventSchema) -> anyhow::Result<()> {
    let meta = paystream::decode::metadata_keys(events.arrow().fields());
    if let Some((_, column, key)) = meta.first() {
        bail!(
            "column `{column}` reads METADATA FROM '{key}', which a Kafka record has and a file's record does not; replay a copy of the query without the METADATA columns, or run it over the Kafka topic"
        );
    }
    Ok(())
}

/// The events of the CREATE SOURCE a query file starts with, for `--into`: a SELECT after it
/// may be there (the same file serves `replay --query`), and is not run.
fn declared_events(query: &std::path::Path) -> anyhow::Result<Arc<EventSchema>> {
    let text = std::fs::read_to_string(query)
        .with_context(|| format!("cannot read the query file {}", query.display()))?;
    let declared = match parse_replay_query(&text) {
        Ok(q) => q.source,
        Err(_) => Some(
            paystream::sql::query_file::parse_source_declaration(&text)
                .with_context(|| format!("in {}", query.display()))?,
        ),
    };
    match declared {
        Some(d) => {
            file_has_no_metadata(&d.events)?;
            Ok(d.events)
        }
        None => bail!(
            "{} does not start with CREATE SOURCE: with --into, --query names the declaration whose columns the file is decoded into",
            query.display()
        ),
    }
}

/// Waits for the run behind `handle`, with a progress bar on stderr when it is a terminal.
fn with_progress<T>(total: u64, handle: RunHandle<T>) -> anyhow::Result<T> {
    if !std::io::stderr().is_terminal() {
        return Ok(handle.join()?);
    }
    let bar = indicatif::ProgressBar::new(total);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        )
        .expect("valid template"),
    );
    let progress = handle.progress();
    while handle.state() != RunState::Ended {
        bar.set_position(progress.bytes_read.load(Ordering::Relaxed));
        std::thread::sleep(Duration::from_millis(100));
    }
    bar.finish_and_clear();
    Ok(handle.join()?)
}
