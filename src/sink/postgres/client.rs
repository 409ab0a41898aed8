//! The sink's connection: opened on first use, opened again after the server went away, and
//! waited for — with backoff, a warning a minute, the password masked — rather than failing
//! the job at the first refused connection.
//!
//! Every operation the sink runs through [`Connection::run`] can be tried again whole: staging
//! a checkpoint's rows is keyed by (sink, epoch, writer, seq) and skips what is there, and
//! applying an epoch is guarded by the epoch recorded in the same transaction.

use std::time::{Duration, Instant};

use postgres::{Client, NoTls};

use crate::connector::secret::{mask_in, mask_url};
use crate::error::{Error, Result};

/// How long a sink waits for its server before the job fails (it waits, holding back the
/// pipeline, while the server is down).
pub(super) const GIVE_UP_AFTER: Duration = Duration::from_secs(300);

/// A connection to the sink's database, by URL.
pub(super) struct Connection {
    url: String,
    client: Option<Client>,
}

impl Connection {
    /// A connection to `url`, not opened yet. Without a password in the URL, `PGPASSWORD` is
    /// used when set (credentials stay out of query files).
    pub(super) fn new(url: &str) -> Self {
        Connection {
            url: url.to_string(),
            client: None,
        }
    }

    /// The URL for messages: password masked.
    pub(super) fn describe(&self) -> String {
        mask_url(&self.url)
    }

    fn connect(&self) -> std::result::Result<Client, postgres::Error> {
        let mut config: postgres::Config = self.url.parse()?;
        if config.get_password().is_none()
            && let Ok(p) = std::env::var("PGPASSWORD")
        {
            config.password(p);
        }
        config.connect_timeout(Duration::from_secs(10));
        config.application_name("paystream");
        config.connect(NoTls)
    }

    /// Runs `op` on the connection, (re)connecting first when needed. A failure of the
    /// connection (refused, reset, the server restarting) is retried with backoff for up to
    /// [`GIVE_UP_AFTER`]; an error the server gives for the statement itself (a missing column,
    /// a constraint) fails at once, naming `what`.
    pub(super) fn run<T>(
        &mut self,
        what: &str,
        mut op: impl FnMut(&mut Client) -> std::result::Result<T, postgres::Error>,
    ) -> Result<T> {
        let started = Instant::now();
        let mut backoff = Duration::from_millis(100);
        let mut warned = None::<Instant>;
        loop {
            let attempt = match &mut self.client {
                Some(c) => op(c),
                None => self.connect().and_then(|mut c| {
                    let r = op(&mut c);
                    self.client = Some(c);
                    r
                }),
            };
            let e = match attempt {
                Ok(v) => return Ok(v),
                Err(e) => e,
            };
            let lost = e.is_closed()
                || e.as_db_error().is_none()
                || self.client.as_ref().is_none_or(|c| c.is_closed());
            if !lost {
                // The server answered: the statement itself failed (left in no transaction:
                // a transaction dropped unfinished rolls back).
                return Err(self.error(what, &explain(&e)));
            }
            self.client = None;
            if started.elapsed() > GIVE_UP_AFTER {
                return Err(self.error(
                    what,
                    &format!(
                        "{e}; gave up after {}s of retrying",
                        GIVE_UP_AFTER.as_secs()
                    ),
                ));
            }
            if warned.is_none_or(|w| w.elapsed() > Duration::from_secs(60)) {
                tracing::warn!(server = %self.describe(), "{}: the server is unreachable, retrying: {}", what, mask_in(&e.to_string(), &self.url));
                warned = Some(Instant::now());
            }
            std::thread::sleep(backoff);
            backoff = (backoff * 2).min(Duration::from_secs(2));
        }
    }

    /// An error of `what` against this server, password masked.
    pub(super) fn error(&self, what: &str, e: &dyn std::fmt::Display) -> Error {
        let detail = match e.to_string() {
            s if s.is_empty() => "unknown error".into(),
            s => s,
        };
        Error::Output {
            target: format!("postgres {}", self.describe()),
            source: std::io::Error::other(format!("{what}: {}", mask_in(&detail, &self.url))),
        }
    }
}

/// The text of a PostgreSQL error with the server's detail and hint, which the plain
/// `Display` leaves out ("db error").
pub(super) fn explain(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => {
            let mut s = db.message().to_string();
            if let Some(d) = db.detail() {
                s.push_str(&format!(" ({d})"));
            }
            if let Some(h) = db.hint() {
                s.push_str(&format!("; {h}"));
            }
            s
        }
        None => e.to_string(),
    }
}
