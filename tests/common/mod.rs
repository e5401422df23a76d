//! Shared harness for the end-to-end tests: the real `slotproxy` binary,
//! real demo-app processes as upstreams, real HTTP over loopback.
//!
//! Every process started here is killed when its handle drops, ports come
//! from binding port 0, and waits poll with a deadline instead of sleeping.
#![allow(dead_code)]

pub mod etcd;
pub mod raw;

use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_slotproxy");
pub const TOKEN: &str = "test-token";

/// A port that was free a moment ago (bind port 0, read it, release it).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Poll `f` until it returns `Some`, or panic with `what` after `secs`.
pub fn wait_for<T>(secs: u64, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        if Instant::now() > deadline {
            panic!("timed out after {secs}s waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

fn port_open(port: u16) -> bool {
    TcpStream::connect(("127.0.0.1", port)).is_ok()
}

/// One demo app instance in its own process, so tests can kill it.
pub struct App {
    child: Option<Child>,
    pub port: u16,
    pub version: String,
}

impl App {
    pub fn start(version: &str) -> App {
        Self::start_on(free_port(), version)
    }

    pub fn start_on(port: u16, version: &str) -> App {
        let child = Command::new(BIN)
            .args([
                "demo-app",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--version",
                version,
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start demo app");
        wait_for(20, "demo app to listen", || port_open(port).then_some(()));
        App {
            child: Some(child),
            port,
            version: version.to_string(),
        }
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for App {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A running `slotproxy serve` with its own ports and state directory.
pub struct Proxy {
    child: Option<Child>,
    pub port: u16,
    pub admin_port: u16,
    pub metrics_port: u16,
    pub dir: tempfile::TempDir,
    pub config_path: PathBuf,
    /// `server.grace_period_secs` (SIGTERM drain time).
    pub grace_secs: u64,
    /// Processes replaced by `upgrade`, reaped (or killed) later.
    retired: Vec<Child>,
}

/// The process part of a test config; `sites` (TOML `[[sites]]` tables) is
/// appended. Health checks run every 100 ms so dead instances show quickly.
pub fn config_text(
    port: u16,
    admin: u16,
    metrics: u16,
    state: &std::path::Path,
    sites: &str,
) -> String {
    config_text_with_grace(port, admin, metrics, state, sites, 1)
}

pub fn config_text_with_grace(
    port: u16,
    admin: u16,
    metrics: u16,
    state: &std::path::Path,
    sites: &str,
    grace: u64,
) -> String {
    format!(
        r#"
[server]
listen = ["127.0.0.1:{port}"]
threads = 1
grace_period_secs = {grace}
graceful_shutdown_timeout_secs = 1
upgrade_sock = "{state}/upgrade.sock"
pid_file = "{state}/slotproxy.pid"
connect_timeout_ms = 1000
[admin]
listen = "127.0.0.1:{admin}"
token = "{TOKEN}"
[metrics]
listen = "127.0.0.1:{metrics}"
[state]
dir = "{state}"
[health]
interval_ms = 100
timeout_ms = 300
unhealthy_threshold = 2
healthy_threshold = 1
{sites}
"#,
        state = state.display()
    )
}

impl Proxy {
    /// Start with `sites` and wait until the proxy port answers.
    pub fn start(sites: &str) -> Proxy {
        Self::start_graceful(sites, 1)
    }

    /// Start with a SIGTERM grace period of `grace_secs`.
    pub fn start_graceful(sites: &str, grace_secs: u64) -> Proxy {
        Self::start_edited(sites, grace_secs, |text| text)
    }

    /// Start with the generated config text passed through `edit` first
    /// (e.g. to add `[server]` keys).
    ///
    /// Ports come from binding port 0 and letting go, so another process
    /// can take one before slotproxy binds it: then it starts again on new
    /// ports (a few times), instead of failing the test over a race of the
    /// harness.
    pub fn start_edited(sites: &str, grace_secs: u64, edit: impl Fn(String) -> String) -> Proxy {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let dir = tempfile::tempdir().unwrap();
            let (port, admin_port, metrics_port) = (free_port(), free_port(), free_port());
            let config_path = dir.path().join("config.toml");
            let text = config_text_with_grace(
                port,
                admin_port,
                metrics_port,
                &dir.path().join("state"),
                sites,
                grace_secs,
            );
            std::fs::write(&config_path, edit(text)).unwrap();
            let mut p = Proxy {
                child: None,
                port,
                admin_port,
                metrics_port,
                dir,
                config_path,
                grace_secs,
                retired: Vec::new(),
            };
            match p.try_spawn() {
                Ok(()) => return p,
                Err(why) if attempt < 5 && why.contains("Address already in use") => continue,
                Err(why) => panic!("{why}"),
            }
        }
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("slotproxy.log")
    }

    /// (Re)start the process on the same ports, config and state.
    pub fn spawn(&mut self) {
        if let Err(why) = self.try_spawn() {
            panic!("{why}");
        }
    }

    /// [`spawn`](Self::spawn), telling why it did not come up.
    fn try_spawn(&mut self) -> Result<(), String> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .unwrap();
        let child = Command::new(BIN)
            .args(["serve", "--config"])
            .arg(&self.config_path)
            .env("RUST_LOG", "info")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start slotproxy");
        self.child = Some(child);
        let port = self.port;
        let deadline = Instant::now() + Duration::from_secs(30);
        while !port_open(port) {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                self.child = None;
                return Err(format!("slotproxy exited with {status}:\n{}", self.log()));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "slotproxy did not listen within 30s:\n{}",
                    self.log()
                ));
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        Ok(())
    }

    pub fn log(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = std::fs::File::open(self.log_path()) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Send a signal (e.g. libc::SIGHUP) to the process.
    pub fn signal(&self, sig: i32) {
        unsafe {
            libc::kill(self.pid() as i32, sig);
        }
    }

    /// Graceful binary upgrade: start `serve --upgrade` on the same config,
    /// SIGQUIT the running process so it hands its sockets over. Returns
    /// the old process, which exits once its requests are done.
    pub fn upgrade(&mut self) -> u32 {
        let log = std::fs::OpenOptions::new()
            .append(true)
            .open(self.log_path())
            .unwrap();
        let new = Command::new(BIN)
            .args(["serve", "--upgrade", "--config"])
            .arg(&self.config_path)
            .env("RUST_LOG", "info")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start slotproxy --upgrade");
        let old = self.child.replace(new).expect("running");
        let old_pid = old.id();
        unsafe {
            libc::kill(old_pid as i32, libc::SIGQUIT);
        }
        self.retired.push(old);
        old_pid
    }

    /// Wait until every process replaced by `upgrade` has exited.
    pub fn wait_retired(&mut self, secs: u64) {
        for c in &mut self.retired {
            let status = wait_for(secs, "the old process to exit", || c.try_wait().unwrap());
            assert!(status.success(), "old process exited with {status}");
        }
        self.retired.clear();
    }

    /// Wait for the current process to exit (after SIGTERM); its status.
    pub fn wait_exit(&mut self, secs: u64) -> std::process::ExitStatus {
        let c = self.child.as_mut().expect("running");
        let status = wait_for(secs, "slotproxy to exit", || c.try_wait().unwrap());
        self.child = None;
        status
    }

    /// `kill -9` and reap.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Replace the config's `[[sites]]` part (for reload tests).
    pub fn rewrite_sites(&self, sites: &str) {
        let text = config_text_with_grace(
            self.port,
            self.admin_port,
            self.metrics_port,
            &self.dir.path().join("state"),
            sites,
            self.grace_secs,
        );
        std::fs::write(&self.config_path, text).unwrap();
    }

    pub fn url(&self, path_and_query: &str) -> String {
        format!("http://127.0.0.1:{}{}", self.port, path_and_query)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{}", self.admin_port, path)
    }

    /// Call the admin API with the right token; returns (status, JSON body).
    pub fn admin(&self, method: &str, path: &str, body: Option<&str>) -> (u16, serde_json::Value) {
        self.admin_as(Some(TOKEN), method, path, body)
    }

    /// Call the admin API with `token` (or none).
    pub fn admin_as(
        &self,
        token: Option<&str>,
        method: &str,
        path: &str,
        body: Option<&str>,
    ) -> (u16, serde_json::Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut req = client().request(method, self.admin_url(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req
                .header("content-type", "application/json")
                .body(b.to_string());
        }
        let resp = req.send().expect("admin API answers");
        let status = resp.status().as_u16();
        let text = resp.text().unwrap();
        let json = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("admin answer {status} is not JSON ({e}): {text:?}"));
        (status, json)
    }

    /// Run the CLI against this proxy's admin API; returns (exit code, stdout, stderr).
    pub fn cli(&self, args: &[&str]) -> (i32, String, String) {
        let out = Command::new(BIN)
            .args(args)
            .env("SLOTPROXY_ADMIN_URL", self.admin_url(""))
            .env("SLOTPROXY_ADMIN_TOKEN", TOKEN)
            .output()
            .expect("run the slotproxy CLI");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.kill();
        for mut c in self.retired.drain(..) {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Run `slotproxy serve` on a config that should be refused; returns
/// (exit code, stderr).
pub fn refused(config: &str) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, config).unwrap();
    let mut child = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(&path)
        .current_dir(dir.path())
        // a token from the developer's shell must not make a refusal pass
        .env_remove("SLOTPROXY_ADMIN_TOKEN")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status = wait_for(30, "slotproxy to refuse the config", || {
        child.try_wait().unwrap()
    });
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    (status.code().unwrap_or(-1), err)
}

/// A client with no cookie jar and no redirects: tests set headers by hand.
pub fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// What a demo app answered, parsed from its `key: value` lines.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub set_cookie: Vec<String>,
    pub body: String,
}

impl Answer {
    pub fn field(&self, key: &str) -> Option<&str> {
        self.body
            .lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix(": "))
    }

    pub fn slot(&self) -> &str {
        self.field("slot")
            .unwrap_or_else(|| panic!("not a demo app answer: {self:?}"))
    }

    pub fn version(&self) -> &str {
        self.field("version").unwrap_or("-")
    }

    /// The value of the routing cookie this response sets, if any.
    pub fn pin(&self) -> Option<&str> {
        self.set_cookie
            .iter()
            .find_map(|c| c.strip_prefix("x-ms-routing-name="))
            .map(|rest| rest.split(';').next().unwrap_or(""))
    }
}

/// GET `path` on the proxy with `Host: host` and extra headers.
pub fn get(proxy: &Proxy, host: &str, path: &str, headers: &[(&str, &str)]) -> Answer {
    let mut req = client().get(proxy.url(path)).header("host", host);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().expect("request through the proxy");
    let status = resp.status().as_u16();
    let set_cookie = resp
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect();
    let body = resp.text().unwrap();
    Answer {
        status,
        set_cookie,
        body,
    }
}

/// One scrape of the proxy's `/metrics`, checked to be Prometheus text.
pub fn scrape(proxy: &Proxy) -> String {
    let resp = client()
        .get(format!("http://127.0.0.1:{}/metrics", proxy.metrics_port))
        .send()
        .expect("scrape /metrics");
    assert_eq!(resp.status().as_u16(), 200);
    let ctype = resp.headers()["content-type"].to_str().unwrap().to_string();
    assert!(ctype.starts_with("text/plain; version=0.0.4"), "{ctype}");
    resp.text().unwrap()
}

/// The value of one series (`name{labels}` exactly as exposed), `None` if
/// it is not exported at all.
pub fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

/// The value of one series (`name{labels}` exactly as exposed), 0 if absent.
pub fn value(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| {
            l.strip_prefix(series)?
                .strip_prefix(' ')?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or(0.0)
}
