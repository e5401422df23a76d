//! TLS to app instances (`instances_protocol = "h2"`, SPEC §12): which
//! certificates a deployment trusts and which name an instance must prove.
//!
//! A deployment either names a PEM file of CA certificates
//! (`instances_tls_ca`), trusted *instead of* the system's roots, or trusts
//! the system's roots (`SSL_CERT_FILE` / `SSL_CERT_DIR` honoured). The file
//! is read when a deployment is written (a bad file is refused then, naming
//! it) and again whenever it changes on disk, so a renewed CA needs no
//! restart. The proxy's upstream peers and the instance client (health
//! checks, warm-up, settings hook) trust the same certificates.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use pingora_core::utils::tls::{parse_x509, WrappedX509};

/// The certificates of one CA file, as each consumer wants them.
pub struct Trusted {
    /// DER of each certificate, in file order (for the instance client).
    pub der: Vec<Vec<u8>>,
    /// The same, as pingora's per-peer CA list.
    pub peer: Arc<[WrappedX509]>,
}

impl std::fmt::Debug for Trusted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Trusted({} certificates)", self.der.len())
    }
}

/// Read `path` as PEM and return the DER of every certificate in it; an
/// error names the file and what is wrong with it.
pub fn read_ca(path: &str) -> Result<Vec<Vec<u8>>, String> {
    let pem = std::fs::read(path).map_err(|e| format!("cannot read CA file {path:?}: {e}"))?;
    let mut der = Vec::new();
    for item in rustls_pemfile::read_all(&mut pem.as_slice()) {
        match item {
            Ok(rustls_pemfile::Item::X509Certificate(cert)) => {
                let cert = cert.as_ref().to_vec();
                x509_parser::parse_x509_certificate(&cert)
                    .map_err(|e| format!("CA file {path:?} holds a bad certificate: {e}"))?;
                der.push(cert);
            }
            Ok(_) => {} // keys and other blocks are not certificates to trust
            Err(e) => return Err(format!("CA file {path:?} is not valid PEM: {e:?}")),
        }
    }
    if der.is_empty() {
        return Err(format!(
            "CA file {path:?} holds no certificate (expected PEM blocks `-----BEGIN CERTIFICATE-----`)"
        ));
    }
    Ok(der)
}

/// Per file: when it was last looked at, its modification time then
/// (`None`: unreadable), and what it held.
type Cache = HashMap<String, (Instant, Option<SystemTime>, Arc<Trusted>)>;
static CACHE: Mutex<Option<Cache>> = Mutex::new(None);

/// How long a file's certificates are used before its modification time
/// is looked at again: the proxy asks for every request to a TLS slot.
const RECHECK: Duration = Duration::from_secs(1);

/// The certificates `path` holds now: the file is looked at (a `stat`) at
/// most once a second, and read again only when its modification time
/// changed. A file that became unreadable or bad is logged once and
/// trusted as *nothing* (connections fail with 502 and health checks mark
/// the instances down), never replaced by the system's roots.
pub fn trusted(path: &str) -> Arc<Trusted> {
    let now = Instant::now();
    let mut cache = CACHE.lock().unwrap_or_else(|e| e.into_inner());
    let cache = cache.get_or_insert_with(HashMap::new);
    if let Some((checked, _, t)) = cache.get(path) {
        if now.duration_since(*checked) < RECHECK {
            return t.clone();
        }
    }
    let modified = std::fs::metadata(path).and_then(|m| m.modified()).ok();
    if let Some((checked, at, t)) = cache.get_mut(path) {
        if *at == modified {
            *checked = now;
            return t.clone();
        }
    }
    let der = read_ca(path).unwrap_or_else(|why| {
        log::error!(
            "instances_tls_ca: {why}; no instance certificate is trusted until it is fixed"
        );
        Vec::new()
    });
    let peer: Arc<[WrappedX509]> = der
        .iter()
        .map(|d| WrappedX509::new(d.clone(), parse_x509))
        .collect::<Vec<_>>()
        .into();
    let t = Arc::new(Trusted { der, peer });
    cache.insert(path.to_string(), (now, modified, t.clone()));
    t
}

/// The name an instance's certificate must be valid for, and the SNI sent:
/// the host part of `host:port` (an IP address is checked against the
/// certificate's IP addresses).
pub fn server_name(instance: &str) -> &str {
    let host = match instance.rsplit_once(':') {
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => instance,
    };
    host.trim_start_matches('[').trim_end_matches(']')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_server_name_is_the_host_of_the_instance() {
        assert_eq!(server_name("api.internal:8443"), "api.internal");
        assert_eq!(server_name("127.0.0.1:443"), "127.0.0.1");
        assert_eq!(server_name("[::1]:8443"), "::1");
        assert_eq!(server_name("api.internal"), "api.internal");
    }

    fn temp(name: &str, text: &[u8]) -> String {
        let dir = std::env::temp_dir().join(format!("slotproxy-tls-{}-{name}", std::process::id()));
        std::fs::write(&dir, text).unwrap();
        dir.to_string_lossy().into_owned()
    }

    #[test]
    fn a_ca_file_must_hold_certificates() {
        let fixture = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/tls-cert.pem");
        assert_eq!(read_ca(fixture).unwrap().len(), 1);

        let e = read_ca("/nonexistent/ca.pem").unwrap_err();
        assert!(
            e.contains("cannot read CA file \"/nonexistent/ca.pem\""),
            "{e}"
        );

        let key = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/tls-key.pem");
        let e = read_ca(key).unwrap_err();
        assert!(e.contains("holds no certificate"), "{e}");

        let bad = temp(
            "bad.pem",
            b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        );
        let e = read_ca(&bad).unwrap_err();
        assert!(e.contains("bad certificate"), "{e}");
        let _ = std::fs::remove_file(bad);
    }

    #[test]
    fn a_broken_ca_file_trusts_nothing() {
        let path = temp("broken.pem", b"not pem at all");
        let t = trusted(&path);
        assert!(t.der.is_empty() && t.peer.is_empty());
        let _ = std::fs::remove_file(path);
    }
}
