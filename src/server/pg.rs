//! `--pg`: the result tables over the Postgres wire protocol, so `psql`, Grafana's PostgreSQL
//! data source and BI tools read live results. `datafusion-postgres` serves the server's
//! DataFusion session (simple and extended query protocols, the `pg_catalog` tables clients
//! probe); this file adds the password check (the server's token, when it has one) and keeps
//! the connection read-only.

use std::fmt::Debug;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::common::ParamValues;
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::SessionContext;
use datafusion::sql::sqlparser::ast::{Expr, Set, Statement};
use datafusion_postgres::hooks::HookClient;
use datafusion_postgres::hooks::cursor::CursorStatementHook;
use datafusion_postgres::hooks::set_show::SetShowHook;
use datafusion_postgres::hooks::transactions::TransactionStatementHook;
use datafusion_postgres::pgwire;
use datafusion_postgres::{DfSessionService, QueryHook};
use futures::Sink;
use pgwire::api::auth::cleartext::CleartextPasswordAuthStartupHandler;
use pgwire::api::auth::noop::NoopStartupHandler;
use pgwire::api::auth::{
    AuthSource, DefaultServerParameterProvider, LoginInfo, Password, StartupHandler,
};
use pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use pgwire::api::results::{Response, Tag};
use pgwire::api::{ClientInfo, PgWireServerHandlers};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};
use tokio::net::TcpListener;

use super::AppState;

