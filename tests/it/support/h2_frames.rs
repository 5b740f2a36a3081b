//! A minimal HTTP/2 (h2c, prior knowledge) client at the frame level, for tests that must do what a real
//! client library refuses to: open more streams than the server allows, or send connection-specific headers.
//! Header blocks are HPACK literals without indexing and without Huffman coding (RFC 7541 §6.2.2), which every
//! decoder must accept; response header blocks are not decoded.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The client connection preface (RFC 9113 §3.4).
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Frame types (RFC 9113 §6).
pub(crate) const DATA: u8 = 0x0;
pub(crate) const HEADERS: u8 = 0x1;
pub(crate) const RST_STREAM: u8 = 0x3;
pub(crate) const SETTINGS: u8 = 0x4;
pub(crate) const PING: u8 = 0x6;
pub(crate) const GOAWAY: u8 = 0x7;

/// Flags.
pub(crate) const END_STREAM: u8 = 0x1;
pub(crate) const ACK: u8 = 0x1;
pub(crate) const END_HEADERS: u8 = 0x4;

/// Settings identifiers (RFC 9113 §6.5.2).
pub(crate) const SETTINGS_MAX_CONCURRENT_STREAMS: u16 = 0x3;
pub(crate) const SETTINGS_INITIAL_WINDOW_SIZE: u16 = 0x4;
pub(crate) const SETTINGS_MAX_HEADER_LIST_SIZE: u16 = 0x6;

/// Error codes (RFC 9113 §7).
pub(crate) const PROTOCOL_ERROR: u32 = 0x1;
pub(crate) const REFUSED_STREAM: u32 = 0x7;

/// The largest flow-control window.
const MAX_WINDOW: u32 = (1 << 31) - 1;

/// One frame as received.
#[derive(Debug, Clone)]
pub(crate) struct Frame {
    pub(crate) kind: u8,
    pub(crate) flags: u8,
    pub(crate) stream: u32,
    pub(crate) payload: Vec<u8>,
}

impl Frame {
    /// The error code of a RST_STREAM or GOAWAY frame.
    pub(crate) fn error_code(&self) -> Option<u32> {
        let at = match self.kind {
            RST_STREAM => 0,
            GOAWAY => 4,
            _ => return None,
        };
        let b = self.payload.get(at..at + 4)?;
        Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// The `(identifier, value)` pairs of a SETTINGS frame.
    pub(crate) fn settings(&self) -> Vec<(u16, u32)> {
        self.payload
            .chunks_exact(6)
            .map(|c| {
                (
                    u16::from_be_bytes([c[0], c[1]]),
                    u32::from_be_bytes([c[2], c[3], c[4], c[5]]),
                )
            })
            .collect()
    }
}

/// Encodes one frame.
pub(crate) fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).expect("frame length");
    let mut out = Vec::with_capacity(9 + payload.len());
    out.extend_from_slice(&len.to_be_bytes()[1..]);
    out.push(kind);
    out.push(flags);
    out.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// An HPACK integer with an `n`-bit prefix; `first` holds the bits above the prefix (RFC 7541 §5.1).
fn integer(out: &mut Vec<u8>, n: u32, first: u8, mut value: usize) {
    let max = (1usize << n) - 1;
    if value < max {
        out.push(first | u8::try_from(value).expect("fits the prefix"));
        return;
    }
    out.push(first | u8::try_from(max).expect("prefix"));
    value -= max;
    while value >= 128 {
        out.push(u8::try_from(value % 128).expect("7 bits") | 0x80);
        value /= 128;
    }
    out.push(u8::try_from(value).expect("7 bits"));
}

/// Appends a literal header field without indexing, with a literal name (RFC 7541 §6.2.2).
fn literal(out: &mut Vec<u8>, name: &str, value: &str) {
    out.push(0x00);
    integer(out, 7, 0, name.len());
    out.extend_from_slice(name.as_bytes());
    integer(out, 7, 0, value.len());
    out.extend_from_slice(value.as_bytes());
}

