//! deploy/ is checked with real tools (deploy/check.sh: promtool, systemd-
//! analyze, JSON and YAML parsers), and the config shipped in the Kubernetes
//! ConfigMap is a config slotproxy accepts.

use std::process::Command;

#[test]
fn deploy_files_pass_their_checks() {
    let out = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/check.sh"))
        .output()
        .expect("run deploy/check.sh");
    assert!(
        out.status.success(),
        "deploy/check.sh failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn configmap_config_is_valid() {
    let yaml = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/kubernetes/configmap.yaml"
    ))
    .unwrap();
    // The block scalar after `config.toml: |`, indented four spaces.
    let toml: String = yaml
        .split_once("config.toml: |\n")
        .expect("a config.toml key")
        .1
        .lines()
        .map(|l| l.strip_prefix("    ").unwrap_or(l.trim_start()))
        .collect::<Vec<_>>()
        .join("\n");
    if let Err(e) = slotproxy::config::Config::parse(&toml, "configmap.yaml".as_ref()) {
        panic!("{e}");
    }
}
