//! The allocator's options and its collector thread (src/allocator.rs), on
//! the real binary: `serve` re-executes itself with mimalloc's options set,
//! the operator's `MIMALLOC_*` values win, and the thread that carries out
//! delayed purges runs exactly when the delay in effect leaves purges to
//! carry out (which also proves the option is read from mimalloc by the
//! right index: a wrong one would read another option's value).

mod common;

use common::{config_text, free_port, wait_for, BIN};
use std::process::{Child, Command, Stdio};

/// `slotproxy serve` with the given `MIMALLOC_*` variables (and no others
/// from the test's own environment), killed on drop.
struct Serve {
    child: Child,
    _dir: tempfile::TempDir,
}

impl Serve {
    fn start(mimalloc_env: &[(&str, &str)]) -> Serve {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let config = dir.path().join("config.toml");
        std::fs::write(
            &config,
            config_text(
                port,
                free_port(),
                free_port(),
                &dir.path().join("state"),
                "",
            ),
        )
        .unwrap();
        let mut cmd = Command::new(BIN);
        cmd.args(["serve", "--config"])
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        for (name, _) in std::env::vars() {
            if name.starts_with("MIMALLOC_") || name == "SLOTPROXY_ALLOCATOR_TUNED" {
                cmd.env_remove(name);
            }
        }
        cmd.envs(mimalloc_env.iter().copied());
        let mut serve = Serve {
            child: cmd.spawn().expect("start slotproxy"),
            _dir: dir,
        };
        wait_for(30, "slotproxy listening", || {
            if let Some(status) = serve.child.try_wait().unwrap() {
                panic!("slotproxy exited with {status}");
            }
            std::net::TcpStream::connect(("127.0.0.1", port)).ok()
        });
        serve
    }

    /// The names of the process's threads.
    fn threads(&self) -> Vec<String> {
        let tasks = format!("/proc/{}/task", self.child.id());
        std::fs::read_dir(tasks)
            .unwrap()
            .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
            .map(|name| name.trim().to_string())
            .collect()
    }

    /// The value of `name` in the (re-executed) process's environment.
    fn env(&self, name: &str) -> Option<String> {
        let environ = std::fs::read(format!("/proc/{}/environ", self.child.id())).unwrap();
        environ.split(|b| *b == 0).find_map(|entry| {
            let entry = String::from_utf8_lossy(entry);
            let (n, v) = entry.split_once('=')?;
            (n == name).then(|| v.to_string())
        })
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn serve_runs_with_a_purge_delay_and_its_collector() {
    let serve = Serve::start(&[]);
    assert_eq!(
        serve.env("MIMALLOC_PURGE_DELAY").as_deref(),
        Some(slotproxy::allocator::PURGE_DELAY_MS.to_string().as_str())
    );
    assert_eq!(serve.env("MIMALLOC_PURGE_DECOMMITS").as_deref(), Some("1"));
    assert_eq!(
        serve.env("MIMALLOC_ARENA_EAGER_COMMIT").as_deref(),
        Some("0")
    );
    let threads = serve.threads();
    assert!(
        threads.iter().any(|t| t == "slotproxy-alloc"),
        "no collector thread among {threads:?}"
    );
}

#[test]
fn the_operators_immediate_purge_wins_and_needs_no_collector() {
    let serve = Serve::start(&[("MIMALLOC_PURGE_DELAY", "0")]);
    assert_eq!(serve.env("MIMALLOC_PURGE_DELAY").as_deref(), Some("0"));
    // the options the operator left alone are still set
    assert_eq!(serve.env("MIMALLOC_PURGE_DECOMMITS").as_deref(), Some("1"));
    let threads = serve.threads();
    assert!(
        !threads.iter().any(|t| t == "slotproxy-alloc"),
        "a collector thread with immediate purging: {threads:?}"
    );
}

#[test]
fn the_operators_own_delay_is_carried_out_by_the_collector() {
    let serve = Serve::start(&[("MIMALLOC_PURGE_DELAY", "2500")]);
    assert_eq!(serve.env("MIMALLOC_PURGE_DELAY").as_deref(), Some("2500"));
    let threads = serve.threads();
    assert!(
        threads.iter().any(|t| t == "slotproxy-alloc"),
        "no collector thread among {threads:?}"
    );
}
