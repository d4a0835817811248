//! A small, strict HTTP/1.1 client: keep-alive connections, `GET` and `HEAD` requests, and
//! responses framed by `Content-Length` (or, when the server says `Connection: close`, by the
//! end of the connection).
//!
//! It is strict on purpose: the load generator counts as failures the responses it rejects
//! (a bad status line or header, a missing or contradictory `Content-Length`, a truncated
//! body), so that a server that garbles its output under Uppercut cannot go unnoticed.
//!
//! ```no_run
//! use std::time::Duration;
//! use uppercut_experiments::http::Connection;
//!
//! let addr = "127.0.0.1:8080".parse().unwrap();
//! let mut conn = Connection::open(addr, Duration::from_secs(5))?;
//! let response = conn.get("/hello?name=you")?;
//! assert_eq!(response.status, 200);
//! let again = conn.get("/status")?; // the same connection, kept alive
//! # Ok::<(), uppercut_experiments::Error>(())
//! ```

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use crate::error::{Error, Result};

/// The longest status or header line accepted, in bytes.
pub const MAX_LINE: usize = 8192;
/// The most header fields accepted in one response.
pub const MAX_HEADERS: usize = 100;
/// The largest body accepted, in bytes.
pub const MAX_BODY: u64 = 64 << 20;

/// One response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// `HTTP/1.1` or `HTTP/1.0`.
    pub version: String,
    /// The status code, 100 to 599.
    pub status: u16,
    /// The reason phrase (possibly empty).
    pub reason: String,
    /// The header fields in order, names as sent.
    pub headers: Vec<(String, String)>,
    /// The body (empty for `HEAD`, 1xx, 204 and 304).
    pub body: Vec<u8>,
}

impl Response {
    /// The value of the first header field called `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as text (invalid UTF-8 replaced).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// Whether the status is 2xx.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// Whether the server closes the connection after this response: `Connection: close`,
    /// or HTTP/1.0 without `Connection: keep-alive`.
    pub fn closes(&self) -> bool {
        let has = |token: &str| {
            self.headers
                .iter()
                .filter(|(n, _)| n.eq_ignore_ascii_case("connection"))
                .any(|(_, v)| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
        };
        has("close") || (self.version == "HTTP/1.0" && !has("keep-alive"))
    }
}

/// A client connection that can carry many requests in turn.
#[derive(Debug)]
pub struct Connection {
    reader: BufReader<TcpStream>,
    addr: SocketAddr,
}

impl Connection {
    /// Connects to `addr`; `timeout` bounds the connection and every later read and write.
    pub fn open(addr: SocketAddr, timeout: Duration) -> Result<Connection> {
        let stream = TcpStream::connect_timeout(&addr, timeout)
            .map_err(|e| Error::io(format!("connecting to {addr}"), e))?;
        let configure = |s: &TcpStream| {
            s.set_read_timeout(Some(timeout))?;
            s.set_write_timeout(Some(timeout))?;
            s.set_nodelay(true)
        };
        configure(&stream).map_err(|e| Error::io(format!("configuring a socket to {addr}"), e))?;
        Ok(Connection {
            reader: BufReader::new(stream),
            addr,
        })
    }

    /// The server's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Sends `GET target` and reads the response.
    pub fn get(&mut self, target: &str) -> Result<Response> {
        self.send("GET", target)?;
        self.receive(false)
    }

    /// Sends a request without a body (`method` and `target` as on the request line), without
    /// waiting for the response: requests can be pipelined, and their responses read in turn
    /// with [`Connection::receive`].
    pub fn send(&mut self, method: &str, target: &str) -> Result<()> {
        let plain = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_graphic());
        if !plain(method) || !plain(target) || !target.starts_with('/') {
            return Err(Error::InvalidConfig {
                reason: format!("`{method} {target}` is not a request line this client sends"),
            });
        }
        let request = format!("{method} {target} HTTP/1.1\r\nHost: {}\r\n\r\n", self.addr);
        self.send_raw(request.as_bytes())
    }

    /// Writes `bytes` as they are: for requests that [`Connection::send`] would refuse.
    pub fn send_raw(&mut self, bytes: &[u8]) -> Result<()> {
        let addr = self.addr;
        self.reader
            .get_mut()
            .write_all(bytes)
            .map_err(|e| Error::io(format!("sending a request to {addr}"), e))
    }

