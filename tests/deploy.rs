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

/// The config shipped in a ConfigMap (`path` under deploy/), parsed and
/// checked as slotproxy does at start.
fn configmap_config(path: &str) -> (slotproxy::config::Config, slotproxy::model::State) {
    let yaml =
        std::fs::read_to_string(format!("{}/deploy/{path}", env!("CARGO_MANIFEST_DIR"))).unwrap();
    // The block scalar after `config.toml: |`, indented four spaces.
    let toml: String = yaml
        .split_once("config.toml: |\n")
        .expect("a config.toml key")
        .1
        .lines()
        .map(|l| l.strip_prefix("    ").unwrap_or(l.trim_start()))
        .collect::<Vec<_>>()
        .join("\n");
    slotproxy::config::Config::parse(&toml, path.as_ref()).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn configmap_config_is_valid() {
    configmap_config("kubernetes/configmap.yaml");
}

#[test]
fn fleet_configmap_config_is_a_valid_etcd_config() {
    let (config, seed) = configmap_config("kubernetes-fleet/configmap-patch.yaml");
    // the same sites as the single-node variant: the fleet seeds etcd with them
    assert_eq!(seed, configmap_config("kubernetes/configmap.yaml").1);
    assert_eq!(config.state.backend, slotproxy::config::StateBackend::Etcd);
    assert_eq!(config.state.etcd_endpoints.len(), 3);
    assert!(
        config.state.problems().is_empty(),
        "{:?}",
        config.state.problems()
    );
}
