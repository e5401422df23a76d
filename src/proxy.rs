//! The pingora hooks. Each stays thin: load the table once, ask the pure
//! functions in `routing` what to do, and carry the answer in the request
//! context to the later hooks.
//!
//! request_filter → host lookup, `decide`, `ip_allow`, local 404/403/503;
//! upstream_peer → next instance of the chosen slot (again after a connect
//! failure, never another slot); upstream_request_filter → `X-Forwarded-*`
//! and `X-Slot-Name`; response_filter → the pin cookie; fail_to_proxy → 502.

use crate::routing::decide::query_value;
use crate::routing::forwarded::{client_ip, forwarded_for_value, is_trusted};
use crate::routing::table::{Pool, SiteRoutes, SlotRoute, WEIGHT_SCALE};
use crate::routing::{decide, Decision, Reason, RouteTable};
use arc_swap::ArcSwap;
use async_trait::async_trait;
use bytes::Bytes;
use pingora_core::modules::http::HttpModules;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_error::{Error, ErrorSource, ErrorType, Result};
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::{FailToProxy, ProxyHttp, Session};
use rand::Rng;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

pub struct SlotProxy {
    table: Arc<ArcSwap<RouteTable>>,
    connect_timeout: Duration,
}

impl SlotProxy {
    pub fn new(table: Arc<ArcSwap<RouteTable>>, connect_timeout: Duration) -> Self {
        SlotProxy {
            table,
            connect_timeout,
        }
    }
}

/// What one request carries from hook to hook.
#[derive(Default)]
pub struct RequestCtx {
    /// The table this request was routed with, held until it finishes so a
    /// swap or reload cannot change its slot half-way.
    pub table: Option<Arc<RouteTable>>,
    pub site: u32,
    pub decision: Option<Decision>,
    /// Bitmask of the slot's instances already tried.
    pub tried: u64,
    pub instance: Option<usize>,
    /// The peer is one of the site's trusted proxies.
    pub trusted_peer: bool,
    pub peer_ip: Option<IpAddr>,
}

impl RequestCtx {
    pub fn site(&self) -> Option<&SiteRoutes> {
        self.table.as_ref()?.sites.get(self.site as usize)
    }

    pub fn slot(&self) -> Option<&SlotRoute> {
        self.site()?.slots.get(self.decision?.slot as usize)
    }

    fn pool(&self) -> Option<&Pool> {
        self.slot()?.pool.as_ref()
    }

    /// `host:port` of the instance the request went to last.
    pub fn instance_label(&self) -> Option<&str> {
        Some(&self.pool()?.instances.get(self.instance?)?.label)
    }
}

/// Answer locally with a one-line plain-text body.
async fn respond(session: &mut Session, status: u16, message: String) -> Result<bool> {
    let body = Bytes::from(message + "\n");
    let mut resp = ResponseHeader::build(status, Some(4))?;
    resp.insert_header("content-type", "text/plain; charset=utf-8")?;
    resp.insert_header("content-length", body.len().to_string())?;
    resp.insert_header("cache-control", "no-store")?;
    session.write_response_header(Box::new(resp), false).await?;
    session.write_response_body(Some(body), true).await?;
    Ok(true)
}

fn host_of(req: &RequestHeader) -> &[u8] {
    match req.headers.get(http::header::HOST) {
        Some(h) => h.as_bytes(),
        None => req.uri.authority().map_or(&[], |a| a.as_str().as_bytes()),
    }
}

/// A client-supplied value, made safe to echo in a one-line body.
fn shown(v: &[u8]) -> String {
    let s = String::from_utf8_lossy(&v[..v.len().min(100)]);
    format!("{:?}", s)
}

