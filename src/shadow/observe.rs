//! An answer read into what the shadow compares ([`Answer`]): its status,
//! its fields (names lower-case; the framing, connection and pin-cookie
//! fields left out) and its body as a streamed digest plus, up to
//! `max_body_bytes`, the bytes themselves (for JSON). Memory stays bounded
//! whatever the body's size.
//!
//! Production's answer is read as it goes to the client: on the HTTP/1
//! path from the very bytes written to the client ([`Watcher::h1_bytes`]:
//! a header the proxy wrote, a body framed by length or chunked — it
//! frames nothing else), on HTTP/2 from the head and the DATA pieces. The
//! slot's answer comes from the shadow's own HTTP client as a head and
//! body pieces. Both end up in the same [`Answer`], so they compare alike.

use crate::request_body::ChunkedDecoder;
use std::hash::Hasher;
use std::time::Instant;

/// Longest response header kept while watching HTTP/1 bytes.
const MAX_HEAD: usize = 256 * 1024;

/// Fields never compared: how the message was framed and carried, not
/// what it says.
pub const FRAMING_FIELDS: [&str; 7] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "content-length",
    "trailer",
    "upgrade",
];

/// One answer, ready to compare.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    pub status: u16,
    /// (lower-case name, value), in the order received.
    pub fields: Vec<(String, Vec<u8>)>,
    pub body: Body,
    /// From the request header read to the answer's last byte.
    pub secs: f64,
}

/// A body as seen.
#[derive(Debug, Clone, PartialEq)]
pub struct Body {
    pub len: u64,
    /// SipHash of all of it (the digest compared when it is not JSON).
    pub digest: u64,
    /// All of it, when it was no larger than `max_body_bytes`.
    pub kept: Option<Vec<u8>>,
}

impl Answer {
    /// The first value of field `name` (lower-case).
    pub fn field(&self, name: &str) -> Option<&[u8]> {
        self.fields
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_slice())
    }

    /// Its `Content-Type` says JSON (`application/json`, `…+json`).
    pub fn is_json(&self) -> bool {
        self.field("content-type").is_some_and(|v| {
            let v = String::from_utf8_lossy(v).to_ascii_lowercase();
            let media = v.split(';').next().unwrap_or("").trim().to_string();
            media == "application/json" || media.ends_with("+json")
        })
    }
}

/// A body read piece by piece: hashed as it goes, kept while it fits.
#[derive(Debug)]
pub struct BodyReader {
    max: usize,
    len: u64,
    hasher: std::hash::DefaultHasher,
    kept: Option<Vec<u8>>,
}

impl BodyReader {
    pub fn new(max: usize) -> BodyReader {
        BodyReader {
            max,
            len: 0,
            hasher: std::hash::DefaultHasher::new(),
            kept: Some(Vec::new()),
        }
    }

    pub fn push(&mut self, bytes: &[u8]) {
        self.len += bytes.len() as u64;
        self.hasher.write(bytes);
        if let Some(k) = &mut self.kept {
            if k.len() + bytes.len() > self.max {
                self.kept = None;
            } else {
                k.extend_from_slice(bytes);
            }
        }
    }

    pub fn finish(self) -> Body {
        Body {
            len: self.len,
            digest: self.hasher.finish(),
            kept: self.kept,
        }
    }
}

/// The fields of an answer as compared: names lower-case, framing fields
/// and the pin cookie (`<cookie_name>=…` in a `Set-Cookie`) left out.
pub fn fields_of<'a>(
    raw: impl Iterator<Item = (&'a [u8], &'a [u8])>,
    pin_prefix: &str,
) -> Vec<(String, Vec<u8>)> {
    raw.filter_map(|(n, v)| {
        let name = String::from_utf8_lossy(n).to_ascii_lowercase();
        if FRAMING_FIELDS.contains(&name.as_str()) {
            return None;
        }
        if !pin_prefix.is_empty() && name == "set-cookie" && v.starts_with(pin_prefix.as_bytes()) {
            return None;
        }
        Some((name, v.to_vec()))
    })
    .collect()
}

/// How an HTTP/1 body being watched is framed.
#[derive(Debug)]
enum Framing {
    None,
    Length(u64),
    Chunked(ChunkedDecoder),
    /// An instance's answer with neither length nor chunks: to the close.
    UntilClose,
}

#[derive(Debug)]
enum Stage {
    /// Header bytes so far (interim answers are passed over).
    Head(Vec<u8>),
    Body(Framing),
    Done,
    /// Not readable as an answer (or a 101): nothing is compared.
    Broken,
}

