//! The relay's HTTP/1.1 server: small on purpose.
//!
//! A relay's job is to hold thousands of long-polls that do nothing but
//! wait. hyper keeps an 8 KiB read buffer and an 8 KiB write buffer for
//! the life of every connection (about 18 KiB resident per waiting
//! long-poll, measured), four times the 5 KB per waiter the README's
//! relay benchmark aims at. Here a connection owns only its socket
//! between requests: the read buffer is freed once a request is taken
//! from it, the response is built and written in one piece, and the
//! handler's future lives on the heap only while it runs. Parsing is
//! `httparse` (the parser under hyper).
//!
//! What it speaks: HTTP/1.0 and 1.1, keep-alive (1.1 by default, 1.0 on
//! request), pipelined requests (answered in order), bodies by
//! `Content-Length` or `chunked`, `Expect: 100-continue`, origin- and
//! absolute-form targets. A request with both a length and a transfer
//! coding, conflicting lengths, or an unknown coding is refused (400), so
//! nothing can smuggle a second request past it. Time limits: idle
//! keep-alive, a head that trickles in, a body that trickles in, a
//! response the client does not read. A client that closes its socket
//! while its request is being handled (a long-poll it gave up on) stops
//! that handler at once.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, watch};
use tokio::time::{Instant, timeout};

/// Request methods the relay tells apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Post,
    Other,
}

/// A whole request, as handlers see it.
#[derive(Debug)]
pub struct Request {
    pub method: Method,
    /// Percent-encoded, without the query.
    pub path: String,
    /// The raw query string (after `?`), possibly empty.
    pub query: String,
    pub authorization: Option<String>,
    pub body: Vec<u8>,
}

/// A whole response.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Vec<u8>,
}

impl Response {
    pub fn json(status: u16, value: &impl serde::Serialize) -> Response {
        Response {
            status,
            content_type: "application/json",
            body: serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec()),
        }
    }

    pub fn text(status: u16, content_type: &'static str, body: String) -> Response {
        Response {
            status,
            content_type,
            body: body.into_bytes(),
        }
    }
}

pub type Handling<'a> = Pin<Box<dyn Future<Output = Response> + Send + 'a>>;

/// What the server calls.
pub trait Service: Clone + Send + Sync + 'static {
    /// The largest body accepted for `path`.
    fn body_limit(&self, path: &str) -> usize;
    /// The answer to a request whose body is over the limit (the
    /// connection is then closed: the body is never read).
    fn too_large(&self, path: &str) -> Response;
    /// The answer to a request that is not HTTP this server accepts.
    fn bad_request(&self, why: &str) -> Response;
    fn call(&self, req: Request) -> Handling<'_>;
}

/// Sizes and time limits.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest request head (request line and headers).
    pub head_bytes: usize,
    /// How long an idle keep-alive connection is kept.
    pub idle: Duration,
    /// How long a head or a body may take to arrive once it has begun.
    pub transfer: Duration,
    /// How long a response may take to be written.
    pub write: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            head_bytes: 16 * 1024,
            idle: Duration::from_secs(60),
            transfer: Duration::from_secs(30),
            write: Duration::from_secs(30),
        }
    }
}

/// Connections open now; shutdown waits for them.
#[derive(Default)]
struct Open {
    count: AtomicUsize,
    none_left: Notify,
}

struct OpenGuard(Arc<Open>);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        if self.0.count.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.none_left.notify_waiters();
        }
    }
}

