//! NATS JetStream as an event store: one file-backed stream `EVENTS` over the subjects
//! `events.>`, a stream of evhost's being the subject `events.<stream>`. Optimistic concurrency
//! is the `Nats-Expected-Last-Subject-Sequence` header, so the "version" the workloads carry is
//! the stream sequence of the subject's last message.
//!
//! Two differences from evhost are inherent to NATS 2.9 and reported with the figures: it does not
//! fsync each message (it syncs on a timer), and it has no atomic batch, so a batch is its events
//! published back to back and only the first carries the expected sequence.

use std::net::SocketAddr;

use anyhow::{Context, Result, bail};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::json;

use crate::nats::Connection;
use crate::workload::{Append, Client, READ_PAGE, System};

/// What the report says about this set-up.
pub(crate) const NOTE: &str = "file storage, one stream over `events.>`, appends checked with \
    Nats-Expected-Last-Subject-Sequence. **Not fsync'd per message**: this version syncs to disk \
    on a timer (every 2 minutes), so it is less durable than the other two. It has no atomic \
    batch: a batch is its events published back to back and only the first carries the expected \
    sequence. The log is read with a pull consumer; memory is the server's RSS.";

const STREAM: &str = "EVENTS";
const EXPECTED_LAST_SUBJECT_SEQUENCE: &str = "Nats-Expected-Last-Subject-Sequence";
/// JetStream's error for a failed expected-sequence check ("wrong last sequence").
const WRONG_LAST_SEQUENCE: u64 = 10071;
/// JetStream's error for a direct message get that found nothing.
const NO_MESSAGE_FOUND: u64 = 10037;
/// JetStream's error for a stream that does not exist.
const STREAM_NOT_FOUND: u64 = 10059;

#[derive(Deserialize, Debug)]
struct ApiError {
    err_code: u64,
    description: String,
}

/// Calls the JetStream API: `Ok(Err(_))` is an error JetStream answered with.
async fn call<T: DeserializeOwned>(
    connection: &mut Connection,
    subject: &str,
    body: serde_json::Value,
) -> Result<Result<T, ApiError>> {
    let answer = connection
        .request(subject, &[], body.to_string().as_bytes())
        .await?;
    answer_of(&answer.payload).with_context(|| format!("answer to {subject}"))
}

fn answer_of<T: DeserializeOwned>(payload: &[u8]) -> Result<Result<T, ApiError>> {
    #[derive(Deserialize)]
    struct Failure {
        error: ApiError,
    }
    if let Ok(failure) = serde_json::from_slice::<Failure>(payload) {
        return Ok(Err(failure.error));
    }
    Ok(Ok(serde_json::from_slice(payload)?))
}

/// A NATS server with JetStream enabled.
pub(crate) struct JetStream {
    addr: SocketAddr,
}

impl JetStream {
    /// Connects, replaces the `EVENTS` stream with an empty one, and returns the server version.
    pub(crate) async fn setup(addr: SocketAddr) -> Result<(Self, String)> {
        let mut connection = Connection::open(addr).await?;
        let deleted = call::<serde_json::Value>(
            &mut connection,
            &format!("$JS.API.STREAM.DELETE.{STREAM}"),
            json!({}),
        )
        .await?;
        if let Err(error) = deleted
            && error.err_code != STREAM_NOT_FOUND
        {
            bail!("deleting the stream: {}", error.description);
        }
        let config = json!({
            "name": STREAM,
            "subjects": ["events.>"],
            "storage": "file",
            "retention": "limits",
            "discard": "old",
            "num_replicas": 1,
        });
        call::<serde_json::Value>(
            &mut connection,
            &format!("$JS.API.STREAM.CREATE.{STREAM}"),
            config,
        )
        .await?
        .map_err(|error| anyhow::anyhow!("creating the stream: {}", error.description))?;
        Ok((Self { addr }, connection.server_version))
    }
}

pub(crate) struct Publisher {
    connection: Connection,
}

impl System for JetStream {
    type Client = Publisher;

    async fn connect(&self) -> Result<Publisher> {
        Ok(Publisher {
            connection: Connection::open(self.addr).await?,
        })
    }

