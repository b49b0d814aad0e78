//! How a node learns of every commit, its own and other nodes', at once: a connection of its own
//! that LISTENs on the store's channels, where every appending group NOTIFYs its new head as it
//! commits, and every change of a plugin record its plugin's name. After any break (a restart, a failover) it connects again, listens, and reads the
//! head, so that nothing committed while it was away is missed.

use std::future::poll_fn;
use std::sync::Arc;
use std::time::Duration;

use tokio_postgres::AsyncMessage;

use crate::Shared;
use crate::error::describe;

/// Follows the head until the store closes.
pub(crate) async fn follow_head(shared: Arc<Shared>) {
    let mut backoff = Duration::from_millis(50);
    loop {
        match listen(&shared).await {
            Ok(()) => return,
            Err(error) => {
                if shared.is_closed() {
                    return;
                }
                tracing::warn!("following the head: {error}; listening again");
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(1));
    }
}

/// One connection's life: listen, read the head, then take every notification until the
/// connection breaks (an error) or the store closes (`Ok`).
async fn listen(shared: &Shared) -> Result<(), String> {
    let (client, mut connection) = shared
        .config
        .connect(tokio_postgres::NoTls)
        .await
        .map_err(|e| describe(&e))?;
    let (notes, mut received) = tokio::sync::mpsc::unbounded_channel();
    let driver = tokio::spawn(async move {
        loop {
            match poll_fn(|cx| connection.poll_message(cx)).await {
                Some(Ok(AsyncMessage::Notification(note))) => {
                    let note = (note.channel().to_owned(), note.payload().to_owned());
                    if notes.send(Ok(note)).is_err() {
                        return;
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(error)) => {
                    let _ = notes.send(Err(describe(&error)));
                    return;
                }
                None => {
                    let _ = notes.send(Err("the connection closed".to_owned()));
                    return;
                }
            }
        }
    });
    let result = async {
        client
            .batch_execute(&format!(
                "LISTEN \"{}\"; LISTEN \"{}\"",
                shared.channel, shared.catalog_channel
            ))
            .await
            .map_err(|e| describe(&e))?;
        // Whatever changed while this node was not listening is news too.
        shared.catalog.send_modify(|changes| *changes += 1);
        let head: i64 = client
            .query_one("SELECT position FROM head WHERE id = 1", &[])
            .await
            .map_err(|e| describe(&e))?
            .get(0);
        shared.advance_head(head as u64);
        let mut closed = shared.closed_watch();
        loop {
            tokio::select! {
                note = received.recv() => match note {
                    Some(Ok((channel, _))) if channel == shared.catalog_channel => {
                        shared.catalog.send_modify(|changes| *changes += 1);
                    }
                    Some(Ok((_, payload))) => match payload.parse::<u64>() {
                        Ok(head) => shared.advance_head(head),
                        Err(_) => tracing::warn!("a notification of the head said {payload:?}"),
                    },
                    Some(Err(error)) => return Err(error),
                    None => return Err("the connection's driver stopped".to_owned()),
                },
                _ = closed.wait_for(|closed| *closed) => return Ok(()),
            }
        }
    }
    .await;
    driver.abort();
    result
}
