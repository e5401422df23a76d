//! The dashboard in a real browser: Debian's `chromium`, driven through
//! `chromedriver` (WebDriver, with the fantoccini crate), against the real
//! `slotproxy` binary in front of real demo-app processes. `./dev test`
//! installs chromium and chromium-driver when they are missing.
//!
//! The page is used as a person would: type the token, edit the traffic
//! split, open the swap dialog, press its buttons. What it claims is then
//! checked against the proxy itself (requests really split ~30%, production
//! really runs the swapped build) and the admin API.
//!
//! `SLOTPROXY_SCREENSHOT_DIR=docs cargo test --test dashboard` also writes
//! the screenshots docs/guide/dashboard.md shows (`dashboard.png`,
//! `dashboard-swap.png`, `dashboard-phone.png`).

mod common;

use common::*;
use fantoccini::elements::Element;
use fantoccini::key::Key;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The site of these tests: production (v1) and staging (v2) with settings
/// that a swap moves and sticky ones it keeps, and an opt-in slot `qa`.
fn sites(prod: &App, staging: &App) -> String {
    format!(
        r#"
[[sites]]
name = "shop"
hostnames = ["shop.test"]
slot_domain = "slots.test"
[[sites.slots]]
name = "production"
build_version = "v1"
instances = ["{prod}"]
settings_hook_path = "/settings"
[sites.slots.settings]
FEATURE_FLAGS = "classic-checkout"
CACHE_TTL = "60"
[sites.slots.sticky_settings]
DATABASE_URL = "postgres://prod-db/shop"
[[sites.slots]]
name = "staging"
traffic_percent = 10
build_version = "v2"
instances = ["{staging}"]
settings_hook_path = "/settings"
[sites.slots.settings]
FEATURE_FLAGS = "new-checkout"
CACHE_TTL = "60"
[sites.slots.sticky_settings]
DATABASE_URL = "postgres://staging-db/shop"
[[sites.slots.match]]
header = "x-beta"
value = "true"
[sites.slots.outlier]
[[sites.slots]]
name = "qa"
traffic_percent = 0
"#,
        prod = prod.addr(),
        staging = staging.addr()
    )
}

/// `name` on the PATH, or a clear failure saying how to get it.
fn program(name: &str, package: &str) -> PathBuf {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    });
    found.unwrap_or_else(|| {
        panic!("{name} is not installed: apt-get install {package} (./dev test installs it)")
    })
}

/// chromedriver on a free port, and a headless chromium session through it,
/// with a fresh profile. Dropping it ends the session (chromedriver then
/// quits chromium) and kills chromedriver.
struct Browser {
    rt: tokio::runtime::Runtime,
    client: Option<Client>,
    driver: Child,
    dir: tempfile::TempDir,
}

impl Browser {
    /// A desktop window of `width` × `height`.
    fn start(width: u32, height: u32) -> Browser {
        Self::start_with(width, height, None)
    }

    /// A phone's screen, `width` × `height` CSS pixels (chromium's windows
    /// are at least 500 px wide, so a phone is emulated as Chrome's device
    /// mode does: the page sees that viewport).
    fn phone(width: u32, height: u32) -> Browser {
        let metrics =
            json!({"deviceMetrics": {"width": width, "height": height, "pixelRatio": 1.0}});
        Self::start_with(600, height + 200, Some(metrics))
    }

