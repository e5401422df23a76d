//! A client's HTTP/1.1 request body on its way to the instance (the lean
//! path, `lean`): how it is framed, and the strict chunked decoder that
//! writes it anew.
//!
//! What a request body may be here (RFC 9112 §6): none, `Content-Length`
//! bytes (one field, digits only), or `Transfer-Encoding: chunked` (one
//! field, the one coding, no `Content-Length` beside it). Anything else —
//! both fields, two lengths, another coding — is left to the connection
//! loop's slower path, which refuses it; see `connection::inspect`.
//!
//! The same decoder frames an instance's chunked *response* anew on its
//! way to the client (`lean`), keeping the trailer fields a client may get.
//!
//! A chunked body is not passed through byte for byte: it is decoded and
//! framed again ([`ChunkedDecoder`]), with its chunk sizes but without
//! chunk extensions or trailer fields, so the instance sees exactly the
//! framing the proxy saw — the one defence against request smuggling that
//! does not depend on the app's parser agreeing with ours (hyper's and
//! nginx's decoders do the same). The decoder is strict where a lenient
//! parser could frame the body differently: a bare LF or CR in a chunk
//! line, a size of more than 16 hex digits, data longer than its size and
//! control bytes are refused (the client gets 400).

use std::io::Write;

/// How the request's body is delimited on the client's side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestBody {
    None,
    Length(u64),
    Chunked,
}

/// Why a chunked request body is refused (the client gets 400).
pub type Malformed = &'static str;

/// Longest chunk-size line (size, extensions and CRLF) taken: hyper and
/// nginx cap theirs too, so a client cannot make the proxy read an endless
/// extension.
const MAX_SIZE_LINE: u32 = 4096;
/// Longest trailer section taken.
const MAX_TRAILERS: u32 = 16 * 1024;
/// Longest trailer field name passed on (a longer one is dropped).
const NAME: usize = 32;

/// Trailer fields never passed on (RFC 9110 §6.5.1: framing, routing,
/// authentication, cookies, response control and content metadata must
/// not arrive after the content, where a client may not expect them).
const FORBIDDEN_TRAILERS: [&[u8]; 24] = [
    b"content-length",
    b"transfer-encoding",
    b"host",
    b"set-cookie",
    b"cookie",
    b"connection",
    b"keep-alive",
    b"te",
    b"trailer",
    b"upgrade",
    b"authorization",
    b"www-authenticate",
    b"proxy-authenticate",
    b"proxy-authorization",
    b"content-type",
    b"content-encoding",
    b"content-range",
    b"cache-control",
    b"expires",
    b"date",
    b"location",
    b"retry-after",
    b"vary",
    b"age",
];

/// Whether a trailer field named `name` may be passed on.
fn trailer_allowed(name: &[u8]) -> bool {
    !FORBIDDEN_TRAILERS
        .iter()
        .any(|f| f.eq_ignore_ascii_case(name))
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Before a chunk-size line's first digit.
    #[default]
    SizeStart,
    /// In the size's hex digits.
    Size {
        size: u64,
        digits: u8,
        line: u32,
    },
    /// Whitespace after the size (RFC 9112's BWS before an extension).
    Lws {
        size: u64,
        line: u32,
    },
    /// In a chunk extension (dropped), up to the CR.
    Ext {
        size: u64,
        line: u32,
    },
    /// The CR of the size line came: the LF is due.
    SizeLf {
        size: u64,
    },
    /// `left` data bytes of the current chunk still to come.
    Data {
        left: u64,
    },
    /// After a chunk's data: the CR is due, then the LF.
    DataCr,
    DataLf,
    /// After the last chunk, at a trailer line's start or in its field
    /// name (the first [`NAME`] bytes of it kept, `len` counted).
    TrailerName {
        name: [u8; NAME],
        len: u8,
        seen: u32,
    },
    /// In a trailer field's value (`keep`: it is passed on); `cr`: its CR
    /// came.
    TrailerValue {
        keep: bool,
        cr: bool,
        seen: u32,
    },
    /// The CR of the empty line that ends the trailer section came.
    TrailerEnd,
    Done,
}

/// Decodes a chunked body as it arrives and writes it framed anew into an
/// output buffer: `{size:x}\r\n`, the data, `\r\n`, and at the end
/// `0\r\n\r\n` — no extensions, and no trailer fields but, for a response
/// ([`ChunkedDecoder::keeping_trailers`]), the allowed ones, each line
/// written anew. The one strict chunked decoder of the proxy: for request
/// bodies going to instances and response bodies going to clients.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ChunkedDecoder {
    state: State,
    /// Data bytes decoded so far.
    pub data: u64,
    keep_trailers: bool,
    /// Write the data only, without framing it anew (an HTTP/1 response
    /// body on its way to an HTTP/2 client, whose DATA frames delimit it;
    /// its trailer fields are dropped).
    bare: bool,
}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

