//! Minimal HTTP/1.1 server side: read one request (head, then a
//! Content-Length or chunked body) from a byte stream, URL-decode its path
//! and query, and write plain or chunked responses.

use std::io::{self, Read, Write};

const MAX_HEAD: usize = 64 * 1024;
const MAX_BODY: usize = 4 * 1024 * 1024;

#[derive(Debug)]
pub struct Request {
    pub method: String,
    /// The request target as sent ("/path?query").
    pub target: String,
    /// URL-decoded path.
    pub path: String,
    /// URL-decoded query parameters, in order.
    pub query: Vec<(String, String)>,
    /// Header names lower-cased.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    http10: bool,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    pub fn param(&self, name: &str) -> Option<&str> {
        self.query.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// Whether the connection may carry another request after this one.
    pub fn keep_alive(&self) -> bool {
        let conn = self.header("connection").unwrap_or("").to_ascii_lowercase();
        if self.http10 {
            conn.contains("keep-alive")
        } else {
            !conn.contains("close")
        }
    }
}

fn bad(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

/// Read the next request. `buf` carries bytes read past the previous request.
/// Ok(None): the peer closed the connection between requests.
pub fn read_request<S: Read + Write>(stream: &mut S, buf: &mut Vec<u8>) -> io::Result<Option<Request>> {
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        if buf.len() > MAX_HEAD {
            return Err(bad("request head too large"));
        }
        if !fill(stream, buf)? {
            return if buf.is_empty() {
                Ok(None)
            } else {
                Err(bad("connection closed mid-request"))
            };
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    buf.drain(..head_end + 4);
    let mut lines = head.split("\r\n");
    let mut parts = lines.next().unwrap_or("").split(' ');
    let (Some(method), Some(target), Some(version)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(bad(format!("bad request line in {head:?}")));
    };
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let (raw_path, raw_query) = target.split_once('?').unwrap_or((target, ""));
    let mut req = Request {
        method: method.to_string(),
        target: target.to_string(),
        path: url_decode(raw_path, false),
        query: raw_query
            .split('&')
            .filter(|kv| !kv.is_empty())
            .map(|kv| {
                let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                (url_decode(k, true), url_decode(v, true))
            })
            .collect(),
        headers,
        body: Vec::new(),
        http10: version == "HTTP/1.0",
    };
    if req
        .header("expect")
        .is_some_and(|e| e.eq_ignore_ascii_case("100-continue"))
    {
        stream.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
        stream.flush()?;
    }
    if req
        .header("transfer-encoding")
        .is_some_and(|t| t.to_ascii_lowercase().contains("chunked"))
    {
        req.body = read_chunked(stream, buf)?;
    } else if let Some(len) = req.header("content-length") {
        let len: usize = len.parse().map_err(|_| bad("bad Content-Length"))?;
        if len > MAX_BODY {
            return Err(bad("request body too large"));
        }
        while buf.len() < len {
            if !fill(stream, buf)? {
                return Err(bad("connection closed mid-body"));
            }
        }
        req.body = buf.drain(..len).collect();
    }
    Ok(Some(req))
}

/// Read more bytes into `buf`; false on EOF.
fn fill<S: Read>(stream: &mut S, buf: &mut Vec<u8>) -> io::Result<bool> {
    let mut chunk = [0u8; 16 * 1024];
    loop {
        match stream.read(&mut chunk) {
            Ok(0) => return Ok(false),
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                return Ok(true);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
}

fn read_line<S: Read>(stream: &mut S, buf: &mut Vec<u8>) -> io::Result<String> {
    loop {
        if let Some(i) = buf.windows(2).position(|w| w == b"\r\n") {
            let line = String::from_utf8_lossy(&buf[..i]).into_owned();
            buf.drain(..i + 2);
            return Ok(line);
        }
        if buf.len() > MAX_HEAD || !fill(stream, buf)? {
            return Err(bad("bad chunked body"));
        }
    }
}

fn read_chunked<S: Read>(stream: &mut S, buf: &mut Vec<u8>) -> io::Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let line = read_line(stream, buf)?;
        let size = line.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size, 16).map_err(|_| bad("bad chunk size"))?;
        if size == 0 {
            // Trailers, up to the empty line.
            while !read_line(stream, buf)?.is_empty() {}
            return Ok(body);
        }
        if body.len() + size > MAX_BODY {
            return Err(bad("request body too large"));
        }
        while buf.len() < size + 2 {
            if !fill(stream, buf)? {
                return Err(bad("connection closed mid-chunk"));
            }
        }
        body.extend(buf.drain(..size));
        buf.drain(..2);
    }
}

/// Percent-decoding; `plus_is_space` for query components.
pub fn url_decode(s: &str, plus_is_space: bool) -> String {
    let bytes = s.as_bytes();
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b'+' if plus_is_space => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn reason_phrase(code: u16) -> &'static str {
    match code {
        200 => "OK",
        201 => "Created",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        415 => "Unsupported Media Type",
        422 => "Unprocessable Entity",
        _ => "Internal Server Error",
    }
}

/// A complete JSON response with Content-Length.
pub fn write_json<W: Write>(out: &mut W, code: u16, body: &[u8], keep_alive: bool) -> io::Result<()> {
    let head = format!(
        "HTTP/1.1 {code} {}\r\nContent-Type: application/json\r\nCache-Control: no-cache, private\r\n\
         Content-Length: {}\r\n{}\r\n",
        reason_phrase(code),
        body.len(),
        if keep_alive { "" } else { "Connection: close\r\n" },
    );
    let mut msg = head.into_bytes();
    msg.extend_from_slice(body);
    out.write_all(&msg)?;
    out.flush()
}

/// The head of a 200 chunked JSON stream (a watch).
pub fn write_stream_head<W: Write>(out: &mut W) -> io::Result<()> {
    out.write_all(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nCache-Control: no-cache, private\r\n\
          Transfer-Encoding: chunked\r\n\r\n",
    )?;
    out.flush()
}

/// One chunk, flushed at once. Empty `data` is ignored (it would end the stream).
pub fn write_chunk<W: Write>(out: &mut W, data: &[u8]) -> io::Result<()> {
    if data.is_empty() {
        return Ok(());
    }
    let mut msg = format!("{:x}\r\n", data.len()).into_bytes();
    msg.extend_from_slice(data);
    msg.extend_from_slice(b"\r\n");
    out.write_all(&msg)?;
    out.flush()
}

/// The terminating zero-length chunk.
pub fn end_stream<W: Write>(out: &mut W) -> io::Result<()> {
    out.write_all(b"0\r\n\r\n")?;
    out.flush()
}
