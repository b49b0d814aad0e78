//! Shared helpers for the end-to-end tests: starting the real `evhost` binary on a free port with a
//! fresh data directory (and killing it on drop), a small blocking HTTP client, a seeded random
//! number generator, and the checks of the store's invariants that several topics rely on.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

/// How long the binary may take to print its listening line. Generous: the machine is shared.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a stopped server may take to exit.
const EXIT_TIMEOUT: Duration = Duration::from_secs(30);
/// Per request phase (connect, response head, each body read).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// The line the binary prints on stdout once it accepts connections.
const LISTENING_PREFIX: &str = "evhost listening on ";
/// The largest page the API serves; used to read everything in few requests.
const MAX_LIMIT: u64 = 10_000;
/// How much of the server's stderr is kept for failure reports.
const LOG_KEEP: usize = 256 * 1024;
/// Token variables the binary reads; removed so that the caller's environment never leaks in.
const TOKEN_VARS: [&str; 3] = [
    "EVHOST_ADMIN_TOKEN",
    "EVHOST_WRITE_TOKEN",
    "EVHOST_READ_TOKEN",
];

/// How to start `evhost serve`: listen address, extra arguments and environment.
#[derive(Clone, Debug)]
pub struct Launch {
    listen: String,
    args: Vec<String>,
    env: Vec<(String, String)>,
}

impl Default for Launch {
    /// On the embedded store, unless `EVHOST_TEST_STORE=postgres` runs every server of the run
    /// on PostgreSQL (each on a schema of its own in the run's throwaway server).
    fn default() -> Self {
        let launch = Launch {
            listen: "127.0.0.1:0".to_string(),
            args: Vec::new(),
            env: Vec::new(),
        };
        match std::env::var("EVHOST_TEST_STORE").as_deref() {
            Ok("postgres") => launch.on_postgres(&fresh_schema()),
            _ => launch,
        }
    }
}

/// A PostgreSQL schema no server of this run has used.
pub fn fresh_schema() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(
        "e2e_{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// The throwaway PostgreSQL server of this run, started by the first test that needs it.
pub fn postgres() -> &'static evhost_postgres::test_server::TestServer {
    evhost_postgres::test_server::TestServer::shared()
}

impl Launch {
    pub fn listen(mut self, address: &str) -> Self {
        self.listen = address.to_string();
        self
    }

    pub fn arg(mut self, arg: &str) -> Self {
        self.args.push(arg.to_string());
        self
    }

    pub fn env(mut self, name: &str, value: &str) -> Self {
        self.env.push((name.to_string(), value.to_string()));
        self
    }

    /// Keeps the events in PostgreSQL, in `schema` of the run's throwaway server (nodes given
    /// the same schema share one store).
    pub fn on_postgres(mut self, schema: &str) -> Self {
        // A schema chosen here replaces the one the run gave every server.
        if let Some(at) = self.args.iter().position(|a| a == "--store") {
            self.args.drain(at..at + 4);
        }
        let url = postgres().url("postgres");
        self.arg("--store")
            .arg(&url)
            .arg("--store-schema")
            .arg(schema)
    }

    /// Configures the three role tokens on the command line.
    pub fn tokens(self, admin: &str, write: &str, read: &str) -> Self {
        self.arg("--admin-token")
            .arg(admin)
            .arg("--write-token")
            .arg(write)
            .arg("--read-token")
            .arg(read)
    }

    /// Starts a server with a fresh data directory; panics with its stderr if it does not start.
    pub fn start(self) -> Server {
        match self.try_start() {
            Ok(server) => server,
            Err(failure) => panic!("evhost did not start: {failure:?}"),
        }
    }

    /// Starts a server with a fresh data directory, or says how the binary failed.
    pub fn try_start(self) -> Result<Server, StartFailure> {
        self.try_start_in(tempfile::tempdir().expect("create a temporary data directory"))
    }

    /// Starts a server on the data directory `dir`, which may hold a store already; panics
    /// with its stderr if it does not start.
    pub fn start_in(self, dir: tempfile::TempDir) -> Server {
        match self.try_start_in(dir) {
            Ok(server) => server,
            Err(failure) => panic!("evhost did not start: {failure:?}"),
        }
    }

    fn try_start_in(self, dir: tempfile::TempDir) -> Result<Server, StartFailure> {
        let log = Arc::new(Mutex::new(String::new()));
        let (child, url) = spawn(&self, dir.path(), &log)?;
        Ok(Server {
            launch: self,
            dir,
            child: Some(child),
            url,
            log,
        })
    }
}

