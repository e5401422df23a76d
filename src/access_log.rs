//! The access log: one line per request, plain text or JSON (`[access_log]`).
//!
//! A request formats its line and hands it to a bounded channel; a writer
//! thread does the disk I/O. When the writer falls behind (slow disk, full
//! pipe) lines are dropped and counted in
//! `slotproxy_access_log_dropped_total` rather than slowing requests down.

use crate::config::{AccessLogFormat, AccessLogSection};
use anyhow::Context;
use serde::Serialize;
use std::io::Write;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::OnceLock;

/// Lines waiting for the writer before new ones are dropped.
const QUEUE: usize = 16 * 1024;

struct Sink {
    tx: SyncSender<String>,
    format: AccessLogFormat,
}

static SINK: OnceLock<Sink> = OnceLock::new();

/// One request, as logged.
#[derive(Debug, Serialize)]
pub struct Entry<'a> {
    pub time: String,
    pub client: Option<std::net::IpAddr>,
    pub host: &'a str,
    pub site: &'a str,
    pub slot: &'a str,
    pub instance: &'a str,
    pub method: &'a str,
    pub path: &'a str,
    /// The client's protocol: `HTTP/1.0`, `HTTP/1.1` or `HTTP/2.0`.
    pub protocol: &'static str,
    pub status: u16,
    /// Response body bytes sent to the client.
    pub bytes: usize,
    /// Seconds from the request header read to the end of the response.
    pub duration: f64,
    /// Why the request went to its slot: query, cookie, weighted,
    /// slot-host, re-bucketed; "-" when it was not routed.
    pub reason: &'a str,
}

/// A client-supplied column written without quotes (the Host): escaped as
/// a quoted one is, and a space as `\x20`, so a client cannot add columns.
struct Unquoted<'a>(&'a str);

impl std::fmt::Display for Unquoted<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for part in self.0.split(' ').enumerate() {
            if part.0 > 0 {
                f.write_str("\\x20")?;
            }
            write!(f, "{}", part.1.escape_debug())?;
        }
        Ok(())
    }
}

impl Entry<'_> {
    /// The line, newline included.
    pub fn format(&self, format: AccessLogFormat) -> String {
        match format {
            AccessLogFormat::Json => {
                let mut line = serde_json::to_string(self).unwrap_or_default();
                line.push('\n');
                line
            }
            AccessLogFormat::Text => {
                let client = self.client.map_or("-".to_string(), |c| c.to_string());
                // Client-supplied parts are escaped so a line stays one line.
                format!(
                    "{} {} {} {} {} {} \"{} {} {}\" {} {} {:.6} {}\n",
                    self.time,
                    client,
                    Unquoted(self.host),
                    self.site,
                    self.slot,
                    self.instance,
                    self.method.escape_debug(),
                    self.path.escape_debug(),
                    self.protocol,
                    self.status,
                    self.bytes,
                    self.duration,
                    self.reason
                )
            }
        }
    }
}

/// Open the log and start its writer thread (once per process).
pub fn init(cfg: &AccessLogSection) -> anyhow::Result<()> {
    if !cfg.enabled || SINK.get().is_some() {
        return Ok(());
    }
    let out: Box<dyn Write + Send> = if cfg.path == "-" {
        Box::new(std::io::stdout())
    } else {
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&cfg.path)
            .with_context(|| format!("cannot open access log {}", cfg.path))?;
        Box::new(f)
    };
    let (tx, rx) = sync_channel(QUEUE);
    std::thread::Builder::new()
        .name("slotproxy-access-log".into())
        .spawn(move || write_lines(rx, out))?;
    let _ = SINK.set(Sink {
        tx,
        format: cfg.format,
    });
    Ok(())
}

fn write_lines(rx: Receiver<String>, out: Box<dyn Write + Send>) {
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, out);
    while let Ok(line) = rx.recv() {
        let mut result = out.write_all(line.as_bytes());
        // Batch what is queued, then flush so lines show up promptly.
        while let (Ok(()), Ok(line)) = (&result, rx.try_recv()) {
            result = out.write_all(line.as_bytes());
        }
        if let Err(e) = result.and_then(|()| out.flush()) {
            log::error!("access log write failed: {e}");
        }
    }
}