/// Serves until `shutdown` turns true; then stops accepting, lets each
/// connection finish the request it is in (long-polls are answered by
/// their handlers on shutdown), and returns when all have closed or
/// `drain` has passed. With `tls`, every connection is HTTPS: the
/// handshake must end within the `transfer` limit.
pub async fn serve<S: Service>(
    listener: TcpListener,
    service: S,
    limits: Limits,
    mut shutdown: watch::Receiver<bool>,
    drain: Duration,
    tls: Option<tokio_rustls::TlsAcceptor>,
) -> io::Result<()> {
    let limits = Arc::new(limits);
    let open = Arc::new(Open::default());
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.wait_for(|d| *d) => break,
        };
        match accepted {
            Ok((stream, _)) => {
                let _ = stream.set_nodelay(true);
                open.count.fetch_add(1, Ordering::AcqRel);
                let guard = OpenGuard(open.clone());
                let (service, limits, shutdown, tls) = (
                    service.clone(),
                    limits.clone(),
                    shutdown.clone(),
                    tls.clone(),
                );
                tokio::spawn(async move {
                    match tls {
                        None => connection(stream, &service, &limits, shutdown).await,
                        Some(tls) => match timeout(limits.transfer, tls.accept(stream)).await {
                            Ok(Ok(stream)) => connection(stream, &service, &limits, shutdown).await,
                            // Not TLS (plain HTTP to an HTTPS port), a
                            // client that does not trust the certificate,
                            // or one too slow: nothing to answer.
                            Ok(Err(e)) => tracing::debug!(error = %e, "TLS handshake failed"),
                            Err(_) => tracing::debug!("TLS handshake timed out"),
                        },
                    }
                    drop(guard);
                });
            }
            // Out of file descriptors or a connection reset before it was
            // accepted: keep serving the ones there are.
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    drop(listener);
    let all_closed = async {
        loop {
            let notified = open.none_left.notified();
            if open.count.load(Ordering::Acquire) == 0 {
                return;
            }
            notified.await;
        }
    };
    if timeout(drain, all_closed).await.is_err() {
        tracing::warn!(
            open = open.count.load(Ordering::Acquire),
            "connections still open at the end of shutdown"
        );
    }
    Ok(())
}

/// What the head of a request says about the rest.
struct Head {
    method: Method,
    path: String,
    query: String,
    authorization: Option<String>,
    body: BodyKind,
    keep_alive: bool,
    expect_continue: bool,
    len: usize,
}

enum BodyKind {
    Length(usize),
    Chunked,
}

enum HeadError {
    TooLarge,
    Bad(String),
}

fn header_eq(v: &[u8], want: &str) -> bool {
    std::str::from_utf8(v).is_ok_and(|s| s.trim().eq_ignore_ascii_case(want))
}

fn has_token(v: &[u8], want: &str) -> bool {
    std::str::from_utf8(v).is_ok_and(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case(want)))
}

/// Parses a head from `buf`; `Ok(None)` if it is not complete yet.
fn parse_head(buf: &[u8], max: usize) -> Result<Option<Head>, HeadError> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut headers);
    let len = match req.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() > max => return Err(HeadError::TooLarge),
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooLarge),
        Err(e) => return Err(HeadError::Bad(format!("malformed request: {e}"))),
    };
    if len > max {
        return Err(HeadError::TooLarge);
    }
    let method = match req.method {
        Some("GET") => Method::Get,
        Some("POST") => Method::Post,
        _ => Method::Other,
    };
    let version = req.version.unwrap_or(1);
    let mut target = req.path.unwrap_or("/");
    // Absolute form (`http://host/path`): keep the path.
    if let Some(rest) = target
        .strip_prefix("http://")
        .or_else(|| target.strip_prefix("https://"))
    {
        target = rest.find('/').map_or("/", |i| &rest[i..]);
    }
    if !target.starts_with('/') {
        return Err(HeadError::Bad("the request target must be a path".into()));
    }
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p, q),
        None => (target, ""),
    };
    let mut length: Option<usize> = None;
    let mut chunked = false;
    let mut keep_alive = version == 1;
    let mut expect_continue = false;
    let mut authorization = None;
    for h in req.headers.iter() {
        let name = h.name;
        if name.eq_ignore_ascii_case("content-length") {
            let n = std::str::from_utf8(h.value)
                .ok()
                .and_then(|s| decimal(s.trim()))
                .ok_or_else(|| {
                    HeadError::Bad("Content-Length must be digits only, and fit in memory".into())
                })?;
            if length.is_some_and(|l| l != n) {
                return Err(HeadError::Bad("conflicting Content-Length headers".into()));
            }
            length = Some(n);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            if !header_eq(h.value, "chunked") {
                return Err(HeadError::Bad(
                    "only the chunked transfer coding is accepted".into(),
                ));
            }
            chunked = true;
        } else if name.eq_ignore_ascii_case("connection") {
            if has_token(h.value, "close") {
                keep_alive = false;
            } else if has_token(h.value, "keep-alive") {
                keep_alive = true;
            }
        } else if name.eq_ignore_ascii_case("expect") {
            expect_continue = header_eq(h.value, "100-continue");
        } else if name.eq_ignore_ascii_case("authorization") {
            authorization = std::str::from_utf8(h.value).ok().map(str::to_string);
        }
    }
    let body = match (length, chunked) {
        (Some(_), true) => {
            return Err(HeadError::Bad(
                "Content-Length and Transfer-Encoding together".into(),
            ));
        }
        (_, true) => BodyKind::Chunked,
        (n, false) => BodyKind::Length(n.unwrap_or(0)),
    };
    Ok(Some(Head {
        method,
        path: path.to_string(),
        query: query.to_string(),
        authorization,
        body,
        keep_alive,
        expect_continue,
        len,
    }))
}

