//! The binary's subcommands, one file each; `main.rs` only sets up logging and calls
//! [`dispatch`]. Each subcommand parses its flags, calls the library and prints.

pub(crate) mod bench;
pub(crate) mod common;
pub(crate) mod demo;
pub(crate) mod gen_cmd;
pub(crate) mod log_cmds;
pub(crate) mod replay;
pub(crate) mod run_cmd;
pub(crate) mod serve_cmd;
pub(crate) mod signals;
pub(crate) mod surprises;

use clap::{Parser, Subcommand};

/// paystream: event-time windowed stream SQL over payment events.
#[derive(Parser)]
#[command(name = "paystream", version, about, long_about = None)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Command,
    #[command(flatten)]
    pub(crate) data: self::log_cmds::DataDir,
}

#[derive(Subcommand)]
pub(crate) enum Command {
    /// Replay an event file (JSON Lines, CSV with header, or Parquet) through a stream query.
    ///
    /// Results are written as JSON Lines, one object per row, when each window closes (the
    /// watermark passes its end) and for all open windows at the end of the file.
    Replay(replay::ReplayArgs),
    /// Write deterministic synthetic payment events as JSON Lines, CSV or Parquet.
    ///
    /// The same seed gives the same events in every format: replaying the CSV or Parquet gives
    /// the results and counts of replaying the JSON Lines. Malformed records (--malformed) are
    /// written in each format as records `replay` dead-letters; Parquet's typed columns cannot
    /// hold every JSON mistake, so some of its rows are rejected for another reason (a null
    /// instead of a string amount, for one).
    Gen(gen_cmd::GenArgs),
    /// Start `serve` on a fresh embedded log with generated traffic and the shipped queries.
    ///
    /// Events arrive at a steady rate (with the generator's card-testing attacks and volume
    /// spikes), stamped with the wall clock, so windows close live; the dashboard shows the
    /// queries' results as they are emitted. Runs until Ctrl-C, or for --for.
    Demo(self::demo::DemoArgs),
    /// Run the service: submit stream queries over HTTP, ingest events, feed dashboards.
    ///
    /// An HTTP API (/api/queries, /api/topics, /api/sql; described at /api/openapi.json), a
    /// dashboard at /, Prometheus metrics at /metrics and the result tables over the Postgres
    /// wire protocol (--pg). Submitted queries are kept in the data directory; a restart
    /// resumes each from its latest checkpoint, exactly-once. Binds loopback by default.
    Serve(serve_cmd::ServeArgs),
    /// Measure throughput: each shipped query over a generated file, beside same-run baselines.
    Bench(bench::BenchArgs),
    /// Manage topics of the embedded log: create, describe, list.
    Topic {
        #[command(subcommand)]
        command: self::log_cmds::TopicCommand,
    },
    /// Append JSON Lines (a file or standard input) to a topic, one record per line.
    ///
    /// Each record's key is a JSON field (`card_id` by default), so every card's events stay in
    /// order in one partition; its timestamp is its `event_time`. Records are not validated
    /// here: the query reading the topic dead-letters invalid ones.
    Produce {
        #[command(flatten)]
        args: self::log_cmds::ProduceArgs,
    },
    /// Run a query file continuously: read its source topic, write results to its sink topics.
    ///
    /// Checkpoints every 10 s (--checkpoint-interval); results reach read_committed consumers
    /// when their checkpoint completes, exactly once. Runs until Ctrl-C or SIGTERM, then stops
    /// with a final checkpoint; the next run of the same file resumes from the latest one, also
    /// after a crash. Prints a status line every 5 s on stderr (--quiet: none); `paystream
    /// status` shows it from another shell. Result records in sink topics are stamped with the
    /// event time they stand for (a window's end), so `consume --from TIME` finds them by it.
    Run {
        #[command(flatten)]
        args: self::run_cmd::RunArgs,
    },
    /// Take a savepoint of a job: a named checkpoint to resume from with `run --from-savepoint`.
    ///
    /// A running job is asked (SIGUSR1) to take one at its next barrier; for a stopped job the
    /// latest checkpoint becomes the savepoint. Prints the savepoint's name.
    Savepoint {
        #[command(flatten)]
        args: self::run_cmd::SavepointArgs,
    },
    /// Show the jobs of the data directory: running or stopped, events/s, watermark, lag,
    /// results, dead letters, late events and the last checkpoint.
    Status {
        #[command(flatten)]
        args: self::run_cmd::StatusArgs,
    },
    /// Print a topic's records, one value a line; tails new records until Ctrl-C.
    Consume {
        #[command(flatten)]
        args: self::log_cmds::ConsumeArgs,
    },
    /// Consumer groups of a topic: list them with their lag, or reset their offsets.
    Group {
        #[command(subcommand)]
        command: self::log_cmds::GroupCommand,
    },
}

/// Runs the parsed command.
pub(crate) fn dispatch(cli: Cli) -> anyhow::Result<()> {
    signals::quiet_on_closed_stdout(&cli.command);
    match cli.command {
        Command::Replay(a) => replay::replay(a, &cli.data),
        Command::Gen(a) => gen_cmd::gen_cmd(a),
        Command::Demo(a) => demo::demo(&cli.data, a),
        Command::Serve(a) => serve_cmd::serve(&cli.data, a),
        Command::Bench(a) => bench::bench(a),
        Command::Topic { command } => log_cmds::topic(&cli.data, command),
        Command::Produce { args } => log_cmds::produce(&cli.data, args),
        Command::Consume { args } => log_cmds::consume(&cli.data, args),
        Command::Group { command } => log_cmds::group(&cli.data, command),
        Command::Run { args } => run_cmd::run(&cli.data, args),
        Command::Savepoint { args } => run_cmd::savepoint(&cli.data, args),
        Command::Status { args } => run_cmd::status(&cli.data, args),
    }
}