/// A byte that has no place in a chunk extension or a trailer line.
fn ctl(b: u8) -> bool {
    (b < 0x20 && b != b'\t') || b == 0x7f
}

impl ChunkedDecoder {
    /// A decoder that writes the body's data only (see `bare`), as
    /// strictly as the framing one.
    pub fn bare() -> ChunkedDecoder {
        ChunkedDecoder {
            bare: true,
            ..ChunkedDecoder::default()
        }
    }

    /// A decoder that passes on the trailer fields a client may get (not
    /// the [`FORBIDDEN_TRAILERS`], nor a line without a colon).
    pub fn keeping_trailers() -> ChunkedDecoder {
        ChunkedDecoder {
            keep_trailers: true,
            ..ChunkedDecoder::default()
        }
    }

    /// Decode `input`, appending the body framed anew to `out`; returns
    /// how many bytes of `input` belong to the body (all of them unless it
    /// ended inside: the rest is the next request's).
    pub fn decode(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<usize, Malformed> {
        let mut i = 0;
        while i < input.len() {
            let b = input[i];
            self.state = match self.state {
                State::Done => return Ok(i),
                State::Data { left } => {
                    let take = left.min((input.len() - i) as u64) as usize;
                    out.extend_from_slice(&input[i..i + take]);
                    i += take;
                    self.data += take as u64;
                    self.state = if take as u64 == left {
                        if !self.bare {
                            out.extend_from_slice(b"\r\n");
                        }
                        State::DataCr
                    } else {
                        State::Data {
                            left: left - take as u64,
                        }
                    };
                    continue;
                }
                State::SizeStart => match hex(b) {
                    Some(d) => State::Size {
                        size: u64::from(d),
                        digits: 1,
                        line: 1,
                    },
                    None => return Err("a chunk size was expected"),
                },
                State::Size { size, digits, line } => match (b, hex(b)) {
                    (_, Some(d)) => {
                        if digits >= 16 {
                            return Err("chunk size too large");
                        }
                        State::Size {
                            size: size << 4 | u64::from(d),
                            digits: digits + 1,
                            line: line + 1,
                        }
                    }
                    (b'\r', _) => State::SizeLf { size },
                    (b';', _) => State::Ext {
                        size,
                        line: line + 1,
                    },
                    (b' ' | b'\t', _) => State::Lws {
                        size,
                        line: line + 1,
                    },
                    (b'\n', _) => return Err("bare LF in a chunk-size line"),
                    _ => return Err("invalid chunk size"),
                },
                State::Lws { size, line } => match b {
                    _ if line >= MAX_SIZE_LINE => return Err("chunk-size line too long"),
                    b' ' | b'\t' => State::Lws {
                        size,
                        line: line + 1,
                    },
                    b';' => State::Ext {
                        size,
                        line: line + 1,
                    },
                    b'\r' => State::SizeLf { size },
                    _ => return Err("invalid chunk size"),
                },
                State::Ext { size, line } => match b {
                    _ if line >= MAX_SIZE_LINE => return Err("chunk extension too long"),
                    b'\r' => State::SizeLf { size },
                    b'\n' => return Err("bare LF in a chunk-size line"),
                    _ if ctl(b) => return Err("control byte in a chunk extension"),
                    _ => State::Ext {
                        size,
                        line: line + 1,
                    },
                },
                State::SizeLf { size } => match b {
                    b'\n' if size == 0 => {
                        if !self.bare {
                            out.extend_from_slice(b"0\r\n");
                        }
                        State::TrailerName {
                            name: [0; NAME],
                            len: 0,
                            seen: 0,
                        }
                    }
                    b'\n' => {
                        if !self.bare {
                            // writing to a Vec cannot fail
                            let _ = write!(out, "{size:x}\r\n");
                        }
                        State::Data { left: size }
                    }
                    _ => return Err("bare CR in a chunk-size line"),
                },
                State::DataCr => match b {
                    b'\r' => State::DataLf,
                    _ => return Err("chunk data longer than its size"),
                },
                State::DataLf => match b {
                    b'\n' => State::SizeStart,
                    _ => return Err("bare CR after chunk data"),
                },
                State::TrailerName { name, len, seen } => {
                    if seen >= MAX_TRAILERS {
                        return Err("trailer section too long");
                    }
                    match b {
                        b'\r' if len == 0 => State::TrailerEnd,
                        // a line without a colon: dropped
                        b'\r' => State::TrailerValue {
                            keep: false,
                            cr: true,
                            seen: seen + 1,
                        },
                        b'\n' => return Err("bare LF in the trailer section"),
                        b':' => {
                            let n = usize::from(len);
                            let keep = self.keep_trailers
                                && n > 0
                                && n <= NAME
                                && trailer_allowed(&name[..n]);
                            if keep {
                                out.extend_from_slice(&name[..n]);
                                out.push(b':');
                            }
                            State::TrailerValue {
                                keep,
                                cr: false,
                                seen: seen + 1,
                            }
                        }
                        _ if ctl(b) => return Err("control byte in a trailer field"),
                        _ => {
                            let mut name = name;
                            if usize::from(len) < NAME {
                                name[usize::from(len)] = b;
                            }
                            State::TrailerName {
                                name,
                                len: len.saturating_add(1),
                                seen: seen + 1,
                            }
                        }
                    }
                }
                State::TrailerValue { keep, cr, seen } => {
                    if seen >= MAX_TRAILERS {
                        return Err("trailer section too long");
                    }
                    match b {
                        b'\n' if cr => {
                            if keep {
                                out.extend_from_slice(b"\r\n");
                            }
                            State::TrailerName {
                                name: [0; NAME],
                                len: 0,
                                seen: seen + 1,
                            }
                        }
                        b'\n' => return Err("bare LF in the trailer section"),
                        _ if cr => return Err("bare CR in the trailer section"),
                        b'\r' => State::TrailerValue {
                            keep,
                            cr: true,
                            seen: seen + 1,
                        },
                        _ if ctl(b) => return Err("control byte in a trailer field"),
                        _ => {
                            if keep {
                                out.push(b);
                            }
                            State::TrailerValue {
                                keep,
                                cr: false,
                                seen: seen + 1,
                            }
                        }
                    }
                }
                State::TrailerEnd => match b {
                    b'\n' => {
                        if !self.bare {
                            out.extend_from_slice(b"\r\n");
                        }
                        State::Done
                    }
                    _ => return Err("bare CR in the trailer section"),
                },
            };
            i += 1;
        }
        Ok(i)
    }

    /// The last chunk and the trailer section have arrived.
    pub fn done(&self) -> bool {
        self.state == State::Done
    }
}

/// A request body on its way to the instance: how much has come, and
/// whether any of it went out after the request's first write (then the
/// request cannot be sent again on another connection).
#[derive(Debug, Clone)]
pub struct BodyIn {
    pub framing: RequestBody,
    /// `Length`: bytes still due from the client.
    left: u64,
    decoder: ChunkedDecoder,
    /// Body bytes went to the instance after the first write.
    pub streamed: bool,
    /// A copy of a `Length` body for a shadow (`shadow`), while it is no
    /// longer than `copy_max`; `None`: none kept.
    copy: Option<Vec<u8>>,
    copy_max: usize,
}

impl BodyIn {
    pub fn new(framing: RequestBody) -> BodyIn {
        let left = match framing {
            RequestBody::Length(n) => n,
            _ => 0,
        };
        BodyIn {
            framing,
            left,
            decoder: ChunkedDecoder::default(),
            streamed: false,
            copy: None,
            copy_max: 0,
        }
    }