/// A size written as HTTP has it: digits of `radix` only (no sign, space
/// or other form a lenient parser takes), few enough that it always fits.
fn strict_size(s: &str, radix: u32, max_digits: usize) -> Option<usize> {
    if s.is_empty() || s.len() > max_digits || !s.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    usize::from_str_radix(s, radix).ok()
}

/// A `Content-Length`: decimal, at most 18 digits.
fn decimal(s: &str) -> Option<usize> {
    strict_size(s, 10, 18)
}

/// A chunk size: hex, at most 15 digits.
fn chunk_size(s: &str) -> Option<usize> {
    strict_size(s, 16, 15)
}

#[derive(Debug, PartialEq)]
enum ChunkError {
    TooLarge,
    Bad,
}

/// Decodes a chunked body at the start of `data`: `Ok(None)` if it is not
/// complete yet, else the body and how many bytes it took.
fn decode_chunked(data: &[u8], limit: usize) -> Result<Option<(Vec<u8>, usize)>, ChunkError> {
    let mut body = Vec::new();
    let mut at = 0;
    let line = |from: usize| -> Option<usize> {
        data[from..]
            .windows(2)
            .position(|w| w == b"\r\n")
            .map(|i| from + i)
    };
    loop {
        let Some(end) = line(at) else {
            return if data.len() - at > 1024 {
                Err(ChunkError::Bad)
            } else {
                Ok(None)
            };
        };
        if end - at > 1024 {
            return Err(ChunkError::Bad);
        }
        let size_text = std::str::from_utf8(&data[at..end]).map_err(|_| ChunkError::Bad)?;
        // Extensions after `;` are allowed and ignored; whitespace before
        // them is not (RFC 9112 has none there but optional BWS).
        let size_text = size_text
            .split(';')
            .next()
            .unwrap_or("")
            .trim_end_matches([' ', '\t']);
        let size = chunk_size(size_text).ok_or(ChunkError::Bad)?;
        at = end + 2;
        if size == 0 {
            // Trailers, up to an empty line.
            loop {
                let Some(end) = line(at) else {
                    // Trailers are bounded like the rest.
                    return if data.len() - at > 8 * 1024 {
                        Err(ChunkError::Bad)
                    } else {
                        Ok(None)
                    };
                };
                let empty = end == at;
                at = end + 2;
                if empty {
                    return Ok(Some((body, at)));
                }
            }
        }
        // Every sum on sizes is checked: a size near usize::MAX must be
        // refused, never wrap around.
        match body.len().checked_add(size) {
            Some(total) if total <= limit => {}
            _ => return Err(ChunkError::TooLarge),
        }
        let Some(chunk_end) = at.checked_add(size).and_then(|e| e.checked_add(2)) else {
            return Err(ChunkError::TooLarge);
        };
        if data.len() < chunk_end {
            return Ok(None);
        }
        body.extend_from_slice(&data[at..chunk_end - 2]);
        if &data[chunk_end - 2..chunk_end] != b"\r\n" {
            return Err(ChunkError::Bad);
        }
        at = chunk_end;
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        413 => "Payload Too Large",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        507 => "Insufficient Storage",
        _ => "",
    }
}