    /// Reads the next response; `head` says whether it answers a `HEAD` request (no body).
    pub fn receive(&mut self, head: bool) -> Result<Response> {
        read_response(&mut self.reader, head)
    }
}

/// `GET target` on a connection of its own, with a 10 s time limit on each step.
pub fn get(addr: SocketAddr, target: &str) -> Result<Response> {
    Connection::open(addr, Duration::from_secs(10))?.get(target)
}

/// Reads one response from `reader`; `head` says whether it answers a `HEAD` request.
///
/// [`Error::MalformedResponse`] when it breaks the protocol, [`Error::Io`] when the connection
/// fails or ends early (`UnexpectedEof`, also when it ends before the first byte).
pub fn read_response<R: BufRead>(reader: &mut R, head: bool) -> Result<Response> {
    let status_line = read_line(reader)?;
    let (version, rest) = status_line
        .split_once(' ')
        .ok_or_else(|| Error::malformed(format!("status line `{status_line}`")))?;
    if version != "HTTP/1.1" && version != "HTTP/1.0" {
        return Err(Error::malformed(format!("version `{version}`")));
    }
    let (code, reason) = rest.split_once(' ').unwrap_or((rest, ""));
    let status = match code.parse::<u16>() {
        Ok(status) if code.len() == 3 && (100..600).contains(&status) => status,
        _ => return Err(Error::malformed(format!("status code `{code}`"))),
    };
    let mut headers = Vec::new();
    loop {
        let line = read_line(reader)?;
        if line.is_empty() {
            break;
        }
        if headers.len() == MAX_HEADERS {
            return Err(Error::malformed(format!(
                "more than {MAX_HEADERS} header fields"
            )));
        }
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| Error::malformed(format!("header line `{line}`")))?;
        let token = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
        if name.is_empty() || !name.bytes().all(token) {
            return Err(Error::malformed(format!("header name `{name}`")));
        }
        headers.push((name.to_owned(), value.trim_matches([' ', '\t']).to_owned()));
    }
    let mut response = Response {
        version: version.to_owned(),
        status,
        reason: reason.to_owned(),
        headers,
        body: Vec::new(),
    };
    if head || status < 200 || status == 204 || status == 304 {
        return Ok(response);
    }
    if response.header("transfer-encoding").is_some() {
        return Err(Error::malformed(
            "Transfer-Encoding (this client reads Content-Length only)",
        ));
    }
    let mut length = None;
    for (_, value) in response
        .headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("content-length"))
    {
        let parsed = value
            .parse::<u64>()
            .ok()
            .filter(|_| value.bytes().all(|b| b.is_ascii_digit()))
            .ok_or_else(|| Error::malformed(format!("Content-Length `{value}`")))?;
        if length.is_some_and(|l| l != parsed) {
            return Err(Error::malformed("two different Content-Length values"));
        }
        length = Some(parsed);
    }
    match length {
        Some(n) if n > MAX_BODY => {
            return Err(Error::malformed(format!("a body of {n} bytes")));
        }
        Some(n) => {
            response.body.resize(n as usize, 0);
            reader
                .read_exact(&mut response.body)
                .map_err(|e| Error::io(format!("reading a body of {n} bytes"), e))?;
        }
        None if response.closes() => {
            reader
                .by_ref()
                .take(MAX_BODY + 1)
                .read_to_end(&mut response.body)
                .map_err(|e| Error::io("reading a body up to the end", e))?;
            if response.body.len() as u64 > MAX_BODY {
                return Err(Error::malformed("a body of more than MAX_BODY bytes"));
            }
        }
        None => {
            return Err(Error::malformed(
                "no Content-Length on a response that keeps the connection",
            ));
        }
    }
    Ok(response)
}

