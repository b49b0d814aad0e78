//! The HTTP API: hyper on tokio, speaking the contract of the project's HTTP documentation.
//!
//! [`serve`] accepts connections until told to stop, then lets requests in flight finish.
//! [`handle`] answers well-known routes first (`/health`, `/metrics`), then the router; each route
//! checks the token's role before it reads a body.
//!
//! Architecture Invariant: only this module knows about HTTP. It reaches events through the
//! [`EventStore`] trait and nothing else of the store.

mod auth;
mod error;
mod events;
mod metrics;
mod query;

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use http::{Method, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::watch;

pub(crate) use auth::{Role, Tokens};
use error::ApiError;
use metrics::Metrics;

use crate::store::EventStore;

/// The body of every response.
pub(crate) type Body = BoxBody<Bytes, Infallible>;

/// Size limits on what clients send.
#[derive(Debug, Clone)]
pub(crate) struct Limits {
    /// Largest `data` plus `metadata` of one event, in bytes.
    pub max_event_bytes: usize,
    /// Largest request body, in bytes.
    pub max_request_bytes: usize,
    /// Most events in one append.
    pub max_events_per_append: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_event_bytes: 1 << 20,
            max_request_bytes: 16 << 20,
            max_events_per_append: 10_000,
        }
    }
}

/// Everything a request handler can reach.
pub(crate) struct App {
    store: Arc<dyn EventStore>,
    tokens: Tokens,
    limits: Limits,
    metrics: Metrics,
    /// Turns true when the server stops; long-lived responses (followers) end on it.
    stopping: watch::Receiver<bool>,
    stop: watch::Sender<bool>,
}

impl App {
    pub(crate) fn new(store: Arc<dyn EventStore>, tokens: Tokens, limits: Limits) -> Arc<Self> {
        let (stop, stopping) = watch::channel(false);
        Arc::new(App {
            store,
            tokens,
            limits,
            metrics: Metrics::default(),
            stopping,
            stop,
        })
    }
}

/// How long requests in flight may take to finish once shutdown begins.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Serves `app` on `listener` until `shutdown` resolves, then stops accepting, ends followers and
/// waits (a bounded time) for requests in flight.
pub(crate) async fn serve(
    listener: TcpListener,
    app: Arc<App>,
    shutdown: impl Future<Output = ()>,
) {
    let graceful = GracefulShutdown::new();
    let http = hyper::server::conn::http1::Builder::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, _) = match accepted {
                    Ok(pair) => pair,
                    Err(error) => {
                        // Out of file descriptors and the like: back off rather than spin.
                        crate::log::warning!("accept failed: {error}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let app = app.clone();
                let service = service_fn(move |request| {
                    let app = app.clone();
                    async move { Ok::<_, Infallible>(handle(&app, request).await) }
                });
                let connection = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
                tokio::spawn(async move {
                    if let Err(error) = connection.await {
                        crate::log::debug!("connection ended: {error}");
                    }
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
        crate::log::warning!("requests still running after {SHUTDOWN_GRACE:?}; closing anyway");
    }
}

/// The routes, by what the first path segment names.
#[derive(Debug, Clone, Copy)]
enum Route<'a> {
    Health,
    Metrics,
    Stream(&'a str),
    Events,
    Unknown,
}

impl<'a> Route<'a> {
    fn of(path: &'a str) -> Self {
        match path {
            "/health" => Route::Health,
            "/metrics" => Route::Metrics,
            "/events" => Route::Events,
            _ => path
                .strip_prefix("/streams/")
                .map_or(Route::Unknown, Route::Stream),
        }
    }
}

/// Answers one request; never fails: every error becomes its JSON response.
pub(crate) async fn handle(app: &Arc<App>, request: Request<Incoming>) -> Response<Body> {
    let path = request.uri().path().to_owned();
    let (label, result) = match (Route::of(&path), request.method().clone()) {
        (Route::Health, Method::GET) => ("health", Ok(health(app))),
        (Route::Metrics, Method::GET) => (
            "metrics",
            authorized(app, &request, Role::Read).map(|()| metrics(app)),
        ),
        (Route::Stream(name), Method::POST) => {
            let result = match authorized(app, &request, Role::Write) {
                Ok(()) => events::append(app, name, request).await,
                Err(e) => Err(e),
            };
            ("append", result)
        }
        (Route::Stream(name), Method::GET) => (
            "read_stream",
            authorized(app, &request, Role::Read)
                .and_then(|()| events::read_stream(app, name, &request)),
        ),
        (Route::Events, Method::GET) => match authorized(app, &request, Role::Read) {
            Ok(()) if events::wants_event_stream(&request) => {
                ("follow", events::follow(app, &request))
            }
            Ok(()) => ("read_log", events::read_log(app, &request)),
            Err(e) => ("read_log", Err(e)),
        },
        (Route::Unknown, _) => (
            "unknown",
            Err(ApiError::not_found(
                "not_found",
                format!("no route for {path}"),
            )),
        ),
        _ => ("method_not_allowed", Err(ApiError::MethodNotAllowed)),
    };
    let response = result.unwrap_or_else(|error| error_response(app, error));
    app.metrics.request(label, response.status().as_u16());
    response
}

fn authorized(app: &App, request: &Request<Incoming>, needed: Role) -> Result<(), ApiError> {
    app.tokens.authorize(request.headers(), needed)
}

fn health(app: &App) -> Response<Body> {
    json_response(
        StatusCode::OK,
        &serde_json::json!({"status": "ok", "version": env!("CARGO_PKG_VERSION"), "head": app.store.head()}),
    )
}

fn metrics(app: &App) -> Response<Body> {
    let text = app.metrics.render(app.store.stats(), app.store.head());
    Response::builder()
        .status(StatusCode::OK)
        .header(CONTENT_TYPE, "text/plain; version=0.0.4")
        .body(full(text))
        .expect("a static response is valid")
}

fn error_response(app: &App, error: ApiError) -> Response<Body> {
    if let ApiError::Internal(details) = &error {
        crate::log::error!("request failed: {details}");
    }
    app.metrics.error(error.code());
    json_response(error.status(), &error.body())
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

/// Reads a request body of at most `limit` bytes; larger ones are refused before they are read
/// when they announce their length, and as soon as they pass the limit otherwise.
async fn read_body(request: Request<Incoming>, limit: usize) -> Result<Bytes, ApiError> {
    let too_large =
        || ApiError::PayloadTooLarge(format!("the request body is larger than {limit} bytes"));
    let announced = request
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if announced.is_some_and(|length| length > limit as u64) {
        return Err(too_large());
    }
    match Limited::new(request.into_body(), limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) if error.is::<http_body_util::LengthLimitError>() => Err(too_large()),
        Err(error) => Err(ApiError::invalid(format!(
            "the request body could not be read: {error}"
        ))),
    }
}