/// A connection's byte stream: TCP, or TLS over it.
trait Stream: AsyncRead + AsyncWrite + Unpin + Send {
    /// The socket under it, to wait for bytes without a buffer.
    fn tcp(&self) -> &TcpStream;
}

impl Stream for TcpStream {
    fn tcp(&self) -> &TcpStream {
        self
    }
}

impl Stream for tokio_rustls::server::TlsStream<TcpStream> {
    fn tcp(&self) -> &TcpStream {
        self.get_ref().0
    }
}

/// Reads more bytes into `buf`; 0 at end of stream.
async fn read_more(stream: &mut impl Stream, buf: &mut Vec<u8>) -> io::Result<usize> {
    buf.reserve(1024);
    stream.read_buf(buf).await
}

/// What the client did while its request was being handled.
enum Peer {
    /// Closed its side with nothing more to say: it gave up (a long-poll
    /// it no longer waits for).
    Gone,
    /// Sent `limit` bytes ahead (pipelined requests), or sent some and
    /// then closed its side: stop reading and answer what it asked.
    Ahead,
}

/// Reads what the client sends while its request is handled, keeping it
/// in `buf`, until it goes away or is far enough ahead.
async fn watch_peer(stream: &mut impl Stream, buf: &mut Vec<u8>, limit: usize) -> Peer {
    loop {
        // A waiting long-poll holds no buffer until the client sends.
        if stream.tcp().readable().await.is_err() {
            return Peer::Gone;
        }
        buf.reserve(512);
        match stream.read_buf(buf).await {
            Ok(0) if buf.is_empty() => return Peer::Gone,
            Ok(0) => return Peer::Ahead,
            Ok(_) if buf.len() > limit => return Peer::Ahead,
            Ok(_) => {}
            Err(_) => return Peer::Gone,
        }
    }
}

async fn write_response(
    stream: &mut impl Stream,
    resp: &Response,
    close: bool,
    limits: &Limits,
) -> io::Result<()> {
    let mut out = Vec::with_capacity(128 + resp.body.len());
    out.extend_from_slice(
        format!(
            "HTTP/1.1 {} {}\r\ncontent-type: {}\r\ncontent-length: {}\r\n{}\r\n",
            resp.status,
            reason(resp.status),
            resp.content_type,
            resp.body.len(),
            if close { "connection: close\r\n" } else { "" }
        )
        .as_bytes(),
    );
    out.extend_from_slice(&resp.body);
    timeout(limits.write, stream.write_all(&out))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "response not read"))?
}

