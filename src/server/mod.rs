//! `paystream serve`: one process running submitted stream queries over the embedded log, with
//! an HTTP API, a dashboard, Prometheus metrics and Postgres-wire access to live result tables.
//!
//! ```text
//!  HTTP (axum) ── auth ──┬─ /api/queries ─────▶ Queries (one job per query, saved, resumed)
//!                        ├─ /api/topics ──────▶ the embedded log (create, describe, ingest)
//!                        ├─ …/results, …/ws ──▶ ResultTables (SSE / WebSocket per row)
//!                        ├─ /api/sql ─────────▶ DataFusion session over the result tables
//!                        ├─ /metrics ─────────▶ Prometheus text
//!                        └─ /, /assets/* ─────▶ the dashboard (compiled in)
//!  pgwire (--pg) ────────────────────────────▶ the same DataFusion session
//! ```
//! The engine runs on its own threads (each query's job); the server's tokio runtime only
//! answers requests, so a slow client never slows a query down.

mod api;
mod assets;
mod auth;
mod ingest;
mod metrics;
mod pg;
mod queries;
mod stream;
mod submit;
mod tables;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};

use crate::job::JobOptions;
use crate::log::Log;
use crate::sink::ResultTables;

/// How long requests in flight may take to finish once the server is stopping.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// Request bodies accepted by default: 16 MiB.
pub const DEFAULT_MAX_BODY: usize = 16 << 20;

/// How a server runs.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// The embedded log's data directory (queries are kept under `_serve/`).
    pub data_dir: PathBuf,
    /// Where the HTTP API and the dashboard listen.
    pub http: SocketAddr,
    /// Where the Postgres wire protocol listens (`None`: not served).
    pub pg: Option<SocketAddr>,
    /// The token every request but the page, `/healthz` and `/metrics` must carry (`None`: open).
    pub token: Option<String>,
    /// The largest request body accepted, bytes.
    pub max_body: usize,
    /// Workers per query (default: the job's).
    pub workers: Option<usize>,
    /// Checkpoint interval of every query (default: the job's).
    pub checkpoint_interval: Option<Duration>,
    /// The directory submitted queries may read and write files in (created when absent).
    pub files: PathBuf,
}

impl ServeConfig {
    /// Defaults: loopback ports 8080 (HTTP) and 4566 (pgwire), no token, 16 MiB bodies.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        let data_dir = data_dir.into();
        ServeConfig {
            files: data_dir.join("files"),
            data_dir,
            http: SocketAddr::from(([127, 0, 0, 1], 8080)),
            pg: Some(SocketAddr::from(([127, 0, 0, 1], 4566))),
            token: None,
            max_body: DEFAULT_MAX_BODY,
            workers: None,
            checkpoint_interval: None,
        }
    }
}

/// What every handler shares.
pub(crate) struct AppState {
    pub(crate) log: Log,
    pub(crate) token: Option<String>,
    /// Bound to a loopback address: a request must name it by a loopback host.
    pub(crate) loopback: bool,
    pub(crate) results: Arc<ResultTables>,
    pub(crate) queries: queries::Queries,
    pub(crate) ingest: ingest::Writers,
    pub(crate) sql: datafusion::prelude::SessionContext,
    pub(crate) http_metrics: metrics::HttpCounters,
    pub(crate) ready: AtomicBool,
}

/// Why the server could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// A listener could not be bound.
    #[error(
        "cannot listen on {addr} ({what}): {source}; is another server running there? choose another address with {flag}"
    )]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// What it was for.
        what: &'static str,
        /// The flag that moves it.
        flag: &'static str,
        /// Why.
        source: std::io::Error,
    },
    /// The server failed while running.
    #[error("the server failed: {0}")]
    Failed(String),
}

/// The bound listeners of a server about to run: their addresses are known (port 0 picks a
/// free one) before [`Server::run`].
pub struct Server {
    state: Arc<AppState>,
    http: tokio::net::TcpListener,
    pg: Option<tokio::net::TcpListener>,
    max_body: usize,
}

impl Server {
    /// Binds the listeners and prepares the state; starts nothing yet.
    pub async fn bind(config: ServeConfig) -> Result<Server, ServeError> {
        let http = tokio::net::TcpListener::bind(config.http)
            .await
            .map_err(|source| ServeError::Bind {
                addr: config.http,
                what: "HTTP",
                flag: "--http",
                source,
            })?;
        let pg =
            match config.pg {
                Some(addr) => Some(tokio::net::TcpListener::bind(addr).await.map_err(
                    |source| ServeError::Bind {
                        addr,
                        what: "Postgres wire protocol",
                        flag: "--pg",
                        source,
                    },
                )?),
                None => None,
            };
        let results = Arc::new(ResultTables::default());
        let mut opts = JobOptions::new(&config.data_dir);
        opts.workers = config.workers;
        opts.checkpoint_interval = config.checkpoint_interval;
        let sql = tables::session(Arc::clone(&results))
            .map_err(|e| ServeError::Failed(format!("cannot set up SQL: {e}")))?;
        let files = std::fs::create_dir_all(&config.files)
            .and_then(|()| config.files.canonicalize())
            .map_err(|e| {
                ServeError::Failed(format!(
                    "cannot use {} as the directory of the queries' files: {e}; choose another with --files",
                    config.files.display()
                ))
            })?;
        let state = Arc::new(AppState {
            log: Log::new(&config.data_dir),
            token: config.token.filter(|t| !t.is_empty()),
            loopback: config.http.ip().is_loopback(),
            queries: queries::Queries::new(opts, Arc::clone(&results), files),
            ingest: ingest::Writers::default(),
            results,
            sql,
            http_metrics: metrics::HttpCounters::default(),
            ready: AtomicBool::new(false),
        });
        Ok(Server {
            state,
            http,
            pg,
            max_body: config.max_body,
        })
    }