/// Why the binary did not print its listening line.
pub struct StartFailure {
    /// The exit status, if it exited (rather than hanging).
    pub status: Option<ExitStatus>,
    pub stderr: String,
    pub reason: String,
}

impl std::fmt::Debug for StartFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} (status {:?}); stderr:\n{}",
            self.reason, self.status, self.stderr
        )
    }
}

/// A running `evhost serve`, killed when dropped. The data directory lives as long as this value,
/// so the server can be killed and restarted on the same data.
pub struct Server {
    launch: Launch,
    dir: tempfile::TempDir,
    child: Option<Child>,
    url: String,
    log: Arc<Mutex<String>>,
}

impl Server {
    /// A server on a loopback port without tokens.
    pub fn start() -> Server {
        Launch::default().start()
    }

    /// Base URL, e.g. `http://127.0.0.1:41234`, without a trailing slash.
    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("the server is running").id()
    }

    /// How many times the server's threads have been switched out so far (voluntary and not):
    /// a count of its wake-ups, which a sleeping process does not add to.
    pub fn context_switches(&self) -> u64 {
        let tasks = std::fs::read_dir(format!("/proc/{}/task", self.pid())).expect("list tasks");
        tasks
            .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("status")).ok())
            .flat_map(|status| {
                status
                    .lines()
                    .filter(|line| line.contains("ctxt_switches:"))
                    .filter_map(|line| line.split_whitespace().nth(1)?.parse::<u64>().ok())
                    .collect::<Vec<_>>()
            })
            .sum()
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// A client without a token.
    pub fn api(&self) -> Api {
        Api::new(&self.url)
    }

    /// Kills the server with SIGKILL (no chance to clean up) and waits for it.
    pub fn kill_9(&mut self) {
        if let Some(mut child) = self.child.take() {
            // `Child::kill` sends SIGKILL on unix.
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends SIGTERM and asserts the server exits by itself with code 0.
    pub fn terminate(&mut self) {
        let mut child = self
            .child
            .take()
            .expect("terminate: the server is not running");
        let status = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status()
            .expect("run kill -TERM");
        assert!(status.success(), "kill -TERM failed: {status}");
        match wait_for_exit(&mut child, EXIT_TIMEOUT) {
            Some(status) => assert_eq!(
                status.code(),
                Some(0),
                "after SIGTERM the server exited with {status}; stderr:\n{}",
                self.stderr()
            ),
            None => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "the server did not exit within {EXIT_TIMEOUT:?} of SIGTERM; stderr:\n{}",
                    self.stderr()
                );
            }
        }
    }

    /// Starts the server again on the same data directory (killing it first if it still runs).
    /// The port may change; use `url()` or `api()` afterwards.
    pub fn restart(&mut self) {
        self.kill_9();
        append_log(&self.log, "----- restart -----\n");
        match spawn(&self.launch, self.dir.path(), &self.log) {
            Ok((child, url)) => {
                self.child = Some(child);
                self.url = url;
            }
            Err(failure) => panic!("evhost did not restart: {failure:?}"),
        }
    }

    /// Sets (or, with `None`, removes) an environment variable for the next restart.
    pub fn set_env(&mut self, name: &str, value: Option<&str>) {
        self.launch.env.retain(|(n, _)| n != name);
        if let Some(value) = value {
            self.launch.env.push((name.to_string(), value.to_string()));
        }
    }

    /// Waits for the server to exit by itself (a crash point, say); panics if it still runs
    /// after `timeout`. Answers whether it was killed by a signal (an abort) rather than exiting.
    #[track_caller]
    pub fn wait_for_crash(&mut self, timeout: Duration) -> bool {
        let mut child = self.child.take().expect("the server is not running");
        match wait_for_exit(&mut child, timeout) {
            Some(status) => status.code().is_none(),
            None => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "the server did not exit within {timeout:?}; stderr:\n{}",
                    self.stderr()
                );
            }
        }
    }

    /// What the server wrote to stderr so far (the last few hundred KiB).
    pub fn stderr(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Waits until the server's log holds a line containing `needle` and returns that line.
    /// A thread copies the log, so a line may arrive a moment after the answer that caused it;
    /// panics with the log if it has not arrived within `timeout`.
    #[track_caller]
    pub fn wait_for_log_line(&self, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let log = self.stderr();
            if let Some(line) = log.lines().find(|line| line.contains(needle)) {
                return line.to_string();
            }
            assert!(
                Instant::now() < deadline,
                "no line containing {needle:?} in the server's log within {timeout:?}:\n{log}"
            );
            thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill_9();
        if thread::panicking() {
            let log = self.stderr();
            let tail = &log[floor_char_boundary(&log, log.len().saturating_sub(16 * 1024))..];
            eprintln!("----- evhost stderr (tail) -----\n{tail}\n-----");
        }
    }
}

