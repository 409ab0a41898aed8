//! Connection strings without their secrets, for messages and logs.
//!
//! A broker or database URL may carry a password (`postgres://app:s3cret@db/payments`). Every
//! message that names a server names it through [`mask_url`], so a password never reaches a
//! log, an error or the dead-letter output.

/// `url` with the password of its user info replaced by `***`
/// (`postgres://app:***@db:5432/payments`), and any `password=…` setting (a query parameter, a
/// `key=value` connection string) too; a URL without one is returned as it is.
pub(crate) fn mask_url(url: &str) -> String {
    let url = &mask_settings(url);
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.to_string();
    };
    let rest = &url[scheme_end..];
    // The user info ends at the last `@` before the path (a password may hold an `@`).
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else {
        return url.to_string();
    };
    match rest[..at].find(':') {
        Some(colon) => format!(
            "{}{}:***{}",
            &url[..scheme_end],
            &rest[..colon],
            &rest[at..]
        ),
        None => url.to_string(),
    }
}

/// `text` with the value of every `password=` setting masked (up to `&`, a space or the end).
fn mask_settings(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.to_ascii_lowercase().find("password=") {
        let value = at + "password=".len();
        out.push_str(&rest[..value]);
        let end = rest[value..]
            .find(['&', ' '])
            .map_or(rest.len(), |i| value + i);
        if end > value {
            out.push_str("***");
        }
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

/// `text` with every occurrence of `url`'s password masked: for an error a client library
/// formatted, which may quote the connection string.
pub(crate) fn mask_in(text: &str, url: &str) -> String {
    let masked = mask_url(url);
    if masked == url {
        return text.to_string();
    }
    let mut out = text.replace(url, &masked);
    if let Some(password) = password_of(url).filter(|p| p.len() >= 3) {
        out = out.replace(password, "***");
    }
    out
}

/// The password in `url`'s user info, if any.
fn password_of(url: &str) -> Option<&str> {
    let rest = &url[url.find("://")? + 3..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let at = rest[..authority_end].rfind('@')?;
    let colon = rest[..at].find(':')?;
    Some(&rest[colon + 1..at])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_masked_and_nothing_else_changes() {
        assert_eq!(
            mask_url("postgres://app:s3cret@db:5432/payments"),
            "postgres://app:***@db:5432/payments"
        );
        assert_eq!(
            mask_url("amqp://guest:p@ss@127.0.0.1:5672/%2f"),
            "amqp://guest:***@127.0.0.1:5672/%2f"
        );
        for plain in [
            "postgres://postgres@127.0.0.1:5432/postgres",
            "nats://127.0.0.1:4222",
            "127.0.0.1:9092",
            "redis://127.0.0.1/0?user=a:b@c",
        ] {
            assert_eq!(mask_url(plain), plain);
        }
        assert_eq!(
            mask_url("host=db user=app password=s3cret dbname=p"),
            "host=db user=app password=*** dbname=p"
        );
        assert_eq!(
            mask_url("postgres://db/p?user=app&password=s3cret&sslmode=disable"),
            "postgres://db/p?user=app&password=***&sslmode=disable"
        );
        let url = "postgres://app:s3cret@db/payments";
        let e = mask_in(
            "error connecting to postgres://app:s3cret@db/payments: password s3cret wrong",
            url,
        );
        assert!(!e.contains("s3cret") && e.contains("app:***@db"), "{e}");
    }
}
