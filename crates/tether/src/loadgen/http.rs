//! A small HTTP/1.1 client for the load generator: one request at a time on
//! a keep-alive connection, written from pre-rendered bytes, the response
//! read with a bounded head and a bounded body (by `Content-Length`,
//! chunked, or to the end of the connection).
//!
//! A general client would cost the load generator more per request than
//! the servers it measures spend on small pushes; this one writes bytes it
//! was given and parses only what it needs from the answer.

use std::time::Instant;

use bytes::{Buf, BufMut, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Longest response head (status line and headers) accepted; a longer one
/// fails the request.
pub(super) const MAX_HEAD_BYTES: usize = 64 * 1024;
/// Longest chunk-size line (or trailer line) of a chunked body accepted.
const MAX_CHUNK_LINE_BYTES: usize = 1024;
/// Bytes asked of the socket per read.
const READ_BYTES: usize = 64 * 1024;
/// Most of a body's `Content-Length` allocated before its bytes arrive.
/// Capacity is address space until bytes are written into it, so a length
/// announced and not sent costs little; reserving a large exposition at
/// once keeps the client from copying it as it grows, which would be
/// counted in the scrape's time.
const MAX_PREALLOCATED_BYTES: usize = 256 << 20;

/// Where requests go, from an `http://HOST[:PORT][/PATH]` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Target {
    /// `HOST:PORT`, to dial and to send as `Host`.
    pub(super) authority: String,
    /// The path the API's paths are under: empty, or `/prefix` without a
    /// trailing slash.
    pub(super) base_path: String,
}

/// Parses `http://HOST[:PORT][/PATH]`; the port is 80 when left out.
pub(super) fn parse_url(url: &str) -> Result<Target, String> {
    let rest = match url.split_once("://") {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("http") => rest,
        Some((scheme, _)) => {
            return Err(format!(
                "{url}: the {scheme} scheme is not supported: use http://HOST:PORT"
            ));
        }
        None => return Err(format!("{url} is not a URL: use http://HOST:PORT")),
    };
    if rest.contains(['?', '#', '@', ' ']) {
        return Err(format!(
            "{url}: a query, fragment, user or space is not supported: use http://HOST:PORT[/PATH]"
        ));
    }
    let (authority, path) = match rest.find('/') {
        Some(slash) => rest.split_at(slash),
        None => (rest, ""),
    };
    let (host, port) = if let Some(bracketed) = authority.strip_prefix('[') {
        let (host, after) = bracketed
            .split_once(']')
            .ok_or_else(|| format!("{url}: an IPv6 address needs its closing ]"))?;
        match after {
            "" => (format!("[{host}]"), None),
            _ => match after.strip_prefix(':') {
                Some(port) => (format!("[{host}]"), Some(port)),
                None => return Err(format!("{url}: expected :PORT after ]")),
            },
        }
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) => (host.to_owned(), Some(port)),
            None => (authority.to_owned(), None),
        }
    };
    if host.is_empty() || host == "[]" {
        return Err(format!("{url} has no host: use http://HOST:PORT"));
    }
    let port = match port {
        None => 80,
        Some(port) => port
            .parse::<u16>()
            .map_err(|_| format!("{url}: {port:?} is not a port number"))?,
    };
    Ok(Target {
        authority: format!("{host}:{port}"),
        base_path: path.trim_end_matches('/').to_owned(),
    })
}

/// Refuses a target that resolves to an address beyond this machine's
/// loopback, unless `allow_remote`.
pub(super) fn check_loopback(target: &Target, allow_remote: bool) -> Result<(), String> {
    let addrs: Vec<std::net::SocketAddr> =
        std::net::ToSocketAddrs::to_socket_addrs(target.authority.as_str())
            .map_err(|e| format!("cannot resolve {}: {e}", target.authority))?
            .collect();
    if !allow_remote && addrs.iter().any(|a| !a.ip().is_loopback()) {
        return Err(format!(
            "{} is not a loopback address: pass --allow-remote to load another machine",
            target.authority
        ));
    }
    Ok(())
}