fn floor_char_boundary(s: &str, mut index: usize) -> usize {
    while !s.is_char_boundary(index) {
        index -= 1;
    }
    index
}

fn append_log(log: &Mutex<String>, text: &str) {
    let mut log = log.lock().unwrap();
    log.push_str(text);
    if log.len() > 2 * LOG_KEEP {
        let cut = floor_char_boundary(&log, log.len() - LOG_KEEP);
        log.drain(..cut);
    }
}

fn wait_for_exit(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().expect("wait for evhost") {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// A command running the evhost binary, without token variables from the caller's environment,
/// sharing the run's compile cache.
fn evhost_command() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_evhost"));
    for var in TOKEN_VARS {
        command.env_remove(var);
    }
    command.env("EVHOST_COMPILE_CACHE", compile_cache());
    command
}

/// The compile cache every host of this run shares (`--compile-cache`), emptied when the run
/// starts: each component is compiled once per run, by the first host deployed it, rather than
/// once per test (the Python and JavaScript ones take seconds each).
pub fn compile_cache() -> &'static Path {
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("compile-cache");
        if let Err(error) = std::fs::remove_dir_all(&dir)
            && error.kind() != std::io::ErrorKind::NotFound
        {
            panic!("emptying {}: {error}", dir.display());
        }
        dir
    })
}

/// Runs the evhost binary with `args` to completion (a client subcommand) and returns its output;
/// panics if it runs longer than the start timeout.
pub fn run_evhost(args: &[&str]) -> Output {
    let mut command = evhost_command();
    command.args(args).stdin(Stdio::null());
    let (done_tx, done_rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = done_tx.send(command.output());
    });
    match done_rx.recv_timeout(START_TIMEOUT) {
        Ok(output) => output.expect("run the evhost binary"),
        Err(_) => panic!("evhost {args:?} did not finish within {START_TIMEOUT:?}"),
    }
}

/// Spawns `evhost serve` and waits for its listening line; returns the child and a URL to use.
fn spawn(
    launch: &Launch,
    dir: &Path,
    log: &Arc<Mutex<String>>,
) -> Result<(Child, String), StartFailure> {
    let mut command = evhost_command();
    command
        .arg("serve")
        .arg("--data")
        .arg(dir)
        .arg("--listen")
        .arg(&launch.listen)
        .args(&launch.args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (name, value) in &launch.env {
        command.env(name, value);
    }
    let mut child = command.spawn().expect("spawn the evhost binary");

    let stderr = child.stderr.take().expect("piped stderr");
    let stderr_log = Arc::clone(log);
    let stderr_reader = thread::spawn(move || {
        let mut reader = BufReader::new(stderr);
        let mut line = Vec::new();
        while matches!(reader.read_until(b'\n', &mut line), Ok(n) if n > 0) {
            append_log(&stderr_log, &String::from_utf8_lossy(&line));
            line.clear();
        }
    });

    // The stdout reader keeps draining after the listening line so the pipe never fills up.
    let stdout = child.stdout.take().expect("piped stdout");
    let (lines_tx, lines_rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let _ = lines_tx.send(line);
        }
    });

    let deadline = Instant::now() + START_TIMEOUT;
    let reason = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines_rx.recv_timeout(left) {
            Ok(line) => {
                if let Some(url) = line.trim().strip_prefix(LISTENING_PREFIX) {
                    return Ok((child, connectable_url(url)));
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                break format!("no listening line on stdout within {START_TIMEOUT:?}");
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                break "stdout closed before the listening line".to_string();
            }
        }
    };
    let status = wait_for_exit(&mut child, Duration::from_secs(10));
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    let _ = stderr_reader.join();
    let stderr = log.lock().unwrap().clone();
    Err(StartFailure {
        status,
        stderr,
        reason,
    })
}

/// The printed URL, with a wildcard host replaced by loopback so that the tests can connect.
fn connectable_url(printed: &str) -> String {
    let url = printed.trim_end_matches('/');
    url.replace("://0.0.0.0:", "://127.0.0.1:")
        .replace("://[::]:", "://[::1]:")
}

/// An HTTP response, read completely.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub content_type: String,
    pub body: String,
    /// The `Evhost-Position` header of a read model answer.
    pub position: Option<u64>,
    /// The `Evhost-Version` header of a read model answer: the version whose state answered.
    pub version: Option<String>,
}

