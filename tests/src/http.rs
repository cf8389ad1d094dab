//! A minimal HTTP/1.1 client for the tests of the metrics endpoint and the dashboard: one
//! request per connection, whole answer read.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// An HTTP answer.
#[derive(Debug, Clone)]
pub struct Answer {
    /// Status code.
    pub status: u16,
    /// The `Content-Type` header, lowercased (empty when absent).
    pub content_type: String,
    /// The body.
    pub body: String,
}

impl Answer {
    /// The body as JSON.
    ///
    /// # Panics
    /// When the body is not JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

/// Send `method path` with `headers` to `addr`; `None` when nothing answers.
pub async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Option<Answer> {
    let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
    let mut ask = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: 0\r\n"
    );
    for (k, v) in headers {
        ask.push_str(&format!("{k}: {v}\r\n"));
    }
    ask.push_str("\r\n");
    stream.write_all(ask.as_bytes()).await.ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.ok()?;
    let (head, body) = answer.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    let content_type = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-type: ")
                .map(str::to_owned)
        })
        .unwrap_or_default();
    Some(Answer {
        status,
        content_type,
        body: body.to_owned(),
    })
}

/// `GET path` from `addr`.
pub async fn get(addr: SocketAddr, path: &str) -> Option<Answer> {
    request(addr, "GET", path, &[]).await
}

/// A free loopback address (bound, then released, so a child process can take it).
///
/// # Panics
/// When no port can be bound.
pub fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
}
