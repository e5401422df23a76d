//! The shipped alert rules against a real Prometheus scrape (issue 23,
//! item 3). `promtool test rules` feeds series by hand and so never sees what
//! a scrape does to our labels: Prometheus attaches its own `instance` and
//! `job` target labels, and a metric label of the same name is renamed
//! `exported_instance`, so `{{ $labels.instance }}` in an alert would name
//! the proxy's metrics address instead of the app instance. Here Debian's
//! `prometheus` binary scrapes the real proxy on loopback and evaluates
//! `deploy/prometheus/slotproxy-rules.yml` (with `for:` shortened), and the
//! firing alert must name the dead app instance's `host:port`.

mod common;
use common::*;
use std::process::{Child, Command, Stdio};

struct Prometheus {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    fn start(target: &str) -> Prometheus {
        let dir = tempfile::tempdir().unwrap();
        let rules = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/deploy/prometheus/slotproxy-rules.yml"
        ))
        .unwrap();
        // Same rules, same expressions and annotations; only the waits shrink.
        let rules = rules
            .lines()
            .map(|l| {
                if l.trim_start().starts_with("for:") {
                    l.split("for:").next().unwrap_or("").to_string() + "for: 0s"
                } else {
                    l.to_string()
                }
            })
            .collect::<Vec<_>>()
            .join("\n");
        std::fs::write(dir.path().join("rules.yml"), rules).unwrap();
        std::fs::write(
            dir.path().join("prometheus.yml"),
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
                 rule_files: [\"{rules}\"]\n\
                 scrape_configs:\n  - job_name: slotproxy\n    static_configs:\n      - targets: [\"{target}\"]\n",
                rules = dir.path().join("rules.yml").display()
            ),
        )
        .unwrap();
        let port = free_port();
        let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
        let child = Command::new("prometheus")
            .arg(format!(
                "--config.file={}",
                dir.path().join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("prometheus (Debian package prometheus; ./dev test installs it)");
        Prometheus {
            child,
            port,
            _dir: dir,
        }
    }

    fn api(&self, path: &str) -> Option<serde_json::Value> {
        let r = client()
            .get(format!("http://127.0.0.1:{}{path}", self.port))
            .send()
            .ok()?;
        r.json().ok()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("prometheus.log")).unwrap_or_default()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_scraped_instance_down_alert_names_the_app_instance_not_the_scrape_target() {
    let prod = App::start("v1");
    // Nothing listens here: its health checks fail.
    let dead = format!("127.0.0.1:{}", free_port());
    let proxy = Proxy::start(&format!(
        r#"
[[sites]]
name = "shop"
hostnames = ["shop.test"]
[[sites.slots]]
name = "production"
build_version = "v1"
instances = ["{prod}"]
[[sites.slots]]
name = "broken"
build_version = "v0"
instances = ["{dead}"]
"#,
        prod = prod.addr(),
    ));
    let target = format!("127.0.0.1:{}", proxy.metrics_port);
    let prom = Prometheus::start(&target);

    // The scraped series keeps our label as `address`, beside Prometheus's
    // own `instance` (the scrape target).
    let series = wait_for(60, "Prometheus to scrape slotproxy_instance_up", || {
        let v = prom.api("/api/v1/query?query=slotproxy_instance_up%7Bslot%3D%22broken%22%7D")?;
        let r = v["data"]["result"].as_array()?.first()?.clone();
        Some(r["metric"].clone())
    });
    assert_eq!(series["address"], dead.as_str(), "{series}");
    assert_eq!(series["instance"], target.as_str(), "{series}");
    assert!(series.get("exported_instance").is_none(), "{series}");

    // The alert, evaluated by Prometheus on the scraped data, names the app.
    let alert = wait_for(60, "SlotproxyInstanceDown to fire", || {
        let v = prom.api("/api/v1/alerts")?;
        v["data"]["alerts"]
            .as_array()?
            .iter()
            .find(|a| a["labels"]["alertname"] == "SlotproxyInstanceDown" && a["state"] == "firing")
            .cloned()
    });
    let summary = alert["annotations"]["summary"].as_str().unwrap_or("");
    assert_eq!(
        summary,
        format!("instance {dead} of shop/broken is down"),
        "{alert}\n{}",
        prom.log()
    );
    assert!(!summary.contains(&target), "{summary}");
}
