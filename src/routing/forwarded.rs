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

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(s: &[&str]) -> Vec<IpNet> {
        s.iter().map(|s| s.parse().unwrap()).collect()
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
