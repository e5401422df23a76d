//! Who the client is, and what `X-Forwarded-*` headers the app should see.
//!
//! A peer inside the site's `trusted_proxies` (a load balancer in front of
//! slotproxy) has its `X-Forwarded-*` kept and extended; anyone else's are
//! replaced, so a client cannot spoof its address past `ip_allow` or into the
//! app's logs.

use http::HeaderValue;
use ipnet::IpNet;
use std::net::IpAddr;

pub fn is_trusted(peer: IpAddr, trusted: &[IpNet]) -> bool {
    trusted.iter().any(|n| n.contains(&peer))
}

/// The client's address: the peer, unless the peer is a trusted proxy, in
/// which case the right-most `X-Forwarded-For` entry that is not itself a
/// trusted proxy.
pub fn client_ip(peer: IpAddr, xff: Option<&[u8]>, trusted: &[IpNet]) -> IpAddr {
    if !is_trusted(peer, trusted) {
        return peer;
    }
    let Some(xff) = xff.and_then(|v| std::str::from_utf8(v).ok()) else {
        return peer;
    };
    let mut leftmost = None;
    for part in xff.rsplit(',') {
        let Ok(ip) = part.trim().parse::<IpAddr>() else {
            // garbage in the chain: stop at what we can vouch for
            break;
        };
        if !is_trusted(ip, trusted) {
            return ip;
        }
        leftmost = Some(ip);
    }
    leftmost.unwrap_or(peer)
}

/// The `X-Forwarded-For` value to send upstream.
pub fn forwarded_for(peer: IpAddr, existing: Option<&[u8]>, trusted: bool) -> String {
    match existing.and_then(|v| std::str::from_utf8(v).ok()) {
        Some(prev) if trusted && !prev.trim().is_empty() => format!("{}, {peer}", prev.trim()),
        _ => peer.to_string(),
    }
}

/// [`forwarded_for`] as a header value. The common case — a peer that is not
/// a trusted proxy — is formatted on the stack and copied once, instead of a
/// `String` that is then reallocated into the header's buffer.
pub fn forwarded_for_value(peer: IpAddr, existing: Option<&[u8]>, trusted: bool) -> HeaderValue {
    if trusted {
        if let Ok(v) = HeaderValue::try_from(forwarded_for(peer, existing, trusted)) {
            return v;
        }
    }
    use std::io::Write;
    // longest IPv6 text form is 45 bytes
    let mut buf = [0u8; 64];
    let mut w = &mut buf[..];
    let _ = write!(w, "{peer}");
    let n = 64 - w.len();
    HeaderValue::from_bytes(&buf[..n]).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// The `X-Forwarded-For` value for the instance, kept as what it is so
/// each request path renders it its own way (pingora-proxy's as a header
/// value, the lean path straight into the request bytes, with no
/// allocation for the common case).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ForwardedFor {
    /// The peer alone: any peer but a trusted proxy, or one that sent no
    /// chain.
    Peer(IpAddr),
    /// A trusted proxy's chain with the peer appended.
    Chain(String),
}

impl ForwardedFor {
    /// What [`forwarded_for`] says, for `peer` with the chain it sent.
    pub fn new(peer: IpAddr, existing: Option<&[u8]>, trusted: bool) -> ForwardedFor {
        let has_chain = existing.is_some_and(|v| !v.trim_ascii().is_empty());
        if trusted && has_chain {
            ForwardedFor::Chain(forwarded_for(peer, existing, true))
        } else {
            ForwardedFor::Peer(peer)
        }
    }

    /// Append the value's text to `out`.
    pub fn write(&self, out: &mut Vec<u8>) {
        use std::io::Write;
        match self {
            // writing to a Vec cannot fail
            ForwardedFor::Peer(ip) => {
                let _ = write!(out, "{ip}");
            }
            ForwardedFor::Chain(s) => out.extend_from_slice(s.as_bytes()),
        }
    }

    pub fn header_value(&self) -> HeaderValue {
        match self {
            ForwardedFor::Peer(ip) => forwarded_for_value(*ip, None, false),
            ForwardedFor::Chain(s) => {
                HeaderValue::try_from(s.as_str()).unwrap_or_else(|_| HeaderValue::from_static(""))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(s: &[&str]) -> Vec<IpNet> {
        s.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn the_forwarded_value_is_rendered_alike_on_both_paths() {
        let peer: IpAddr = "10.0.0.9".parse().unwrap();
        let cases = [
            (Some(&b"1.2.3.4"[..]), false, "10.0.0.9"),
            (Some(&b"1.2.3.4"[..]), true, "1.2.3.4, 10.0.0.9"),
            (Some(&b"  "[..]), true, "10.0.0.9"),
            (None, true, "10.0.0.9"),
        ];
        for (existing, trusted, want) in cases {
            let f = ForwardedFor::new(peer, existing, trusted);
            let mut out = Vec::new();
            f.write(&mut out);
            assert_eq!(out, want.as_bytes());
            assert_eq!(f.header_value(), want);
            assert_eq!(forwarded_for(peer, existing, trusted), want);
        }
    }

    #[test]
    fn untrusted_peer_is_the_client() {
        let peer: IpAddr = "203.0.113.9".parse().unwrap();
        assert_eq!(
            client_ip(peer, Some(b"10.0.0.1"), &nets(&["10.0.0.0/8"])),
            peer
        );
        assert_eq!(forwarded_for(peer, Some(b"1.2.3.4"), false), "203.0.113.9");
        assert_eq!(
            forwarded_for_value(peer, Some(b"1.2.3.4"), false),
            "203.0.113.9"
        );
        let v6: IpAddr = "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255"
            .parse()
            .unwrap();
        assert_eq!(
            forwarded_for_value(v6, None, false),
            v6.to_string().as_str()
        );
    }

    #[test]
    fn trusted_chain_is_walked_from_the_right() {
        let t = nets(&["10.0.0.0/8"]);
        let peer: IpAddr = "10.0.0.2".parse().unwrap();
        assert_eq!(
            client_ip(peer, Some(b"6.6.6.6, 198.51.100.7, 10.0.0.5"), &t),
            "198.51.100.7".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            client_ip(peer, Some(b"10.1.1.1"), &t),
            "10.1.1.1".parse::<IpAddr>().unwrap()
        );
        assert_eq!(client_ip(peer, Some(b"garbage"), &t), peer);
        assert_eq!(client_ip(peer, None, &t), peer);
        assert_eq!(
            forwarded_for(peer, Some(b"1.2.3.4"), true),
            "1.2.3.4, 10.0.0.2"
        );
        assert_eq!(
            forwarded_for_value(peer, Some(b"1.2.3.4"), true),
            "1.2.3.4, 10.0.0.2"
        );
    }
}