impl Reply {
    /// The body as JSON; panics with the body if it is not JSON.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| {
            panic!(
                "response ({}) is not JSON ({e}): {:?}",
                self.status, self.body
            )
        })
    }

    /// Asserts the status and returns the JSON body.
    pub fn expect(&self, status: u16) -> Value {
        assert_eq!(
            self.status, status,
            "unexpected status; body: {}",
            self.body
        );
        self.json()
    }

    /// The `error.code` of an error body, after checking the error body's shape.
    pub fn error_code(&self) -> String {
        let body = self.json();
        let error = &body["error"];
        assert!(
            error["message"].as_str().is_some_and(|m| !m.is_empty()),
            "error body without a message: {body}"
        );
        error["code"]
            .as_str()
            .unwrap_or_else(|| panic!("error body without a code: {body}"))
            .to_string()
    }
}

/// Asserts an error answer: its status, its `error.code`, and that it has a message.
#[track_caller]
pub fn assert_error(reply: &Reply, status: u16, code: &str) {
    assert_eq!(
        reply.status, status,
        "expected {status} {code}; body: {}",
        reply.body
    );
    assert_eq!(reply.error_code(), code, "body: {}", reply.body);
}

/// A small blocking client for one server, with an optional bearer token.
#[derive(Clone)]
pub struct Api {
    base: String,
    token: Option<String>,
    http: reqwest::blocking::Client,
}

impl Api {
    pub fn new(base: &str) -> Api {
        Api::with_timeout(base, REQUEST_TIMEOUT)
    }

    /// A client whose connect, response and per-read waits are bounded by `timeout`.
    pub fn with_timeout(base: &str, timeout: Duration) -> Api {
        let http = reqwest::blocking::Client::builder()
            .no_proxy()
            .timeout(timeout)
            .build()
            .expect("build an HTTP client");
        Api {
            base: base.trim_end_matches('/').to_string(),
            token: None,
            http,
        }
    }

    /// The same client, sending `Authorization: Bearer <token>`.
    pub fn with_token(&self, token: &str) -> Api {
        Api {
            token: Some(token.to_string()),
            ..self.clone()
        }
    }

    /// The same client (and token) with another bound on each wait: for a request that is slow
    /// by nature, such as a deploy that compiles a large component on a busy machine.
    pub fn with_request_timeout(&self, timeout: Duration) -> Api {
        Api {
            token: self.token.clone(),
            ..Api::with_timeout(&self.base, timeout)
        }
    }

    /// Sends a request and returns the response without reading its body (for streaming).
    pub fn open(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<Vec<u8>>,
    ) -> reqwest::Result<reqwest::blocking::Response> {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("a valid method");
        let mut request = self.http.request(method, format!("{}{}", self.base, path));
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        let has_content_type = headers
            .iter()
            .any(|(name, _)| name.eq_ignore_ascii_case("content-type"));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        if let Some(body) = body {
            if !has_content_type {
                request = request.header("content-type", "application/json");
            }
            request = request.body(body);
        }
        request.send()
    }

    /// Sends a request and reads the whole response; a transport error is returned.
    pub fn try_send(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<Vec<u8>>,
    ) -> reqwest::Result<Reply> {
        let response = self.open(method, path, headers, body)?;
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let position = response
            .headers()
            .get("evhost-position")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        let version = response
            .headers()
            .get("evhost-version")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = response.text()?;
        Ok(Reply {
            status,
            content_type,
            body,
            position,
            version,
        })
    }

    /// Sends a request and reads the whole response; panics on a transport error.
    pub fn send(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<Vec<u8>>,
    ) -> Reply {
        self.try_send(method, path, headers, body)
            .unwrap_or_else(|e| panic!("{method} {path} failed: {e}"))
    }

    pub fn get(&self, path: &str) -> Reply {
        self.send("GET", path, &[], None)
    }

    pub fn post(&self, path: &str, body: &Value) -> Reply {
        self.send("POST", path, &[], Some(body.to_string().into_bytes()))
    }

    /// `POST /streams/{stream}` with an append body; a transport error is returned.
    pub fn try_append(&self, stream: &str, body: &Value) -> reqwest::Result<Reply> {
        self.try_send(
            "POST",
            &format!("/streams/{stream}"),
            &[],
            Some(body.to_string().into_bytes()),
        )
    }

    /// `POST /streams/{stream}` with an append body.
    pub fn append(&self, stream: &str, body: &Value) -> Reply {
        self.post(&format!("/streams/{stream}"), body)
    }

    /// Appends `events` (a JSON array) with the default expected version; asserts 201.
    #[track_caller]
    pub fn append_ok(&self, stream: &str, events: Value) -> Value {
        self.append(stream, &json!({ "events": events }))
            .expect(201)
    }