/// What a response head says about the body that follows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Head {
    pub(super) status: u16,
    /// `Content-Length`, when given and the body is not chunked.
    content_length: Option<u64>,
    chunked: bool,
    /// Whether the server closes the connection after this response.
    pub(super) close: bool,
    /// `Content-Encoding: gzip`.
    pub(super) gzip: bool,
}

impl Head {
    /// Whether a body follows (not for 1xx, 204 and 304).
    fn has_body(&self) -> bool {
        !(self.status < 200 || self.status == 204 || self.status == 304)
    }
}

/// Parses a response head at the start of `buf`: `Ok(None)` when it is not
/// complete yet, else the head and its length (with the blank line).
pub(super) fn parse_head(buf: &[u8]) -> Result<Option<(Head, usize)>, String> {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        if buf.len() > MAX_HEAD_BYTES {
            return Err(format!(
                "the response head is longer than {MAX_HEAD_BYTES} bytes"
            ));
        }
        return Ok(None);
    };
    if end > MAX_HEAD_BYTES {
        return Err(format!(
            "the response head is longer than {MAX_HEAD_BYTES} bytes"
        ));
    }
    let text = std::str::from_utf8(&buf[..end]).map_err(|_| "the response head is not UTF-8")?;
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut words = status_line.splitn(3, ' ');
    let version = words.next().unwrap_or_default();
    let http_1_0 = match version {
        "HTTP/1.1" => false,
        "HTTP/1.0" => true,
        _ => return Err(format!("not an HTTP/1.x status line: {status_line:?}")),
    };
    let status = words
        .next()
        .and_then(|code| code.parse::<u16>().ok())
        .filter(|code| (100..1000).contains(code))
        .ok_or_else(|| format!("no status code in {status_line:?}"))?;
    let mut head = Head {
        status,
        content_length: None,
        chunked: false,
        close: http_1_0,
        gzip: false,
    };
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            return Err(format!("a header line without a colon: {line:?}"));
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            head.content_length = Some(
                value
                    .parse()
                    .map_err(|_| format!("Content-Length {value:?} is not a number"))?,
            );
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            head.chunked = value
                .split(',')
                .any(|coding| coding.trim().eq_ignore_ascii_case("chunked"));
        } else if name.eq_ignore_ascii_case("connection") {
            for option in value.split(',').map(str::trim) {
                if option.eq_ignore_ascii_case("close") {
                    head.close = true;
                } else if option.eq_ignore_ascii_case("keep-alive") && http_1_0 {
                    head.close = false;
                }
            }
        } else if name.eq_ignore_ascii_case("content-encoding") {
            head.gzip = value.eq_ignore_ascii_case("gzip");
        }
    }
    if head.chunked {
        head.content_length = None;
    }
    Ok(Some((head, end + 4)))
}

/// Where a chunked body's decoding stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    /// Before a chunk-size line.
    Size,
    /// Inside a chunk, with this many bytes of it left.
    Data(u64),
    /// Before the CRLF that ends a chunk's data.
    DataEnd,
    /// Among the trailer lines after the last chunk.
    Trailer,
    /// Past the blank line that ends the body.
    Done,
}

/// Decodes a chunked body as its bytes arrive.
#[derive(Debug)]
pub(super) struct Chunked {
    state: ChunkState,
}

impl Chunked {
    pub(super) fn new() -> Chunked {
        Chunked {
            state: ChunkState::Size,
        }
    }

