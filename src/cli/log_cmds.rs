//! `paystream topic create|describe|list|compact`, `paystream produce`, `paystream consume`.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use paystream::log::{
    Cleanup, FsyncPolicy, Log, Producer, Retention, StartAt, TopicConfig, TopicConsumer,
};
use paystream::time::{parse_duration_millis, parse_rfc3339_millis};

/// Where the embedded log keeps its topics.
#[derive(clap::Args, Clone)]
pub(crate) struct DataDir {
    /// Directory of the embedded log (topics, segments, consumer groups).
    #[arg(long, default_value = "paystream-data", global = true)]
    pub(crate) data_dir: PathBuf,
}

#[derive(clap::Subcommand)]
pub(crate) enum TopicCommand {
    /// Create a topic.
    Create(TopicCreateArgs),
    /// Show a topic's partitions, offsets, sizes, retention and consumer-group lag.
    Describe {
        /// The topic.
        topic: String,
    },
    /// List the topics.
    List,
    /// Delete a topic: its records, segments and consumer groups (refused while it is written).
    Delete {
        /// The topic.
        topic: String,
    },
    /// Compact a compacted topic now (it also runs by itself as segments fill up); refused
    /// while another process writes the topic.
    Compact {
        /// The topic (created with --compact).
        topic: String,
    },
}

#[derive(clap::Subcommand)]
pub(crate) enum GroupCommand {
    /// List the consumer groups of a topic with their lag.
    List {
        /// The topic.
        topic: String,
    },
    /// Move a group's committed offsets (the group's consumers should be stopped).
    Reset {
        /// The topic.
        topic: String,
        /// The consumer group (a job's group is the job's name).
        group: String,
        /// `earliest`, `latest`, an offset (every partition), or an RFC 3339 time (the first
        /// record at or after it).
        #[arg(long)]
        to: String,
    },
}

#[derive(clap::Args)]
pub(crate) struct TopicCreateArgs {
    /// The topic name (letters, digits, '.', '_', '-').
    topic: String,
    /// Number of partitions (records with the same key always share one).
    #[arg(long, default_value_t = 1)]
    partitions: u32,
    /// Segment files roll at this size, e.g. 64MiB.
    #[arg(long, default_value = "64MiB")]
    segment_bytes: String,
    /// Delete segments whose last write is older than this (e.g. 7d, 12h), or `forever`.
    #[arg(long, default_value = "7d")]
    retention: String,
    /// Keep at most this many bytes per partition (e.g. 10GiB), or `unlimited`.
    #[arg(long, default_value = "unlimited")]
    retention_bytes: String,
    /// Refuse records (key plus value) larger than this, e.g. 1MiB; `max` for the format's
    /// limit (64 MiB less framing). A producer stops at such a record with an error.
    #[arg(long, default_value = "max")]
    max_record_bytes: String,
    /// Keep the latest record per key instead of deleting old segments: for changelog sinks (a
    /// running GROUP BY's rows, keyed by the group key) and topics reference tables read.
    /// Records without a key are all kept; a record whose value is empty or `null` deletes its
    /// key. Retention does not apply, so no key's latest record expires.
    #[arg(long, conflicts_with_all = ["retention", "retention_bytes"])]
    compact: bool,
    /// With --compact: how long a delete (an empty or `null` value) is kept after its segment's
    /// last write, e.g. 24h (the default), so consumers that were away for less see it.
    #[arg(long, requires = "compact")]
    delete_retention: Option<String>,
}