    /// Appends `events` into a category a deployed handler owns, past the handler (the admin's
    /// `bypass_handler=true`); asserts 201.
    #[track_caller]
    pub fn append_past_handler(&self, stream: &str, events: Value) -> Value {
        self.post(
            &format!("/streams/{stream}?bypass_handler=true"),
            &json!({ "events": events }),
        )
        .expect(201)
    }

    /// A stream's current version; 0 when it does not exist (asserting the 404's code).
    pub fn stream_version(&self, stream: &str) -> u64 {
        self.try_stream_version(stream)
            .unwrap_or_else(|e| panic!("reading the version of {stream} failed: {e}"))
    }

    /// Like `stream_version`, but a transport error is returned.
    pub fn try_stream_version(&self, stream: &str) -> reqwest::Result<u64> {
        let path = format!("/streams/{stream}?limit=1&direction=backward");
        let reply = self.try_send("GET", &path, &[], None)?;
        if reply.status == 404 {
            assert_error(&reply, 404, "stream_not_found");
            return Ok(0);
        }
        let page = reply.expect(200);
        Ok(page["version"]
            .as_u64()
            .unwrap_or_else(|| panic!("stream page without a numeric version: {page}")))
    }

    /// The head reported by `GET /health`.
    pub fn head(&self) -> u64 {
        let health = self.get("/health").expect(200);
        health["head"]
            .as_u64()
            .unwrap_or_else(|| panic!("health without a numeric head: {health}"))
    }

    /// The whole global log, paging with `next` until it is null.
    pub fn all_events(&self) -> Vec<Value> {
        events_of(&self.pages("/events", &format!("limit={MAX_LIMIT}")))
    }

    /// A whole stream in version order, paging with `next`; panics unless the stream exists.
    pub fn stream_events(&self, stream: &str) -> Vec<Value> {
        events_of(&self.pages(&format!("/streams/{stream}"), &format!("limit={MAX_LIMIT}")))
    }

    /// Every page of `base`, starting with `query` (which has no `from`) and following `next`
    /// until it is null.
    pub fn pages(&self, base: &str, query: &str) -> Vec<Value> {
        let mut pages = Vec::new();
        let mut seen = std::collections::HashSet::new();
        let mut path = format!("{base}?{query}");
        loop {
            let page = self.get(&path).expect(200);
            let next = page["next"].clone();
            let empty = page["events"].as_array().is_none_or(Vec::is_empty);
            pages.push(page);
            match next.as_u64() {
                Some(next) => {
                    assert!(
                        !empty,
                        "a page with no events but a next: {}",
                        pages.last().unwrap()
                    );
                    assert!(seen.insert(next), "paging comes back to from={next}");
                    path = format!("{base}?{query}&from={next}");
                }
                None => {
                    assert!(next.is_null(), "next is neither null nor a number: {next}");
                    return pages;
                }
            }
        }
    }
}

/// The events of a series of pages, in order.
fn events_of(pages: &[Value]) -> Vec<Value> {
    pages
        .iter()
        .flat_map(|page| {
            page["events"]
                .as_array()
                .unwrap_or_else(|| panic!("page without events: {page}"))
                .iter()
                .cloned()
        })
        .collect()
}

/// Sends one request on a fresh connection exactly as given (the path is not normalised) and
/// reads the answer while the body is still being written, so that an answer the server gives
/// before reading the whole body (such as a 413) is seen, as a browser or curl would see it.
pub fn send_raw(
    base_url: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<Reply> {
    let address = base_url
        .strip_prefix("http://")
        .expect("an http:// URL")
        .trim_end_matches('/');
    let mut stream = TcpStream::connect(address)?;
    stream.set_read_timeout(Some(REQUEST_TIMEOUT))?;
    stream.set_write_timeout(Some(REQUEST_TIMEOUT))?;
    let mut request =
        format!("{method} {path} HTTP/1.1\r\nhost: {address}\r\nconnection: close\r\n");
    if !headers
        .iter()
        .any(|(name, _)| name.eq_ignore_ascii_case("content-type"))
    {
        request.push_str("content-type: application/json\r\n");
    }
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str(&format!("content-length: {}\r\n\r\n", body.len()));
    let mut bytes = request.into_bytes();
    bytes.extend_from_slice(body);
    let mut writer = stream.try_clone()?;
    // A server may refuse and close before it has read everything; the write error is expected.
    let writing = thread::spawn(move || {
        let _ = writer.write_all(&bytes);
    });
    let mut received = Vec::new();
    let mut chunk = [0u8; 64 * 1024];
    let read_error = loop {
        match stream.read(&mut chunk) {
            Ok(0) => break None,
            Ok(n) => received.extend_from_slice(&chunk[..n]),
            Err(error) => break Some(error),
        }
    };
    let _ = stream.shutdown(std::net::Shutdown::Both);
    let _ = writing.join();
    match parse_response(&received) {
        Some(reply) => Ok(reply),
        None => Err(read_error.unwrap_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!(
                    "incomplete response: {:?}",
                    String::from_utf8_lossy(&received)
                ),
            )
        })),
    }
}