    fn start_with(width: u32, height: u32, mobile: Option<Value>) -> Browser {
        let chromium = program("chromium", "chromium");
        let chromedriver = program("chromedriver", "chromium-driver");
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let log = std::fs::File::create(dir.path().join("chromedriver.log")).unwrap();
        let driver = Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let mut b = Browser {
            rt,
            client: None,
            driver,
            dir,
        };
        wait_for(30, "chromedriver to listen", || {
            std::net::TcpStream::connect(("127.0.0.1", port))
                .ok()
                .map(|_| ())
        });
        let profile = b.dir.path().join("profile");
        let caps = json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                    "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync",
                    "--disable-dev-shm-usage",
                    format!("--user-data-dir={}", profile.display()),
                    format!("--window-size={width},{height}"),
                ],
            },
        });
        let mut caps = caps;
        if let Some(m) = mobile {
            caps["goog:chromeOptions"]["mobileEmulation"] = m;
        }
        let Value::Object(caps) = caps else {
            unreachable!()
        };
        let url = format!("http://127.0.0.1:{port}");
        let client = b.rt.block_on(async {
            ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
                .capabilities(caps)
                .connect(&url)
                .await
        });
        match client {
            Ok(c) => b.client = Some(c),
            Err(e) => panic!(
                "no chromium session: {e}\nchromedriver log:\n{}",
                std::fs::read_to_string(b.dir.path().join("chromedriver.log")).unwrap_or_default()
            ),
        }
        b
    }

    fn c(&self) -> &Client {
        self.client.as_ref().expect("session open")
    }

    fn run<T>(&self, f: impl Future<Output = Result<T, fantoccini::error::CmdError>>) -> T {
        self.rt.block_on(f).expect("WebDriver command")
    }

    fn goto(&self, url: &str) {
        self.run(self.c().goto(url));
    }

    /// Evaluate `script` (a function body that `return`s) in the page.
    fn js(&self, script: &str) -> Value {
        self.run(self.c().execute(script, vec![]))
    }

    fn text_of(&self, css: &str) -> String {
        let s = format!(
            "const e = document.querySelector({}); return e ? e.textContent : null;",
            json!(css)
        );
        self.js(&s).as_str().unwrap_or_default().to_string()
    }

    /// Wait until `css` matches a displayed element, and return it.
    fn find(&self, css: &str) -> Element {
        wait_for(20, &format!("{css} to show"), || {
            let found = self.rt.block_on(self.c().find(Locator::Css(css))).ok()?;
            self.rt
                .block_on(found.is_displayed())
                .ok()?
                .then_some(found)
        })
    }

    fn click(&self, css: &str) {
        let e = self.find(css);
        wait_for(20, &format!("{css} to be enabled"), || {
            self.rt.block_on(e.is_enabled()).ok()?.then_some(())
        });
        self.run(e.click());
    }

    fn type_into(&self, css: &str, text: &str) {
        let e = self.find(css);
        self.run(e.clear());
        self.run(e.send_keys(text));
    }

    fn press(&self, css: &str, key: Key) {
        let e = self.find(css);
        self.run(e.send_keys(&char::from(key).to_string()));
    }

    /// Wait until the text of `css` contains `want`.
    fn wait_text(&self, css: &str, want: &str) -> String {
        wait_for(20, &format!("{css} to say {want:?}"), || {
            let t = self.text_of(css);
            t.contains(want).then_some(t)
        })
    }

    /// Save a screenshot to `$SLOTPROXY_SCREENSHOT_DIR/name`, if set.
    fn screenshot(&self, name: &str) {
        let png = self.run(self.c().screenshot());
        assert!(png.starts_with(b"\x89PNG"), "a PNG screenshot");
        if let Some(dir) = std::env::var_os("SLOTPROXY_SCREENSHOT_DIR") {
            let path = Path::new(&dir).join(name);
            std::fs::write(&path, &png).unwrap();
            eprintln!("screenshot: {}", path.display());
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if let Some(c) = self.client.take() {
            let _ = self
                .rt
                .block_on(async { tokio::time::timeout(Duration::from_secs(10), c.close()).await });
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// Open the page and sign in with `token`.
fn sign_in(b: &Browser, proxy: &Proxy, token: &str) {
    b.goto(&proxy.admin_url("/"));
    b.find("#login[open]");
    b.type_into("#login-token", token);
    b.click("#login-submit");
}

fn routing(proxy: &Proxy) -> Value {
    let (status, body) = proxy.admin("GET", "/api/v1/sites/shop/traffic-routing", None);
    assert_eq!(status, 200, "{body}");
    body["distribution"].clone()
}

/// How many of `n` cookieless requests to the production host staging got.
fn staging_share(proxy: &Proxy, n: usize) -> usize {
    let client = client();
    (0..n)
        .filter(|_| {
            let resp = client
                .get(proxy.url("/"))
                .header("host", "shop.test")
                .send()
                .expect("request through the proxy");
            assert_eq!(resp.status().as_u16(), 200);
            resp.text().unwrap().starts_with("slot: staging\n")
        })
        .count()
}

#[test]
fn traffic_and_swap_from_the_page() {
    let (prod, staging) = (App::start("v1"), App::start("v2"));
    let proxy = Proxy::start(&sites(&prod, &staging));
    let b = Browser::start(1280, 1000);
    sign_in(&b, &proxy, TOKEN);

    // the slots as the API has them, host names linked through the proxy
    b.wait_text("#slots tr[data-slot='staging'] .build", "v2");
    b.wait_text("#slots tr[data-slot='production'] .build", "v1");
    assert!(b.text_of("#slots tr[data-slot='staging']").contains("up"));
    // its request matches and outlier ejection
    let matches = b.text_of("#slots tr[data-slot='staging'] .matches");
    assert_eq!(matches, "match: header x-beta = \"true\"");
    let outlier = b.text_of("#slots tr[data-slot='staging'] .outlier");
    assert!(outlier.contains("5 5xx or 3 connect errors"), "{outlier}");
    let link =
        b.js("return document.querySelector(\"#slots tr[data-slot='staging'] .hosts a\").href");
    assert_eq!(
        link,
        json!(format!("http://shop-staging.slots.test:{}/", proxy.port))
    );
    assert!(b
        .text_of("#split-legend")
        .contains("qa: 0% (opt-in link only)"));
    assert_eq!(
        b.js("return sessionStorage.getItem('slotproxy.admin-token')"),
        json!(TOKEN)
    );

    // the editor refuses what the API would, and sends nothing
    b.type_into("#traffic-staging", "130");
    b.wait_text("#traffic-error", "staging: 130 is out of range 0-100");
    assert_eq!(
        b.js("return document.querySelector('#traffic-staging').getAttribute('aria-invalid')"),
        json!("true")
    );
    b.click("#traffic-save");
    b.type_into("#traffic-staging", "95");
    b.wait_text("#traffic-production", "5%");
    b.type_into("#traffic-qa", "6");
    b.wait_text("#traffic-error", "the rules sum to 101, over 100");
    assert_eq!(routing(&proxy), json!({"qa": 0.0, "staging": 10.0}));

    // 30% to staging; qa keeps its explicit 0
    b.type_into("#traffic-qa", "0");
    b.type_into("#traffic-staging", "30");
    b.wait_text("#traffic-production", "70%");
    b.click("#traffic-save");
    b.wait_text(
        "#status",
        "Traffic saved: qa 0%, staging 30%, production 70%",
    );
    assert_eq!(routing(&proxy), json!({"qa": 0.0, "staging": 30.0}));
    b.wait_text("#slots tr[data-slot='staging'] .pct", "30%");

    // the proxy really sends ~30% of new visitors there: 1000 requests,
    // 300 expected, sd 14.5; ±75 is over 5 sd
    let n = staging_share(&proxy, 1000);
    assert!((225..=375).contains(&n), "{n} of 1000 went to staging");

    // and the page shows them as live rates, from the proxy's counters
    let rps = wait_for(20, "the page to show staging's request rate", || {
        let t = b.text_of("#slots tr[data-slot='staging'] .live-rps");
        t.parse::<f64>().ok().filter(|r| *r > 0.0)
    });
    assert!(rps > 0.0);
    assert_eq!(b.text_of("#slots tr[data-slot='staging'] .live-5xx"), "0.0");

    // a refused deploy shows the API's own words, and changes nothing
    b.click("button[data-action='deploy'][data-slot='qa']");
    b.find("#deploy-dialog[open]");
    b.type_into("#deploy-build", "v3");
    b.type_into("#deploy-instances", "not-an-address");
    b.click("#deploy-submit");
    let err = b.wait_text("#deploy-error", "Refused: ");
    assert!(err.contains("instances[0]"), "{err}");
    b.press("#deploy-build", Key::Escape);
    wait_for(10, "the deploy dialog to close", || {
        (b.js("return document.querySelector('#deploy-dialog').open") == json!(false)).then_some(())
    });
    let (_, site) = proxy.admin("GET", "/api/v1/sites/shop", None);
    assert_eq!(site["slots"][1]["name"], "qa");
    assert_eq!(site["slots"][1]["deployment"], Value::Null);

    // the swap dialog: focus moves in, the preview lists what changes and stays
    b.click("button[data-action='swap'][data-slot='staging']");
    b.find("#swap-dialog[open]");
    assert_eq!(
        b.js("return document.querySelector('#swap-dialog').contains(document.activeElement)"),
        json!(true),
        "focus is in the dialog"
    );
    let db = b.wait_text("#panel-source tr[data-key='DATABASE_URL']", "prod-db");
    assert!(db.contains("staging-db") && db.contains("sticky"), "{db}");
    assert!(b
        .text_of("#panel-source")
        .contains("Settings that stay (2)"));
    b.click("#tab-target");
    let flags = b.wait_text("#panel-target tr[data-key='FEATURE_FLAGS']", "new-checkout");
    assert!(flags.contains("classic-checkout"), "{flags}");
    assert!(b.text_of("#panel-target").contains("Build v1 → v2"));
    b.screenshot("dashboard-swap.png");
    // arrow keys move between the tabs
    b.press("#tab-target", Key::Left);
    wait_for(10, "the source tab to be selected", || {
        (b.js("return document.activeElement.id") == json!("tab-source")).then_some(())
    });
    assert_eq!(
        b.js("return document.querySelector('#panel-target').hidden"),
        json!(true)
    );

    // start a preview, then complete it, the phases shown as they run
    b.click("#swap-start-preview");
    b.wait_text("#swap-status", "previewing");
    assert!(b.text_of("#swap-phases").contains("wait_restart"));
    b.wait_text("#swap-pending", "A preview is pending");
    // the source runs with production's settings now
    let preview = get(&proxy, "shop-staging.slots.test", "/", &[]);
    assert!(
        preview.body.contains("postgres://prod-db/shop"),
        "{}",
        preview.body
    );
    b.click("#swap-complete");
    b.wait_text("#swap-status", "succeeded");
    for phase in ["warmup", "switch", "apply_source_settings"] {
        let sel = format!("#swap-phases li[data-phase='{phase}'][data-result='succeeded']");
        b.find(&sel);
    }
    let prod_now = get(&proxy, "shop.test", "/?x-ms-routing-name=self", &[]);
    assert_eq!(prod_now.version(), "v2", "{prod_now:?}");

    // Escape closes the dialog and focus goes back to the Swap button
    b.press("#swap-dialog [data-close]", Key::Escape);
    wait_for(10, "focus back on the swap button", || {
        (b.js("return document.activeElement.dataset.key") == json!("swap:staging")).then_some(())
    });

    // the activity log: the swap and the preview, newest first, with phases
    // and per-instance results
    b.wait_text(
        "#activity li:first-child summary",
        "swap staging → production",
    );
    assert!(b
        .text_of("#activity li:nth-child(2) summary")
        .contains("preview staging → production"));
    b.click("#activity li:first-child summary");
    b.find("#activity li:first-child li[data-phase='switch'][data-result='succeeded']");
    let instances = b.text_of("#activity li:first-child .instances-table");
    assert!(instances.contains(&staging.addr()), "{instances}");
    b.wait_text("#slots tr[data-slot='production'] .build", "v2");

    // full-page screenshot for docs/guide/dashboard.md: the window grown to the page
    for _ in 0..2 {
        let grow = b.js(
            "window.scrollTo(0, 0); return document.documentElement.scrollHeight - window.innerHeight;",
        );
        let (w, h) = b.run(b.c().get_window_size());
        let h = (h as i64 + grow.as_i64().unwrap()).clamp(800, 2000);
        b.run(b.c().set_window_size(w as u32, h as u32));
    }
    b.screenshot("dashboard.png");
}

#[test]
fn the_shadow_panel_starts_a_shadow_lists_differences_and_stops_it() {
    let (prod, staging) = (App::start("v1"), App::start("v2"));
    let proxy = Proxy::start(&sites(&prod, &staging));
    let b = Browser::start(1280, 1000);
    sign_in(&b, &proxy, TOKEN);
    let panel = "#shadows .shadow[data-slot='staging']";
    b.wait_text(&format!("{panel} button"), "Start shadow");
    b.type_into("#shadow-percent-staging", "100");
    b.click(&format!("{panel} button[type='submit']"));
    b.wait_text(
        &format!("{panel} h4"),
        "staging: 100% of production's GET, HEAD, OPTIONS",
    );
    let (code, v) = proxy.admin("GET", "/api/v1/sites/shop/slots/staging/shadow", None);
    assert_eq!(
        (code, v["shadow"]["percent"].as_f64()),
        (200, Some(100.0)),
        "{v}"
    );

    // the demo app's JSON names each answer (requestId): every copy differs
    for _ in 0..10 {
        let resp = client()
            .get(proxy.url("/demo/json/cart"))
            .header("host", "shop.test")
            .header("cookie", "x-ms-routing-name=self")
            .send()
            .unwrap();
        assert_eq!(resp.status().as_u16(), 200);
    }
    b.wait_text(
        &format!("{panel} .differences td code"),
        "GET /demo/json/cart",
    );
    let figures = b.wait_text(&format!("{panel} .shadow-figures"), "body differs 10");
    assert!(
        figures.contains("0.0% matching (0 of 10 compared)"),
        "{figures}"
    );
    assert!(b
        .text_of(&format!("{panel} .differences"))
        .contains("body $.requestId"));
    b.screenshot("dashboard-shadow.png");

    b.click(&format!("{panel} button"));
    b.wait_text(&format!("{panel} button"), "Start shadow");
    let (code, _) = proxy.admin("GET", "/api/v1/sites/shop/slots/staging/shadow", None);
    assert_eq!(code, 404);
}

#[test]
fn token_prompt_and_phone_width() {
    let (prod, staging) = (App::start("v1"), App::start("v2"));
    let proxy = Proxy::start(&sites(&prod, &staging));
    // the page itself needs no token; the API does
    let resp = client().get(proxy.admin_url("/")).send().unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let csp = resp.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(csp.contains("script-src 'self'"), "{csp}");
    assert!(resp.text().unwrap().contains("/dashboard/app.js"));
    let (status, _) = proxy.admin_as(None, "GET", "/api/v1/sites/shop/live", None);
    assert_eq!(status, 401);

    let b = Browser::phone(390, 844);
    // a wrong token is refused and asked for again
    sign_in(&b, &proxy, "not-the-token");
    b.wait_text("#login-error", "refused this token");
    // in the page's words, not the API's (an Authorization header)
    let said = b.text_of("#login-error");
    assert!(said.contains("is not the admin token"), "{said}");
    assert!(
        !said.contains("Bearer") && !said.contains("Authorization"),
        "{said}"
    );
    assert_eq!(
        b.js("return sessionStorage.getItem('slotproxy.admin-token')"),
        Value::Null
    );
    b.type_into("#login-token", TOKEN);
    b.click("#login-submit");
    b.wait_text("#slots tr[data-slot='staging'] .build", "v2");

    // phone width: nothing wider than the screen, every slot's actions reachable
    let width = b.js("return window.innerWidth").as_u64().unwrap();
    assert!(width <= 420, "the window is phone-sized ({width}px)");
    let overflow = b.js("return document.documentElement.scrollWidth - window.innerWidth");
    assert_eq!(overflow, json!(0), "no horizontal scrolling at {width}px");
    let right = b.js(
        "const r = document.querySelector(\"button[data-action='swap'][data-slot='staging']\").getBoundingClientRect(); return r.right <= window.innerWidth && r.width > 0;",
    );
    assert_eq!(right, json!(true));
    b.screenshot("dashboard-phone.png");

    // the swap dialog fits too, and can be used
    b.click("button[data-action='swap'][data-slot='staging']");
    b.wait_text("#panel-source", "DATABASE_URL");
    let fits = b.js(
        "const r = document.querySelector('#swap-dialog').getBoundingClientRect(); return r.left >= 0 && r.right <= window.innerWidth;",
    );
    assert_eq!(fits, json!(true));

    // start a preview and cancel it: production never changed
    b.click("#swap-start-preview");
    b.wait_text("#swap-status", "previewing");
    b.click("#swap-cancel");
    b.wait_text("#swap-status", "succeeded");
    b.wait_text(
        "#activity li:first-child summary",
        "reset staging → production",
    );
    b.find("#activity li:nth-child(2)[data-status='cancelled']");
    assert_eq!(
        get(&proxy, "shop.test", "/?x-ms-routing-name=self", &[]).version(),
        "v1"
    );
    b.find("#swap-go");

    // a token revoked under the page (another tab signed out, or the token
    // changed): the next call gets 401 and the page asks again
    b.press("#swap-dialog [data-close]", Key::Escape);
    b.js("sessionStorage.setItem('slotproxy.admin-token', 'stale'); return null;");
    b.find("#login[open]");
    b.wait_text("#login-error", "refused the token");
    let said = b.text_of("#login-error");
    assert!(said.contains("Type the admin token again"), "{said}");
    assert!(
        !said.contains("Bearer") && !said.contains("Authorization"),
        "{said}"
    );
}

/// The JSON paths the page uses, without a browser.
#[test]
fn swap_preview_live_and_listeners_over_the_api() {
    let (prod, staging) = (App::start("v1"), App::start("v2"));
    let proxy = Proxy::start(&sites(&prod, &staging));

    let (status, p) = proxy.admin(
        "GET",
        "/api/v1/sites/shop/slots/staging/swap-preview?target_slot=production",
        None,
    );
    assert_eq!(status, 200, "{p}");
    assert_eq!(p["pending_preview"], Value::Null);
    assert_eq!(
        p["source_changes"]["changed"],
        json!([{"key": "DATABASE_URL", "before": "postgres://staging-db/shop",
                "after": "postgres://prod-db/shop", "sticky": true}])
    );
    assert_eq!(p["target_changes"]["build_version_before"], "v1");
    assert_eq!(p["target_changes"]["build_version_after"], "v2");
    assert_eq!(p["target_changes"]["changed"][0]["key"], "FEATURE_FLAGS");
    // target defaults to production, as for the swap itself
    let (_, same) = proxy.admin("GET", "/api/v1/sites/shop/slots/staging/swap-preview", None);
    assert_eq!(same, p);
    // refused as the swap would be, with the same words
    let (status, e) = proxy.admin("GET", "/api/v1/sites/shop/slots/qa/swap-preview", None);
    assert_eq!(status, 409);
    assert!(
        e["error"].as_str().unwrap().contains("no deployment"),
        "{e}"
    );
    let (status, e) = proxy.admin(
        "GET",
        "/api/v1/sites/shop/slots/staging/swap-preview?target=production",
        None,
    );
    assert_eq!(status, 400);
    assert!(
        e["error"]
            .as_str()
            .unwrap()
            .contains("unknown field `target`"),
        "{e}"
    );
    let (status, _) = proxy.admin("GET", "/api/v1/sites/shop/slots/nope/swap-preview", None);
    assert_eq!(status, 404);
    let (status, _) = proxy.admin_as(
        None,
        "GET",
        "/api/v1/sites/shop/slots/staging/swap-preview",
        None,
    );
    assert_eq!(status, 401);

    // live: the first call takes the snapshot, a later one has rates
    let (status, first) = proxy.admin("GET", "/api/v1/sites/shop/live", None);
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["window_secs"], Value::Null);
    let before = first["slots"][2]["responses_total"].as_u64().unwrap();
    assert_eq!(first["slots"][2]["slot"], "staging");
    for _ in 0..50 {
        assert_eq!(get(&proxy, "shop-staging.slots.test", "/", &[]).status, 200);
    }
    let live = wait_for(10, "a window with staging's requests", || {
        let (_, v) = proxy.admin("GET", "/api/v1/sites/shop/live", None);
        (v["window_secs"].as_f64().is_some()).then_some(v)
    });
    let s = &live["slots"][2];
    assert_eq!(s["responses_total"].as_u64().unwrap() - before, 50);
    assert!(s["requests_per_sec"].as_f64().unwrap() > 0.0, "{live}");
    assert_eq!(s["errors_5xx_per_sec"], json!(0.0));
    assert_eq!(live["slots"][0]["slot"], "production");
    assert_eq!(live["slots"][0]["requests_per_sec"], json!(0.0));
    let (status, _) = proxy.admin("GET", "/api/v1/sites/nope/live", None);
    assert_eq!(status, 404);

    let (_, l) = proxy.admin("GET", "/api/v1/listeners", None);
    assert_eq!(
        l,
        json!({"http": [format!("127.0.0.1:{}", proxy.port)], "https": []})
    );

    // the page's files need no token; anything else under it is 404
    let js = client()
        .get(proxy.admin_url("/dashboard/app.js"))
        .send()
        .unwrap();
    assert_eq!(js.status().as_u16(), 200);
    assert!(js.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/javascript"));
    let none = client()
        .get(proxy.admin_url("/dashboard/secret"))
        .send()
        .unwrap();
    assert_eq!(none.status().as_u16(), 404);
}