/// One connection: requests in order until either side closes.
async fn connection<S: Service>(
    mut stream: impl Stream,
    service: &S,
    limits: &Limits,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut buf: Vec<u8> = Vec::new();
    loop {
        // The head: wait (idle) for its first byte, then (transfer) for
        // the rest.
        let mut started: Option<Instant> = None;
        let head = loop {
            if !buf.is_empty() {
                match parse_head(&buf, limits.head_bytes) {
                    Ok(Some(h)) => break h,
                    Ok(None) => {}
                    Err(HeadError::TooLarge) => {
                        let mut r = service.bad_request("the request head is too large");
                        r.status = 431;
                        let _ = write_response(&mut stream, &r, true, limits).await;
                        return;
                    }
                    Err(HeadError::Bad(why)) => {
                        let r = service.bad_request(&why);
                        let _ = write_response(&mut stream, &r, true, limits).await;
                        return;
                    }
                }
            }
            let deadline = match started {
                Some(at) => at + limits.transfer,
                None => Instant::now() + limits.idle,
            };
            let read = tokio::select! {
                r = read_more(&mut stream, &mut buf) => r,
                _ = tokio::time::sleep_until(deadline) => return,
                // An idle connection closes at shutdown; a started head is
                // finished first.
                _ = shutdown.wait_for(|d| *d), if buf.is_empty() => return,
            };
            match read {
                Ok(0) | Err(_) => return,
                Ok(_) => {
                    started.get_or_insert_with(Instant::now);
                }
            }
        };

        // The body.
        let limit = service.body_limit(&head.path);
        let deadline = Instant::now() + limits.transfer;
        let mut told_continue = false;
        let (body, consumed) = loop {
            let data = &buf[head.len..];
            let done = match head.body {
                BodyKind::Length(n) if n > limit => Err(ChunkError::TooLarge),
                BodyKind::Length(n) if data.len() >= n => Ok(Some((data[..n].to_vec(), n))),
                BodyKind::Length(_) => Ok(None),
                BodyKind::Chunked => decode_chunked(data, limit),
            };
            match done {
                Ok(Some(b)) => break b,
                Ok(None) => {}
                Err(ChunkError::TooLarge) => {
                    let r = service.too_large(&head.path);
                    let _ = write_response(&mut stream, &r, true, limits).await;
                    return;
                }
                Err(ChunkError::Bad) => {
                    let r = service.bad_request("malformed chunked body");
                    let _ = write_response(&mut stream, &r, true, limits).await;
                    return;
                }
            }
            if head.expect_continue && !told_continue {
                told_continue = true;
                if stream
                    .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
                    .await
                    .is_err()
                {
                    return;
                }
            }
            let read = tokio::select! {
                r = read_more(&mut stream, &mut buf) => r,
                _ = tokio::time::sleep_until(deadline) => return,
            };
            if !matches!(read, Ok(n) if n > 0) {
                return;
            }
        };
        buf.drain(..head.len + consumed);
        if buf.is_empty() {
            // Nothing pipelined: hold no buffer while the request runs.
            buf = Vec::new();
        }

        let req = Request {
            method: head.method,
            path: head.path,
            query: head.query,
            authorization: head.authorization,
            body,
        };
        let resp = {
            let handling = service.call(req);
            tokio::pin!(handling);
            let peer = tokio::select! {
                r = &mut handling => Ok(r),
                p = watch_peer(&mut stream, &mut buf, limits.head_bytes) => Err(p),
            };
            match peer {
                Ok(r) => r,
                // The client went away: stop the handler (a long-poll
                // frees its wait at once).
                Err(Peer::Gone) => return,
                // Pipelined requests wait in `buf`, in order; stop reading
                // (the socket pushes back) and finish this one.
                Err(Peer::Ahead) => handling.await,
            }
        };
        let close = !head.keep_alive || *shutdown.borrow();
        if write_response(&mut stream, &resp, close, limits)
            .await
            .is_err()
            || close
        {
            let _ = stream.shutdown().await;
            return;
        }
    }
}