/// Parses a complete HTTP/1.1 response (content-length, chunked, or delimited by the close).
fn parse_response(bytes: &[u8]) -> Option<Reply> {
    let head_end = bytes.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&bytes[..head_end]);
    let mut lines = head.split("\r\n");
    let status = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_string()))
        .collect();
    let header = |wanted: &str| {
        headers
            .iter()
            .find(|(name, _)| name == wanted)
            .map(|(_, value)| value.clone())
    };
    let rest = &bytes[head_end + 4..];
    let body = if header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        let mut body = Vec::new();
        let mut rest = rest;
        loop {
            let line_end = rest.windows(2).position(|w| w == b"\r\n")?;
            let size_text = String::from_utf8_lossy(&rest[..line_end]);
            let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
            rest = &rest[line_end + 2..];
            if size == 0 {
                break body;
            }
            body.extend_from_slice(rest.get(..size)?);
            rest = rest.get(size + 2..)?;
        }
    } else if let Some(length) = header("content-length") {
        rest.get(..length.parse::<usize>().ok()?)?.to_vec()
    } else {
        rest.to_vec()
    };
    Some(Reply {
        status,
        content_type: header("content-type").unwrap_or_default(),
        body: String::from_utf8_lossy(&body).into_owned(),
        position: header("evhost-position").and_then(|v| v.parse().ok()),
        version: header("evhost-version"),
    })
}

/// An event to append: `{"type", "data"}`.
pub fn event(event_type: &str, data: Value) -> Value {
    json!({ "type": event_type, "data": data })
}

/// An event to append with a client-chosen id.
pub fn event_with_id(id: &str, event_type: &str, data: Value) -> Value {
    json!({ "id": id, "type": event_type, "data": data })
}

/// The numbers in an append answer: (first_version, last_version, first_position, last_position).
pub fn append_numbers(answer: &Value) -> (u64, u64, u64, u64) {
    let number = |field: &str| {
        answer[field]
            .as_u64()
            .unwrap_or_else(|| panic!("append answer without a numeric {field}: {answer}"))
    };
    (
        number("first_version"),
        number("last_version"),
        number("first_position"),
        number("last_position"),
    )
}

/// Checks that an event as served has every field of the contract with the right type.
#[track_caller]
pub fn assert_event_shape(event: &Value) {
    for field in ["position", "version"] {
        assert!(
            event[field].as_u64().is_some_and(|n| n >= 1),
            "{field} is not a positive integer: {event}"
        );
    }
    for field in ["stream", "id", "type"] {
        assert!(
            event[field].as_str().is_some_and(|s| !s.is_empty()),
            "{field} is not a non-empty string: {event}"
        );
    }
    assert!(event.get("data").is_some(), "no data: {event}");
    assert!(
        event["metadata"].is_object(),
        "metadata is not an object: {event}"
    );
    let recorded_at = event["recorded_at"].as_str().unwrap_or_default();
    assert!(
        recorded_at.len() >= 20
            && recorded_at.as_bytes()[4] == b'-'
            && recorded_at.as_bytes()[10] == b'T'
            && recorded_at.ends_with('Z'),
        "recorded_at is not RFC 3339 UTC: {event}"
    );
}

/// Reads the whole store and checks its invariants: the global log is gapless from 1 to the
/// head, every stream's versions run 1..=version in log order, and every stream read agrees with
/// the global log. Returns the log and the events of each stream.
pub fn check_store(api: &Api) -> (Vec<Value>, BTreeMap<String, Vec<Value>>) {
    let log = api.all_events();
    let mut streams: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for (index, event) in log.iter().enumerate() {
        assert_event_shape(event);
        assert_eq!(
            event["position"].as_u64(),
            Some(index as u64 + 1),
            "the global log has a gap or is out of order at index {index}: {event}"
        );
        let stream = event["stream"].as_str().unwrap().to_string();
        let in_stream = streams.entry(stream).or_default();
        assert_eq!(
            event["version"].as_u64(),
            Some(in_stream.len() as u64 + 1),
            "stream versions are not contiguous: {event}"
        );
        in_stream.push(event.clone());
    }
    assert_eq!(
        api.head(),
        log.len() as u64,
        "health head differs from the log"
    );
    let ids: std::collections::HashSet<&str> =
        log.iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), log.len(), "event ids are not unique");
    for (stream, events) in &streams {
        let page = api
            .get(&format!("/streams/{stream}?limit={MAX_LIMIT}"))
            .expect(200);
        assert_eq!(
            page["version"].as_u64(),
            Some(events.len() as u64),
            "stream {stream}"
        );
        assert_eq!(
            &api.stream_events(stream),
            events,
            "stream {stream} differs from the log"
        );
    }
    (log, streams)
}

