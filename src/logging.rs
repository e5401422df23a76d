//! The process's logger: env_logger (`RUST_LOG`, default `info`), with
//! pingora's messages that are not what they say put right.
//!
//! A process started with `--upgrade` polls `upgrade_sock` for the old
//! process's sockets once a second, and pingora logs every empty poll as
//! `ERROR No incoming socket transfer, sleep 1s and try again` — on every
//! normal upgrade, since the old process connects only after its SIGQUIT.
//! It means "still waiting", so it is logged as that, at info, as is the
//! old process's `WARN server not ready, will try again` (the new one is
//! not listening yet); pingora's real failures (`Giving up reading socket
//! …`, `… not ready after retries …`) stay errors.

use log::{Level, Log, Metadata, Record};

struct Logger {
    inner: env_logger::Logger,
}

/// What pingora's record means, when it says otherwise.
fn reworded(target: &str, message: &str) -> Option<(Level, &'static str)> {
    if !target.starts_with("pingora_core::server::transfer_fd") {
        return None;
    }
    if message.starts_with("No incoming socket transfer") {
        // the new process, polling before the old one got its SIGQUIT
        return Some((
            Level::Info,
            "waiting for the old process to send its listening sockets (it sends them on SIGQUIT)",
        ));
    }
    if message.starts_with("server not ready") {
        // the old process, before the new one listens on upgrade_sock
        return Some((
            Level::Info,
            "the new process does not listen on upgrade_sock yet; trying again in 1 s",
        ));
    }
    None
}

impl Log for Logger {
    fn enabled(&self, metadata: &Metadata) -> bool {
        self.inner.enabled(metadata)
    }

    fn log(&self, record: &Record) {
        let message = record.args().to_string();
        match reworded(record.target(), &message) {
            Some((level, text)) => {
                let meta = Metadata::builder()
                    .level(level)
                    .target(record.target())
                    .build();
                if self.inner.enabled(&meta) {
                    self.inner.log(
                        &Record::builder()
                            .metadata(meta)
                            .args(format_args!("{text}"))
                            .module_path(record.module_path())
                            .file(record.file())
                            .line(record.line())
                            .build(),
                    );
                }
            }
            None => self.inner.log(record),
        }
    }

    fn flush(&self) {
        self.inner.flush()
    }
}

/// Install the logger (once, first thing in `main`).
pub fn init() {
    let inner =
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).build();
    let max = inner.filter();
    if log::set_boxed_logger(Box::new(Logger { inner })).is_ok() {
        log::set_max_level(max);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_pingoras_empty_poll_is_reworded() {
        let t = "pingora_core::server::transfer_fd";
        let (level, text) =
            reworded(t, "No incoming socket transfer, sleep 1s and try again").unwrap();
        assert_eq!(level, Level::Info);
        assert!(text.contains("waiting"));
        assert_eq!(
            reworded(t, "server not ready, will try again in 1s").map(|r| r.0),
            Some(Level::Info)
        );
        assert_eq!(reworded(t, "Giving up reading socket from: /tmp/x"), None);
        assert_eq!(reworded("slotproxy", "No incoming socket transfer"), None);
    }
}
