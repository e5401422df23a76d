//! Real etcd servers for the fleet tests and the fleet benchmark: one
//! member alone, or a three-member cluster, on loopback ports picked free
//! (etcd cannot bind port 0 for its peers), with temp data directories;
//! every process killed on drop.

use super::{free_port, wait_for};
use serde_json::Value;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

/// One etcd server on loopback ports (alone, or a member of a cluster),
/// killed on drop.
pub struct Etcd {
    child: Option<Child>,
    name: String,
    pub port: u16,
    pub peer_port: u16,
    /// `--initial-cluster`: every member's `name=peer URL`.
    cluster: String,
    /// The data directory (kept when killed).
    pub data: PathBuf,
    _dir: tempfile::TempDir,
}

impl Etcd {
    /// A one-member etcd; new ports if the free ones picked were taken
    /// meanwhile.
    pub fn start() -> Etcd {
        for _ in 0..3 {
            let mut e = Etcd::member("test", free_port(), free_port(), None);
            e.spawn_process();
            if e.wait_ready().is_ok() {
                return e;
            }
        }
        panic!("etcd did not start on three sets of free ports");
    }

    /// A member (not started): `cluster` is the whole `--initial-cluster`,
    /// `None` for a cluster of one.
    fn member(name: &str, port: u16, peer_port: u16, cluster: Option<String>) -> Etcd {
        let dir = tempfile::tempdir().unwrap();
        Etcd {
            child: None,
            name: name.into(),
            port,
            peer_port,
            cluster: cluster.unwrap_or_else(|| format!("{name}=http://127.0.0.1:{peer_port}")),
            data: dir.path().join("data"),
            _dir: dir,
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// (Re)start on the same ports and data directory and wait until it
    /// answers.
    pub fn spawn(&mut self) {
        self.spawn_process();
        if let Err(e) = self.wait_ready() {
            panic!("{e}");
        }
    }

    fn log_path(&self) -> PathBuf {
        self.data.with_extension("log")
    }

    pub fn spawn_process(&mut self) {
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .unwrap();
        let child = Command::new("etcd")
            .arg(format!("--name={}", self.name))
            .arg(format!("--data-dir={}", self.data.display()))
            .arg(format!("--listen-client-urls={}", self.url()))
            .arg(format!("--advertise-client-urls={}", self.url()))
            .arg(format!("--listen-peer-urls={peer}"))
            .arg(format!("--initial-advertise-peer-urls={peer}"))
            .arg(format!("--initial-cluster={}", self.cluster))
            .arg(format!(
                "--initial-cluster-token={}",
                self.cluster
                    .replace(|c: char| !c.is_ascii_alphanumeric(), "-")
            ))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start etcd (./dev test installs etcd-server)");
        self.child = Some(child);
    }

    /// Wait until it answers a (quorum) read; `Err` if it exited first
    /// (e.g. a port taken since it was picked).
    pub fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            if self.ctl(&["get", "/probe"]).is_ok() {
                return Ok(());
            }
            let exited = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            if let Some(status) = exited {
                self.child = None;
                let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
                let tail: String = log.lines().rev().take(5).collect::<Vec<_>>().join("\n");
                return Err(format!("etcd {} exited with {status}: {tail}", self.name));
            }
            if std::time::Instant::now() > deadline {
                return Err(format!("etcd {} did not answer within 30s", self.name));
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    /// `kill -9`: the data directory stays.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn ctl(&self, args: &[&str]) -> Result<String, String> {
        let out = Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={}", self.url()))
            .arg("--command-timeout=2s")
            .args(args)
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A three-member etcd cluster on loopback, every member killed on drop.
pub struct Cluster {
    pub members: Vec<Etcd>,
}

impl Cluster {
    /// Three members on free ports; all three again on new ports if one
    /// could not start (a port picked here was taken meanwhile).
    pub fn start() -> Cluster {
        let mut last = String::new();
        for _ in 0..3 {
            let ports: Vec<(u16, u16)> = (0..3).map(|_| (free_port(), free_port())).collect();
            let initial = ports
                .iter()
                .enumerate()
                .map(|(i, (_, peer))| format!("m{i}=http://127.0.0.1:{peer}"))
                .collect::<Vec<_>>()
                .join(",");
            let mut members: Vec<Etcd> = ports
                .iter()
                .enumerate()
                .map(|(i, &(port, peer))| {
                    Etcd::member(&format!("m{i}"), port, peer, Some(initial.clone()))
                })
                .collect();
            // all at once: a member answers only once a quorum is up
            for m in &mut members {
                m.spawn_process();
            }
            match members.iter_mut().try_for_each(|m| m.wait_ready()) {
                Ok(()) => return Cluster { members },
                Err(e) => last = e,
            }
        }
        panic!("a three-member etcd cluster did not start: {last}");
    }

    /// `"url1", "url2", "url3"` for `etcd_endpoints`.
    pub fn endpoints(&self) -> String {
        self.members
            .iter()
            .map(|m| format!("\"{}\"", m.url()))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The index of the member that leads now, as a live member says.
    pub fn leader(&self) -> usize {
        wait_for(10, "a leader", || {
            self.members.iter().enumerate().find_map(|(i, m)| {
                m.child.as_ref()?;
                let out = m.ctl(&["endpoint", "status", "-w", "json"]).ok()?;
                let status: Value = serde_json::from_str(&out).ok()?;
                let s = &status[0]["Status"];
                let leader = s["leader"].as_u64()?;
                (leader != 0 && s["header"]["member_id"].as_u64()? == leader).then_some(i)
            })
        })
    }
}
