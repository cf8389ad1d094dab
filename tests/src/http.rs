//! A minimal HTTP/1.1 client for the tests of the metrics endpoint and the dashboard: one
//! request per connection, whole answer read.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How long one request may take, answer included.
pub const ANSWER_WITHIN: std::time::Duration = std::time::Duration::from_secs(20);

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
    send(addr, method, path, headers, "").await
}

/// Send `method path` with a JSON `body` to `addr`; `None` when nothing answers.
pub async fn json(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: &serde_json::Value,
) -> Option<Answer> {
    let body = body.to_string();
    send(
        addr,
        method,
        path,
        &[("Content-Type", "application/json")],
        &body,
    )
    .await
}

async fn send(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Option<Answer> {
    let mut ask = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        ask.push_str(&format!("{k}: {v}\r\n"));
    }
    ask.push_str("\r\n");
    ask.push_str(body);
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
        stream.write_all(ask.as_bytes()).await.ok()?;
        read_answer(&mut stream).await
    };
    let answer = tokio::time::timeout(ANSWER_WITHIN, exchange).await.ok()??;
    let (head, body) = answer.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    let content_type = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-type:")
                .map(|v| v.trim().to_owned())
        })
        .unwrap_or_default();
    Some(Answer {
        status,
        content_type,
        body: body.to_owned(),
    })
}

/// Read one answer: the head, then `Content-Length` bytes of body (to the end of the stream
/// without one). Servers that keep the connection open (chromedriver) are read that way too.
async fn read_answer(stream: &mut tokio::net::TcpStream) -> Option<String> {
    let mut raw = Vec::new();
    let mut buf = [0u8; 8192];
    let head_end = loop {
        if let Some(i) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = stream.read(&mut buf).await.ok()?;
        if n == 0 {
            return String::from_utf8(raw).ok();
        }
        raw.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&raw[..head_end]).to_ascii_lowercase();
    let length = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok());
    match length {
        Some(len) => {
            while raw.len() < head_end + len {
                let n = stream.read(&mut buf).await.ok()?;
                if n == 0 {
                    break;
                }
                raw.extend_from_slice(&buf[..n]);
            }
        }
        None => {
            stream.read_to_end(&mut raw).await.ok()?;
        }
    }
    String::from_utf8(raw).ok()
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
