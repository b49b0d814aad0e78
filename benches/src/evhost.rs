//! evhost under test: starting the real server binary on a free port and stopping it, and the
//! workloads' operations spoken over its HTTP API, plugin deploys and commands included.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use hyper::{Method, StatusCode};
use serde::Deserialize;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::http::Connection;
use crate::workload::{Append, Client, READ_PAGE, System};

const READY: &str = "evhost listening on http://";

/// What the report says about this set-up.
pub(crate) const NOTE: &str = "the release binary with its default, durable configuration, on a \
    fresh data directory; memory is the server's RSS sampled every 100 ms.";

/// A running `evhost serve`, killed if dropped.
pub(crate) struct Server {
    child: Child,
    pub(crate) addr: SocketAddr,
    pub(crate) pid: u32,
    log: PathBuf,
}

impl Server {
    /// Starts the server on `data` and waits until it says where it listens. Its stderr goes to
    /// `evhost.log` and its process id to `evhost.pid` in `work`, so that the bench script can
    /// stop it even if this program dies.
    pub(crate) async fn start(
        binary: &Path,
        data: &Path,
        work: &Path,
        timeout: Duration,
    ) -> Result<Self> {
        Self::start_named(binary, data, work, timeout, "evhost", &[]).await
    }

    /// The same with `extra` arguments to `evhost serve` (a shared store, say), its log and
    /// process id in `<name>.log` and `<name>.pid`, so that several servers share `work`.
    pub(crate) async fn start_named(
        binary: &Path,
        data: &Path,
        work: &Path,
        timeout: Duration,
        name: &str,
        extra: &[String],
    ) -> Result<Self> {
        let log = work.join(format!("{name}.log"));
        let stderr =
            std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let mut child = Command::new(binary)
            .arg("serve")
            .arg("--data")
            .arg(data)
            .arg("--listen")
            .arg("127.0.0.1:0")
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        let pid = child.id().context("the server exited at once")?;
        std::fs::write(work.join(format!("{name}.pid")), pid.to_string())?;
        let mut lines = BufReader::new(child.stdout.take().context("no stdout")?).lines();
        let ready = tokio::time::timeout(timeout, async {
            while let Some(line) = lines.next_line().await? {
                if let Some(addr) = line.strip_prefix(READY) {
                    return Ok(addr.trim().trim_end_matches('/').parse::<SocketAddr>()?);
                }
            }
            bail!("the server exited before it listened")
        })
        .await;
        let addr = match ready {
            Ok(Ok(addr)) => addr,
            Ok(Err(error)) => bail!("{error:#}; its log ends:\n{}", tail(&log)),
            Err(_) => bail!(
                "the server did not print {READY:?} within {timeout:?}; its log ends:\n{}",
                tail(&log)
            ),
        };
        // Keep reading stdout so that the server never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(Self {
            child,
            addr,
            pid,
            log,
        })
    }

    /// Asks the server to shut down (SIGTERM) and waits for it; kills it if it does not exit
    /// within `timeout`.
    pub(crate) async fn stop(mut self, timeout: Duration) -> Result<()> {
        let signalled = std::process::Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .status();
        if signalled.is_ok_and(|status| status.success())
            && let Ok(exit) = tokio::time::timeout(timeout, self.child.wait()).await
        {
            exit?;
            return Ok(());
        }
        self.child.kill().await?;
        bail!("the server did not exit within {timeout:?} of SIGTERM and was killed")
    }

    /// The end of the server's log, for error messages.
    pub(crate) fn log_tail(&self) -> String {
        tail(&self.log)
    }

    /// The server's whole log so far, for the figures it prints (plugin load times).
    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

fn tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

/// evhost's HTTP API at `addr`.
pub(crate) struct Evhost {
    pub(crate) addr: SocketAddr,
}

impl Evhost {
    /// The server's version and the log's head, from `GET /health`.
    pub(crate) async fn health(&self) -> Result<(String, u64)> {
        #[derive(Deserialize)]
        struct Health {
            version: String,
            head: u64,
        }
        let mut http = Connection::open(self.addr).await?;
        let (status, body) = http.send(Method::GET, "/health", None).await?;
        expect(status, StatusCode::OK, &body)?;
        let health: Health = serde_json::from_slice(&body)?;
        Ok((health.version, health.head))
    }

    /// Deploys the plugin component `wasm` to a store that has never seen it.
    pub(crate) async fn deploy(&self, wasm: Bytes) -> Result<Deployed> {
        let mut http = Connection::open(self.addr).await?;
        let body = Some(("application/wasm", wasm));
        let (status, body) = http.send_body(Method::POST, "/plugins", body).await?;
        expect(status, StatusCode::CREATED, &body)?;
        Ok(serde_json::from_slice(&body)?)
    }

