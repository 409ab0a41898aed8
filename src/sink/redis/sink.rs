//! [`RedisSink`]: each batch of rows is one pipeline of commands, acknowledged by the server
//! before the next; a connection lost is opened again and the pipeline sent again (backoff, up
//! to five minutes, the pipeline held back meanwhile).

use std::time::{Duration, Instant};

use datafusion::arrow::array::{Array, RecordBatch};

use super::Target;
use crate::connector::secret::{mask_in, mask_url};
use crate::error::{Error, Result};
use crate::sink::Sink;
use crate::sql::{CHANGELOG_OP, OP_DELETE};

/// How long the sink waits for its server before the job fails.
const GIVE_UP_AFTER: Duration = Duration::from_secs(300);

pub(super) struct RedisSink {
    url: String,
    client: redis::Client,
    connection: Option<redis::Connection>,
    target: Target,
}

impl RedisSink {
    pub(super) fn open(url: &str, target: Target) -> Result<Self> {
        let client = redis::Client::open(url).map_err(|e| error(url, "connect", &e))?;
        let mut sink = RedisSink {
            url: url.to_string(),
            client,
            connection: None,
            target,
        };
        // Fail (or wait) at the start, not at the first result.
        let mut ping = redis::pipe();
        ping.cmd("PING").ignore();
        sink.run("connect", &ping)?;
        Ok(sink)
    }

    /// Sends `pipe`, reconnecting and sending it again while the server is unreachable.
    fn run(&mut self, what: &str, pipe: &redis::Pipeline) -> Result<()> {
        let started = Instant::now();
        let mut backoff = Duration::from_millis(100);
        let (mut warned, mut wait) = (None::<Instant>, None);
        loop {
            let attempt = match &mut self.connection {
                Some(c) => pipe.exec(c),
                None => self
                    .client
                    .get_connection_with_timeout(Duration::from_secs(10))
                    .and_then(|mut c| {
                        let r = pipe.exec(&mut c);
                        self.connection = Some(c);
                        r
                    }),
            };
            let e = match attempt {
                Ok(()) => return Ok(()),
                Err(e) => e,
            };
            let lost = e.is_io_error()
                || e.is_connection_dropped()
                || e.is_connection_refusal()
                || e.is_timeout();
            if !lost || started.elapsed() > GIVE_UP_AFTER {
                return Err(error(&self.url, what, &e));
            }
            self.connection = None;
            let reason = mask_in(&e.to_string(), &self.url);
            crate::connector::waiting::note(
                &mut wait,
                &format!("redis {}", mask_url(&self.url)),
                &reason,
            );
            if crate::connector::waiting::give_up(&wait) {
                return Err(error(
                    &self.url,
                    what,
                    &format!("the job was stopped while the server was unreachable ({reason})"),
                ));
            }
            if warned.is_none_or(|w| w.elapsed() > Duration::from_secs(60)) {
                tracing::warn!(server = %mask_url(&self.url), "{what}: the server is unreachable, retrying: {reason}");
                warned = Some(Instant::now());
            }
            std::thread::sleep(backoff);
            backoff = (backoff * 2).min(Duration::from_secs(2));
        }
    }
}

fn error(url: &str, what: &str, e: &dyn std::fmt::Display) -> Error {
    Error::Output {
        target: format!("redis {}", mask_url(url)),
        source: std::io::Error::other(format!("{what}: {}", mask_in(&e.to_string(), url))),
    }
}

impl Sink for RedisSink {
    fn write_batch(&mut self, batch: &RecordBatch) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        let schema = batch.schema();
        match &self.target {
            Target::Stream { stream, maxlen } => {
                for row in 0..batch.num_rows() {
                    let cmd = pipe
                        .cmd("XADD")
                        .arg(stream)
                        .arg("MAXLEN")
                        .arg("~")
                        .arg(*maxlen)
                        .arg("*");
                    for (c, f) in schema.fields().iter().enumerate() {
                        if batch.column(c).is_valid(row) {
                            cmd.arg(f.name())
                                .arg(crate::sink::text_value(batch.column(c).as_ref(), row));
                        }
                    }
                    cmd.ignore();
                }
            }
            Target::Latest { prefix, key } => {
                let Ok(k) = schema.index_of(key) else {
                    return Err(error(
                        &self.url,
                        "write",
                        &format!("key = '{key}' is not a column of the query's results"),
                    ));
                };
                let op = schema.index_of(CHANGELOG_OP).ok();
                for row in 0..batch.num_rows() {
                    let mut name = prefix.as_bytes().to_vec();
                    name.extend(crate::sink::text_value(batch.column(k).as_ref(), row));
                    let deleted = op.is_some_and(|o| {
                        crate::sink::text_value(batch.column(o).as_ref(), row)
                            == OP_DELETE.as_bytes()
                    });
                    if deleted {
                        pipe.cmd("DEL").arg(name).ignore();
                    } else {
                        let mut json = Vec::with_capacity(256);
                        crate::sink::write_row(&mut json, batch, row);
                        pipe.cmd("SET").arg(name).arg(json).ignore();
                    }
                }
            }
        }
        self.run("write", &pipe)
    }

    fn write_record(&mut self, json: &[u8]) -> Result<()> {
        let mut pipe = redis::pipe();
        match &self.target {
            Target::Stream { stream, maxlen } => {
                pipe.cmd("XADD")
                    .arg(stream)
                    .arg("MAXLEN")
                    .arg("~")
                    .arg(*maxlen)
                    .arg("*")
                    .arg("record")
                    .arg(json)
                    .ignore();
            }
            Target::Latest { .. } => {
                return Err(error(
                    &self.url,
                    "write",
                    &"dead letters and late events need a stream sink (`stream = '…'`), not keys",
                ));
            }
        }
        self.run("write", &pipe)
    }

    fn flush(&mut self) -> Result<()> {
        // Every write was acknowledged before `write_batch` returned.
        Ok(())
    }
}
