//! What one client connection may cost the host, and how it ends.
//!
//! - A request body must keep coming: it may take [`ConnectionLimits::body_grace`] to start,
//!   then must arrive at [`ConnectionLimits::body_min_rate`] bytes per second on average, and
//!   all of it within [`ConnectionLimits::body_timeout`]. [`BodyReader`] holds every read of a
//!   body (also the reads that only discard one) to that; a body that falls behind is a 408 and
//!   the connection closes.
//! - A connection that closes while its client may still be sending (an answer given before
//!   the body was read: a 401, a 413) closes the way [`LingeringIo`] does: the answer is sent,
//!   then the write side is shut and what the client still sends is read and discarded for a
//!   bounded time (at most [`ConnectionLimits::linger`], and no longer than half a second after
//!   the client's last bytes), so that the client reads the answer rather than a reset
//!   connection.
//! - The number of open connections is capped ([`ConnectionLimits::max_connections`]); past
//!   the cap a connection gets a 503 with `Retry-After` at once and is closed, so that no client
//!   can take the descriptors that everyone else (and the store) needs.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Frame, Incoming};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use super::error::ApiError;

/// The limits on what a connection may hold and for how long.
#[derive(Debug, Clone)]
pub struct ConnectionLimits {
    /// Most connections open at once.
    pub max_connections: usize,
    /// The longest a whole request body may take to arrive.
    pub body_timeout: Duration,
    /// How long a body may take before the minimum rate applies.
    pub body_grace: Duration,
    /// The lowest average rate, in bytes per second, at which a body may arrive after the grace.
    pub body_min_rate: u64,
    /// How long a closing connection keeps discarding what its client still sends.
    pub linger: Duration,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            max_connections: 1024,
            body_timeout: Duration::from_secs(60),
            body_grace: Duration::from_secs(5),
            body_min_rate: 1024,
            linger: Duration::from_secs(5),
        }
    }
}

/// Reads a request body under the limits of [`ConnectionLimits`].
pub struct BodyReader<'a> {
    body: &'a mut Incoming,
    limits: &'a ConnectionLimits,
    started: Instant,
    received: u64,
}

impl<'a> BodyReader<'a> {
    pub fn new(body: &'a mut Incoming, limits: &'a ConnectionLimits) -> Self {
        BodyReader {
            body,
            limits,
            started: Instant::now(),
            received: 0,
        }
    }

    /// When the next bytes must have arrived: the grace, plus the time the bytes so far buy at
    /// the minimum rate, within the whole body's deadline.
    fn deadline(&self) -> Instant {
        let rate = self.limits.body_min_rate.max(1);
        let bought = Duration::from_secs_f64(self.received as f64 / rate as f64);
        let by_rate = self.started + self.limits.body_grace + bought;
        by_rate.min(self.started + self.limits.body_timeout)
    }

    /// The next frame of the body; `None` at its end. A body that falls behind its deadline is
    /// a 408, one the client broke off a 400.
    pub async fn frame(&mut self) -> Option<Result<Frame<Bytes>, ApiError>> {
        let deadline = self.deadline();
        let frame = match tokio::time::timeout_at(deadline, self.body.frame()).await {
            Ok(frame) => frame?,
            Err(_) => return Some(Err(self.too_slow())),
        };
        Some(match frame {
            Ok(frame) => {
                self.received += frame.data_ref().map_or(0, |d| d.len() as u64);
                Ok(frame)
            }
            Err(e) => Err(ApiError::invalid(format!(
                "the request body could not be read: {e}"
            ))),
        })
    }

    fn too_slow(&self) -> ApiError {
        let limits = self.limits;
        ApiError::RequestTimeout(format!(
            "the request body did not arrive in time: {} bytes in {:.1} s; a body must arrive \
             within {} s, at {} bytes/s or more after the first {} s",
            self.received,
            self.started.elapsed().as_secs_f64(),
            limits.body_timeout.as_secs(),
            limits.body_min_rate,
            limits.body_grace.as_secs(),
        ))
    }