#[derive(clap::Args)]
pub(crate) struct ProduceArgs {
    /// The topic (created with one partition if it does not exist).
    topic: String,
    /// JSON Lines to read; standard input when absent or `-`.
    file: Option<PathBuf>,
    /// JSON field whose value is the record key (picks the partition); `none` for round-robin.
    #[arg(long, default_value = "card_id")]
    key: String,
    /// When appends are made durable: always (before acknowledging), interval (every second),
    /// or never (left to the OS).
    #[arg(long, default_value = "interval")]
    fsync: String,
    /// Exit non-zero when a record was refused for holding a card number (by default such
    /// records are counted as `screened` and reported, and the exit is 0).
    #[arg(long)]
    strict: bool,
    /// Write a tombstone for this record key (a `null` value keyed by it), which deletes the
    /// key from a table read from the topic and, once compacted, from the topic; repeatable.
    /// With --delete and no FILE, standard input is not read.
    #[arg(long, value_name = "KEY")]
    delete: Vec<String>,
}

#[derive(clap::Args)]
pub(crate) struct ConsumeArgs {
    /// The topic.
    topic: String,
    /// Consumer group: starts from its committed offsets and commits what it printed.
    #[arg(long)]
    group: Option<String>,
    /// Where to start: earliest, latest, an offset, or an RFC 3339 time. Default: the group's
    /// committed offsets, else earliest.
    #[arg(long)]
    from: Option<String>,
    /// Exit once every partition's end (as of the start) is reached, instead of tailing.
    #[arg(long)]
    until_end: bool,
    /// Stop after this many records.
    #[arg(long)]
    max_records: Option<u64>,
    /// Print `partition offset value` instead of the bare value.
    #[arg(long)]
    with_offsets: bool,
    /// Also show records of transactions not committed yet (which a recovery may abort).
    /// By default a consumer reads committed records only.
    #[arg(long)]
    read_uncommitted: bool,
    /// Step over damaged batches (failing their checksum) instead of stopping with an error;
    /// each skip is reported on stderr with the file, byte position and offsets lost.
    #[arg(long)]
    skip_corrupt: bool,
}

pub(crate) fn parse_bytes(what: &str, s: &str) -> anyhow::Result<u64> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (n, unit) = t.split_at(split);
    let n: u64 = n
        .parse()
        .with_context(|| format!("invalid {what} {s:?}: use e.g. 64MiB, 1GiB or 1048576"))?;
    let mult = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        _ => bail!("invalid {what} {s:?}: unknown unit {unit:?} (use B, KiB, MiB, GiB, TiB)"),
    };
    n.checked_mul(mult)
        .with_context(|| format!("{what} {s:?} is too large"))
}

fn fmt_age(ms: u64) -> String {
    match ms {
        m if m % 86_400_000 == 0 => format!("{}d", m / 86_400_000),
        m if m % 3_600_000 == 0 => format!("{}h", m / 3_600_000),
        m if m % 60_000 == 0 => format!("{}m", m / 60_000),
        m => format!("{m}ms"),
    }
}