/// A HEADERS frame (END_HEADERS | END_STREAM) for `GET http://{authority}{path}` on `stream`, plus `extra`
/// header fields in order.
pub(crate) fn get(stream: u32, authority: &str, path: &str, extra: &[(&str, &str)]) -> Vec<u8> {
    let mut block = Vec::new();
    literal(&mut block, ":method", "GET");
    literal(&mut block, ":scheme", "http");
    literal(&mut block, ":authority", authority);
    literal(&mut block, ":path", path);
    for (name, value) in extra {
        literal(&mut block, name, value);
    }
    frame(HEADERS, END_HEADERS | END_STREAM, stream, &block)
}

/// A raw HTTP/2 connection.
pub(crate) struct H2Conn {
    tcp: TcpStream,
    buf: Vec<u8>,
}

impl H2Conn {
    /// Connects, sends the preface and a SETTINGS frame that opens the stream windows wide, and widens the
    /// connection window, so the server never waits for flow control.
    pub(crate) async fn connect(addr: SocketAddr) -> Self {
        let mut tcp = TcpStream::connect(addr)
            .await
            .expect("connect to the proxy");
        let mut hello = PREFACE.to_vec();
        let window = [
            SETTINGS_INITIAL_WINDOW_SIZE.to_be_bytes().as_slice(),
            &MAX_WINDOW.to_be_bytes(),
        ]
        .concat();
        hello.extend(frame(SETTINGS, 0, 0, &window));
        hello.extend(frame(0x8, 0, 0, &(MAX_WINDOW - 65_535).to_be_bytes()));
        tcp.write_all(&hello).await.expect("send the preface");
        Self {
            tcp,
            buf: Vec::new(),
        }
    }

    /// Writes raw bytes (frames).
    pub(crate) async fn send(&mut self, bytes: &[u8]) {
        self.tcp.write_all(bytes).await.expect("send frames");
    }

    /// The next frame, answering the server's SETTINGS and PINGs on the way (they are still returned).
    /// `None` if the connection closed or nothing arrived within `wait`.
    pub(crate) async fn next(&mut self, wait: Duration) -> Option<Frame> {
        loop {
            if self.buf.len() >= 9 {
                let len = usize::try_from(u32::from_be_bytes([
                    0,
                    self.buf[0],
                    self.buf[1],
                    self.buf[2],
                ]))
                .expect("length");
                if self.buf.len() >= 9 + len {
                    let head: Vec<u8> = self.buf.drain(..9 + len).collect();
                    let frame = Frame {
                        kind: head[3],
                        flags: head[4],
                        stream: u32::from_be_bytes([head[5], head[6], head[7], head[8]])
                            & 0x7fff_ffff,
                        payload: head[9..].to_vec(),
                    };
                    match frame.kind {
                        SETTINGS if frame.flags & ACK == 0 => {
                            let _ = self
                                .tcp
                                .write_all(&self::frame(SETTINGS, ACK, 0, &[]))
                                .await;
                        }
                        PING if frame.flags & ACK == 0 => {
                            let _ = self
                                .tcp
                                .write_all(&self::frame(PING, ACK, 0, &frame.payload))
                                .await;
                        }
                        _ => {}
                    }
                    return Some(frame);
                }
            }
            let mut chunk = [0u8; 16 * 1024];
            match tokio::time::timeout(wait, self.tcp.read(&mut chunk)).await {
                Ok(Ok(n)) if n > 0 => self.buf.extend_from_slice(&chunk[..n]),
                _ => return None,
            }
        }
    }

    /// True once the server has closed the connection (waits at most `wait`; frames on the way are dropped).
    pub(crate) async fn closed_within(&mut self, wait: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                return false;
            }
            let mut chunk = [0u8; 16 * 1024];
            match tokio::time::timeout(left, self.tcp.read(&mut chunk)).await {
                Ok(Ok(0) | Err(_)) => return true,
                Ok(Ok(_)) => {}
                Err(_) => return false,
            }
        }
    }
}