    /// Reads the event at `head`, as a client catching up with the log would start.
    pub(crate) async fn read_head(&self, head: u64) -> Result<()> {
        let mut http = Connection::open(self.addr).await?;
        let path = format!("/events?from={}&limit=1", head.max(1));
        let (status, body) = http.send(Method::GET, &path, None).await?;
        expect(status, StatusCode::OK, &body)
    }
}

/// Several evhost nodes sharing one store: each new client connects to the next node in turn,
/// and the log is read from the first.
pub(crate) struct EvhostNodes {
    pub(crate) addrs: Vec<SocketAddr>,
    next: AtomicUsize,
}

impl EvhostNodes {
    pub(crate) fn new(addrs: Vec<SocketAddr>) -> Self {
        assert!(!addrs.is_empty(), "a cluster has a node");
        Self {
            addrs,
            next: AtomicUsize::new(0),
        }
    }
}

impl System for EvhostNodes {
    type Client = EvhostClient;

    async fn connect(&self) -> Result<EvhostClient> {
        let node = self.next.fetch_add(1, Ordering::Relaxed) % self.addrs.len();
        Evhost {
            addr: self.addrs[node],
        }
        .connect()
        .await
    }

    async fn read_all(&self) -> Result<u64> {
        Evhost {
            addr: self.addrs[0],
        }
        .read_all()
        .await
    }
}

/// The answer to a deploy.
#[derive(Deserialize)]
pub(crate) struct Deployed {
    pub(crate) name: String,
    pub(crate) kind: String,
}

pub(crate) struct EvhostClient {
    http: Connection,
}

impl EvhostClient {
    /// Sends the command `command_type` with `data` (JSON text) to `handler` for `stream`, and
    /// returns how many events it appended; a rejection, like any answer but 200, is an error.
    pub(crate) async fn command(
        &mut self,
        handler: &str,
        stream: &str,
        command_type: &str,
        data: &str,
    ) -> Result<u64> {
        #[derive(Deserialize)]
        struct Applied {
            events: Vec<serde::de::IgnoredAny>,
        }
        let path = format!("/handlers/{handler}/commands");
        let body = command_body(stream, command_type, data);
        let (status, body) = self.http.send(Method::POST, &path, Some(body)).await?;
        expect(status, StatusCode::OK, &body)?;
        Ok(serde_json::from_slice::<Applied>(&body)?.events.len() as u64)
    }
}

impl System for Evhost {
    type Client = EvhostClient;

    async fn connect(&self) -> Result<EvhostClient> {
        Ok(EvhostClient {
            http: Connection::open(self.addr).await?,
        })
    }

    /// Pages through `GET /events`, finding only `next` in each page rather than parsing the
    /// events, as a client that streams the log onward would; the last page is parsed in full
    /// and the count checked against the server's head.
    async fn read_all(&self) -> Result<u64> {
        let mut http = Connection::open(self.addr).await?;
        let mut from = 1;
        loop {
            let path = format!("/events?from={from}&limit={READ_PAGE}");
            let (status, body) = http.send(Method::GET, &path, None).await?;
            expect(status, StatusCode::OK, &body)?;
            let head = number_after(&body, "head")
                .flatten()
                .context("a page of the log has no head")?;
            match number_after(&body, "next") {
                Some(Some(next)) if next > from && next <= head => from = next,
                Some(Some(next)) if next > head => return Ok(head),
                Some(None) => {
                    #[derive(Deserialize)]
                    struct Page {
                        events: Vec<serde::de::IgnoredAny>,
                    }
                    let page: Page = serde_json::from_slice(&body)?;
                    let read = from - 1 + page.events.len() as u64;
                    if read != head {
                        bail!("the log's head is {head}, but reading it found {read} events");
                    }
                    return Ok(read);
                }
                next => bail!("a page from {from} of the log has an unusable next: {next:?}"),
            }
        }
    }
}

impl Client for EvhostClient {
    async fn append(&mut self, stream: &str, expected: u64, events: &[String]) -> Result<Append> {
        #[derive(Deserialize)]
        struct Appended {
            last_version: u64,
        }
        let body = append_body(expected, events);
        let path = format!("/streams/{stream}");
        let (status, body) = self.http.send(Method::POST, &path, Some(body)).await?;
        if status == StatusCode::CONFLICT && error_code(&body) == Some("wrong_expected_version") {
            return Ok(Append::Conflict);
        }
        expect(status, StatusCode::CREATED, &body)?;
        let appended: Appended = serde_json::from_slice(&body)?;
        Ok(Append::Done {
            version: appended.last_version,
        })
    }