    /// A body whose data alone goes on (to an HTTP/2 instance, as DATA
    /// frames): a chunked one decoded, not framed anew.
    pub fn unframed(framing: RequestBody) -> BodyIn {
        BodyIn {
            decoder: ChunkedDecoder::bare(),
            ..BodyIn::new(framing)
        }
    }

    /// Keep a copy of the body as it passes, up to `max` bytes (more: no
    /// copy). Only a body framed by `Content-Length` is copied.
    pub fn keep_copy(&mut self, max: usize) {
        if matches!(self.framing, RequestBody::Length(_) | RequestBody::None) {
            self.copy = Some(Vec::new());
            self.copy_max = max;
        }
    }

    /// The copy kept, if all of it was: the body has come whole and was no
    /// longer than the limit.
    pub fn take_copy(&mut self) -> Option<Vec<u8>> {
        self.copy.take().filter(|_| self.done())
    }

    /// All of the body has come from the client.
    pub fn done(&self) -> bool {
        match self.framing {
            RequestBody::None => true,
            RequestBody::Length(_) => self.left == 0,
            RequestBody::Chunked => self.decoder.done(),
        }
    }

    /// Bytes still due for a body of known length (0 otherwise).
    pub fn left(&self) -> u64 {
        self.left
    }

    /// Frame `bytes`, read from the client, for the instance into `out`;
    /// returns how many of them belong to the body (the rest, once it is
    /// done, are the next request's).
    pub fn take(&mut self, bytes: &[u8], out: &mut Vec<u8>) -> Result<usize, Malformed> {
        match self.framing {
            RequestBody::None => Ok(0),
            RequestBody::Length(_) => {
                let n = (bytes.len() as u64).min(self.left) as usize;
                out.extend_from_slice(&bytes[..n]);
                if let Some(c) = &mut self.copy {
                    if c.len() + n > self.copy_max {
                        self.copy = None;
                    } else {
                        c.extend_from_slice(&bytes[..n]);
                    }
                }
                self.left -= n as u64;
                Ok(n)
            }
            RequestBody::Chunked => self.decoder.decode(bytes, out),
        }
    }
}

/// How long a body may take, as the mean rate it must keep
/// (`[server] body_min_bytes_per_sec`, Kestrel's `MinRequestBodyDataRate`):
/// after a grace of [`Pace::GRACE`], a client that has sent fewer than
/// `rate` bytes for every second the proxy waited on it gets 408. A pause
/// between reads is bounded by `body_timeout_secs` alone, so without this a
/// client trickling a byte at a time holds an instance connection for as
/// long as it likes (slow POST). Only time spent waiting on the client
/// counts: not the instance's time to take the body or to send its `100`.
#[derive(Debug, Clone, Copy)]
pub struct Pace {
    /// Bytes per second; 0: no minimum.
    rate: u64,
    /// Time waited on the client so far.
    waited: std::time::Duration,
    /// Body bytes the client has sent.
    bytes: u64,
}

impl Pace {
    /// The time at the start during which no rate is asked for: a client
    /// that connects and sends its first bytes slowly is not cut off.
    pub const GRACE: std::time::Duration = std::time::Duration::from_secs(5);