/// The format lines are written in, if the access log is on.
pub fn format() -> Option<AccessLogFormat> {
    SINK.get().map(|s| s.format)
}

/// An outlier ejection or return as an access-log line (SPEC §16): in JSON
/// `{"time", "event": "outlier_ejected"|"outlier_returned", "site", "slot",
/// "instance", "times", "detail"}`, in text the time, the event, site, slot,
/// instance and the detail quoted.
pub fn event(e: &crate::outlier::Event) {
    let Some(format) = format() else { return };
    let name = if e.ejected {
        "outlier_ejected"
    } else {
        "outlier_returned"
    };
    write(event_line(format, &e.at, name, e));
}

fn event_line(
    format: AccessLogFormat,
    time: &str,
    name: &str,
    e: &crate::outlier::Event,
) -> String {
    match format {
        AccessLogFormat::Json => {
            let v = serde_json::json!({
                "time": time, "event": name, "site": e.site, "slot": e.slot,
                "instance": e.address, "times": e.times, "detail": e.detail,
            });
            format!("{v}\n")
        }
        AccessLogFormat::Text => format!(
            "{time} {name} {} {} {} \"{}\"\n",
            e.site,
            e.slot,
            e.address,
            e.detail.escape_debug()
        ),
    }
}

/// Queue a line; never blocks.
pub fn write(line: String) {
    let Some(sink) = SINK.get() else { return };
    match sink.tx.try_send(line) {
        Ok(()) => {}
        Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
            crate::metrics::access_log_dropped()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry<'a>(path: &'a str) -> Entry<'a> {
        Entry {
            time: "2024-05-01T10:00:00.000Z".into(),
            client: "10.0.0.1".parse().ok(),
            host: "shop.test",
            site: "shop",
            slot: "staging",
            instance: "127.0.0.1:9201",
            method: "GET",
            path,
            protocol: "HTTP/1.1",
            status: 200,
            bytes: 12,
            duration: 0.0015,
            reason: "weighted",
        }
    }

    #[test]
    fn text_lines_stay_one_line_whatever_the_path() {
        let line = entry("/a b\"\n").format(AccessLogFormat::Text);
        assert_eq!(
            line,
            "2024-05-01T10:00:00.000Z 10.0.0.1 shop.test shop staging 127.0.0.1:9201 \
             \"GET /a b\\\"\\n HTTP/1.1\" 200 12 0.001500 weighted\n"
        );
    }

    #[test]
    fn a_host_cannot_add_columns() {
        let mut e = entry("/");
        e.host = "a.test 10.9.9.9 \"x";
        let line = e.format(AccessLogFormat::Text);
        assert!(
            line.contains(" a.test\\x2010.9.9.9\\x20\\\"x shop "),
            "{line}"
        );
        assert_eq!(
            line.split(' ').count(),
            entry("/").format(AccessLogFormat::Text).split(' ').count()
        );
    }

    #[test]
    fn outlier_events_are_lines_too() {
        let e = crate::outlier::Event {
            site: "shop".into(),
            slot: "production".into(),
            address: "127.0.0.1:9201".into(),
            ejected: true,
            times: 2,
            detail: "5 5xx answers in a row".into(),
            at: String::new(),
        };
        let t = "2024-05-01T10:00:00.000Z";
        assert_eq!(
            event_line(AccessLogFormat::Text, t, "outlier_ejected", &e),
            "2024-05-01T10:00:00.000Z outlier_ejected shop production 127.0.0.1:9201 \"5 5xx answers in a row\"\n"
        );
        let j = event_line(AccessLogFormat::Json, t, "outlier_ejected", &e);
        let v: serde_json::Value = serde_json::from_str(&j).unwrap();
        assert_eq!(
            (v["event"].as_str(), v["times"].as_u64()),
            (Some("outlier_ejected"), Some(2))
        );
    }

    #[test]
    fn json_lines_parse_back() {
        let line = entry("/x?y=\"1\"").format(AccessLogFormat::Json);
        assert!(line.ends_with('\n') && line.matches('\n').count() == 1);
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["path"], "/x?y=\"1\"");
        assert_eq!(v["client"], "10.0.0.1");
        assert_eq!(v["status"], 200);
        assert_eq!(v["reason"], "weighted");
    }
}