    /// Reads and discards the rest of the body, within the same deadlines, until its end or
    /// until `max_bytes` have come in all; a body that falls behind is a 408.
    pub async fn discard(&mut self, max_bytes: u64) -> Result<(), ApiError> {
        while self.received <= max_bytes {
            match self.frame().await {
                None => return Ok(()),
                Some(frame) => frame.map(drop)?,
            }
        }
        Ok(())
    }
}

/// A connection's socket that, when the server closes it, sends what it wrote, shuts its write
/// side, and then reads and discards what the client still sends until the client closes too
/// or [`ConnectionLimits::linger`] has passed. Closing a socket with unread bytes would reset
/// the connection, and a client that is still sending would lose the answer it was sent.
pub struct LingeringIo<T> {
    inner: T,
    linger: Duration,
    /// Set once the write side is shut: until when to keep discarding at the most, and until
    /// when at the least if nothing more comes (a client that sends nothing more, such as an
    /// idle keep-alive one, is not waited for).
    lingering: Option<Linger>,
}

/// The two deadlines of a lingering close: the whole linger, and the wait for the next bytes.
struct Linger {
    whole: Pin<Box<Sleep>>,
    idle: Pin<Box<Sleep>>,
}

/// How long a lingering connection waits for the client's next bytes before it closes.
const LINGER_IDLE: Duration = Duration::from_millis(500);

impl<T> LingeringIo<T> {
    pub fn new(inner: T, linger: Duration) -> Self {
        LingeringIo {
            inner,
            linger,
            lingering: None,
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for LingeringIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncWrite for LingeringIo<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.lingering.is_none() {
            ready!(Pin::new(&mut this.inner).poll_shutdown(cx))?;
            this.lingering = Some(Linger {
                whole: Box::pin(tokio::time::sleep(this.linger)),
                idle: Box::pin(tokio::time::sleep(LINGER_IDLE)),
            });
        }
        let Some(Linger { whole, idle }) = this.lingering.as_mut() else {
            unreachable!("set above")
        };
        let mut scratch = [0u8; 16 << 10];
        loop {
            if whole.as_mut().poll(cx).is_ready() || idle.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Ok(()));
            }
            let mut buf = ReadBuf::new(&mut scratch);
            match Pin::new(&mut this.inner).poll_read(cx, &mut buf) {
                // The client closed (or reset) its side: nothing more to wait for.
                Poll::Ready(Ok(())) if buf.filled().is_empty() => return Poll::Ready(Ok(())),
                Poll::Ready(Ok(())) => {
                    idle.as_mut()
                        .reset(tokio::time::Instant::now() + LINGER_IDLE);
                }
                Poll::Ready(Err(_)) => return Poll::Ready(Ok(())),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

/// The whole answer a connection past the cap gets, before it is closed.
pub fn over_capacity_response(max_connections: usize) -> Vec<u8> {
    let body = serde_json::json!({"error": {
        "code": "too_many_connections",
        "message": format!(
            "the host has {max_connections} connections open, its limit; try again shortly"
        ),
    }})
    .to_string();
    format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
         retry-after: 1\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Raises this process's soft limit of open files to its hard limit, and answers the soft limit
/// in force: how many descriptors the host may hold.
pub fn raise_open_files_limit() -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct passed to them.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return None;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit = raised;
            }
        }
    }
    Some(limit.rlim_cur)
}

/// Descriptors kept for everything but client connections: the store, plugins' compilation,
/// log pipes, the listener, and connections being refused.
pub const RESERVED_DESCRIPTORS: u64 = 64;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_over_capacity_answer_is_a_complete_response() {
        let text = String::from_utf8(over_capacity_response(7)).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 503 "));
        assert!(head.contains(&format!("content-length: {}", body.len())));
        let json: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(json["error"]["code"], "too_many_connections");
    }
}