pub(crate) fn topic(data: &DataDir, cmd: TopicCommand) -> anyhow::Result<()> {
    let log = Log::new(&data.data_dir);
    match cmd {
        TopicCommand::Create(a) => {
            let max_age_ms = match a.retention.as_str() {
                "forever" | "none" => None,
                s => Some(
                    parse_duration_millis(s)
                        .map_err(|e| anyhow::anyhow!("invalid --retention: {e}"))?
                        as u64,
                ),
            };
            let max_bytes = match a.retention_bytes.as_str() {
                "unlimited" | "none" => None,
                s => Some(parse_bytes("--retention-bytes", s)?),
            };
            let max_record_bytes = match a.max_record_bytes.as_str() {
                "max" => None,
                s => Some(parse_bytes("--max-record-bytes", s)?),
            };
            let delete_retention_ms = match &a.delete_retention {
                None => paystream::log::DEFAULT_DELETE_RETENTION_MS,
                Some(s) => parse_duration_millis(s)
                    .map_err(|e| anyhow::anyhow!("invalid --delete-retention: {e}"))?
                    as u64,
            };
            let config = TopicConfig {
                partitions: a.partitions,
                segment_bytes: parse_bytes("--segment-bytes", &a.segment_bytes)?.max(4096),
                // A compacted topic is bounded by its keys, never by age or size.
                retention: if a.compact {
                    Retention::default()
                } else {
                    Retention {
                        max_age_ms,
                        max_bytes,
                    }
                },
                max_record_bytes,
                cleanup: if a.compact {
                    Cleanup::Compact
                } else {
                    Cleanup::Delete
                },
                delete_retention_ms,
            };
            log.create_topic(&a.topic, &config)?;
            println!(
                "created topic {} with {} partition{} in {}",
                a.topic,
                a.partitions,
                if a.partitions == 1 { "" } else { "s" },
                data.data_dir.display()
            );
        }
        TopicCommand::Describe { topic } => {
            let c = log.topic_config(&topic)?;
            let stats = log.partition_stats(&topic)?;
            let retention = format!(
                "{}, {}",
                c.retention
                    .max_age_ms
                    .map_or("age forever".into(), |a| format!("age {}", fmt_age(a))),
                c.retention
                    .max_bytes
                    .map_or("size unlimited".into(), |b| format!(
                        "{b} bytes per partition"
                    )),
            );
            println!("topic: {topic}");
            println!("partitions: {}", c.partitions);
            println!("segment_bytes: {}", c.segment_bytes);
            let total: u64 = stats.iter().map(|s| s.end_offset - s.start_offset).sum();
            match c.cleanup {
                Cleanup::Delete => {
                    println!("cleanup: delete");
                    println!("retention: {retention}");
                }
                Cleanup::Compact => {
                    println!("cleanup: compact");
                    println!("delete_retention: {}", fmt_age(c.delete_retention_ms));
                    println!("retention: not applied (compacted: the latest record per key stays)");
                }
            }
            println!("max_record_bytes: {}", c.record_limit());
            let bytes: u64 = stats.iter().map(|s| s.bytes).sum();
            match c.cleanup {
                Cleanup::Delete => println!("records: {total}"),
                // Offsets and lag count the records compaction removed too, as Kafka's do.
                Cleanup::Compact => println!("records: at most {total} (compaction removes some)"),
            }
            println!("bytes: {bytes}");
            println!(
                "{:>9} {:>14} {:>14} {:>14} {:>14} {:>8}",
                "partition", "start_offset", "end_offset", "committed", "bytes", "segments"
            );
            for s in &stats {
                // `committed` is the read_committed end of a sink topic; `-` when the partition
                // is not written transactionally (everything is visible).
                let committed = s.committed.map_or("-".to_string(), |c| c.to_string());
                println!(
                    "{:>9} {:>14} {:>14} {:>14} {:>14} {:>8}",
                    s.partition, s.start_offset, s.end_offset, committed, s.bytes, s.segments
                );
            }
            let groups = log.groups(&topic);
            if groups.is_empty() {
                println!("groups: none");
            }
            for g in groups {
                let lags = group_lag(&log, &topic, &g)?;
                let parts: Vec<String> = lags.iter().map(|(p, _, l)| format!("p{p}={l}")).collect();
                println!(
                    "group {g}: lag {} ({})",
                    lags.iter().map(|(_, _, l)| l).sum::<u64>(),
                    parts.join(" ")
                );
            }
        }
        TopicCommand::Delete { topic } => {
            log.delete_topic(&topic)?;
            println!("deleted topic {topic} in {}", data.data_dir.display());
        }
        TopicCommand::Compact { topic } => {
            let s = log.compact_topic(&topic)?;
            println!(
                "compacted topic {topic}: rewrote {} of {} sealed segments, kept {} records, removed {} ({} tombstones), {} -> {} bytes",
                s.segments_rewritten,
                s.segments,
                s.records_kept,
                s.records_removed,
                s.tombstones_removed,
                s.bytes_before,
                s.bytes_after
            );
        }
        TopicCommand::List => {
            for t in log.topics()? {
                let c = log.topic_config(&t)?;
                println!("{t}\tpartitions={}", c.partitions);
            }
        }
    }
    Ok(())
}

