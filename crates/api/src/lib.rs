//! The HTTP API: hyper on tokio, speaking the contract of the project's HTTP documentation.
//!
//! [`serve`] accepts connections until told to stop, then lets requests in flight finish.
//! [`handle`] answers well-known routes first (`/health`, `/metrics`), then the router; each route
//! checks the token's role before it reads a body.
//!
//! Architecture Invariant: only this module knows about HTTP. It reaches events through the
//! [`Store`] trait and nothing else of the store.

mod auth;
mod cluster;
mod commands;
mod connection;
mod error;
mod events;
mod metrics;
mod plugins;
mod projections;
mod query;
mod replays;

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONNECTION, CONTENT_LENGTH, CONTENT_TYPE, RETRY_AFTER};
use http::{Method, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::Instrument;

pub use auth::{Role, Tokens};
use connection::{BodyReader, LingeringIo};
pub use connection::{ConnectionLimits, RESERVED_DESCRIPTORS, raise_open_files_limit};
use error::ApiError;
use metrics::Metrics;

use evhost_engine::commands::Commands;
use evhost_engine::plugins::Plugins;
use evhost_engine::replays::Replays;
use evhost_store::{AppendLimits, StorageError, Store};

/// The body of every response.
pub type Body = BoxBody<Bytes, Infallible>;

/// Size limits on what clients send. The limits of an append (events, their bytes, their
/// nesting) are the store's [`evhost_store::AppendLimits`], which every path meets.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest request body, in bytes.
    pub max_request_bytes: usize,
    /// Largest `data` plus `metadata` of one command, in bytes.
    pub max_command_bytes: usize,
    /// Largest plugin upload, in bytes.
    pub max_plugin_bytes: usize,
    /// What a connection may hold and for how long.
    pub connection: ConnectionLimits,
    /// What one append may carry; the store is opened with the same.
    pub append: AppendLimits,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            append: AppendLimits::default(),
            max_request_bytes: 16 << 20,
            max_command_bytes: 1 << 20,
            max_plugin_bytes: 128 << 20,
            connection: ConnectionLimits::default(),
        }
    }
}

/// Everything a request handler can reach.
pub struct App {
    store: Arc<dyn Store>,
    plugins: Arc<Plugins>,
    commands: Arc<Commands>,
    replays: Replays,
    tokens: Tokens,
    limits: Limits,
    metrics: Metrics,
    /// Turns true when the server stops; long-lived responses (followers) end on it.
    stopping: watch::Receiver<bool>,
    stop: watch::Sender<bool>,
}

impl App {
    pub async fn new(
        store: Arc<dyn Store>,
        plugins: Arc<Plugins>,
        tokens: Tokens,
        limits: Limits,
    ) -> Result<Arc<Self>, StorageError> {
        let (stop, stopping) = watch::channel(false);
        let commands = Arc::new(Commands::new(store.clone(), plugins.clone(), limits.append));
        plugins.connect(commands.clone());
        let replays = Replays::new(plugins.clone(), store.clone()).await?;
        Ok(Arc::new(App {
            commands,
            replays,
            store,
            plugins,
            tokens,
            limits,
            metrics: Metrics::default(),
            stopping,
            stop,
        }))
    }
}

/// How long requests in flight may take to finish once shutdown begins.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Serves `app` on `listener` until `shutdown` resolves, then stops accepting, ends followers and
/// waits (a bounded time) for requests in flight.
pub async fn serve(listener: TcpListener, app: Arc<App>, shutdown: impl Future<Output = ()>) {
    let graceful = GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    // With a timer, hyper closes a connection whose request headers take longer than 30 s to
    // arrive (and idle keep-alive connections after as long), so slow clients cannot pin sockets.
    http.timer(TokioTimer::new());
    let limits = app.limits.connection.clone();
    let open = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, _) = match accepted {
                    Ok(pair) => pair,
                    Err(error) => {
                        // Out of file descriptors and the like: back off rather than spin.
                        tracing::warn!("accept failed: {error}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let Ok(permit) = open.clone().try_acquire_owned() else {
                    tokio::spawn(refuse_connection(stream, limits.max_connections));
                    continue;
                };
                let app = app.clone();
                let service = service_fn(move |request| {
                    let app = app.clone();
                    async move { Ok::<_, Infallible>(handle(&app, request).await) }
                });
                let io = TokioIo::new(LingeringIo::new(stream, limits.linger));
                let connection = graceful.watch(http.serve_connection(io, service));
                tokio::spawn(async move {
                    if let Err(error) = connection.await {
                        tracing::debug!("connection ended: {error}");
                    }
                    drop(permit);
                });
            }
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    let _ = app.stop.send(true);
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("requests still running after {SHUTDOWN_GRACE:?}; closing anyway");
    }
}

