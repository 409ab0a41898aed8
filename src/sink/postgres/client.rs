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

    /// The server for messages, without its password: rebuilt from the parsed settings, so a
    /// password written in any form the client accepts (a URL's user info or `?password=`, a
    /// `key=value` string) stays out.
    pub(super) fn describe(&self) -> String {
        describe(&self.url)
    }

    /// `text` with this server's password masked.
    fn mask(&self, text: &str) -> String {
        let mut out = mask_in(text, &self.url);
        if let Ok(c) = self.url.parse::<postgres::Config>()
            && let Some(p) = c.get_password().filter(|p| p.len() >= 3)
        {
            out = out.replace(&*String::from_utf8_lossy(p), "***");
        }
        out
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
        let (mut warned, mut wait) = (None::<Instant>, None);
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
            if !transient(&e) {
                // The server answered: the statement (or the login) itself failed, left in no
                // transaction: a transaction dropped unfinished rolls back.
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
            let reason = self.mask(&e.to_string());
            crate::connector::waiting::note(&mut wait, &self.describe(), &reason);
            if crate::connector::waiting::give_up(&wait) {
                return Err(self.error(
                    what,
                    &format!("the job was stopped while the server was unreachable ({reason})"),
                ));
            }
            if warned.is_none_or(|w| w.elapsed() > Duration::from_secs(60)) {
                tracing::warn!(server = %self.describe(), "{what}: the server is unreachable, retrying: {reason}");
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
            source: std::io::Error::other(format!("{what}: {}", self.mask(&detail))),
        }
    }
}

/// `url`'s server for messages: `postgres://user@host:port/database`, never its password.
pub(super) fn describe(url: &str) -> String {
    let Ok(c) = url.parse::<postgres::Config>() else {
        return mask_url(url);
    };
    let host = match c.get_hosts().first() {
        Some(postgres::config::Host::Tcp(h)) => h.clone(),
        Some(postgres::config::Host::Unix(p)) => p.display().to_string(),
        None => "localhost".into(),
    };
    let port = c.get_ports().first().copied().unwrap_or(5432);
    format!(
        "postgres://{}@{host}:{port}/{}",
        c.get_user().unwrap_or("?"),
        c.get_dbname().unwrap_or("")
    )
}

/// Whether `e` may pass on another try: the connection failed or was lost (no answer, SQLSTATE
/// class 08), the server is shutting down or starting (57P01–57P03), is out of connections
/// (53300), or the transaction lost a serialization race or a deadlock (class 40). A refused
/// login, a missing database or a statement the server rejects is not.
fn transient(e: &postgres::Error) -> bool {
    let Some(db) = e.as_db_error() else {
        return e.is_closed()
            || std::error::Error::source(e).is_some_and(|s| s.is::<std::io::Error>())
            || e.to_string().contains("connect");
    };
    let code = db.code().code();
    code.starts_with("08")
        || code.starts_with("40")
        || matches!(code, "57P01" | "57P02" | "57P03" | "53300")
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