/// One line without its line ending (CRLF or LF).
fn read_line<R: BufRead>(reader: &mut R) -> Result<String> {
    let mut line = Vec::new();
    reader
        .by_ref()
        .take(MAX_LINE as u64 + 2)
        .read_until(b'\n', &mut line)
        .map_err(|e| Error::io("reading a response", e))?;
    if line.last() != Some(&b'\n') {
        if line.len() > MAX_LINE {
            return Err(Error::malformed(format!(
                "a line longer than {MAX_LINE} bytes"
            )));
        }
        let what = if line.is_empty() {
            "the connection closed before a response"
        } else {
            "the connection closed in the middle of a line"
        };
        return Err(Error::io(
            "reading a response",
            io::Error::new(io::ErrorKind::UnexpectedEof, what),
        ));
    }
    line.pop();
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    String::from_utf8(line).map_err(|_| Error::malformed("a line that is not UTF-8"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(bytes: &[u8], head: bool) -> Result<Response> {
        read_response(&mut &bytes[..], head)
    }

    fn reason_of(bytes: &[u8]) -> String {
        match parse(bytes, false) {
            Err(Error::MalformedResponse { reason }) => reason,
            other => panic!("expected a malformed response, got {other:?}"),
        }
    }

    #[test]
    fn reads_pipelined_responses_in_turn() {
        let bytes = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nX-A:  b \r\n\r\nabc\
                      HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n";
        let mut reader = &bytes[..];
        let first = read_response(&mut reader, false).unwrap();
        assert_eq!(first.status, 200);
        assert_eq!(first.reason, "OK");
        assert_eq!(first.body, b"abc");
        assert_eq!(first.header("x-a"), Some("b"));
        assert!(first.is_success() && !first.closes());
        let second = read_response(&mut reader, false).unwrap();
        assert_eq!((second.status, second.body.len()), (404, 0));
        assert!(!second.is_success());
        assert!(reader.is_empty());
    }

    #[test]
    fn head_and_no_content_responses_have_no_body() {
        let bytes = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n";
        assert!(parse(bytes, true).unwrap().body.is_empty());
        let bytes = b"HTTP/1.1 204 No Content\r\n\r\n";
        assert_eq!(parse(bytes, false).unwrap().status, 204);
    }

    #[test]
    fn a_closing_response_may_run_to_the_end() {
        let bytes = b"HTTP/1.0 200 OK\r\n\r\nall of it";
        let r = parse(bytes, false).unwrap();
        assert!(r.closes());
        assert_eq!(r.text(), "all of it");
        let bytes = b"HTTP/1.1 200 OK\nConnection: keep-alive, Close\n\nrest";
        assert_eq!(parse(bytes, false).unwrap().body, b"rest");
    }

    #[test]
    fn broken_responses_are_malformed() {
        assert!(reason_of(b"HTTP/2 200 OK\r\n\r\n").contains("version"));
        assert!(reason_of(b"HTTP/1.1 20 OK\r\n\r\n").contains("status code"));
        assert!(reason_of(b"HTTP/1.1 700 Odd\r\n\r\n").contains("status code"));
        assert!(reason_of(b"HTTP/1.1\r\n\r\n").contains("status line"));
        assert!(reason_of(b"HTTP/1.1 200 OK\r\nno colon\r\n\r\n").contains("header line"));
        assert!(reason_of(b"HTTP/1.1 200 OK\r\nbad name: x\r\n\r\n").contains("header name"));
        assert!(reason_of(b"HTTP/1.1 200 OK\r\n\r\nbody").contains("no Content-Length"));
        assert!(
            reason_of(b"HTTP/1.1 200 OK\r\nContent-Length: +3\r\n\r\nabc")
                .contains("Content-Length")
        );
        assert!(
            reason_of(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab")
                .contains("two different")
        );
        assert!(
            reason_of(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
                .contains("Transfer-Encoding")
        );
        let long = format!("HTTP/1.1 200 {}\r\n\r\n", "x".repeat(MAX_LINE));
        assert!(reason_of(long.as_bytes()).contains("longer"));
    }

    #[test]
    fn an_early_end_is_an_io_error() {
        for bytes in [
            &b""[..],
            b"HTTP/1.1 200 OK\r\nContent-Le",
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nab",
        ] {
            match parse(bytes, false) {
                Err(Error::Io { source, .. }) => {
                    assert_eq!(source.kind(), io::ErrorKind::UnexpectedEof)
                }
                other => panic!("{bytes:?}: expected an I/O error, got {other:?}"),
            }
        }
    }
}