    /// Moves what `buf` holds of the body into `body`: `Ok(true)` once the
    /// body is complete (what follows it stays in `buf`), `Ok(false)` when
    /// more bytes are needed. A body past `max_body` bytes is an error.
    pub(super) fn decode(
        &mut self,
        buf: &mut BytesMut,
        body: &mut Vec<u8>,
        max_body: usize,
    ) -> Result<bool, String> {
        loop {
            match self.state {
                ChunkState::Size | ChunkState::Trailer => {
                    let Some(line_end) = buf.windows(2).position(|w| w == b"\r\n") else {
                        if buf.len() > MAX_CHUNK_LINE_BYTES {
                            return Err("a chunk line is too long".to_owned());
                        }
                        return Ok(false);
                    };
                    if line_end > MAX_CHUNK_LINE_BYTES {
                        return Err("a chunk line is too long".to_owned());
                    }
                    let line = buf.split_to(line_end + 2);
                    let line = &line[..line_end];
                    if self.state == ChunkState::Trailer {
                        if line.is_empty() {
                            self.state = ChunkState::Done;
                        }
                        continue;
                    }
                    let size = line.split(|&b| b == b';').next().unwrap_or_default();
                    let size = std::str::from_utf8(size)
                        .ok()
                        .and_then(|size| u64::from_str_radix(size.trim(), 16).ok())
                        .ok_or_else(|| {
                            format!("bad chunk size line {:?}", String::from_utf8_lossy(line))
                        })?;
                    if size > (max_body - body.len().min(max_body)) as u64 {
                        return Err(format!("the body is longer than {max_body} bytes"));
                    }
                    self.state = if size == 0 {
                        ChunkState::Trailer
                    } else {
                        ChunkState::Data(size)
                    };
                }
                ChunkState::Data(left) => {
                    if buf.is_empty() {
                        return Ok(false);
                    }
                    let take = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
                    body.extend_from_slice(&buf[..take]);
                    buf.advance(take);
                    let left = left - take as u64;
                    self.state = if left == 0 {
                        ChunkState::DataEnd
                    } else {
                        ChunkState::Data(left)
                    };
                }
                ChunkState::DataEnd => {
                    if buf.len() < 2 {
                        return Ok(false);
                    }
                    if &buf[..2] != b"\r\n" {
                        return Err("a chunk does not end with CRLF".to_owned());
                    }
                    buf.advance(2);
                    self.state = ChunkState::Size;
                }
                ChunkState::Done => return Ok(true),
            }
        }
    }
}

/// Why a request got no response.
#[derive(Debug)]
pub(super) enum Failure {
    /// The connection ended before any byte of the response: on a reused
    /// connection, the server may have closed it while idle, and the
    /// request may be sent again on a new one.
    ClosedBeforeResponse,
    /// Anything else: the error, in words.
    Other(String),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::ClosedBeforeResponse => {
                f.write_str("the server closed the connection before responding")
            }
            Failure::Other(why) => f.write_str(why),
        }
    }
}

/// One response, its body read whole.
#[derive(Debug)]
pub(super) struct Response {
    pub(super) head: Head,
    /// The body as sent (still gzip-encoded when `head.gzip`).
    pub(super) body: Vec<u8>,
    /// When the response's first byte arrived.
    pub(super) first_byte: Instant,
}

/// A connection to the server, reused while the server keeps it open.
#[derive(Debug)]
pub(super) struct Connection {
    stream: TcpStream,
    /// Bytes read and not yet parsed.
    buf: BytesMut,
    /// Whether a response came back on it, so that a close before the next
    /// one may be the server's idle timeout rather than the request.
    pub(super) reused: bool,
}

impl Connection {
    pub(super) async fn connect(authority: &str) -> Result<Connection, Failure> {
        let stream = TcpStream::connect(authority)
            .await
            .map_err(|e| Failure::Other(format!("connect to {authority}: {e}")))?;
        let _ = stream.set_nodelay(true);
        Ok(Connection {
            stream,
            buf: BytesMut::with_capacity(READ_BYTES),
            reused: false,
        })
    }