    /// Reads the stream with an ephemeral pull consumer that needs no acks, two pull requests of
    /// [`READ_PAGE`] messages kept in flight so that the server never waits for the client.
    async fn read_all(&self) -> Result<u64> {
        #[derive(Deserialize)]
        struct StreamInfo {
            state: StreamState,
        }
        #[derive(Deserialize)]
        struct StreamState {
            messages: u64,
        }
        #[derive(Deserialize)]
        struct ConsumerInfo {
            name: String,
        }
        let mut connection = Connection::open(self.addr).await?;
        let info: StreamInfo = call(
            &mut connection,
            &format!("$JS.API.STREAM.INFO.{STREAM}"),
            json!({}),
        )
        .await?
        .map_err(|error| anyhow::anyhow!("stream info: {}", error.description))?;
        let consumer = json!({
            "stream_name": STREAM,
            "config": {
                "deliver_policy": "all",
                "ack_policy": "none",
                "replay_policy": "instant",
                "inactive_threshold": 60_000_000_000_u64,
                "mem_storage": true,
                "num_replicas": 1,
            },
        });
        let consumer: ConsumerInfo = call(
            &mut connection,
            &format!("$JS.API.CONSUMER.CREATE.{STREAM}"),
            consumer,
        )
        .await?
        .map_err(|error| anyhow::anyhow!("creating a consumer: {}", error.description))?;
        let next = format!("$JS.API.CONSUMER.MSG.NEXT.{STREAM}.{}", consumer.name);
        let total = info.state.messages;
        let (mut asked, mut received) = (0, 0);
        while received < total {
            while asked < total && asked < received + 2 * READ_PAGE {
                let batch = READ_PAGE.min(total - asked);
                let pull = json!({ "batch": batch, "expires": 60_000_000_000_u64 });
                let reply = connection.reply_subject();
                connection.publish(&next, &reply, &[], pull.to_string().as_bytes())?;
                asked += batch;
            }
            connection.flush().await?;
            let message = connection.next_message().await?;
            if let Some(status) = message.status() {
                bail!("pulling from the stream: status {status} after {received} messages");
            }
            received += 1;
        }
        let delete = format!("$JS.API.CONSUMER.DELETE.{STREAM}.{}", consumer.name);
        let _ = call::<serde_json::Value>(&mut connection, &delete, json!({})).await?;
        Ok(received)
    }
}

impl Client for Publisher {
    async fn append(&mut self, stream: &str, expected: u64, events: &[String]) -> Result<Append> {
        #[derive(Deserialize)]
        struct Ack {
            seq: u64,
        }
        let subject = format!("events.{stream}");
        let expected = expected.to_string();
        for (index, data) in events.iter().enumerate() {
            let reply = self.connection.reply_subject();
            let check = [(EXPECTED_LAST_SUBJECT_SEQUENCE, expected.as_str())];
            let headers: &[(&str, &str)] = if index == 0 { &check } else { &[] };
            self.connection
                .publish(&subject, &reply, headers, data.as_bytes())?;
        }
        self.connection.flush().await?;
        let mut last = None;
        for _ in events {
            let ack = self.connection.next_message().await?;
            match answer_of::<Ack>(&ack.payload)? {
                Ok(ack) => last = last.max(Some(ack.seq)),
                // Only the first message carries the check, so only it can fail on it, but
                // the others are stored regardless: NATS 2.9 has no atomic batch.
                Err(error) if error.err_code == WRONG_LAST_SEQUENCE && events.len() == 1 => {
                    return Ok(Append::Conflict);
                }
                Err(error) => bail!("publishing to {subject}: {}", error.description),
            }
        }
        let version = last.context("no acknowledgement")?;
        Ok(Append::Done { version })
    }

    async fn version(&mut self, stream: &str) -> Result<u64> {
        #[derive(Deserialize)]
        struct Found {
            message: StoredMessage,
        }
        #[derive(Deserialize)]
        struct StoredMessage {
            seq: u64,
        }
        let subject = format!("$JS.API.STREAM.MSG.GET.{STREAM}");
        let query = json!({ "last_by_subj": format!("events.{stream}") });
        match call::<Found>(&mut self.connection, &subject, query).await? {
            Ok(found) => Ok(found.message.seq),
            Err(error) if error.err_code == NO_MESSAGE_FOUND => Ok(0),
            Err(error) => bail!(
                "reading the last message of {stream}: {}",
                error.description
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tells_acks_from_errors() {
        #[derive(Deserialize, Debug)]
        struct Ack {
            seq: u64,
        }
        let ack = answer_of::<Ack>(br#"{"stream":"EVENTS","seq":7}"#).unwrap();
        assert_eq!(ack.unwrap().seq, 7);
        let wrong =
            br#"{"error":{"code":400,"err_code":10071,"description":"wrong last sequence: 7"}}"#;
        assert_eq!(
            answer_of::<Ack>(wrong).unwrap().unwrap_err().err_code,
            WRONG_LAST_SEQUENCE
        );
    }
}