    pub fn new(rate: u64) -> Pace {
        Pace {
            rate,
            waited: std::time::Duration::ZERO,
            bytes: 0,
        }
    }

    /// How much longer the proxy may wait for the client's next bytes
    /// before the body is too slow; `None`: no minimum rate.
    pub fn allowance(&self) -> Option<std::time::Duration> {
        if self.rate == 0 {
            return None;
        }
        let earned = std::time::Duration::from_secs_f64(self.bytes as f64 / self.rate as f64);
        Some(Self::GRACE.max(earned).saturating_sub(self.waited))
    }

    /// The proxy waited `waited` on the client, which sent `bytes`.
    pub fn record(&mut self, waited: std::time::Duration, bytes: usize) {
        self.waited += waited;
        self.bytes += bytes as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(input: &[u8]) -> Result<(String, usize, bool), Malformed> {
        let mut d = ChunkedDecoder::default();
        let mut out = Vec::new();
        let n = d.decode(input, &mut out)?;
        Ok((String::from_utf8(out).unwrap(), n, d.done()))
    }

    #[test]
    fn a_bare_decoder_writes_the_data_only() {
        let mut d = ChunkedDecoder::bare();
        let mut out = Vec::new();
        let input = b"3;x=y\r\nabc\r\n2\r\nde\r\n0\r\nT: v\r\n\r\nrest";
        assert_eq!(d.decode(input, &mut out), Ok(input.len() - 4));
        assert!(d.done());
        assert_eq!((out.as_slice(), d.data), (&b"abcde"[..], 5));
        assert!(ChunkedDecoder::bare().decode(b"3\nabc", &mut out).is_err());
    }

    #[test]
    fn a_body_of_known_length_takes_no_more_than_its_length() {
        let mut b = BodyIn::new(RequestBody::Length(5));
        let mut out = Vec::new();
        assert!(!b.done());
        assert_eq!(b.take(b"hel", &mut out), Ok(3));
        assert_eq!((b.left(), b.done()), (2, false));
        assert_eq!(b.take(b"loGET", &mut out), Ok(2));
        assert!(b.done());
        assert_eq!(out, b"hello");
        assert!(BodyIn::new(RequestBody::None).done());
        let mut c = BodyIn::new(RequestBody::Chunked);
        assert_eq!(c.take(b"1\r\na\r\n0\r\n\r\nX", &mut out), Ok(11));
        assert!(c.done());
    }

    #[test]
    fn a_body_is_framed_anew_without_extensions_or_trailers() {
        let input = b"5;name=\"x\"\r\nhello\r\n1A\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nX-T: 1\r\n\r\nGET /next";
        let (out, n, done) = decode_all(input).unwrap();
        assert!(done);
        assert_eq!(&input[n..], b"GET /next");
        assert_eq!(
            out,
            "5\r\nhello\r\n1a\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\n\r\n"
        );
    }

    #[test]
    fn a_response_keeps_its_allowed_trailers_only() {
        let body = b"2;x=1\r\nok\r\n0\r\nX-Sum:  11\r\nSet-Cookie: s=1\r\nno colon\r\n\
                     Content-Length: 9\r\nhOsT: evil\r\ngrpc-status: 0\r\n\r\nNEXT";
        for keep in [false, true] {
            let mut d = if keep {
                ChunkedDecoder::keeping_trailers()
            } else {
                ChunkedDecoder::default()
            };
            let mut out = Vec::new();
            assert_eq!(d.decode(body, &mut out).unwrap(), body.len() - 4);
            assert!(d.done());
            let want: &[u8] = if keep {
                b"2\r\nok\r\n0\r\nX-Sum:  11\r\ngrpc-status: 0\r\n\r\n"
            } else {
                b"2\r\nok\r\n0\r\n\r\n"
            };
            assert_eq!(String::from_utf8_lossy(&out), String::from_utf8_lossy(want));
        }
    }

    #[test]
    fn every_split_gives_the_same_body() {
        let input = b"3\r\nabc\r\n10;e=1\r\n0123456789abcdef\r\n0\r\n\r\n";
        let (whole, ..) = decode_all(input).unwrap();
        for cut in 0..input.len() {
            let mut d = ChunkedDecoder::default();
            let mut out = Vec::new();
            assert_eq!(d.decode(&input[..cut], &mut out), Ok(cut));
            assert!(!d.done());
            assert_eq!(d.decode(&input[cut..], &mut out), Ok(input.len() - cut));
            assert!(d.done(), "cut at {cut}");
            assert_eq!(String::from_utf8(out).unwrap(), whole, "cut at {cut}");
            assert_eq!(d.data, 19);
        }
    }

    #[test]
    fn what_a_lenient_parser_could_frame_otherwise_is_refused() {
        for bad in [
            &b"5\nhello\r\n0\r\n\r\n"[..], // bare LF after the size
            b"5\r\nhello\n0\r\n\r\n",      // bare LF after the data
            b"5\r\nhelloX\r\n0\r\n\r\n",   // data longer than its size
            b"5\rhello\r\n",               // bare CR
            b"x\r\n",                      // not a size
            b"\r\n",                       // no size
            b" 5\r\nhello\r\n",            // whitespace before it
            b"5 5\r\nhello\r\n",           // or inside it
            b"-5\r\n",                     // a sign
            b"0x5\r\nhello\r\n",           // a prefix
            b"10000000000000000\r\n",      // 17 digits
            b"5;a\x00b\r\nhello\r\n",      // NUL in an extension
            b"0\r\nX-T: 1\n\r\n",          // bare LF in a trailer
            b"0\r\nX-T: a\rb\r\n\r\n",     // bare CR in a trailer
        ] {
            assert!(
                decode_all(bad).is_err(),
                "{:?} was taken",
                String::from_utf8_lossy(bad)
            );
        }
        // whitespace after the size (before an extension) is allowed
        let (out, ..) = decode_all(b"3 \t;e\r\nabc\r\n3 \r\nabc\r\n").unwrap();
        assert_eq!(out, "3\r\nabc\r\n3\r\nabc\r\n");
        // sixteen digits still fit
        let (out, ..) = decode_all(b"0000000000000003\r\nabc\r\n").unwrap();
        assert_eq!(out, "3\r\nabc\r\n");
        // an endless extension is cut off
        let long = [&b"1;"[..], &[b'a'; MAX_SIZE_LINE as usize][..]].concat();
        assert!(decode_all(&long).is_err());
    }

    #[test]
    fn a_body_must_keep_its_mean_rate_after_the_grace() {
        use std::time::Duration;
        assert_eq!(Pace::new(0).allowance(), None);
        let mut p = Pace::new(240);
        assert_eq!(p.allowance(), Some(Pace::GRACE));
        // a byte a second: the grace runs out, the bytes earned nothing
        for _ in 0..5 {
            p.record(Duration::from_secs(1), 1);
        }
        assert_eq!(p.allowance(), Some(Duration::ZERO));
        // 2,400 bytes in 5 s earn 10 s of waiting in all
        let mut p = Pace::new(240);
        p.record(Duration::from_secs(5), 2400);
        assert_eq!(p.allowance(), Some(Duration::from_secs(5)));
    }
}
