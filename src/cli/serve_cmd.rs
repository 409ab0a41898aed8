//! `paystream serve`: the HTTP API, the dashboard and Postgres-wire access over the data
//! directory's embedded log, until Ctrl-C or SIGTERM (every query then stops with a final
//! checkpoint, and the next `serve` resumes it).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use paystream::server::{ServeConfig, Server};

use super::log_cmds::DataDir;

#[derive(clap::Args)]
pub(crate) struct ServeArgs {
    /// Address of the HTTP API and the dashboard.
    #[arg(long, default_value = "127.0.0.1:8080")]
    http: SocketAddr,
    /// Address of the Postgres wire protocol (psql, Grafana, BI tools); `off` serves none.
    #[arg(long, default_value = "127.0.0.1:4566")]
    pg: String,
    /// Token every API request must carry (`Authorization: Bearer T`), also the Postgres
    /// password; default: the PAYSTREAM_TOKEN environment variable, else none (open).
    #[arg(long)]
    token: Option<String>,
    /// Largest request body accepted, e.g. 16MiB, 512KiB or a number of bytes; larger ones
    /// are answered 413.
    #[arg(long, default_value = "16MiB")]
    max_body: String,
    /// Workers per query (default: all cores).
    #[arg(long)]
    workers: Option<usize>,
    /// Checkpoint interval of every query, e.g. 10s (default: a query's SET, else 10 s).
    #[arg(long)]
    checkpoint_interval: Option<String>,
    /// The directory submitted queries may read and write files in (file sources and sinks,
    /// reference tables over files), by absolute paths inside it; default: `files` in the data
    /// directory. A query naming a file elsewhere is refused.
    #[arg(long)]
    files: Option<std::path::PathBuf>,
}

/// `16MiB`, `512KiB`, `1GiB`, `1000`.
pub(crate) fn parse_size(s: &str) -> anyhow::Result<usize> {
    let t = s.trim();
    let (num, mult) = [
        ("GiB", 1usize << 30),
        ("MiB", 1 << 20),
        ("KiB", 1 << 10),
        ("GB", 1_000_000_000),
        ("MB", 1_000_000),
        ("KB", 1000),
        ("B", 1),
    ]
    .iter()
    .find_map(|(suffix, m)| t.strip_suffix(suffix).map(|n| (n.trim(), *m)))
    .unwrap_or((t, 1));
    num.parse::<usize>()
        .ok()
        .filter(|n| *n > 0)
        .map(|n| n * mult)
        .with_context(|| format!("invalid size {s:?}: use e.g. 16MiB, 512KiB or a number of bytes"))
}

/// The listen address of `--pg`, or `None` for `off`.
pub(crate) fn parse_pg(s: &str) -> anyhow::Result<Option<SocketAddr>> {
    if matches!(s, "off" | "none" | "") {
        return Ok(None);
    }
    s.parse().map(Some).with_context(|| {
        format!("invalid --pg {s:?}: use an address such as 127.0.0.1:4566, or off")
    })
}

/// A future that completes when `stop` is set (by Ctrl-C or SIGTERM).
pub(crate) async fn stopped(stop: Arc<AtomicBool>) {
    while !stop.load(Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The runtime the server answers requests on (the queries run on threads of their own).
pub(crate) fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("paystream-http")
        .enable_all()
        .build()
        .context("cannot start the server's runtime")
}

/// Prints where everything is.
pub(crate) fn announce(server: &Server, token: Option<&str>) {
    let http = server.http_addr();
    let open = match token {
        Some(_) => format!("http://{http}/?token=<token>"),
        None => format!("http://{http}/"),
    };
    println!("paystream serve: dashboard {open}");
    println!("  API       http://{http}/api  (described at http://{http}/api/openapi.json)");
    println!("  metrics   http://{http}/metrics");
    if let Some(pg) = server.pg_addr() {
        let pw = if token.is_some() {
            "PGPASSWORD=<token> "
        } else {
            ""
        };
        println!(
            "  Postgres  {pw}psql -h {} -p {} -U paystream -d paystream",
            pg.ip(),
            pg.port()
        );
    }
}

pub(crate) fn serve(data: &DataDir, a: ServeArgs) -> anyhow::Result<()> {
    if a.workers == Some(0) {
        anyhow::bail!("--workers must be at least 1");
    }
    let mut config = ServeConfig::new(&data.data_dir);
    config.http = a.http;
    config.pg = parse_pg(&a.pg)?;
    config.token = a
        .token
        .or_else(|| std::env::var("PAYSTREAM_TOKEN").ok())
        .filter(|t| !t.is_empty());
    if let Some(t) = &config.token
        && !t
            .chars()
            .all(|c| c.is_ascii_graphic() && !matches!(c, ';' | ',' | '"' | '\\'))
    {
        anyhow::bail!(
            "the token must be printable ASCII without spaces, ';', ',', '\"' or '\\' (it is also a cookie and a Postgres password); e.g. `openssl rand -hex 24`"
        );
    }
    config.max_body = parse_size(&a.max_body)?;
    config.workers = a.workers;
    if let Some(f) = a.files {
        config.files = f;
    }
    config.checkpoint_interval = a
        .checkpoint_interval
        .map(|s| {
            paystream::time::parse_duration_millis(&s)
                .map(|ms| Duration::from_millis(ms.max(1) as u64))
                .map_err(|e| anyhow::anyhow!("invalid --checkpoint-interval: {e}"))
        })
        .transpose()?;
    std::fs::create_dir_all(&data.data_dir).with_context(|| {
        format!(
            "cannot create the data directory {}",
            data.data_dir.display()
        )
    })?;
    let stop = super::signals::stop_on_signal();
    let token = config.token.clone();
    let rt = runtime()?;
    rt.block_on(async move {
        let server = Server::bind(config).await?;
        announce(&server, token.as_deref());
        server.run(stopped(stop)).await?;
        eprintln!("stopped: every query took its final checkpoint; `paystream serve` resumes them");
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn sizes_parse() {
        assert_eq!(super::parse_size("16MiB").unwrap(), 16 << 20);
        assert_eq!(super::parse_size("1000").unwrap(), 1000);
        assert!(super::parse_size("lots").is_err());
        assert_eq!(super::parse_pg("off").unwrap(), None);
    }
}