/// A tiny xorshift64* generator: reproducible random tests without a dependency.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        // Zero is a fixed point of xorshift; mix the seed so that every seed works.
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// A number in `low..=high`.
    pub fn between(&mut self, low: u64, high: u64) -> u64 {
        low + self.below(high - low + 1)
    }

    /// True with probability `percent`/100.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

/// The seed for a random test: `$var` if set (to replay a failure), else one from the clock.
pub fn seed_from_env(var: &str) -> u64 {
    match std::env::var(var) {
        Ok(value) => value
            .parse()
            .unwrap_or_else(|_| panic!("{var} must be an unsigned integer, not {value:?}")),
        Err(_) => SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock after 1970")
            .as_nanos() as u64,
    }
}

/// Prints how to replay a random test if the test panics while this guard is alive.
pub struct SeedReport {
    pub var: &'static str,
    pub seed: u64,
}

impl Drop for SeedReport {
    fn drop(&mut self) {
        if thread::panicking() {
            eprintln!(
                "random test failed with seed {seed}; replay with {var}={seed}",
                seed = self.seed,
                var = self.var
            );
        }
    }
}

/// The guest packages the tests deploy: the example plugins and the fixtures in tests/fixtures.
/// They are built together, once per test run.
const GUEST_PACKAGES: &[&str] = &[
    "visit",
    "visit-v2",
    "visits",
    "visits-v2",
    "stays",
    "fixture-counter",
    "fixture-counter-v2",
    "fixture-hostile",
    "fixture-describe-trap",
    "fixture-other-world",
    "fixture-imports-filesystem",
    "fixture-imports-sockets",
    "fixture-kind-mismatch",
    "fixture-category-squatter",
    "fixture-counting-projection",
    "fixture-hostile-projection",
    "fixture-hostile-policy",
    "rooms",
    "survey",
    "visit-survey",
    "order",
    "loyalty",
    "order-loyalty",
];

/// Where guests are built: a target directory of their own, so that the build does not wait
/// for the lock of the one running these tests.
fn guest_target_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target/plugins")
        .to_path_buf()
}

/// The component of guest package `package` (one of [`GUEST_PACKAGES`]), built from source for
/// wasm32-wasip2 the first time any test asks for a guest.
pub fn guest_wasm(package: &str) -> Vec<u8> {
    static BUILT: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    assert!(
        GUEST_PACKAGES.contains(&package),
        "{package} is not a guest package"
    );
    let built = BUILT.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let mut command = Command::new(option_env!("CARGO").unwrap_or("cargo"));
        command
            .current_dir(&root)
            // The guests are built as a reader builds them, whatever compiles the tests.
            .env_remove("RUSTC_WORKSPACE_WRAPPER")
            .args([
                "build",
                "--release",
                "--target",
                "wasm32-wasip2",
                "--target-dir",
            ])
            .arg(guest_target_dir());
        for package in GUEST_PACKAGES {
            command.args(["-p", package]);
        }
        let output = command
            .output()
            .map_err(|e| format!("cannot run cargo: {e}"))?;
        if output.status.success() {
            Ok(())
        } else {
            Err(format!(
                "building the guests failed ({}):\n{}",
                output.status,
                String::from_utf8_lossy(&output.stderr)
            ))
        }
    });
    if let Err(failure) = built {
        panic!("{failure}");
    }
    let file = guest_target_dir()
        .join("wasm32-wasip2/release")
        .join(format!("{}.wasm", package.replace('-', "_")));
    std::fs::read(&file).unwrap_or_else(|e| panic!("cannot read {}: {e}", file.display()))
}

/// Appends `count` increments of 1 over `streams` counter streams, 1 000 per request.
pub fn append_ones(api: &Api, count: u64, streams: u64) {
    let mut appended = 0;
    while appended < count {
        let stream = format!("counter-{}", (appended / 1_000) % streams);
        let batch: Vec<Value> = (0..1_000.min(count - appended))
            .map(|_| event("Incremented", json!({"by": 1, "total": 0, "build": "test"})))
            .collect();
        appended += batch.len() as u64;
        api.append_ok(&stream, json!(batch));
    }
}