    /// Submits query `name` as `POST /api/queries` does (it starts at once); the refusal's
    /// text when it is invalid.
    pub fn submit(&self, name: &str, sql: &str) -> Result<(), String> {
        self.state
            .queries
            .submit(name, sql)
            .map(|_| ())
            .map_err(|e| match e {
                queries::QueryError::Invalid(r) => r.error,
                queries::QueryError::NotFound(m)
                | queries::QueryError::Conflict(m)
                | queries::QueryError::Unavailable(m) => m,
            })
    }

    /// The live result tables (what the queries' table sinks fill).
    pub fn results(&self) -> Arc<ResultTables> {
        Arc::clone(&self.state.results)
    }

    /// Where the HTTP API listens.
    pub fn http_addr(&self) -> SocketAddr {
        self.http.local_addr().expect("bound listener")
    }

    /// Where the Postgres wire protocol listens, if it does.
    pub fn pg_addr(&self) -> Option<SocketAddr> {
        self.pg
            .as_ref()
            .map(|l| l.local_addr().expect("bound listener"))
    }

    /// Resumes the saved queries, serves until `shutdown` completes, then stops every query
    /// with a final checkpoint.
    pub async fn run(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServeError> {
        let state = Arc::clone(&self.state);
        let resumed = {
            let s = Arc::clone(&state);
            tokio::task::spawn_blocking(move || {
                let resumed = s.queries.resume();
                s.queries.wait_recovered();
                resumed
            })
            .await
            .map_err(|e| ServeError::Failed(e.to_string()))?
        };
        if resumed > 0 {
            tracing::info!(queries = resumed, "resumed the saved queries");
        }
        state.ready.store(true, Ordering::Release);
        let ticker = {
            let s = Arc::clone(&state);
            tokio::spawn(async move {
                let mut every = tokio::time::interval(Duration::from_millis(500));
                loop {
                    every.tick().await;
                    let s = Arc::clone(&s);
                    let _ = tokio::task::spawn_blocking(move || s.queries.tick()).await;
                }
            })
        };
        if let Some(pg) = self.pg {
            tokio::spawn(pg::serve(pg, Arc::clone(&state)));
        }
        let app = router(Arc::clone(&state), self.max_body);
        let (closing, closed) = tokio::sync::oneshot::channel::<()>();
        let mut http = tokio::spawn(
            axum::serve(
                self.http,
                app.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .with_graceful_shutdown(async {
                let _ = closed.await;
            })
            .into_future(),
        );
        let served = tokio::select! {
            r = &mut http => r,
            () = shutdown => {
                let _ = closing.send(());
                // Requests in flight finish; open streams (SSE, WebSocket) never do by
                // themselves, so they get a grace period and are then cut.
                match tokio::time::timeout(SHUTDOWN_GRACE, &mut http).await {
                    Ok(r) => r,
                    Err(_) => {
                        http.abort();
                        Ok(Ok(()))
                    }
                }
            }
        };
        let served = served.map_err(|e| ServeError::Failed(e.to_string()))?;
        ticker.abort();
        state.ready.store(false, Ordering::Release);
        let s = Arc::clone(&state);
        tokio::task::spawn_blocking(move || {
            s.queries.stop_all();
            s.ingest.close();
        })
        .await
        .map_err(|e| ServeError::Failed(e.to_string()))?;
        served.map_err(|e| ServeError::Failed(e.to_string()))
    }
}

/// Every route, behind the token check and the body limit.
fn router(state: Arc<AppState>, max_body: usize) -> Router {
    let api = Router::new()
        .route("/api/queries", post(api::submit).get(api::list))
        .route("/api/queries/{name}", get(api::show).delete(api::stop))
        .route("/api/queries/{name}/savepoint", post(api::savepoint))
        .route("/api/queries/{name}/results", get(stream::sse))
        .route("/api/queries/{name}/ws", get(stream::ws))
        .route("/api/topics", post(api::create_topic).get(api::topics))
        .route("/api/topics/{topic}", get(api::topic))
        .route("/api/topics/{topic}/events", post(ingest::append))
        .route("/api/sql", post(api::sql))
        .route("/api/openapi.json", get(assets::openapi))
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&state),
            auth::require_token,
        ));
    Router::new()
        .route("/", get(assets::index))
        .route("/assets/{file}", get(assets::asset))
        .route("/healthz", get(api::healthz))
        .route("/metrics", get(metrics::prometheus))
        .merge(api)
        .fallback(api::not_found)
        .layer(DefaultBodyLimit::max(max_body))
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&state),
            metrics::count_requests,
        ))
        .with_state(state)
}
