//! A minimal WebSocket client (RFC 6455, text messages only): Chromium's DevTools protocol in
//! the browser test and the server's `/api/queries/{name}/ws` both speak it.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// One client connection.
pub(crate) struct WebSocket {
    stream: TcpStream,
}

impl WebSocket {
    /// Opens `path` on `addr` with the extra request `headers` (`Name: value` lines); panics
    /// unless the server switches protocols.
    pub(crate) fn connect(addr: SocketAddr, path: &str, headers: &[&str]) -> WebSocket {
        let mut stream = TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(60)))
            .unwrap();
        let mut head = format!(
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
        );
        for h in headers {
            head.push_str(h);
            head.push_str("\r\n");
        }
        head.push_str("\r\n");
        stream.write_all(head.as_bytes()).unwrap();
        let mut answer = Vec::new();
        let mut byte = [0u8];
        while !answer.ends_with(b"\r\n\r\n") {
            stream.read_exact(&mut byte).unwrap();
            answer.push(byte[0]);
        }
        assert!(
            answer.starts_with(b"HTTP/1.1 101"),
            "{}",
            String::from_utf8_lossy(&answer)
        );
        WebSocket { stream }
    }

    /// Sends one text frame (masked, as a client must).
    pub(crate) fn send(&mut self, text: &str) {
        let data = text.as_bytes();
        let mut frame = vec![0x81u8];
        match data.len() {
            n if n < 126 => frame.push(0x80 | n as u8),
            n if n < 65_536 => {
                frame.push(0x80 | 126);
                frame.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                frame.push(0x80 | 127);
                frame.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        // A zero mask: masking is required, its key may be anything.
        frame.extend_from_slice(&[0, 0, 0, 0]);
        frame.extend_from_slice(data);
        self.stream.write_all(&frame).unwrap();
    }

    /// Reads one text message (joining continuation frames; control frames skipped); `None`
    /// when the server closed the connection.
    pub(crate) fn receive(&mut self) -> Option<String> {
        let mut message = Vec::new();
        loop {
            let mut h = [0u8; 2];
            self.stream.read_exact(&mut h).ok()?;
            let len = match h[1] & 0x7f {
                126 => {
                    let mut l = [0u8; 2];
                    self.stream.read_exact(&mut l).ok()?;
                    u16::from_be_bytes(l) as usize
                }
                127 => {
                    let mut l = [0u8; 8];
                    self.stream.read_exact(&mut l).ok()?;
                    u64::from_be_bytes(l) as usize
                }
                n => n as usize,
            };
            let mut payload = vec![0u8; len];
            self.stream.read_exact(&mut payload).ok()?;
            match h[0] & 0x0f {
                // Close.
                0x8 => return None,
                // Ping, pong.
                0x9 | 0xa => continue,
                _ => message.extend_from_slice(&payload),
            }
            if h[0] & 0x80 != 0 {
                return Some(String::from_utf8(message).unwrap());
            }
        }
    }
}
