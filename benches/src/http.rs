//! One persistent HTTP/1.1 connection, the cheapest client hyper offers: no pool, no retries, one
//! request at a time on a keep-alive connection, as one client of a real application would use.
//! The load generator shares the cores with the server, so every cycle spent here is one the
//! server does not get.

use std::net::SocketAddr;

use anyhow::{Context, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::{Method, Request, StatusCode, header};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

pub(crate) struct Connection {
    sender: SendRequest<Full<Bytes>>,
    host: String,
}

impl Connection {
    pub(crate) async fn open(addr: SocketAddr) -> Result<Self> {
        let stream = TcpStream::connect(addr)
            .await
            .with_context(|| format!("connecting to {addr}"))?;
        stream.set_nodelay(true)?;
        let (sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(connection);
        Ok(Self {
            sender,
            host: addr.to_string(),
        })
    }

    /// Sends one request with a JSON body, or none, and returns the status and the whole body.
    pub(crate) async fn send(
        &mut self,
        method: Method,
        path: &str,
        json: Option<String>,
    ) -> Result<(StatusCode, Bytes)> {
        let body = json.map(|json| ("application/json", Bytes::from(json)));
        self.send_body(method, path, body).await
    }

    /// Sends one request with a body of the given content type, or none, and returns the status
    /// and the whole body.
    pub(crate) async fn send_body(
        &mut self,
        method: Method,
        path: &str,
        body: Option<(&str, Bytes)>,
    ) -> Result<(StatusCode, Bytes)> {
        self.sender.ready().await.context("connection closed")?;
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, &self.host);
        if let Some((content_type, _)) = &body {
            request = request.header(header::CONTENT_TYPE, *content_type);
        }
        let body = Full::new(body.map(|(_, bytes)| bytes).unwrap_or_default());
        let response = self.sender.send_request(request.body(body)?).await?;
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        Ok((status, body))
    }
}