/// Production's answer being watched as it goes to the client.
#[derive(Debug)]
pub struct Watcher {
    stage: Stage,
    status: u16,
    fields: Vec<(String, Vec<u8>)>,
    body: BodyReader,
    head_request: bool,
    /// `<cookie_name>=`: the proxy's own pin cookie, not compared.
    pin_prefix: String,
    start: Instant,
    /// Scratch for de-chunked bytes.
    scratch: Vec<u8>,
    /// Reading an instance's own bytes (the shadow's copy): a body with
    /// neither length nor chunks runs to the close.
    raw: bool,
    /// The answer said `Connection: close` (or was HTTP/1.0).
    close: bool,
}

impl Watcher {
    /// `http1`: fed with [`Watcher::h1_bytes`]; else with
    /// [`Watcher::head`] and [`Watcher::body`]. `start`: when the request
    /// header was read.
    pub fn new(
        max_body: usize,
        head_request: bool,
        http1: bool,
        cookie_name: &str,
        start: Instant,
    ) -> Watcher {
        Watcher {
            stage: if http1 {
                Stage::Head(Vec::new())
            } else {
                Stage::Body(Framing::None)
            },
            status: 0,
            fields: Vec::new(),
            body: BodyReader::new(max_body),
            head_request,
            pin_prefix: if cookie_name.is_empty() {
                String::new()
            } else {
                format!("{cookie_name}=")
            },
            start,
            scratch: Vec::new(),
            raw: false,
            close: false,
        }
    }

    /// A watcher of an instance's answer read straight from its connection.
    pub fn raw(max_body: usize, head_request: bool) -> Watcher {
        Watcher {
            raw: true,
            ..Watcher::new(max_body, head_request, true, "", Instant::now())
        }
    }

    /// The whole answer has been read.
    pub fn done(&self) -> bool {
        matches!(self.stage, Stage::Done)
    }

    /// Nothing more of it may come after this (a read error or the
    /// connection closed): an answer running to the close ends here.
    pub fn eof(&mut self) {
        if matches!(self.stage, Stage::Body(Framing::UntilClose)) {
            self.stage = Stage::Done;
        }
    }

    /// What came is not an answer this reads (or a `101`).
    pub fn failed(&self) -> bool {
        matches!(self.stage, Stage::Broken)
    }

    /// Its connection may take another request.
    pub fn reusable(&self) -> bool {
        self.done() && !self.close
    }

