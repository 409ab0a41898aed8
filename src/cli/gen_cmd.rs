//! `paystream gen`: deterministic synthetic payment events as JSON Lines, CSV or Parquet.

use std::path::PathBuf;

use std::io::IsTerminal;

use anyhow::{Context, bail};
use paystream::Format;
use paystream::generate::{GenConfig, Lifecycle, Scenarios};
use paystream::time::parse_rfc3339_millis;

use super::common::duration;

#[derive(clap::Args)]
pub(crate) struct GenArgs {
    /// Number of records to write (lines; rows of Parquet), duplicates and malformed included.
    #[arg(long, default_value_t = 10_000)]
    events: u64,
    /// Random seed: the same seed and options give the same bytes.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Output file; standard output when absent.
    #[arg(long, short)]
    output: Option<PathBuf>,
    /// Output format: json (JSON Lines), csv (with a header row) or parquet. Default: from the
    /// --output extension (.jsonl, .json, .csv, .parquet), else json. Parquet needs --output or
    /// a redirected standard output: it is binary and its footer is written last.
    #[arg(long)]
    format: Option<String>,
    /// Event time of the first event (RFC 3339).
    #[arg(long, default_value = "2026-11-01T00:00:00Z")]
    start: String,
    /// New authorizations per second of event time.
    #[arg(long, default_value_t = 1000.0)]
    rate: f64,
    /// Number of merchants.
    #[arg(long, default_value_t = 200)]
    merchants: u32,
    /// Number of cards.
    #[arg(long, default_value_t = 50_000)]
    cards: u32,
    /// Maximum out-of-order delivery delay.
    #[arg(long, default_value = "2s")]
    disorder: String,
    /// Fraction of events delivered twice (delayed duplicates).
    #[arg(long, default_value_t = 0.005)]
    duplicates: f64,
    /// Fraction of records that are malformed or invalid.
    #[arg(long, default_value_t = 0.0)]
    malformed: f64,
    /// When (after --start) a merchant's volume spikes for a minute; `none` to disable.
    #[arg(long, default_value = "10m")]
    spike_at: String,
    /// Card-testing bursts and enumeration attacks: `on`, or `none` for a clean stream (to
    /// check that a rule raises nothing without its pattern).
    #[arg(long, default_value = "on")]
    attacks: String,
    /// Patterns for the query library's rules, comma-separated (default none):
    /// small-then-large (a card's few small authorizations, then one over 100 times larger
    /// within a minute), refund-after-chargeback (half of the chargebacks not reversed are
    /// followed by a refund of the same payment), ticket-shift (merchant m_0003's amounts grow
    /// eightfold 15 minutes after --start), late-money (one in a hundred captures and refunds
    /// arrives 5-15 minutes after it happened with --lifecycle fast, 1-3 days with realistic),
    /// dispute-wave (merchant m_0005's captures are charged back one time in ten from 10
    /// minutes after --start), decline-wave (merchant m_0009's authorizations are declined six
    /// times in ten for 2 minutes from 8 minutes after --start), new-country (six in ten of
    /// merchant m_0007's authorizations come from IPs abroad, mostly in countries no card is
    /// from, for 4 minutes from 12 minutes after --start); or all. Without any, a seed gives
    /// the bytes it always gave.
    #[arg(long, default_value = "none")]
    scenarios: String,
    /// Lifecycle lags: fast (seconds, for tests and demos) or realistic (minutes to days).
    #[arg(long, default_value = "fast")]
    lifecycle: String,
}

fn gen_config(a: &GenArgs) -> anyhow::Result<GenConfig> {
    Ok(GenConfig {
        events: a.events,
        seed: a.seed,
        start: parse_rfc3339_millis(&a.start).with_context(|| {
            format!(
                "invalid --start {:?}: use RFC 3339, e.g. 2026-11-01T00:00:00Z",
                a.start
            )
        })?,
        rate: a.rate,
        merchants: a.merchants.max(1),
        cards: a.cards.max(1),
        disorder_ms: duration("--disorder", &a.disorder)?,
        duplicate_rate: a.duplicates.clamp(0.0, 1.0),
        malformed_rate: a.malformed.clamp(0.0, 1.0),
        spike_at_ms: match a.spike_at.as_str() {
            "none" => None,
            s => Some(duration("--spike-at", s)?),
        },
        attacks: match a.attacks.as_str() {
            "on" => true,
            "none" | "off" => false,
            other => bail!("unknown --attacks {other:?}: use on or none"),
        },
        scenarios: Scenarios::parse(&a.scenarios)
            .map_err(|e| anyhow::anyhow!("--scenarios: {e}"))?,
        lifecycle: match a.lifecycle.as_str() {
            "fast" => Lifecycle::Fast,
            "realistic" => Lifecycle::Realistic,
            other => bail!("unknown --lifecycle {other:?}: use fast or realistic"),
        },
    })
}

pub(crate) fn gen_cmd(a: GenArgs) -> anyhow::Result<()> {
    // What `replay` would read the output as: an explicit --format that contradicts the
    // extension would give a file replay then misreads, so it is refused.
    let by_extension = a.output.as_deref().and_then(Format::from_path);
    let format = match a.format.as_deref() {
        Some(f) => {
            let format = Format::from_name(f)
                .with_context(|| format!("unknown --format {f:?}: use json, csv or parquet"))?;
            if let (Some(p), Some(ext)) = (&a.output, by_extension)
                && ext != format
            {
                let name = match ext {
                    Format::JsonLines => "json",
                    Format::Csv => "csv",
                    Format::Parquet => "parquet",
                };
                bail!(
                    "--format {f} contradicts the extension of {}, which replay reads as {name}: \
                     change one of them",
                    p.display()
                );
            }
            format
        }
        None => by_extension.unwrap_or(Format::JsonLines),
    };
    if format == Format::Parquet && a.output.is_none() && std::io::stdout().is_terminal() {
        bail!(
            "Parquet is binary and cannot be written to a terminal: pass --output FILE.parquet \
             (or redirect standard output to a file)"
        );
    }
    let cfg = gen_config(&a)?;
    let stats = match &a.output {
        Some(p) => {
            let f = std::fs::File::create(p)
                .with_context(|| format!("cannot create {}", p.display()))?;
            let mut w = std::io::BufWriter::new(f);
            let s = paystream::generate::generate_as(&cfg, format, &mut w)?;
            std::io::Write::flush(&mut w)?;
            s
        }
        None => {
            // `Stdout`, not its lock: the Parquet writer needs a `Send` destination.
            let mut w = std::io::BufWriter::with_capacity(1 << 16, std::io::stdout());
            let s = paystream::generate::generate_as(&cfg, format, &mut w)?;
            std::io::Write::flush(&mut w)?;
            s
        }
    };
    eprintln!(
        "generated lines={} events={} duplicates={} malformed={}",
        stats.lines, stats.events, stats.duplicates, stats.malformed
    );
    Ok(())
}
