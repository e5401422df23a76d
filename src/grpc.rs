//! The proxy's own answers as a gRPC client understands them.
//!
//! A gRPC client reads a plain-text `502` as a broken message ("invalid
//! compression flag"), not as "unavailable, try again". So, as Envoy does,
//! when the request is gRPC (`content-type: application/grpc…`) an answer
//! the proxy makes itself (no route 404, 403, 502, 503, 408, 414...) goes
//! out as gRPC's *Trailers-Only* form: HTTP 200, `content-type:
//! application/grpc`, `grpc-status` mapped from the HTTP status as gRPC's
//! own table does (doc/http-grpc-status-mapping.md), `grpc-message` the
//! same text the plain answer would carry, and no body. Metrics and the
//! access log keep the HTTP status it stands for, so the error ratio and
//! the ramp's gates see the failure.

/// Whether a request's `content-type` makes it gRPC (also gRPC-Web).
pub fn is_grpc(content_type: Option<&[u8]>) -> bool {
    content_type
        .is_some_and(|ct| ct.len() >= 16 && ct[..16].eq_ignore_ascii_case(b"application/grpc"))
}

/// The `grpc-status` an HTTP status stands for (gRPC's mapping table,
/// but for 404: the proxy's own 404 says no site serves the host, which is
/// NOT_FOUND to a gRPC client, not UNIMPLEMENTED — a method the server
/// lacks — as the table has it for a server's 404).
pub fn status_for(http: u16) -> u8 {
    match http {
        400 => 13,             // INTERNAL
        401 => 16,             // UNAUTHENTICATED
        403 => 7,              // PERMISSION_DENIED
        404 => 5,              // NOT_FOUND
        429 | 502..=504 => 14, // UNAVAILABLE
        _ => 2,                // UNKNOWN
    }
}

/// `grpc-message`: percent-encoded as the gRPC spec asks (every byte
/// outside printable ASCII, and `%` itself).
pub fn message(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if (0x20..=0x7e).contains(&b) && b != b'%' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_requests_are_known_by_their_content_type() {
        assert!(is_grpc(Some(b"application/grpc")));
        assert!(is_grpc(Some(b"application/grpc+proto")));
        assert!(is_grpc(Some(b"Application/GRPC-web")));
        assert!(!is_grpc(Some(b"application/json")));
        assert!(!is_grpc(Some(b"application/grp")));
        assert!(!is_grpc(None));
    }

    #[test]
    fn http_statuses_map_as_grpc_says() {
        let got: Vec<u8> = [400, 401, 403, 404, 408, 414, 429, 502, 503, 504, 500]
            .map(status_for)
            .to_vec();
        assert_eq!(got, vec![13, 16, 7, 5, 2, 2, 14, 14, 14, 14, 2]);
    }

    #[test]
    fn messages_are_percent_encoded() {
        assert_eq!(
            message("502 Bad Gateway: 100% down"),
            "502 Bad Gateway: 100%25 down"
        );
        assert_eq!(message("é\n"), "%C3%A9%0A");
    }
}