/// Feeds arbitrary bytes through what reads a request — the head parser
/// and the chunked-body decoder — and checks what they promise: no
/// panic, nothing consumed past the input, no body over its limit. For
/// the fuzz target (`fuzz/`) and the replay of its seeds in the tests.
#[doc(hidden)]
pub fn fuzz_request(data: &[u8]) {
    const LIMIT: usize = 64 * 1024;
    if let Ok(Some(head)) = parse_head(data, 16 * 1024) {
        assert!(head.len <= data.len());
        assert!(head.path.starts_with('/'));
        if let BodyKind::Chunked = head.body
            && let Ok(Some((body, used))) = decode_chunked(&data[head.len..], LIMIT)
        {
            assert!(used <= data.len() - head.len);
            assert!(body.len() <= LIMIT);
        }
    }
    if let Ok(Some((body, used))) = decode_chunked(data, LIMIT) {
        assert!(used <= data.len() && body.len() <= LIMIT);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunked_bodies_decode_and_are_bounded() {
        let data = b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nX-T: 1\r\n\r\nGET";
        let (body, used) = decode_chunked(data, 100).unwrap().unwrap();
        assert_eq!(body, b"hello world");
        assert_eq!(&data[used..], b"GET");
        assert_eq!(decode_chunked(b"5\r\nhel", 100), Ok(None));
        assert_eq!(decode_chunked(b"5\r\nhello\r\n0\r\n", 100), Ok(None));
        assert_eq!(
            decode_chunked(b"5\r\nhello\r\n", 4),
            Err(ChunkError::TooLarge)
        );
        assert_eq!(decode_chunked(b"zz\r\n", 100), Err(ChunkError::Bad));
        assert_eq!(decode_chunked(b"2\r\nabXY", 100), Err(ChunkError::Bad));
    }

    #[test]
    fn sizes_are_strict_numbers_and_never_overflow() {
        for bad in [
            "+5",
            "-1",
            " 5",
            "5 5",
            "0x5",
            "",
            "1_0",
            "٣",
            "99999999999999999999",
        ] {
            assert_eq!(decimal(bad), None, "{bad:?}");
        }
        assert_eq!(decimal("007"), Some(7));
        for bad in [
            "+5",
            "-1",
            "0x5",
            "",
            "ffffffffffffffff",
            "fffffffffffffffff0",
            "g",
        ] {
            assert_eq!(chunk_size(bad), None, "{bad:?}");
        }
        assert_eq!(chunk_size("fF"), Some(255));
        // A size that would wrap any sum on lengths: refused, never a panic.
        let limit = 1 << 20;
        for size in [
            "fffffffffffffff",
            "7fffffffffffffff",
            "ffffffffffffffff",
            "+a",
        ] {
            let data = format!("1\r\na\r\n{size}\r\nxyz\r\n0\r\n\r\n");
            assert!(
                matches!(
                    decode_chunked(data.as_bytes(), limit),
                    Err(ChunkError::TooLarge | ChunkError::Bad)
                ),
                "{size}"
            );
        }
        let h = |s: &str| parse_head(s.as_bytes(), 16 * 1024);
        for bad in ["+3", "3 3", "0x3", "99999999999999999999", "3,3"] {
            let req = format!("POST / HTTP/1.1\r\nContent-Length: {bad}\r\n\r\n");
            assert!(matches!(h(&req), Err(HeadError::Bad(_))), "{bad}");
        }
    }

    #[test]
    fn heads_refuse_what_could_smuggle_a_request() {
        let h = |s: &str| parse_head(s.as_bytes(), 16 * 1024);
        let ok = h("POST http://relay:8787/send?x=1 HTTP/1.1\r\nContent-Length: 3\r\nAuthorization: Bearer t\r\n\r\n")
            .ok()
            .flatten()
            .unwrap();
        assert_eq!((ok.path.as_str(), ok.query.as_str()), ("/send", "x=1"));
        assert_eq!(ok.authorization.as_deref(), Some("Bearer t"));
        assert!(ok.keep_alive);
        assert!(matches!(ok.body, BodyKind::Length(3)));
        let old = h("GET / HTTP/1.0\r\n\r\n").ok().flatten().unwrap();
        assert!(!old.keep_alive);
        let old = h("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            .ok()
            .flatten()
            .unwrap();
        assert!(old.keep_alive);
        for bad in [
            "POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n",
            "POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
            "GET * HTTP/1.1\r\n\r\n",
            "NOT HTTP\r\n\r\n",
        ] {
            assert!(matches!(h(bad), Err(HeadError::Bad(_))), "{bad:?}");
        }
        assert!(matches!(h("GET / HTTP/1.1\r\n"), Ok(None)));
        let huge = format!("GET /{} HTTP/1.1\r\n", "a".repeat(20_000));
        assert!(matches!(h(&huge), Err(HeadError::TooLarge)));
    }

    #[test]
    fn the_fuzz_seeds_replay_cleanly() {
        for seed in agentbus_proto::fuzz_seeds("relay_http") {
            fuzz_request(&seed);
        }
    }
}
