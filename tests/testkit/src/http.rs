//! Minimal HTTP/1.1 for the loopback servers of the tests, the demo and the sandbox: request
//! parsing (Content-Length and chunked bodies, with limits on head and body), responses made of
//! shared byte segments (so the sandbox writes list pages without copying stored objects),
//! chunked streaming for watches. One parser, so a framing fix reaches every server.

use std::io::{self, BufRead, Read, Write};
use std::sync::Arc;

/// Request bodies beyond this are refused (the API server's limit is 3 MiB; loads go via files).
const MAX_BODY: usize = 64 << 20;
const MAX_HEAD: usize = 64 << 10;

pub struct Request {
    pub method: String,
    /// The request target exactly as sent (path and query, still percent-encoded).
    pub target: String,
    /// The target's path, percent-decoded.
    pub path: String,
    pub query: Vec<(String, String)>,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub fn param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
    pub fn wants_close(&self) -> bool {
        self.header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"))
    }
}

/// A percent-encoded path segment, decoded (`+` stays `+` in a path).
fn decode_path(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

/// A query-string key or value, decoded as `application/x-www-form-urlencoded` (`+` is a
/// space), as the API server's Go `url.ParseQuery` reads it.
fn decode_query(s: &str) -> String {
    decode_path(&s.replace('+', " "))
}

fn read_line_limited<R: BufRead>(r: &mut R, budget: &mut usize) -> io::Result<Option<String>> {
    let mut buf = Vec::new();
    let n = r
        .by_ref()
        .take(*budget as u64 + 1)
        .read_until(b'\n', &mut buf)?;
    if n == 0 {
        return Ok(None);
    }
    if n > *budget {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "request head too large",
        ));
    }
    *budget -= n;
    while buf.last().is_some_and(|c| *c == b'\n' || *c == b'\r') {
        buf.pop();
    }
    Ok(Some(String::from_utf8_lossy(&buf).into_owned()))
}

/// Reads one request; `Ok(None)` on a clean end of the connection. Answers
/// `Expect: 100-continue` (curl sends it for larger bodies) before reading the body.
pub fn read_request<C: Read + Write>(r: &mut io::BufReader<C>) -> io::Result<Option<Request>> {
    let mut budget = MAX_HEAD;
    let mut line = match read_line_limited(r, &mut budget)? {
        None => return Ok(None),
        Some(l) => l,
    };
    while line.is_empty() {
        line = match read_line_limited(r, &mut budget)? {
            None => return Ok(None),
            Some(l) => l,
        };
    }
    let mut parts = line.split_whitespace();
    let bad = || io::Error::new(io::ErrorKind::InvalidData, "malformed request line");
    let method = parts.next().ok_or_else(bad)?.to_string();
    let target = parts.next().ok_or_else(bad)?.to_string();
    let mut headers = Vec::new();
    loop {
        let l = read_line_limited(r, &mut budget)?.ok_or_else(bad)?;
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    let (raw_path, raw_query) = target.split_once('?').unwrap_or((&target, ""));
    let path = decode_path(raw_path);
    let query = raw_query
        .split('&')
        .filter(|s| !s.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (decode_query(k), decode_query(v))
        })
        .collect();
    let mut req = Request {
        method,
        target: target.clone(),
        path,
        query,
        headers,
        body: Vec::new(),
    };
    if req
        .header("expect")
        .is_some_and(|v| v.eq_ignore_ascii_case("100-continue"))
    {
        let w = r.get_mut();
        w.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
        w.flush()?;
    }
    let chunked = req
        .header("transfer-encoding")
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
    if chunked {
        loop {
            let mut b = MAX_HEAD;
            let size_line = read_line_limited(r, &mut b)?.ok_or_else(bad)?;
            let size = usize::from_str_radix(size_line.split(';').next().unwrap_or("").trim(), 16)
                .map_err(|_| bad())?;
            if size == 0 {
                // Trailers until an empty line.
                while read_line_limited(r, &mut b)?.is_some_and(|l| !l.is_empty()) {}
                break;
            }
            if req.body.len().saturating_add(size) > MAX_BODY {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "request body too large",
                ));
            }
            let start = req.body.len();
            req.body.resize(start + size, 0);
            r.read_exact(&mut req.body[start..])?;
            let mut crlf = [0u8; 2];
            r.read_exact(&mut crlf)?;
        }
    } else if let Some(len) = req.header("content-length") {
        let len: usize = len.parse().map_err(|_| bad())?;
        if len > MAX_BODY {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "request body too large",
            ));
        }
        req.body.resize(len, 0);
        r.read_exact(&mut req.body)?;
    }
    Ok(Some(req))
}

