//! A minimal NATS client over one TCP connection: the few verbs of the text protocol that
//! JetStream publishing and pulling need (INFO, CONNECT, PING/PONG, SUB, PUB/HPUB, MSG/HMSG).
//! Replies come to one wildcard inbox subscription; a request picks its answer by reply subject.
//! Writes are buffered until [`Connection::flush`], so a batch of publishes goes out in one write.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context, Result, bail};
use serde::Deserialize;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

const INBOX_SID: u64 = 1;

/// A message delivered to this connection.
pub(crate) struct Message {
    pub(crate) subject: String,
    /// The header block (`NATS/1.0 ...` and header lines), empty for a plain MSG.
    pub(crate) headers: Vec<u8>,
    pub(crate) payload: Vec<u8>,
}

impl Message {
    /// The status code in the header line (`NATS/1.0 404 No Messages`), for JetStream's
    /// control messages; `None` for an ordinary message.
    pub(crate) fn status(&self) -> Option<u16> {
        let first = self.headers.split(|&byte| byte == b'\r').next()?;
        let code = std::str::from_utf8(first).ok()?.split_whitespace().nth(1)?;
        code.parse().ok()
    }
}

pub(crate) struct Connection {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
    out: Vec<u8>,
    line: String,
    inbox: String,
    next_reply: u64,
    /// The server's version from its INFO.
    pub(crate) server_version: String,
}

impl Connection {
    /// Connects, introduces itself with headers enabled, and subscribes to its inbox.
    pub(crate) async fn open(addr: SocketAddr) -> Result<Self> {
        #[derive(Deserialize)]
        struct Info {
            version: String,
            #[serde(default)]
            headers: bool,
        }
        static CONNECTIONS: AtomicU64 = AtomicU64::new(0);
        let stream = TcpStream::connect(addr)
            .await
            .with_context(|| format!("connecting to NATS at {addr}"))?;
        stream.set_nodelay(true)?;
        let (reader, writer) = stream.into_split();
        let number = CONNECTIONS.fetch_add(1, Ordering::Relaxed);
        let mut connection = Self {
            reader: BufReader::with_capacity(256 * 1024, reader),
            writer,
            out: Vec::with_capacity(64 * 1024),
            line: String::new(),
            inbox: format!("_INBOX.{}_{number}", std::process::id()),
            next_reply: 0,
            server_version: String::new(),
        };
        connection.read_line().await?;
        let info = connection
            .line
            .strip_prefix("INFO ")
            .with_context(|| format!("expected INFO, got {:?}", connection.line))?;
        let info: Info = serde_json::from_str(info.trim())?;
        if !info.headers {
            bail!("the NATS server does not support headers");
        }
        connection.server_version = info.version;
        let connect = r#"{"verbose":false,"pedantic":false,"headers":true,"no_responders":true,"protocol":1,"lang":"rust","version":"0"}"#;
        write!(
            connection.out,
            "CONNECT {connect}\r\nSUB {}.* {INBOX_SID}\r\nPING\r\n",
            connection.inbox
        )?;
        connection.flush().await?;
        // The PONG proves the server accepted CONNECT and SUB.
        loop {
            connection.read_line().await?;
            match connection.line.trim_end() {
                "PONG" => return Ok(connection),
                line if line.starts_with("-ERR") => bail!("NATS refused the connection: {line}"),
                _ => {}
            }
        }
    }

    /// A fresh reply subject in this connection's inbox.
    pub(crate) fn reply_subject(&mut self) -> String {
        self.next_reply += 1;
        format!("{}.{}", self.inbox, self.next_reply)
    }

    /// Queues a publish; `headers` are `(name, value)` pairs.
    pub(crate) fn publish(
        &mut self,
        subject: &str,
        reply: &str,
        headers: &[(&str, &str)],
        payload: &[u8],
    ) -> Result<()> {
        if headers.is_empty() {
            write!(self.out, "PUB {subject} {reply} {}\r\n", payload.len())?;
        } else {
            let mut block = String::from("NATS/1.0\r\n");
            for (name, value) in headers {
                block.push_str(&format!("{name}: {value}\r\n"));
            }
            block.push_str("\r\n");
            let total = block.len() + payload.len();
            write!(
                self.out,
                "HPUB {subject} {reply} {} {total}\r\n{block}",
                block.len()
            )?;
        }
        self.out.extend_from_slice(payload);
        self.out.extend_from_slice(b"\r\n");
        Ok(())
    }

    pub(crate) async fn flush(&mut self) -> Result<()> {
        self.writer.write_all(&self.out).await?;
        self.out.clear();
        Ok(())
    }

    /// Publishes and waits for the one answer to it.
    pub(crate) async fn request(
        &mut self,
        subject: &str,
        headers: &[(&str, &str)],
        payload: &[u8],
    ) -> Result<Message> {
        let reply = self.reply_subject();
        self.publish(subject, &reply, headers, payload)?;
        self.flush().await?;
        loop {
            let message = self.next_message().await?;
            if message.subject == reply {
                return Ok(message);
            }
        }
    }

    /// The next message, answering the server's PINGs on the way.
    pub(crate) async fn next_message(&mut self) -> Result<Message> {
        loop {
            self.read_line().await?;
            let line = self.line.trim_end();
            let (verb, rest) = line.split_once(' ').unwrap_or((line, ""));
            match verb {
                "MSG" | "HMSG" => {
                    // MSG <subject> <sid> [reply] <size>; HMSG ... <header size> <total size>
                    let fields: Vec<&str> = rest.split_whitespace().collect();
                    let sizes = if verb == "MSG" { 1 } else { 2 };
                    if fields.len() < 2 + sizes {
                        bail!("malformed {verb} line: {line:?}");
                    }
                    let subject = fields[0].to_owned();
                    let total: usize = fields[fields.len() - 1].parse()?;
                    let header_size: usize = match sizes {
                        2 => fields[fields.len() - 2].parse()?,
                        _ => 0,
                    };
                    let mut payload = vec![0; total + 2];
                    self.reader.read_exact(&mut payload).await?;
                    payload.truncate(total);
                    let headers = payload.drain(..header_size).collect();
                    return Ok(Message {
                        subject,
                        headers,
                        payload,
                    });
                }
                "PING" => {
                    self.out.extend_from_slice(b"PONG\r\n");
                    self.flush().await?;
                }
                "-ERR" => bail!("NATS error: {rest}"),
                _ => {}
            }
        }
    }

    async fn read_line(&mut self) -> Result<()> {
        self.line.clear();
        if self.reader.read_line(&mut self.line).await? == 0 {
            bail!("the NATS server closed the connection");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_status_codes_from_headers() {
        let message = |headers: &[u8]| Message {
            subject: String::new(),
            headers: headers.to_vec(),
            payload: Vec::new(),
        };
        assert_eq!(
            message(b"NATS/1.0 404 No Messages\r\n\r\n").status(),
            Some(404)
        );
        assert_eq!(message(b"NATS/1.0\r\nA: b\r\n\r\n").status(), None);
        assert_eq!(message(b"").status(), None);
    }
}
