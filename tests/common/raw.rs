//! Raw HTTP/1 on a client socket, for the tests where a client library
//! would hide what is tested (limits, protocol edge cases): connect, read
//! one response head, read one response framed by its Content-Length.

use super::Proxy;
use std::io::Read;
use std::net::TcpStream;
use std::time::Duration;

/// A connection to the proxy's listener, reads timing out after 10 s.
pub fn connect(proxy: &Proxy) -> TcpStream {
    let s = TcpStream::connect(("127.0.0.1", proxy.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

/// One response as read off the wire: the raw head, and the body as
/// framed by Content-Length (none: read to the close).
pub struct Response {
    pub head: String,
    pub body: Vec<u8>,
}

impl Response {
    pub fn status(&self) -> u16 {
        self.head[9..12].parse().unwrap()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Read a response head, up to and with its blank line; errors if the
/// connection ends first.
pub fn read_head(s: &mut TcpStream) -> std::io::Result<String> {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        if s.read(&mut byte)? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.push(byte[0]);
    }
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

/// Read one response whose body has a Content-Length (or none, to close).
pub fn read_response(s: &mut TcpStream) -> std::io::Result<Response> {
    let head = read_head(s)?;
    let mut r = Response {
        head,
        body: Vec::new(),
    };
    match r
        .header("content-length")
        .map(|v| v.parse::<usize>().unwrap())
    {
        Some(len) => {
            r.body.resize(len, 0);
            s.read_exact(&mut r.body)?;
        }
        None => {
            s.read_to_end(&mut r.body)?;
        }
    }
    Ok(r)
}

/// A request as a raw app server reads it: the request line's method and
/// target, and the header fields (names lower-cased).
pub struct Request {
    pub method: String,
    pub path: String,
    pub fields: Vec<(String, String)>,
}

impl Request {
    pub fn field(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The Content-Length, or 0.
    pub fn length(&self) -> usize {
        self.field("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }
}

/// Read one request head off an app's connection; `None` once the proxy
/// closed it.
pub fn read_request(r: &mut std::io::BufReader<TcpStream>) -> std::io::Result<Option<Request>> {
    use std::io::BufRead;
    let mut line = String::new();
    if r.read_line(&mut line)? == 0 {
        return Ok(None);
    }
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or("").to_string();
    let path = parts.next().unwrap_or("").to_string();
    let mut fields = Vec::new();
    loop {
        let mut h = String::new();
        if r.read_line(&mut h)? == 0 {
            return Ok(None);
        }
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (k, v) = h.split_once(':').unwrap_or((h, ""));
        fields.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
    }
    Ok(Some(Request {
        method,
        path,
        fields,
    }))
}