pub enum Segment {
    Owned(Vec<u8>),
    Shared(Arc<Vec<u8>>),
    Static(&'static [u8]),
}

impl Segment {
    fn bytes(&self) -> &[u8] {
        match self {
            Segment::Owned(v) => v,
            Segment::Shared(v) => v,
            Segment::Static(v) => v,
        }
    }
}

pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<Segment>,
}

pub fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        409 => "Conflict",
        410 => "Gone",
        415 => "Unsupported Media Type",
        422 => "Unprocessable Entity",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

impl Response {
    pub fn new(status: u16, content_type: &str, body: Vec<Segment>) -> Self {
        Response {
            status,
            headers: vec![("Content-Type".into(), content_type.into())],
            body,
        }
    }
    pub fn json(status: u16, body: Vec<u8>) -> Self {
        Self::new(status, "application/json", vec![Segment::Owned(body)])
    }
    pub fn body_len(&self) -> usize {
        self.body.iter().map(|s| s.bytes().len()).sum()
    }

    /// Writes the response. `truncate` declares the full length but sends only half the body
    /// (the caller then closes the connection) — the "truncated body" fault.
    pub fn write_to<W: Write>(&self, w: &mut W, truncate: bool) -> io::Result<()> {
        let len = self.body_len();
        let mut head = format!("HTTP/1.1 {} {}\r\n", self.status, reason(self.status));
        for (k, v) in &self.headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str(&format!("Content-Length: {len}\r\n"));
        if truncate {
            head.push_str("Connection: close\r\n");
        }
        head.push_str("\r\n");
        let mut bw = io::BufWriter::with_capacity(64 << 10, w);
        bw.write_all(head.as_bytes())?;
        let mut left = if truncate { len / 2 } else { len };
        for s in &self.body {
            let b = s.bytes();
            let n = b.len().min(left);
            bw.write_all(&b[..n])?;
            left -= n;
            if left == 0 {
                break;
            }
        }
        bw.flush()
    }
}

/// Writes each buffer it gets as one HTTP chunk.
struct ChunkWriter<'a, W: Write>(&'a mut W);

impl<W: Write> Write for ChunkWriter<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        write_chunk(self.0, &[buf])?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

impl Response {
    /// Writes the body gzip-compressed with chunked framing (its size is not known in advance).
    pub fn write_gzip<W: Write>(&self, w: &mut W) -> io::Result<()> {
        let mut head = format!("HTTP/1.1 {} {}\r\n", self.status, reason(self.status));
        for (k, v) in &self.headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("Content-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n");
        let mut bw = io::BufWriter::with_capacity(64 << 10, w);
        bw.write_all(head.as_bytes())?;
        {
            let chunks = io::BufWriter::with_capacity(64 << 10, ChunkWriter(&mut bw));
            let mut gz = flate2::write::GzEncoder::new(chunks, flate2::Compression::fast());
            for s in &self.body {
                gz.write_all(s.bytes())?;
            }
            gz.finish()?.flush()?;
        }
        write_last_chunk(&mut bw)?;
        bw.flush()
    }
}

/// Starts a chunked response (watch streams).
pub fn write_chunked_head<W: Write>(w: &mut W, content_type: &str) -> io::Result<()> {
    write!(
        w,
        "HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nTransfer-Encoding: chunked\r\nCache-Control: no-cache, private\r\n\r\n"
    )?;
    w.flush()
}

pub fn write_chunk<W: Write>(w: &mut W, parts: &[&[u8]]) -> io::Result<()> {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    if len == 0 {
        return Ok(());
    }
    write!(w, "{len:x}\r\n")?;
    for p in parts {
        w.write_all(p)?;
    }
    w.write_all(b"\r\n")
}

pub fn write_last_chunk<W: Write>(w: &mut W) -> io::Result<()> {
    w.write_all(b"0\r\n\r\n")?;
    w.flush()
}