/// Answers a connection past the cap with a 503 and closes it; a client that does not read
/// the answer within a second is simply dropped.
async fn refuse_connection(mut stream: tokio::net::TcpStream, max_connections: usize) {
    use tokio::io::AsyncWriteExt;
    let answer = connection::over_capacity_response(max_connections);
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        stream.write_all(&answer).await?;
        stream.shutdown().await
    })
    .await;
}

/// The routes, by what the first path segment names.
#[derive(Debug, Clone, Copy)]
enum Route<'a> {
    Health,
    Metrics,
    Stream(&'a str),
    Events,
    Plugins,
    Plugin(&'a str),
    /// `/plugins/{name}/{action...}`: pause, resume, parked items, promote, rollback, versions.
    PluginControl(&'a str, &'a str),
    /// `/projections/{name}/...`: read models.
    Projection(&'a str),
    /// `/replays` and `/replays/{id}[/cancel]`.
    Replays(&'a str),
    HandlerCommands(&'a str),
    Command(&'a str),
    Cluster,
    Unknown,
}

impl<'a> Route<'a> {
    /// The route's name in metrics.
    fn label(self) -> &'static str {
        match self {
            Route::Health => "health",
            Route::Metrics => "metrics",
            Route::Stream(_) => "streams",
            Route::Events => "events",
            Route::Plugins | Route::Plugin(_) | Route::PluginControl(..) => "plugins",
            Route::Projection(_) => "projections",
            Route::Replays(_) => "replays",
            Route::HandlerCommands(_) => "handler_commands",
            Route::Command(_) => "commands",
            Route::Cluster => "cluster",
            Route::Unknown => "unknown",
        }
    }

    fn of(path: &'a str) -> Self {
        match path {
            "/health" => Route::Health,
            "/metrics" => Route::Metrics,
            "/events" => Route::Events,
            "/plugins" => Route::Plugins,
            "/replays" => Route::Replays(""),
            "/cluster" => Route::Cluster,
            _ => {
                if let Some(name) = path.strip_prefix("/streams/") {
                    Route::Stream(name)
                } else if let Some(rest) = path.strip_prefix("/plugins/") {
                    match rest.split_once('/') {
                        None if !rest.is_empty() => Route::Plugin(rest),
                        Some((name, action)) if !name.is_empty() && !action.is_empty() => {
                            Route::PluginControl(name, action)
                        }
                        _ => Route::Unknown,
                    }
                } else if let Some(rest) = path.strip_prefix("/projections/") {
                    if rest.is_empty() {
                        Route::Unknown
                    } else {
                        Route::Projection(rest)
                    }
                } else if let Some(rest) = path.strip_prefix("/replays/") {
                    if rest.is_empty() {
                        Route::Unknown
                    } else {
                        Route::Replays(rest)
                    }
                } else if let Some(id) = path.strip_prefix("/commands/") {
                    Route::Command(id)
                } else {
                    path.strip_prefix("/handlers/")
                        .and_then(|rest| rest.strip_suffix("/commands"))
                        .filter(|name| !name.is_empty() && !name.contains('/'))
                        .map_or(Route::Unknown, Route::HandlerCommands)
                }
            }
        }
    }
}

/// Answers one request; never fails: every error becomes its JSON response.
pub async fn handle(app: &Arc<App>, request: Request<Incoming>) -> Response<Body> {
    let path = request.uri().path().to_owned();
    let route = Route::of(&path);
    // The token is checked before the route is matched, so a caller without one learns nothing
    // about which routes exist. A refused request is answered without its body being read: the
    // connection then closes, lingering so that the client still reads the answer.
    let authorized = match required_role(request.method(), route) {
        Some(role) => app.tokens.authorize(request.headers(), role),
        None => Ok(()),
    };
    let span = tracing::info_span!("request", method = %request.method(), path = %path);
    let result = match authorized {
        Ok(()) => dispatch(app, route, request).instrument(span).await,
        Err(error) => Err(error),
    };
    let response = result.unwrap_or_else(|error| error_response(app, error));
    app.metrics
        .request(route.label(), response.status().as_u16());
    response
}

/// The least role a request needs: reads need `read`, appends (and later commands) `write`,
/// everything else that changes the host `admin`. `None` for the open `/health`.
fn required_role(method: &Method, route: Route<'_>) -> Option<Role> {
    match (route, method) {
        (Route::Health, _) => None,
        (_, &Method::GET | &Method::HEAD) => Some(Role::Read),
        (Route::Stream(_) | Route::HandlerCommands(_), &Method::POST) => Some(Role::Write),
        _ => Some(Role::Admin),
    }
}

async fn dispatch(
    app: &Arc<App>,
    route: Route<'_>,
    request: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    // HEAD is answered as GET is, without the body (load balancers probe with it).
    let method = match request.method() {
        &Method::HEAD => &Method::GET,
        other => other,
    };
    match (route, method) {
        (Route::Health, &Method::GET) => Ok(health(app)),
        (Route::Metrics, &Method::GET) => Ok(metrics(app)),
        (Route::Cluster, &Method::GET) => cluster::show(app, &request).await,
        (Route::Stream(name), &Method::POST) => events::append(app, name, request).await,
        (Route::Stream(name), &Method::GET) => events::read_stream(app, name, &request).await,
        (Route::Events, &Method::GET) if events::wants_event_stream(&request) => {
            events::follow(app, &request)
        }
        (Route::Events, &Method::GET) => events::read_log(app, &request).await,
        (Route::Plugins, &Method::POST) => plugins::deploy(app, request).await,
        (Route::Plugins, &Method::GET) => plugins::list(app, &request),
        (Route::Plugin(name), &Method::GET) => plugins::show(app, name, &request).await,
        (Route::PluginControl(name, "promote"), &Method::POST) => {
            plugins::switch(app, name, false, request).await
        }
        (Route::PluginControl(name, "rollback"), &Method::POST) => {
            plugins::switch(app, name, true, request).await
        }
        (Route::PluginControl(name, "replays"), &Method::POST) => {
            replays::start(app, name, request).await
        }
        (Route::Replays(rest), &Method::GET) => replays::show(app, rest, &request),
        (Route::Replays(rest), &Method::POST) => replays::cancel(app, rest, request).await,
        (Route::PluginControl(name, action), &Method::DELETE)
            if action.starts_with("versions/") =>
        {
            let version = &action["versions/".len()..];
            plugins::delete_version(app, name, version, &request).await
        }
        (Route::PluginControl(name, action), &Method::GET | &Method::POST) => {
            let (parts, mut body) = request.into_parts();
            drain(app, &mut body).await?;
            projections::control(app, name, action, &parts).await
        }
        (Route::Projection(rest), &Method::GET) => projections::read(app, rest, &request).await,
        (Route::HandlerCommands(name), &Method::POST) => commands::send(app, name, request).await,
        (Route::Command(id), &Method::GET) => commands::show(app, id, &request).await,
        (Route::Unknown, _) => Err(ApiError::not_found(
            "not_found",
            format!("no route for {}", request.uri().path()),
        )),
        _ => Err(ApiError::MethodNotAllowed),
    }
}

/// `GET /health`: 200 while the host can serve reads and make appends durable; 503, with the
/// same fields, once its store takes no writes (closed, or its writer failed), so that probes
/// and load balancers take it out of service.
fn health(app: &App) -> Response<Body> {
    let writable = app.store.accepts_writes();
    let (status, word) = if writable {
        (StatusCode::OK, "ok")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "unavailable")
    };
    json_response(
        status,
        &serde_json::json!({"status": word, "version": env!("CARGO_PKG_VERSION"), "head": app.store.head()}),
    )
}

fn metrics(app: &App) -> Response<Body> {
    let mut text = app.metrics.render(app.store.stats(), app.store.head());
    metrics::render_plugins(&mut text, &app.plugins.counters, &app.commands.counters);
    metrics::render_runners(&mut text, &app.plugins.list());
    Response::builder()
        .status(StatusCode::OK)
        .header(CONTENT_TYPE, "text/plain; version=0.0.4")
        .body(full(text))
        .expect("a static response is valid")
}

fn error_response(app: &App, error: ApiError) -> Response<Body> {
    if let ApiError::Internal(details) = &error {
        tracing::error!("request failed: {details}");
    }
    app.metrics.error(error.code());
    let mut response = json_response(error.status(), &error.body());
    let headers = response.headers_mut();
    match error {
        ApiError::Overloaded(_) => {
            headers.insert(RETRY_AFTER, http::HeaderValue::from_static("1"));
        }
        // The rest of a body that came too slowly is not waited for.
        ApiError::RequestTimeout(_) => {
            headers.insert(CONNECTION, http::HeaderValue::from_static("close"));
        }
        _ => {}
    }
    response
}

fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).boxed()
}

/// A response with a JSON value as its body.
fn json_response(status: StatusCode, value: &serde_json::Value) -> Response<Body> {
    raw_json_response(
        status,
        serde_json::to_vec(value).expect("a JSON value always serializes"),
    )
}

/// A response whose body is already JSON text.
fn raw_json_response(status: StatusCode, json: Vec<u8>) -> Response<Body> {
    Response::builder()
        .status(status)
        .header(CONTENT_TYPE, "application/json")
        .body(full(json))
        .expect("a JSON response is valid")
}

/// Past this many bytes an oversized body is not read to its end: the answer is sent and the
/// connection closes (lingering, so that a client still sending can read it).
const MAX_DRAINED_BYTES: u64 = 64 << 20;

/// Reads a request body of at most `limit` bytes, as fast as [`ConnectionLimits`] demand. A
/// larger one is answered with 413 without being kept; it is read to its end (up to a bound)
/// first, since most clients only see an answer once they have sent their whole request.
async fn read_body(app: &App, request: Request<Incoming>, limit: usize) -> Result<Bytes, ApiError> {
    let too_large =
        || ApiError::PayloadTooLarge(format!("the request body is larger than {limit} bytes"));
    let announced = request
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let mut body = request.into_body();
    let mut reader = BodyReader::new(&mut body, &app.limits.connection);
    if let Some(length) = announced.filter(|&length| length > limit as u64) {
        if length <= MAX_DRAINED_BYTES {
            // The answer is a 413 whether or not the rest arrives in time.
            let _ = reader.discard(MAX_DRAINED_BYTES).await;
        }
        return Err(too_large());
    }
    let mut collected = Vec::new();
    while let Some(frame) = reader.frame().await {
        if let Ok(data) = frame?.into_data() {
            if collected.len() + data.len() > limit {
                let _ = reader.discard(MAX_DRAINED_BYTES).await;
                return Err(too_large());
            }
            collected.extend_from_slice(&data);
        }
    }
    Ok(collected.into())
}

/// Reads and discards a body a route does not use, up to [`MAX_DRAINED_BYTES`], as fast as
/// [`ConnectionLimits`] demand; a body that comes too slowly is a 408.
async fn drain(app: &App, body: &mut Incoming) -> Result<(), ApiError> {
    BodyReader::new(body, &app.limits.connection)
        .discard(MAX_DRAINED_BYTES)
        .await
}