/// Accepts connections on `listener` until the process ends.
pub(crate) async fn serve(listener: TcpListener, state: Arc<AppState>) {
    let hooks: Vec<Arc<dyn QueryHook>> = vec![
        Arc::new(ReadOnly),
        Arc::new(CursorStatementHook),
        Arc::new(SetShowHook),
        Arc::new(TransactionStatementHook),
    ];
    let handlers = Arc::new(Handlers {
        service: Arc::new(DfSessionService::new_with_hooks(
            Arc::new(state.sql.clone()),
            hooks,
        )),
        startup: Arc::new(match &state.token {
            Some(t) => Startup::Token(Box::new(CleartextPasswordAuthStartupHandler::new(
                Token(t.clone()),
                DefaultServerParameterProvider::default(),
            ))),
            None => Startup::Open(Open),
        }),
    });
    loop {
        match listener.accept().await {
            Ok((socket, addr)) => {
                let h = Arc::clone(&handlers);
                tokio::spawn(async move {
                    if let Err(e) = pgwire::tokio::process_socket(socket, None, h).await {
                        tracing::debug!(%addr, "pgwire connection ended: {e}");
                    }
                });
            }
            Err(e) => {
                tracing::warn!("pgwire accept failed: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
}

struct Handlers {
    service: Arc<DfSessionService>,
    startup: Arc<Startup>,
}

impl PgWireServerHandlers for Handlers {
    fn simple_query_handler(&self) -> Arc<impl SimpleQueryHandler> {
        Arc::clone(&self.service)
    }

    fn extended_query_handler(&self) -> Arc<impl ExtendedQueryHandler> {
        Arc::clone(&self.service)
    }

    fn startup_handler(&self) -> Arc<impl StartupHandler> {
        Arc::clone(&self.startup)
    }
}

/// The token is the password of any user.
#[derive(Debug)]
struct Token(String);

#[async_trait]
impl AuthSource for Token {
    async fn get_password(&self, _login: &LoginInfo) -> PgWireResult<Password> {
        Ok(Password::new(None, self.0.as_bytes().to_vec()))
    }
}

/// No password asked (a server without a token).
struct Open;

impl NoopStartupHandler for Open {}

enum Startup {
    Open(Open),
    Token(Box<CleartextPasswordAuthStartupHandler<Token, DefaultServerParameterProvider>>),
}

#[async_trait]
impl StartupHandler for Startup {
    async fn on_startup<C>(
        &self,
        client: &mut C,
        message: PgWireFrontendMessage,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        match self {
            Startup::Open(h) => h.on_startup(client, message).await,
            Startup::Token(h) => h.on_startup(client, message).await,
        }
    }
}

/// Refuses every statement that would change something (the result tables are filled by
/// stream queries) or write files (`COPY … TO`).
struct ReadOnly;

fn refused(statement: &Statement) -> Option<PgWireError> {
    let text = statement.to_string().to_ascii_uppercase();
    let mut words = text.split_whitespace();
    let first = words.next().unwrap_or("").to_string();
    // What may run: queries, a plan that is not executed, and the session statements clients
    // send (SET, SHOW, transactions, cursors). Everything else — writes, DDL, COPY … TO a
    // file, EXPLAIN ANALYZE (which runs its statement) — is refused.
    const READS: [&str; 14] = [
        "SELECT", "WITH", "VALUES", "(", "SHOW", "SET", "BEGIN", "START", "COMMIT", "ROLLBACK",
        "END", "DECLARE", "FETCH", "CLOSE",
    ];
    let explain_only = first == "EXPLAIN"
        && !text.contains("ANALYZE")
        && words.any(|w| matches!(w, "SELECT" | "WITH" | "VALUES" | "(SELECT"));
    let allowed = READS.contains(&first.as_str()) || first.starts_with('(') || explain_only;
    (!allowed).then(|| {
        PgWireError::UserError(Box::new(ErrorInfo::new(
            "ERROR".into(),
            "25006".into(),
            format!("{first} is not allowed here: paystream's result tables are read-only (queries only; they are filled by stream queries, submitted with POST /api/queries)"),
        )))
    })
}

/// What a `SET` does here. The variables `SetShowHook` keeps per connection (the ones drivers
/// send: `extra_float_digits`, `application_name`, `DateStyle`, `TIME ZONE` …) it may handle;
/// any other would fall through to DataFusion and change the session every client and `POST
/// /api/sql` share, so: a DataFusion setting is refused, anything else is answered `SET` and
/// ignored, as a Postgres client expects of a setting the server does not have.
fn set_answer(statement: &Statement) -> Option<PgWireResult<Response>> {
    let Statement::Set(set) = statement else {
        return None;
    };
    const PER_CONNECTION: [&str; 6] = [
        "datestyle",
        "bytea_output",
        "intervalstyle",
        "application_name",
        "extra_float_digits",
        "search_path",
    ];
    match set {
        Set::SetTimeZone { local: false, .. } => None,
        Set::SingleAssignment {
            scope: None,
            hivevar: false,
            variable,
            values,
        } => {
            let var = variable.to_string().to_ascii_lowercase();
            if var == "statement_timeout"
                || (PER_CONNECTION.contains(&var.as_str())
                    && matches!(values.first(), Some(Expr::Value(_))))
            {
                None
            } else if var.starts_with("datafusion.") {
                Some(Err(PgWireError::UserError(Box::new(ErrorInfo::new(
                    "ERROR".into(),
                    "25006".into(),
                    format!(
                        "SET {var} is not allowed here: it would change the SQL session every client of this server shares"
                    ),
                )))))
            } else {
                Some(Ok(Response::Execution(Tag::new("SET"))))
            }
        }
        _ => Some(Ok(Response::Execution(Tag::new("SET")))),
    }
}

/// An order-dependent function (`ewma`, `ewma_zscore`, `mad_zscore`) used as a plain
/// aggregate: refused, as `POST /api/sql` and stream queries refuse it.
async fn window_only(statement: &Statement, ctx: &SessionContext) -> Option<PgWireError> {
    if !matches!(statement, Statement::Query(_)) {
        return None;
    }
    let text = statement.to_string().to_ascii_lowercase();
    if !["ewma", "mad_zscore"].iter().any(|f| text.contains(f)) {
        return None;
    }
    let plan = ctx
        .state()
        .statement_to_plan(datafusion::sql::parser::Statement::Statement(Box::new(
            statement.clone(),
        )))
        .await
        .ok()?;
    let name = crate::sql::window_only_aggregate(&plan)?;
    Some(PgWireError::UserError(Box::new(ErrorInfo::new(
        "ERROR".into(),
        "42809".into(),
        format!(
            "{name} is a window function: use it with OVER (PARTITION BY … ORDER BY …), not as an aggregate (its result depends on the order of the values)"
        ),
    ))))
}

#[async_trait]
impl QueryHook for ReadOnly {
    async fn handle_simple_query(
        &self,
        statement: &Statement,
        ctx: &SessionContext,
        _client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        if let Some(e) = refused(statement) {
            return Some(Err(e));
        }
        if let Some(e) = window_only(statement, ctx).await {
            return Some(Err(e));
        }
        set_answer(statement)
    }

    async fn handle_extended_parse_query(
        &self,
        statement: &Statement,
        ctx: &SessionContext,
        _client: &(dyn ClientInfo + Send + Sync),
    ) -> Option<PgWireResult<LogicalPlan>> {
        if let Some(e) = refused(statement) {
            return Some(Err(e));
        }
        window_only(statement, ctx).await.map(Err)
    }

    async fn handle_extended_query(
        &self,
        statement: &Statement,
        _plan: &LogicalPlan,
        _params: &ParamValues,
        _ctx: &SessionContext,
        _client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        refused(statement)
            .map(Err)
            .or_else(|| set_answer(statement))
    }
}
