//! Who may use the admin API: where the token comes from, when running
//! without one is allowed, and the middleware that checks it on every
//! request (in constant time).

use super::extract::ApiError;
use super::AdminState;
use crate::api::TOKEN_ENV;
use crate::config::AdminSection;
use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq;

/// The token the API requires: `[admin] token`, else the contents of
/// `[admin] token_file` (trailing newline trimmed), else `env_token`
/// (`SLOTPROXY_ADMIN_TOKEN`). Errors name the key to fix.
pub fn resolve_token(
    admin: &AdminSection,
    env_token: Option<String>,
) -> anyhow::Result<Option<String>> {
    if admin.token.is_some() && admin.token_file.is_some() {
        anyhow::bail!("admin.token and admin.token_file are both set; keep one");
    }
    if let Some(t) = &admin.token {
        return Ok(Some(t.clone()));
    }
    if let Some(path) = &admin.token_file {
        let text = std::fs::read_to_string(path).map_err(|e| {
            anyhow::anyhow!("admin.token_file: cannot read {}: {e}", path.display())
        })?;
        let t = text.trim();
        if t.is_empty() {
            anyhow::bail!("admin.token_file: {} is empty", path.display());
        }
        return Ok(Some(t.to_string()));
    }
    Ok(env_token.filter(|t| !t.trim().is_empty()))
}

/// Refuse an admin listener reachable from other machines without a token.
pub fn check_exposure(listen: &str, token: Option<&str>) -> anyhow::Result<()> {
    let addr: std::net::SocketAddr = listen
        .parse()
        .map_err(|_| anyhow::anyhow!("admin.listen: {listen:?} is not a socket address"))?;
    if token.is_none() && !addr.ip().is_loopback() {
        anyhow::bail!(
            "admin.listen = {listen:?} is not a loopback address and no admin token is set: \
             anyone who can reach it could change routing. Set [admin] token or token_file, \
             or {TOKEN_ENV}, or listen on 127.0.0.1"
        );
    }
    Ok(())
}

/// Middleware: `Authorization: Bearer <token>` or 401.
pub async fn require_token(State(st): State<AdminState>, req: Request, next: Next) -> Response {
    let Some(want) = &st.token else {
        return next.run(req).await;
    };
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "));
    // Constant time over the token bytes, so timing does not reveal how much
    // of a guess was right (only its length can leak).
    if given.is_some_and(|g| bool::from(g.ct_eq(want.as_bytes()))) {
        return next.run(req).await;
    }
    let mut resp = ApiError::new(
        StatusCode::UNAUTHORIZED,
        "missing or wrong token: send Authorization: Bearer <token>",
    )
    .into_response();
    resp.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Bearer"),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn section(token: Option<&str>, file: Option<PathBuf>) -> AdminSection {
        AdminSection {
            listen: "127.0.0.1:9080".into(),
            token: token.map(String::from),
            token_file: file,
        }
    }

    #[test]
    fn token_sources_in_order() {
        let t =
            |s: &AdminSection, env: Option<&str>| resolve_token(s, env.map(String::from)).unwrap();
        assert_eq!(t(&section(Some("a"), None), Some("env")), Some("a".into()));
        assert_eq!(t(&section(None, None), Some("env")), Some("env".into()));
        assert_eq!(t(&section(None, None), Some("  ")), None);
        assert_eq!(t(&section(None, None), None), None);

        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("token");
        std::fs::write(&f, "from-file\n").unwrap();
        assert_eq!(
            t(&section(None, Some(f.clone())), Some("env")),
            Some("from-file".into())
        );
        assert!(resolve_token(&section(Some("a"), Some(f)), None).is_err());
        std::fs::write(dir.path().join("empty"), "\n").unwrap();
        let e = resolve_token(&section(None, Some(dir.path().join("empty"))), None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("admin.token_file"), "{e}");
        let e = resolve_token(&section(None, Some(dir.path().join("missing"))), None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("cannot read"), "{e}");
    }

    #[test]
    fn exposure_needs_a_token_off_loopback() {
        assert!(check_exposure("127.0.0.1:9080", None).is_ok());
        assert!(check_exposure("[::1]:9080", None).is_ok());
        assert!(check_exposure("0.0.0.0:9080", Some("t")).is_ok());
        let e = check_exposure("0.0.0.0:9080", None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a loopback address"), "{e}");
        assert!(check_exposure("10.1.2.3:9080", None).is_err());
    }
}
