//! Randomised tests of config parsing (issue 14): `Config::parse` on
//! arbitrary text, on valid configs edited byte by byte and line by line,
//! and on valid configs with one value, key or table changed in the parsed
//! tree (structure-aware: the edit survives TOML syntax and reaches the
//! validation behind it). Whatever the input: no panic, and a refusal names
//! what was wrong — every problem has a key or line and a reason, and a
//! value changed to another type is named by its key.
//!
//! A few seconds in `cargo test`; a longer run:
//! `SLOTPROXY_FUZZ_CASES=200000 cargo test --release --test config_fuzz`
//! (and `SLOTPROXY_FUZZ_SEED=n` for other inputs).

mod fuzz_support;
use fuzz_support::*;
use rand::Rng;
use slotproxy::config::{Config, ConfigError};
use std::path::Path;

const SHIPPED: &str = include_str!("../config.toml");

/// Every section, and most keys, in one valid config.
const RICH: &str = r#"
[server]
listen = ["127.0.0.1:8080", "[::1]:8080"]
threads = 2
keepalive_timeout_secs = 75
header_timeout_secs = 60
body_timeout_secs = 60
max_header_bytes = 32768
max_uri_bytes = 8192
max_connections = 1000
max_connections_per_ip = 10
h2c = true
h2_max_concurrent_streams = 64
drain_secs = 5
connect_timeout_ms = 500
upstream_read_timeout_secs = 30
[admin]
listen = "127.0.0.1:9080"
token = "t0ken"
[metrics]
listen = "127.0.0.1:9091"
[state]
dir = "./state"
[routing]
cookie_name = "pin"
query_param = "slot"
cookie_max_age_secs = 60
assignment = "bucket"
[health]
interval_ms = 1000
timeout_ms = 500
path = "/healthz"
unhealthy_threshold = 3
healthy_threshold = 2
[access_log]
format = "json"

[[sites]]
name = "shop"
hostnames = ["shop.example.com", "www.shop.example.com"]
slot_domain = "slots.example.com"
trusted_proxies = ["10.0.0.0/8", "192.168.1.1"]
assignment_key = "header:X-User-Id"
[[sites.slots]]
name = "production"
build_version = "v1"
instances = ["127.0.0.1:9101", "127.0.0.1:9102"]
warmup_path = "/ready"
warmup_statuses = [200, 204]
warmup_timeout_secs = 30
warmup_retries = 2
settings_hook_path = "/settings"
target_build_version = "v1"
[sites.slots.settings]
A = "1"
[sites.slots.sticky_settings]
DB = "prod"
[[sites.slots]]
name = "staging"
hostnames = ["beta.shop.example.com"]
traffic_percent = 12.5
ip_allow = ["127.0.0.0/8"]
auto_swap_target = "production"
build_version = "v2"
instances = ["127.0.0.1:9201"]
instances_protocol = "h2c"
health_check = "grpc"
upstream_read_timeout_secs = 3600
[[sites.slots]]
name = "qa"
traffic_percent = 0

[[sites]]
name = "blog"
hostnames = ["blog.example.com"]
[[sites.slots]]
name = "production"
"#;

const TOML_BYTES: &[u8] = b"[]=.,'\"{}#\n\r\t -_:/0123456789abcxyz\\\xc3\xa9";

/// Parse, and on a refusal check that it says what was wrong.
fn check(text: &str) -> Result<(), ConfigError> {
    let parsed = std::panic::catch_unwind(|| Config::parse(text, Path::new("fuzz.toml")));
    let result = match parsed {
        Ok(r) => r,
        Err(_) => panic!("Config::parse panicked on:\n{text}"),
    };
    let e = match result {
        Ok(_) => return Ok(()),
        Err(e) => e,
    };
    assert!(
        !e.problems.is_empty(),
        "a refusal without a problem:\n{text}"
    );
    for p in &e.problems {
        assert!(
            !p.key.trim().is_empty() && !p.reason.trim().is_empty(),
            "a problem that names nothing ({p:?}) for:\n{text}"
        );
    }
    assert!(e.to_string().contains("fuzz.toml"), "{e}");
    Err(e)
}

#[test]
fn the_seed_configs_are_valid() {
    check(SHIPPED).unwrap();
    if let Err(e) = check(RICH) {
        panic!("{e}");
    }
}

#[test]
fn arbitrary_text_never_panics() {
    let mut rng = rng();
    for _ in 0..cases(3000) {
        let raw = bytes(&mut rng, TOML_BYTES, 120);
        let _ = check(&String::from_utf8_lossy(&raw));
    }
}

#[test]
fn edited_text_never_panics_and_refusals_name_the_problem() {
    let mut rng = rng();
    let seeds = [SHIPPED, RICH];
    for _ in 0..cases(2000) {
        let seed = seeds[rng.random_range(0..seeds.len())];
        let text = if rng.random_bool(0.5) {
            String::from_utf8_lossy(&mutate_bytes(&mut rng, seed.as_bytes(), TOML_BYTES))
                .into_owned()
        } else {
            mutate_lines(&mut rng, seed)
        };
        let _ = check(&text);
    }
}

#[test]
fn tree_edits_never_panic_and_a_wrong_type_is_named_by_its_key() {
    let mut rng = rng();
    let seeds: Vec<serde_json::Value> = [SHIPPED, RICH]
        .iter()
        .map(|t| serde_json::to_value(toml::from_str::<toml::Table>(t).unwrap()).unwrap())
        .collect();
    let (mut tried, mut refused) = (0, 0);
    for _ in 0..cases(2000) {
        let before = &seeds[rng.random_range(0..seeds.len())];
        let mut after = before.clone();
        let path = mutate_json(&mut rng, &mut after);
        // TOML has no null, and top-level keys must be tables or arrays of them
        let Ok(table) = toml::Table::try_from(&after) else {
            continue;
        };
        let Ok(text) = toml::to_string(&table) else {
            continue;
        };
        tried += 1;
        let Err(e) = check(&text) else { continue };
        refused += 1;
        // a leaf of one type turned into another: the refusal names its key
        if let Some(key) = retyped_key(before, &after, &path) {
            assert!(
                e.to_string().contains(key),
                "{key} changed type, but the refusal does not name it: {e}\n{text}"
            );
        }
    }
    // the mutations must reach both acceptance and refusal
    assert!(
        tried > 0 && refused > 0 && refused < tried,
        "{refused} of {tried} refused"
    );
}

// ---- regressions: inputs the properties above found ----------------------

#[test]
fn regression_syntax_errors_without_a_parser_message_still_say_where() {
    // a bare carriage return: the TOML parser gave these an empty message,
    // so the refusal said "line 1 (...): " and nothing more
    for (text, line) in [("\r9_6b#\n", 1), ("a = 1\n# c\r\r/- c=5\n", 2)] {
        let e = check(text).unwrap_err();
        let p = &e.problems[0];
        assert!(p.key.starts_with(&format!("line {line} ")), "{p:?}");
        assert!(p.reason.contains("column"), "{p:?}");
    }
}