#[async_trait]
impl ProxyHttp for SlotProxy {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx::default()
    }

    /// No downstream modules. pingora's default adds a response-compression
    /// module at level 0 (off) that still costs an allocation and a few
    /// calls per request; slotproxy passes bodies through untouched.
    fn init_downstream_modules(&self, _modules: &mut HttpModules) {}

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        let table = self.table.load_full();
        let req = session.req_header();
        let Some(target) = table.lookup_host(host_of(req)) else {
            let msg = format!(
                "404 Not Found: no site is configured for host {}",
                shown(host_of(req))
            );
            return respond(session, 404, msg).await;
        };
        let site = &table.sites[target.site as usize];
        let peer_ip = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip());
        let trusted = peer_ip.is_some_and(|ip| is_trusted(ip, &site.trusted_proxies));

        let decision = match target.slot {
            Some(slot) => Decision {
                slot,
                reason: Reason::SlotHost,
                set_cookie: false,
            },
            None => {
                let query = req
                    .uri
                    .query()
                    .and_then(|q| query_value(q.as_bytes(), table.query_param.as_bytes()));
                let cookie = table.pin_cookie(
                    req.headers
                        .get_all(http::header::COOKIE)
                        .iter()
                        .map(|v| v.as_bytes()),
                );
                let roll = rand::rng().random_range(0..WEIGHT_SCALE);
                decide(site, query, cookie, roll)
            }
        };
        let slot = &site.slots[decision.slot as usize];

        if !slot.ip_allow.is_empty() {
            let client = peer_ip.map(|peer| {
                let xff = req.headers.get("x-forwarded-for").map(|v| v.as_bytes());
                client_ip(peer, xff, &site.trusted_proxies)
            });
            if !client.is_some_and(|ip| slot.ip_allow.iter().any(|n| n.contains(&ip))) {
                let who = client.map_or("unknown".to_string(), |ip| ip.to_string());
                let msg = format!(
                    "403 Forbidden: client {who} is not allowed to reach slot {} of site {}",
                    slot.name, site.name
                );
                return respond(session, 403, msg).await;
            }
        }
        if slot.pool.is_none() {
            let msg = format!(
                "503 Service Unavailable: slot {} of site {} has no deployment",
                slot.name, site.name
            );
            return respond(session, 503, msg).await;
        }

        ctx.site = target.site;
        ctx.decision = Some(decision);
        ctx.trusted_peer = trusted;
        ctx.peer_ip = peer_ip;
        ctx.table = Some(table);
        Ok(false)
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Box<HttpPeer>> {
        let pool = ctx
            .pool()
            .ok_or_else(|| Error::explain(ErrorType::InternalError, "request was not routed"))?;
        let Some(i) = pool.pick(ctx.tried) else {
            return Err(Error::explain(
                ErrorType::ConnectNoRoute,
                "every instance of the slot was tried",
            ));
        };
        let addr = pool.instances[i].addr.ok_or_else(|| {
            Error::explain(ErrorType::ConnectNoRoute, "instance does not resolve")
        })?;
        ctx.tried |= 1 << i;
        ctx.instance = Some(i);
        let mut peer = HttpPeer::new(addr, false, String::new());
        peer.options.connection_timeout = Some(self.connect_timeout);
        Ok(Box::new(peer))
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut RequestCtx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        // Nothing was sent yet, so any method may go to the slot's next
        // instance; never to another slot.
        let untried_left = ctx.pool().is_some_and(|p| {
            p.instances
                .iter()
                .enumerate()
                .any(|(i, inst)| ctx.tried & (1 << i) == 0 && inst.addr.is_some() && i < 64)
        });
        e.set_retry(untried_left);
        e
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let req = session.req_header();
        if let Some(peer) = ctx.peer_ip {
            let xff = req.headers.get("x-forwarded-for").map(|v| v.as_bytes());
            upstream.insert_header(
                "x-forwarded-for",
                forwarded_for_value(peer, xff, ctx.trusted_peer),
            )?;
        } else {
            upstream.remove_header("x-forwarded-for");
        }
        let keep = |name: &str| {
            ctx.trusted_peer
                .then(|| req.headers.get(name).cloned())
                .flatten()
        };
        let proto = keep("x-forwarded-proto").unwrap_or(http::HeaderValue::from_static("http"));
        // the client's Host value itself: a refcount, not a copy
        let fwd_host = keep("x-forwarded-host")
            .or_else(|| req.headers.get(http::header::HOST).cloned())
            .or_else(|| http::HeaderValue::from_bytes(host_of(req)).ok());
        upstream.insert_header("x-forwarded-proto", proto)?;
        match fwd_host {
            Some(h) => upstream.insert_header("x-forwarded-host", h)?,
            None => {
                upstream.remove_header("x-forwarded-host");
            }
        }
        if let Some(slot) = ctx.slot() {
            upstream.insert_header("x-slot-name", slot.name_header.clone())?;
        }
        Ok(())
    }

    async fn response_filter(
        &self,
        session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let Some(decision) = ctx.decision else {
            return Ok(());
        };
        if decision.set_cookie {
            if let Some(slot) = ctx.slot() {
                let secure = ctx.trusted_peer
                    && session
                        .req_header()
                        .headers
                        .get("x-forwarded-proto")
                        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"https"));
                let cookie = if secure {
                    &slot.cookie_secure
                } else {
                    &slot.cookie
                };
                resp.append_header(http::header::SET_COOKIE, cookie.clone())?;
            }
        }
        Ok(())
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut RequestCtx,
    ) -> FailToProxy {
        let code = match e.etype() {
            ErrorType::HTTPStatus(code) => *code,
            _ => match e.esource() {
                ErrorSource::Upstream => 502,
                ErrorSource::Downstream => match e.etype() {
                    ErrorType::WriteError | ErrorType::ReadError | ErrorType::ConnectionClosed => 0,
                    _ => 400,
                },
                ErrorSource::Internal | ErrorSource::Unset => 500,
            },
        };
        if code == 502 {
            let what = match (ctx.site(), ctx.slot()) {
                (Some(site), Some(slot)) => format!("slot {} of site {}", slot.name, site.name),
                _ => "the chosen slot".into(),
            };
            let msg = format!(
                "502 Bad Gateway: no instance of {what} answered ({} tried)",
                ctx.tried.count_ones()
            );
            if let Err(err) = respond(session, 502, msg).await {
                log::debug!("could not send 502: {err}");
            }
        } else if code > 0 {
            let _ = session.respond_error(code).await;
        }
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }
}