pub(crate) fn fsync_policy(s: &str) -> anyhow::Result<FsyncPolicy> {
    FsyncPolicy::parse(s)
        .with_context(|| format!("invalid --fsync {s:?}: use always, interval or never"))
}

pub(crate) fn produce(data: &DataDir, a: ProduceArgs) -> anyhow::Result<()> {
    let log = Log::new(&data.data_dir);
    let fsync = fsync_policy(&a.fsync)?;
    let file = a.file.as_ref().filter(|p| p.as_os_str() != "-");
    if let Some(p) = file
        && let Some(ext @ ("csv" | "parquet")) = p.extension().and_then(|e| e.to_str())
    {
        bail!(
            "{} is {ext}, but `produce` stores JSON Lines records as they are; load it with `paystream replay {} --into {}`, which turns its rows into JSON events",
            p.display(),
            p.display(),
            a.topic
        );
    }
    let mut input: Box<dyn Read> = match file {
        Some(p) => Box::new(
            std::fs::File::open(p).with_context(|| format!("cannot open {}", p.display()))?,
        ),
        None => Box::new(std::io::stdin().lock()),
    };
    if let Err(paystream::log::LogError::NoSuchTopic { .. }) = log.topic_config(&a.topic) {
        log.ensure_topic(&a.topic, &TopicConfig::default())?;
        eprintln!(
            "note: topic {} did not exist; created it with 1 partition (use `paystream topic create {} --partitions N` first for more)",
            a.topic, a.topic
        );
    }
    let writer = log.writer(&a.topic, fsync)?;
    let partitions = writer.partitions();
    let key = (a.key != "none").then_some(a.key.as_str());
    let mut producer = Producer::new(writer, key);
    let started = Instant::now();
    let stop = super::signals::stop_on_signal();
    let mut screened = ScreenedLines::default();
    for k in &a.delete {
        if let paystream::log::Sent::Screened = producer.send_tombstone(k.as_bytes())? {
            // Never echoed: it looks like a card number.
            eprintln!("refused a --delete key: it looks like a card number (keys are tokens)");
        }
    }
    let pumped = match (a.delete.is_empty(), file) {
        (false, None) => Ok(0),
        _ => pump_lines(&mut input, &mut producer, &stop, &mut screened),
    };
    // What came before an oversized record (or a read error) is still appended.
    let stored = producer.produced();
    let unkeyed = producer.unkeyed();
    producer.finish()?;
    pumped?;
    let secs = started.elapsed().as_secs_f64();
    screened.report(a.strict)?;
    if unkeyed > 0 && partitions > 1 {
        eprintln!(
            "note: {unkeyed} of {stored} records have no `{}` field; they were spread round-robin over the partitions, so events that belong together may be read from different partitions; choose the key with --key FIELD (or --key none to spread every record)",
            a.key
        );
    }
    super::common::finish_summary(
        format!(
            "produced records={stored} topic={} partitions={partitions} wall={secs:.3}s records_per_sec={:.0} screened={}",
            a.topic,
            stored as f64 / secs.max(1e-9),
            screened.count
        ),
        &stop,
    )
}

/// Input lines refused at the log's door for holding a card number.
#[derive(Default)]
pub(crate) struct ScreenedLines {
    count: u64,
    first: Vec<u64>,
}

impl ScreenedLines {
    fn add(&mut self, line: u64) {
        self.count += 1;
        if self.first.len() < 10 {
            self.first.push(line);
        }
    }

    /// Warns about screened records (an error with `strict`).
    pub(crate) fn report(&self, strict: bool) -> anyhow::Result<()> {
        if self.count == 0 {
            return Ok(());
        }
        let lines: Vec<String> = self.first.iter().map(u64::to_string).collect();
        let more = if self.count > self.first.len() as u64 {
            ", ..."
        } else {
            ""
        };
        let msg = format!(
            "{} record{} held a card number and {} not stored (line {}{more}); no topic may hold a card number: tokenise card data before producing",
            self.count,
            if self.count == 1 { "" } else { "s" },
            if self.count == 1 { "was" } else { "were" },
            lines.join(", ")
        );
        if strict {
            bail!("{msg} (--strict)");
        }
        eprintln!("warning: {msg}");
        Ok(())
    }
}

