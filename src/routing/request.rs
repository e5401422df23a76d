//! What routing reads from a request, whichever parser made it: the
//! `http` request parts pingora-proxy hands its hooks, or the raw header
//! the lean HTTP/1 path parses itself (`h1::RawRequest`). One trait, so the
//! routing decision, the `ip_allow` check and the forwarded headers are
//! the same code on both request paths.

/// A request's header as routing sees it.
pub trait RequestView {
    /// The values of header `name` (lower-case), in the order received.
    fn values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a;

    /// The raw query string (after `?`), if any.
    fn query(&self) -> Option<&[u8]>;

    /// The `Host` value, or the target's authority (absolute-form), or empty.
    fn host(&self) -> &[u8];

    /// Every field as (name, value), in the order received; names in any
    /// case. One pass over it finds which of several names a request has
    /// (`routing::matches`).
    fn fields(&self) -> impl Iterator<Item = (&[u8], &[u8])>;

    /// The first value of header `name`.
    fn first<'a>(&'a self, name: &'a str) -> Option<&'a [u8]> {
        self.values(name).next()
    }
}

impl RequestView for http::request::Parts {
    fn values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.headers.get_all(name).iter().map(|v| v.as_bytes())
    }

    fn fields(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.headers
            .iter()
            .map(|(n, v)| (n.as_str().as_bytes(), v.as_bytes()))
    }

    fn query(&self) -> Option<&[u8]> {
        self.uri.query().map(str::as_bytes)
    }

    fn host(&self) -> &[u8] {
        match self.headers.get(http::header::HOST) {
            Some(h) => h.as_bytes(),
            None => self.uri.authority().map_or(&[], |a| a.as_str().as_bytes()),
        }
    }
}

impl RequestView for pingora_http::RequestHeader {
    fn values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        (**self).values(name)
    }

    fn fields(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        (**self).fields()
    }

    fn query(&self) -> Option<&[u8]> {
        (**self).query()
    }

    fn host(&self) -> &[u8] {
        (**self).host()
    }
}