    /// The head of the answer (not HTTP/1 bytes).
    pub fn head<'a>(&mut self, status: u16, fields: impl Iterator<Item = (&'a [u8], &'a [u8])>) {
        self.status = status;
        self.fields = fields_of(fields, &self.pin_prefix);
    }

    /// A piece of the body (not HTTP/1 bytes).
    pub fn body(&mut self, bytes: &[u8]) {
        self.body.push(bytes);
    }

    /// Bytes written to an HTTP/1 client, in order.
    pub fn h1_bytes(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            match &mut self.stage {
                Stage::Head(buf) => {
                    if buf.len() + bytes.len() > MAX_HEAD {
                        self.stage = Stage::Broken;
                        return;
                    }
                    let before = buf.len();
                    buf.extend_from_slice(bytes);
                    let mut room = [httparse::EMPTY_HEADER; 256];
                    let mut resp = httparse::Response::new(&mut room);
                    let n = match resp.parse(buf) {
                        Ok(httparse::Status::Complete(n)) => n,
                        Ok(httparse::Status::Partial) => return,
                        Err(_) => {
                            self.stage = Stage::Broken;
                            return;
                        }
                    };
                    let status = resp.code.unwrap_or(0);
                    self.close = resp.version == Some(0)
                        || resp.headers.iter().any(|h| {
                            h.name.eq_ignore_ascii_case("connection")
                                && h.value
                                    .split(|&b| b == b',')
                                    .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"close"))
                        });
                    let used = n - before;
                    bytes = &bytes[used..];
                    if status == 101 {
                        self.stage = Stage::Broken;
                        return;
                    }
                    if status < 200 {
                        buf.clear();
                        continue;
                    }
                    let headers = resp.headers.iter().map(|h| (h.name.as_bytes(), h.value));
                    let fields = fields_of(headers, &self.pin_prefix);
                    let chunked = resp.headers.iter().any(|h| {
                        h.name.eq_ignore_ascii_case("transfer-encoding")
                            && h.value.eq_ignore_ascii_case(b"chunked")
                    });
                    let length = resp
                        .headers
                        .iter()
                        .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                        .and_then(|h| std::str::from_utf8(h.value).ok()?.trim().parse().ok());
                    let framing = if self.head_request || status == 204 || status == 304 {
                        Framing::None
                    } else if chunked {
                        Framing::Chunked(ChunkedDecoder::bare())
                    } else if length.is_none() && self.raw {
                        self.close = true;
                        Framing::UntilClose
                    } else {
                        Framing::Length(length.unwrap_or(0))
                    };
                    self.status = status;
                    self.fields = fields;
                    self.stage = match framing {
                        Framing::None | Framing::Length(0) => Stage::Done,
                        f => Stage::Body(f),
                    };
                }
                Stage::Body(Framing::Length(left)) => {
                    let take = (*left).min(bytes.len() as u64) as usize;
                    self.body.push(&bytes[..take]);
                    *left -= take as u64;
                    bytes = &bytes[take..];
                    if *left == 0 {
                        self.stage = Stage::Done;
                    }
                }
                Stage::Body(Framing::Chunked(d)) => {
                    self.scratch.clear();
                    let used = match d.decode(bytes, &mut self.scratch) {
                        Ok(n) => n,
                        Err(_) => {
                            self.stage = Stage::Broken;
                            return;
                        }
                    };
                    let done = d.done();
                    self.body.push(&self.scratch);
                    bytes = &bytes[used..];
                    if done {
                        self.stage = Stage::Done;
                    }
                }
                Stage::Body(Framing::None | Framing::UntilClose) => {
                    self.body.push(bytes);
                    return;
                }
                Stage::Done | Stage::Broken => return,
            }
        }
    }

    /// The answer seen, if it was one to compare: a whole answer.
    pub fn finish(self) -> Option<Answer> {
        let whole = match self.stage {
            Stage::Done => true,
            // head and pieces: the caller says it went out whole
            Stage::Body(Framing::None) => self.status != 0,
            _ => false,
        };
        whole.then(|| Answer {
            status: self.status,
            fields: self.fields,
            body: self.body.finish(),
            secs: self.start.elapsed().as_secs_f64(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn watch(pieces: &[&[u8]], head_request: bool) -> Option<Answer> {
        let mut w = Watcher::new(16, head_request, true, "x-ms-routing-name", Instant::now());
        for p in pieces {
            w.h1_bytes(p);
        }
        w.finish()
    }

    #[test]
    fn an_h1_answer_by_length_is_read_across_writes() {
        let a = watch(
            &[
                b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: 1\r\n",
                b"set-cookie: x-ms-routing-name=staging; Path=/\r\nSet-Cookie: s=1\r\n\r\nhel",
                b"lo",
            ],
            false,
        )
        .unwrap();
        assert_eq!(a.status, 200);
        assert_eq!(
            a.fields,
            [
                ("x-a".to_string(), b"1".to_vec()),
                ("set-cookie".to_string(), b"s=1".to_vec())
            ]
        );
        assert_eq!(a.body.kept.as_deref(), Some(&b"hello"[..]));
        assert_eq!(a.body.len, 5);
    }

    #[test]
    fn a_chunked_answer_is_read_as_its_data_and_a_cut_one_is_not_an_answer() {
        let head: &[u8] = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n";
        let a = watch(&[head, b"3\r\nhel\r\n2\r\nlo\r\n0\r\n\r\n"], false).unwrap();
        let b = watch(
            &[b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello"],
            false,
        )
        .unwrap();
        assert_eq!(a.body, b.body);
        assert!(watch(&[head, b"3\r\nhel\r\n"], false).is_none());
        // a HEAD answer's length says nothing of a body
        let h = watch(&[b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n"], true).unwrap();
        assert_eq!(h.body.len, 0);
    }

    #[test]
    fn an_instance_answer_may_run_to_the_close_or_say_close() {
        let mut w = Watcher::raw(100, false);
        w.h1_bytes(b"HTTP/1.1 200 OK\r\nX-A: 1\r\n\r\nhello");
        assert!(!w.done());
        w.h1_bytes(b" there");
        w.eof();
        assert!(w.done() && !w.reusable());
        assert_eq!(
            w.finish().unwrap().body.kept.as_deref(),
            Some(&b"hello there"[..])
        );
        let mut w = Watcher::raw(100, false);
        w.h1_bytes(
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive, Close\r\n\r\nok",
        );
        assert!(w.done() && !w.reusable());
        let mut w = Watcher::raw(100, false);
        w.h1_bytes(b"HTTP/1.1 204 No Content\r\n\r\n");
        assert!(w.reusable());
    }

    #[test]
    fn a_body_over_the_limit_is_hashed_not_kept() {
        let mut r = BodyReader::new(4);
        r.push(b"abc");
        r.push(b"de");
        let big = r.finish();
        assert!(big.kept.is_none());
        let mut r = BodyReader::new(100);
        r.push(b"abcde");
        let small = r.finish();
        assert_eq!(big.digest, small.digest);
        assert_eq!(big.len, 5);
    }
}