/// Reads lines from `input` into the producer until the end (or a stop signal); returns the
/// number of lines read. Records refused for holding a card number are noted in `screened`.
/// `produce`'s loop ([`paystream::log::pump_lines`]), the screened lines counted for the warning.
pub(crate) fn pump_lines(
    input: &mut dyn Read,
    producer: &mut Producer,
    stop: &std::sync::atomic::AtomicBool,
    screened: &mut ScreenedLines,
) -> anyhow::Result<u64> {
    Ok(paystream::log::pump_lines(
        input,
        producer,
        stop,
        &mut |line| screened.add(line),
    )?)
}

pub(crate) fn consume(data: &DataDir, a: ConsumeArgs) -> anyhow::Result<()> {
    let log = Log::new(&data.data_dir);
    let opts = paystream::log::ReadTopic {
        start: a
            .from
            .as_deref()
            .map(|s| start_at("--from", s))
            .transpose()?,
        isolation: if a.read_uncommitted {
            paystream::log::Isolation::ReadUncommitted
        } else {
            paystream::log::Isolation::ReadCommitted
        },
        skip_corrupt: a.skip_corrupt,
        until_end: a.until_end,
        max_records: a.max_records,
        group: a.group.clone(),
    };
    let stop = super::signals::stop_on_signal();
    let out = std::cell::RefCell::new(std::io::BufWriter::with_capacity(
        1 << 16,
        std::io::stdout().lock(),
    ));
    let end = paystream::log::read_topic(
        &log,
        &a.topic,
        &opts,
        &stop,
        |p, r| {
            let mut out = out.borrow_mut();
            if a.with_offsets {
                write!(out, "{p} {} ", r.offset)?;
            }
            out.write_all(r.value)?;
            out.write_all(b"\n")
        },
        || out.borrow_mut().flush(),
    )
    .map_err(|e| match e {
        paystream::log::LogError::Output(e) => {
            anyhow::Error::new(e).context("cannot write to standard output")
        }
        e => e.into(),
    })?;
    if !end.output_closed {
        let _ = out.borrow_mut().flush();
    }
    Ok(())
}

/// `replay FILE --into TOPIC`: JSON Lines are produced line by line, as `produce` does; CSV and
/// Parquet rows are decoded and produced as JSON events (keyed by `card_id`), with invalid rows
/// sent to `--dead-letter`.
pub(crate) fn load_file(
    data: &DataDir,
    file: &std::path::Path,
    format: Option<&str>,
    events: &std::sync::Arc<paystream::EventSchema>,
    topic: &str,
    dead_letter: Option<&std::path::Path>,
    strict: bool,
) -> anyhow::Result<()> {
    use paystream::Format;
    let format = match format {
        Some(f) => Format::from_name(f)
            .with_context(|| format!("unknown --format {f:?}: use json, csv or parquet"))?,
        None => Format::from_path(file).with_context(|| {
            format!(
                "cannot tell the format of {} from its extension; pass --format",
                file.display()
            )
        })?,
    };
    if !file.exists() {
        bail!("the event file {} does not exist", file.display());
    }
    let log = Log::new(&data.data_dir);
    if let Err(paystream::log::LogError::NoSuchTopic { .. }) = log.topic_config(topic) {
        log.ensure_topic(topic, &TopicConfig::default())?;
        eprintln!("note: topic {topic} did not exist; created it with 1 partition");
    }
    let writer = log.writer(topic, FsyncPolicy::Interval(Duration::from_secs(1)))?;
    let started = Instant::now();
    // One key's events share a partition: the card's, or a declared source's id.
    let key = match events.is_declared() {
        false => Some("card_id".to_string()),
        true => events
            .id_column()
            .map(|c| events.arrow().field(c).name().clone()),
    };
    let mut producer = Producer::new(writer, key.as_deref());
    if format == Format::JsonLines {
        let mut f =
            std::fs::File::open(file).with_context(|| format!("cannot open {}", file.display()))?;
        let stop = super::signals::stop_on_signal();
        let mut screened = ScreenedLines::default();
        let pumped = pump_lines(&mut f, &mut producer, &stop, &mut screened);
        let stored = producer.produced();
        producer.finish()?;
        pumped?;
        screened.report(false)?;
        return super::common::finish_summary(
            format!(
                "produced records={stored} topic={topic} wall={:.3}s screened={}",
                started.elapsed().as_secs_f64(),
                screened.count
            ),
            &stop,
        );
    }
    let stop = super::signals::stop_on_signal();
    let (summary, producer) = paystream::job::load_events(
        file,
        format,
        events,
        topic,
        producer,
        super::common::output_sink("--dead-letter", dead_letter)?,
        std::sync::Arc::clone(&stop),
    )?;
    producer.finish()?;
    super::common::finish_summary(format!("{} topic={topic}", summary.line()), &stop)?;
    let hints = super::surprises::Hints {
        dead_letters: match dead_letter {
            Some(p) => format!("They are in {} with reason and row.", p.display()),
            None => {
                "Re-run with --dead-letter FILE to see each one with its reason and row.".into()
            }
        },
        late: String::new(),
    };
    super::surprises::report(&summary, &hints, strict)
}

