//! What the NATS source and sink share: a JetStream context on the connectors' runtime,
//! connected with backoff while the server is down, and errors that name the server.

use std::time::{Duration, Instant};

use async_nats::jetstream;

use super::runtime::block_on;
use super::secret::{mask_in, mask_url};
use crate::error::{Error, Result};

/// Where a NATS connector connects without `url`.
pub(crate) const DEFAULT_URL: &str = "nats://127.0.0.1:4222";

/// How long a connector waits for its server before the job fails.
pub(crate) const GIVE_UP_AFTER: Duration = Duration::from_secs(300);

/// What a URL's user info carries: `user:password`, or a token (`nats://TOKEN@host`).
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Credentials {
    User(String, String),
    Token(String),
}

/// `url` without its user info (async-nats does not take credentials from the URL), and the
/// credentials it carried.
pub(crate) fn split_credentials(url: &str) -> (String, Option<Credentials>) {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return (url.to_string(), None);
    };
    let rest = &url[scheme_end..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else {
        return (url.to_string(), None);
    };
    let address = format!("{}{}", &url[..scheme_end], &rest[at + 1..]);
    let info = &rest[..at];
    let credentials = match info.split_once(':') {
        Some((user, password)) => {
            Credentials::User(percent_decoded(user), percent_decoded(password))
        }
        None => Credentials::Token(percent_decoded(info)),
    };
    (address, Some(credentials))
}

/// `text` with its `%XX` escapes decoded (a URL's user info: `p%40ss` is `p@ss`).
fn percent_decoded(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (
            bytes[i],
            bytes.get(i + 1).copied().and_then(hex),
            bytes.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A NATS server, by URL.
#[derive(Debug, Clone)]
pub(crate) struct Server {
    /// `nats://[user:password@]host:port`.
    pub url: String,
}

impl Server {
    /// The URL for messages: password (or token) masked.
    pub(crate) fn describe(&self) -> String {
        let (address, credentials) = split_credentials(&self.url);
        match credentials {
            None => format!("nats {address}"),
            Some(Credentials::Token(_)) => {
                format!("nats {}", address.replacen("://", "://***@", 1))
            }
            Some(Credentials::User(..)) => format!("nats {}", mask_url(&self.url)),
        }
    }

    /// `text` with the URL's password or token masked.
    pub(crate) fn mask(&self, text: &str) -> String {
        let mut out = mask_in(text, &self.url);
        if let (_, Some(Credentials::Token(t))) = split_credentials(&self.url)
            && t.len() >= 3
        {
            out = out.replace(&t, "***");
        }
        out
    }

    /// An error of `what` against this server (password masked).
    pub(crate) fn error(&self, what: &str, e: &dyn std::fmt::Display) -> Error {
        Error::Output {
            target: self.describe(),
            source: std::io::Error::other(format!("{what}: {}", self.mask(&e.to_string()))),
        }
    }

    /// A JetStream context, retried with backoff while the server is unreachable (a warning a
    /// minute) for up to [`GIVE_UP_AFTER`]. The client reconnects by itself afterwards.
    pub(crate) fn jetstream(&self) -> Result<jetstream::Context> {
        let started = Instant::now();
        let mut backoff = Duration::from_millis(200);
        let (mut warned, mut wait) = (None::<Instant>, None);
        loop {
            let (address, credentials) = split_credentials(&self.url);
            let mut connect = async_nats::ConnectOptions::new()
                .connection_timeout(Duration::from_secs(5))
                .max_reconnects(None);
            connect = match credentials {
                Some(Credentials::User(user, password)) => {
                    connect.user_and_password(user, password)
                }
                Some(Credentials::Token(token)) => connect.token(token),
                None => connect,
            };
            // The context spawns onto the runtime: made inside it.
            let e = match block_on(async {
                tokio::time::timeout(Duration::from_secs(10), connect.connect(address.as_str()))
                    .await
                    .map(|c| c.map(jetstream::new))
            }) {
                Ok(Ok(js)) => return Ok(js),
                Ok(Err(e)) => e.to_string(),
                Err(_) => "timed out".to_string(),
            };
            // Refused credentials do not get better by waiting.
            if started.elapsed() > GIVE_UP_AFTER || e.to_lowercase().contains("authorization") {
                return Err(self.error("connect", &e));
            }
            let reason = self.mask(&e);
            super::waiting::note(&mut wait, &self.describe(), &reason);
            if crate::connector::waiting::give_up(&wait) {
                return Err(self.error(
                    "connect",
                    &format!("the job was stopped while the server was unreachable ({reason})"),
                ));
            }
            if warned.is_none_or(|w| w.elapsed() > Duration::from_secs(60)) {
                tracing::warn!(server = %self.describe(), "the server is unreachable, retrying: {reason}");
                warned = Some(Instant::now());
            }
            std::thread::sleep(backoff);
            backoff = (backoff * 2).min(Duration::from_secs(2));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_leave_the_url_and_every_message() {
        let (address, c) = split_credentials("nats://app:s3cret@127.0.0.1:4222");
        assert_eq!(address, "nats://127.0.0.1:4222");
        assert_eq!(c, Some(Credentials::User("app".into(), "s3cret".into())));
        let (_, c) = split_credentials("nats://app:p%40ss%2Fw@127.0.0.1:4222");
        assert_eq!(c, Some(Credentials::User("app".into(), "p@ss/w".into())));
        let token = Server {
            url: "nats://T0KEN42@127.0.0.1:4222".into(),
        };
        assert_eq!(token.describe(), "nats nats://***@127.0.0.1:4222");
        assert!(!token.mask("refused T0KEN42").contains("T0KEN42"));
        let user = Server {
            url: "nats://app:s3cret@127.0.0.1:4222".into(),
        };
        assert_eq!(user.describe(), "nats nats://app:***@127.0.0.1:4222");
        assert!(!format!("{}", user.error("connect", &"app:s3cret bad")).contains("s3cret"));
        assert_eq!(
            split_credentials("nats://127.0.0.1:4222"),
            ("nats://127.0.0.1:4222".into(), None)
        );
    }
}
