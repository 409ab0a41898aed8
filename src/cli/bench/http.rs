//! A small HTTP/1.1 client for the serve bench: keep-alive requests with a `Content-Length`
//! body, and a Server-Sent Events reader. It speaks only as much HTTP as `paystream serve`
//! answers with (a `Content-Length` or chunked body), so the bench needs no client library and
//! its clients cost as little CPU as a client can.

use std::net::SocketAddr;

use anyhow::{Context, bail};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// One keep-alive connection.
pub(crate) struct Conn {
    io: BufReader<TcpStream>,
    addr: SocketAddr,
}

impl Conn {
    pub(crate) async fn connect(addr: SocketAddr) -> anyhow::Result<Conn> {
        let s = TcpStream::connect(addr)
            .await
            .with_context(|| format!("cannot connect to {addr}"))?;
        s.set_nodelay(true)?;
        Ok(Conn {
            io: BufReader::with_capacity(64 << 10, s),
            addr,
        })
    }

    /// Sends one request and reads its answer: the status and the body.
    pub(crate) async fn request(
        &mut self,
        method: &str,
        path: &str,
        body: &[u8],
    ) -> anyhow::Result<(u16, Vec<u8>)> {
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            self.addr,
            body.len()
        );
        let s = self.io.get_mut();
        s.write_all(head.as_bytes()).await?;
        s.write_all(body).await?;
        let head = read_head(&mut self.io).await?;
        let body = match head.length {
            Some(n) => {
                let mut b = vec![0; n];
                self.io.read_exact(&mut b).await?;
                b
            }
            None if head.chunked => {
                let mut b = Vec::new();
                while let Some(chunk) = read_chunk(&mut self.io).await? {
                    b.extend_from_slice(&chunk);
                }
                b
            }
            None => bail!("{method} {path}: an answer without a length"),
        };
        Ok((head.status, body))
    }
}

/// A response's status line and the headers the client needs.
struct Head {
    status: u16,
    length: Option<usize>,
    chunked: bool,
}

async fn read_head(io: &mut BufReader<TcpStream>) -> anyhow::Result<Head> {
    let mut line = String::new();
    if io.read_line(&mut line).await? == 0 {
        bail!("the server closed the connection");
    }
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("not an HTTP status line: {line:?}"))?;
    let (mut length, mut chunked) = (None, false);
    loop {
        line.clear();
        io.read_line(&mut line).await?;
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            let (k, v) = (k.trim().to_ascii_lowercase(), v.trim());
            if k == "content-length" {
                length = v.parse().ok();
            } else if k == "transfer-encoding" && v.eq_ignore_ascii_case("chunked") {
                chunked = true;
            }
        }
    }
    Ok(Head {
        status,
        length,
        chunked,
    })
}

/// The next chunk of a chunked body; `None` after the last.
async fn read_chunk(io: &mut BufReader<TcpStream>) -> anyhow::Result<Option<Vec<u8>>> {
    let mut line = String::new();
    if io.read_line(&mut line).await? == 0 {
        return Ok(None);
    }
    let size = usize::from_str_radix(line.trim().split(';').next().unwrap_or(""), 16)
        .with_context(|| format!("not a chunk size: {line:?}"))?;
    let mut chunk = vec![0; size + 2];
    io.read_exact(&mut chunk).await?;
    chunk.truncate(size);
    if size == 0 {
        return Ok(None);
    }
    Ok(Some(chunk))
}

/// One Server-Sent Event.
pub(crate) struct SseEvent {
    /// Its `event:` name (`None`: a plain message, a result row).
    pub(crate) event: Option<String>,
    pub(crate) data: String,
}

/// A subscription to a query's results.
pub(crate) struct Events {
    io: BufReader<TcpStream>,
    /// Decoded body bytes not yet split into lines.
    pending: Vec<u8>,
    event: Option<String>,
    data: String,
}

impl Events {
    /// Subscribes to `path`; returns once the server has answered (the subscription exists).
    pub(crate) async fn open(addr: SocketAddr, path: &str) -> anyhow::Result<Events> {
        let mut c = Conn::connect(addr).await?;
        let head =
            format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n\r\n");
        c.io.get_mut().write_all(head.as_bytes()).await?;
        let head = read_head(&mut c.io).await?;
        if head.status != 200 || !head.chunked {
            bail!(
                "GET {path}: status {} (chunked: {})",
                head.status,
                head.chunked
            );
        }
        Ok(Events {
            io: c.io,
            pending: Vec::new(),
            event: None,
            data: String::new(),
        })
    }

    /// The next event; `None` when the server ended the stream.
    pub(crate) async fn next(&mut self) -> anyhow::Result<Option<SseEvent>> {
        loop {
            while let Some(nl) = memchr::memchr(b'\n', &self.pending) {
                let line: Vec<u8> = self.pending.drain(..=nl).collect();
                let line = std::str::from_utf8(&line)?.trim_end_matches(['\r', '\n']);
                if line.is_empty() {
                    if !self.data.is_empty() || self.event.is_some() {
                        return Ok(Some(SseEvent {
                            event: self.event.take(),
                            data: std::mem::take(&mut self.data),
                        }));
                    }
                } else if let Some(v) = line.strip_prefix("data:") {
                    if !self.data.is_empty() {
                        self.data.push('\n');
                    }
                    self.data.push_str(v.strip_prefix(' ').unwrap_or(v));
                } else if let Some(v) = line.strip_prefix("event:") {
                    self.event = Some(v.trim().to_string());
                }
            }
            match read_chunk(&mut self.io).await? {
                Some(c) => self.pending.extend_from_slice(&c),
                None => return Ok(None),
            }
        }
    }
}

/// Opens a subscription and never reads it: the subscriber that falls behind (a small receive
/// buffer, so the kernel holds few of its rows and the server's backlog fills).
pub(crate) async fn stalled(addr: SocketAddr, path: &str) -> anyhow::Result<TcpStream> {
    let socket = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    socket.set_recv_buffer_size(4096)?;
    let mut s = socket.connect(addr).await?;
    let head = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n\r\n");
    s.write_all(head.as_bytes()).await?;
    Ok(s)
}