/// Where `--from`/`--to` points: earliest, latest, an offset or an RFC 3339 time.
fn start_at(flag: &str, s: &str) -> anyhow::Result<StartAt> {
    Ok(match s {
        "earliest" => StartAt::Earliest,
        "latest" => StartAt::Latest,
        s if s.bytes().all(|b| b.is_ascii_digit()) => StartAt::Offset(s.parse()?),
        s => StartAt::Timestamp(parse_rfc3339_millis(s).with_context(|| {
            format!("invalid {flag} {s:?}: use earliest, latest, an offset or an RFC 3339 time")
        })?),
    })
}

/// Per partition: the group's committed offset (or the first stored) and its lag.
fn group_lag(log: &Log, topic: &str, group: &str) -> anyhow::Result<Vec<(u32, u64, u64)>> {
    let o = log.group_offsets(topic, group)?;
    Ok(log
        .partition_stats(topic)?
        .iter()
        .map(|s| {
            let at = o
                .offsets
                .get(&s.partition)
                .copied()
                .unwrap_or(s.start_offset)
                .max(s.start_offset);
            (s.partition, at, s.end_offset.saturating_sub(at))
        })
        .collect())
}

pub(crate) fn group(data: &DataDir, cmd: GroupCommand) -> anyhow::Result<()> {
    let log = Log::new(&data.data_dir);
    match cmd {
        GroupCommand::List { topic } => {
            log.topic_config(&topic)?;
            for g in log.groups(&topic) {
                let lag = group_lag(&log, &topic, &g)?;
                let parts: Vec<String> = lag
                    .iter()
                    .map(|(p, at, l)| format!("p{p}={at} (lag {l})"))
                    .collect();
                let total: u64 = lag.iter().map(|(_, _, l)| l).sum();
                println!("{g}\tlag={total}\t{}", parts.join(" "));
            }
        }
        GroupCommand::Reset { topic, group, to } => {
            let start = start_at("--to", &to)?;
            let consumer = TopicConsumer::open(&log, &topic, &start)?;
            log.commit_offsets(&topic, &group, &consumer.positions())?;
            let lag = group_lag(&log, &topic, &group)?;
            let parts: Vec<String> = lag.iter().map(|(p, at, _)| format!("p{p}={at}")).collect();
            println!(
                "group {group} on {topic} reset to {to}: {} (lag {})",
                parts.join(" "),
                lag.iter().map(|(_, _, l)| l).sum::<u64>()
            );
        }
    }
    Ok(())
}