    /// Writes `request` (a whole HTTP/1.1 request) and reads its response,
    /// the body up to `max_body` bytes. After an error, or a response that
    /// closes the connection (`head.close`), the connection is done.
    pub(super) async fn exchange(
        &mut self,
        request: &[u8],
        max_body: usize,
    ) -> Result<Response, Failure> {
        self.buf.clear();
        self.stream.write_all(request).await.map_err(|e| {
            if self.reused {
                Failure::ClosedBeforeResponse
            } else {
                Failure::Other(format!("write: {e}"))
            }
        })?;
        let mut first_byte = None;
        let head = loop {
            if let Some((head, len)) = parse_head(&self.buf).map_err(Failure::Other)? {
                self.buf.advance(len);
                if head.status >= 200 {
                    break head;
                }
                // An interim response (100 Continue): the real one follows.
                continue;
            }
            let read = self.read_more().await;
            match read {
                Ok(0) if first_byte.is_none() => return Err(Failure::ClosedBeforeResponse),
                Ok(0) => return Err(Failure::Other("the response head was cut short".to_owned())),
                Ok(_) => {
                    first_byte.get_or_insert_with(Instant::now);
                }
                Err(e) if first_byte.is_none() && self.reused => {
                    tracing::debug!(error = %e, "connection lost before the response");
                    return Err(Failure::ClosedBeforeResponse);
                }
                Err(e) => return Err(Failure::Other(format!("read: {e}"))),
            }
        };
        // The loop above breaks only after a read returned bytes.
        let first_byte = first_byte.unwrap_or_else(Instant::now);
        let body = if !head.has_body() {
            Vec::new()
        } else if head.chunked {
            self.read_chunked(max_body).await?
        } else if let Some(length) = head.content_length {
            self.read_length(length, max_body).await?
        } else {
            self.read_to_end(max_body).await?
        };
        self.reused = true;
        Ok(Response {
            head,
            body,
            first_byte,
        })
    }

    async fn read_more(&mut self) -> std::io::Result<usize> {
        self.buf.reserve(READ_BYTES);
        self.stream.read_buf(&mut self.buf).await
    }

    async fn read_length(&mut self, length: u64, max_body: usize) -> Result<Vec<u8>, Failure> {
        let length = usize::try_from(length)
            .ok()
            .filter(|&length| length <= max_body)
            .ok_or_else(|| Failure::Other(format!("the body is longer than {max_body} bytes")))?;
        let mut body = Vec::with_capacity(length.min(MAX_PREALLOCATED_BYTES));
        let buffered = length.min(self.buf.len());
        body.extend_from_slice(&self.buf[..buffered]);
        self.buf.advance(buffered);
        while body.len() < length {
            // Straight into the body, no more than the length given.
            let left = length - body.len();
            body.reserve(left.min(READ_BYTES));
            let mut rest = (&mut body).limit(left);
            let read = self
                .stream
                .read_buf(&mut rest)
                .await
                .map_err(|e| Failure::Other(format!("read: {e}")))?;
            if read == 0 {
                return Err(Failure::Other("the body was cut short".to_owned()));
            }
        }
        Ok(body)
    }

    async fn read_chunked(&mut self, max_body: usize) -> Result<Vec<u8>, Failure> {
        let mut chunked = Chunked::new();
        let mut body = Vec::new();
        loop {
            if chunked
                .decode(&mut self.buf, &mut body, max_body)
                .map_err(Failure::Other)?
            {
                return Ok(body);
            }
            let read = self
                .read_more()
                .await
                .map_err(|e| Failure::Other(format!("read: {e}")))?;
            if read == 0 {
                return Err(Failure::Other("the chunked body was cut short".to_owned()));
            }
        }
    }