/// The same component with a custom section appended that holds `build`: the same behaviour
/// under another version (content hash).
pub fn another_build(wasm: &[u8], build: u8) -> Vec<u8> {
    let name = b"evhost-test-build";
    let mut section = vec![name.len() as u8];
    section.extend_from_slice(name);
    section.push(build);
    let mut bytes = wasm.to_vec();
    bytes.push(0); // custom section id
    bytes.push(section.len() as u8); // its size, one LEB128 byte
    bytes.extend_from_slice(&section);
    bytes
}

impl Api {
    /// `POST /plugins?{query}` with a component.
    pub fn deploy(&self, wasm: &[u8], query: &str) -> Reply {
        let path = if query.is_empty() {
            "/plugins".to_string()
        } else {
            format!("/plugins?{query}")
        };
        self.send(
            "POST",
            &path,
            &[("content-type", "application/wasm")],
            Some(wasm.to_vec()),
        )
    }

    /// Deploys a guest package and returns its version, checking the answer.
    pub fn deploy_guest(&self, package: &str) -> String {
        let reply = self.deploy(&guest_wasm(package), "");
        assert!(
            reply.status == 201 || reply.status == 200,
            "deploying {package}: {} {}",
            reply.status,
            reply.body
        );
        reply.json()["version"]
            .as_str()
            .expect("a version")
            .to_string()
    }

    /// `POST /handlers/{handler}/commands`.
    pub fn command(&self, handler: &str, body: &Value) -> Reply {
        self.post(&format!("/handlers/{handler}/commands"), body)
    }

    /// Waits until plugin `name` has processed position `position`, and answers its listing.
    #[track_caller]
    pub fn wait_for_position(&self, name: &str, position: u64, timeout: Duration) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let plugin = self.get(&format!("/plugins/{name}")).expect(200);
            if plugin["position"].as_u64().is_some_and(|p| p >= position) {
                return plugin;
            }
            assert!(
                Instant::now() < deadline,
                "plugin {name} did not reach position {position} within {timeout:?}: {plugin}"
            );
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits until `check` accepts plugin `name`'s listing, and answers it.
    #[track_caller]
    pub fn wait_for_plugin(
        &self,
        name: &str,
        timeout: Duration,
        check: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let plugin = self.get(&format!("/plugins/{name}")).expect(200);
            if check(&plugin) {
                return plugin;
            }
            assert!(
                Instant::now() < deadline,
                "plugin {name} did not reach the expected state within {timeout:?}: {plugin}"
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until stream `stream` holds at least `count` events, and answers them.
    #[track_caller]
    pub fn wait_for_events(&self, stream: &str, count: usize, timeout: Duration) -> Vec<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let reply = self.get(&format!("/streams/{stream}"));
            if reply.status == 200 {
                let events = reply.json()["events"].as_array().unwrap().clone();
                if events.len() >= count {
                    return events;
                }
            }
            assert!(
                Instant::now() < deadline,
                "stream {stream} did not reach {count} events: {}",
                reply.body
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Every item (`{"key", "value"}`) that projection `name` lists with the parameters `query`,
    /// in key order, following `next` through pages of 1 000.
    pub fn projection_items(&self, name: &str, query: &str) -> Vec<Value> {
        let mut items = Vec::new();
        let mut after = String::new();
        loop {
            let page = self
                .get(&format!(
                    "/projections/{name}/keys?limit=1000&{query}&after={after}"
                ))
                .expect(200);
            items.extend(page["items"].as_array().unwrap().iter().cloned());
            match page["next"].as_str() {
                Some(next) => after = next.to_owned(),
                None => return items,
            }
        }
    }

    /// Waits until replay `id` has ended, and answers it.
    #[track_caller]
    pub fn wait_for_replay(&self, id: &str, timeout: Duration) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let replay = self.get(&format!("/replays/{id}")).expect(200);
            if replay["status"] != "running" {
                return replay;
            }
            assert!(
                Instant::now() < deadline,
                "replay {id} did not end within {timeout:?}: {replay}"
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// A counter of `/metrics` (the first line starting with `line_prefix`), as a number.
    pub fn metric(&self, line_prefix: &str) -> f64 {
        let text = self.get("/metrics").body;
        text.lines()
            .find_map(|line| line.strip_prefix(line_prefix))
            .and_then(|rest| rest.trim().parse().ok())
            .unwrap_or_else(|| panic!("no metric {line_prefix:?} in:\n{text}"))
    }
}