    async fn version(&mut self, stream: &str) -> Result<u64> {
        #[derive(Deserialize)]
        struct StreamPage {
            version: u64,
        }
        // Backward with a limit of 1 returns the version with at most one event.
        let path = format!("/streams/{stream}?direction=backward&limit=1");
        let (status, body) = self.http.send(Method::GET, &path, None).await?;
        if status == StatusCode::NOT_FOUND {
            return Ok(0);
        }
        expect(status, StatusCode::OK, &body)?;
        Ok(serde_json::from_slice::<StreamPage>(&body)?.version)
    }
}

fn append_body(expected: u64, events: &[String]) -> String {
    let size = events.iter().map(|data| data.len() + 24).sum::<usize>();
    let mut body = String::with_capacity(64 + size);
    body.push_str(r#"{"expected_version":"#);
    if expected == 0 {
        body.push_str(r#""no_stream""#);
    } else {
        body.push_str(&expected.to_string());
    }
    body.push_str(r#","events":["#);
    for (index, data) in events.iter().enumerate() {
        if index > 0 {
            body.push(',');
        }
        body.push_str(r#"{"type":"Bench","data":"#);
        body.push_str(data);
        body.push('}');
    }
    body.push_str("]}");
    body
}

fn command_body(stream: &str, command_type: &str, data: &str) -> String {
    let quoted = |text: &str| serde_json::to_string(text).expect("a string serializes");
    format!(
        r#"{{"stream":{},"type":{},"data":{data}}}"#,
        quoted(stream),
        quoted(command_type)
    )
}

fn expect(status: StatusCode, wanted: StatusCode, body: &Bytes) -> Result<()> {
    if status != wanted {
        let text = String::from_utf8_lossy(&body[..body.len().min(500)]);
        bail!("expected {wanted}, got {status}: {text}");
    }
    Ok(())
}

fn error_code(body: &[u8]) -> Option<&str> {
    #[derive(Deserialize)]
    struct ErrorBody<'a> {
        #[serde(borrow)]
        error: ErrorDetail<'a>,
    }
    #[derive(Deserialize)]
    struct ErrorDetail<'a> {
        code: &'a str,
    }
    let parsed: ErrorBody = serde_json::from_slice(body).ok()?;
    Some(parsed.error.code)
}

/// The value of the last top-level-looking `"key":` in `body`: `Some(Some(n))` for a number,
/// `Some(None)` for null, `None` if absent. Searching from the end finds the page's own fields,
/// which follow the events, without parsing the events; bench event data never holds these keys.
fn number_after(body: &[u8], key: &str) -> Option<Option<u64>> {
    let needle = format!("\"{key}\":");
    let needle = needle.as_bytes();
    let at = body
        .windows(needle.len())
        .rposition(|window| window == needle)?;
    let rest = &body[at + needle.len()..];
    let start = rest.iter().position(|byte| !byte.is_ascii_whitespace())?;
    let rest = &rest[start..];
    if rest.starts_with(b"null") {
        return Some(None);
    }
    let digits = rest.iter().take_while(|byte| byte.is_ascii_digit()).count();
    std::str::from_utf8(&rest[..digits])
        .ok()?
        .parse()
        .ok()
        .map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_next_and_head_without_parsing_events() {
        let page = br#"{"events":[{"position":1,"data":{"n":1}}],"next": 2,"head":7}"#;
        assert_eq!(number_after(page, "next"), Some(Some(2)));
        assert_eq!(number_after(page, "head"), Some(Some(7)));
        let last = br#"{"events":[],"next":null,"head":7}"#;
        assert_eq!(number_after(last, "next"), Some(None));
        assert_eq!(number_after(last, "missing"), None);
    }

    #[test]
    fn append_bodies_are_json_with_no_stream_for_zero() {
        let events = vec![r#"{"n":0}"#.to_owned(), r#"{"n":1}"#.to_owned()];
        let first: serde_json::Value = serde_json::from_str(&append_body(0, &events)).unwrap();
        assert_eq!(first["expected_version"], "no_stream");
        assert_eq!(first["events"][1]["data"]["n"], 1);
        let later: serde_json::Value = serde_json::from_str(&append_body(5, &events)).unwrap();
        assert_eq!(later["expected_version"], 5);
        assert_eq!(later["events"][0]["type"], "Bench");
    }

    #[test]
    fn command_bodies_are_json_with_the_data_as_is() {
        let body = command_body("visit-c0-1", "AddNote", r#"{"text":"ok"}"#);
        let body: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(body["stream"], "visit-c0-1");
        assert_eq!(body["type"], "AddNote");
        assert_eq!(body["data"]["text"], "ok");
    }

    #[test]
    fn reads_error_codes() {
        let conflict = br#"{"error":{"code":"wrong_expected_version","expected":1,"actual":2}}"#;
        assert_eq!(error_code(conflict), Some("wrong_expected_version"));
        assert_eq!(error_code(b"not json"), None);
    }
}