    async fn read_to_end(&mut self, max_body: usize) -> Result<Vec<u8>, Failure> {
        let mut body = self.buf.split().to_vec();
        loop {
            if body.len() > max_body {
                return Err(Failure::Other(format!(
                    "the body is longer than {max_body} bytes"
                )));
            }
            body.reserve(READ_BYTES);
            let read = self
                .stream
                .read_buf(&mut body)
                .await
                .map_err(|e| Failure::Other(format!("read: {e}")))?;
            if read == 0 {
                return Ok(body);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_give_an_authority_and_a_base_path() {
        let ok = |authority: &str, base_path: &str| {
            Ok(Target {
                authority: authority.to_owned(),
                base_path: base_path.to_owned(),
            })
        };
        let cases: &[(&str, Result<Target, String>)] = &[
            ("http://127.0.0.1:9091", ok("127.0.0.1:9091", "")),
            ("http://127.0.0.1:9091/", ok("127.0.0.1:9091", "")),
            (
                "HTTP://localhost:9091/prefix/",
                ok("localhost:9091", "/prefix"),
            ),
            ("http://localhost", ok("localhost:80", "")),
            ("http://[::1]:9091/a/b", ok("[::1]:9091", "/a/b")),
            ("http://[::1]", ok("[::1]:80", "")),
        ];
        for (url, want) in cases {
            assert_eq!(&parse_url(url), want, "{url}");
        }
        for bad in [
            "127.0.0.1:9091",
            "https://127.0.0.1:9091",
            "http://",
            "http://:9091",
            "http://127.0.0.1:port",
            "http://127.0.0.1:70000",
            "http://[::1:9091",
            "http://[::1]x",
            "http://user@127.0.0.1:9091",
            "http://127.0.0.1:9091/?q=1",
        ] {
            assert!(parse_url(bad).is_err(), "{bad} should be refused");
        }
    }

    #[test]
    fn response_heads_say_how_the_body_is_framed() {
        let head = |status, content_length, chunked, close, gzip| Head {
            status,
            content_length,
            chunked,
            close,
            gzip,
        };
        let cases: &[(&[u8], Head)] = &[
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
                head(200, Some(0), false, false, false),
            ),
            (
                b"HTTP/1.1 400 Bad Request\r\ncontent-length: 12\r\nConnection: close\r\n\r\n",
                head(400, Some(12), false, true, false),
            ),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\nContent-Encoding: gzip\r\n\r\n",
                head(200, None, true, false, true),
            ),
            (
                b"HTTP/1.0 200 OK\r\n\r\n",
                head(200, None, false, true, false),
            ),
            (
                b"HTTP/1.0 204 No Content\r\nConnection: keep-alive\r\n\r\n",
                head(204, None, false, false, false),
            ),
        ];
        for (raw, want) in cases {
            let mut with_body = raw.to_vec();
            with_body.extend_from_slice(b"body");
            let (got, len) = parse_head(&with_body)
                .expect("a valid head")
                .expect("a complete head");
            assert_eq!(&got, want, "{}", String::from_utf8_lossy(raw));
            assert_eq!(len, raw.len());
        }
        assert_eq!(parse_head(b"HTTP/1.1 200 OK\r\nContent-Le"), Ok(None));
        for bad in [
            &b"HTTP/2 200\r\n\r\n"[..],
            b"HTTP/1.1 OK\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nno colon\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
        ] {
            assert!(parse_head(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
        let endless = vec![b'a'; MAX_HEAD_BYTES + 1];
        assert!(parse_head(&endless).is_err());
    }

    #[test]
    fn chunked_bodies_decode_in_any_pieces() {
        let raw = b"5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\nTrailer: x\r\n\r\nNEXT";
        for piece in [1, 2, 3, 7, raw.len()] {
            let mut chunked = Chunked::new();
            let mut buf = BytesMut::new();
            let mut body = Vec::new();
            let mut fed = 0;
            let mut done = false;
            while !done && fed < raw.len() {
                let next = (fed + piece).min(raw.len());
                buf.extend_from_slice(&raw[fed..next]);
                fed = next;
                done = chunked
                    .decode(&mut buf, &mut body, 1024)
                    .expect("a valid body");
            }
            assert!(done, "pieces of {piece}");
            assert_eq!(body, b"hello, world", "pieces of {piece}");
            // What follows the body stays for the next response.
            let mut rest = buf.to_vec();
            rest.extend_from_slice(&raw[fed..]);
            assert_eq!(rest, b"NEXT", "pieces of {piece}");
        }
        let refuse = |raw: &[u8], max_body| {
            let mut buf = BytesMut::from(raw);
            Chunked::new().decode(&mut buf, &mut Vec::new(), max_body)
        };
        assert!(refuse(b"zz\r\n", 1024).is_err(), "not hex");
        assert!(
            refuse(b"3\r\nabcX\r\n", 1024).is_err(),
            "no CRLF after data"
        );
        assert!(refuse(b"401\r\n", 1024).is_err(), "past the limit");
        assert!(refuse(&[b'1'; MAX_CHUNK_LINE_BYTES + 1], 1 << 30).is_err());
    }
}
