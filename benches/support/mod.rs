//! Shared fixtures for the criterion benches: `State`s built from the model
//! structs (no TOML parsing in the measured path or its setup).

#![allow(dead_code)]

use slotproxy::model::{Deployment, Site, Slot, State, PRODUCTION};
use std::collections::BTreeMap;

/// A slot with a deployment on one loopback instance.
pub fn slot(name: &str, percent: Option<f64>, port: u16) -> Slot {
    Slot {
        traffic_percent: percent,
        deployment: Some(Deployment::of(
            &format!("{name}-v1"),
            vec![format!("127.0.0.1:{port}")],
        )),
        ..Slot::empty(name)
    }
}

/// Site `i`: host `site<i>.example.com`, slot domain `slots.example.com`,
/// production, `staging` at 10% and an opt-in slot `qa` (explicit 0%).
pub fn site(i: usize) -> Site {
    let port = 1000 + (i % 60_000) as u16;
    let slots = [
        slot(PRODUCTION, None, port),
        slot("staging", Some(10.0), port),
        slot("qa", Some(0.0), port),
    ];
    Site {
        name: format!("site{i}"),
        hostnames: vec![format!("site{i}.example.com")],
        slot_domain: Some("slots.example.com".into()),
        trusted_proxies: Vec::new(),
        assignment_key: None,
        slots: slots.into_iter().map(|s| (s.name.clone(), s)).collect(),
    }
}

/// A state with `n` sites shaped like [`site`].
pub fn state(n: usize) -> State {
    let sites: BTreeMap<String, Site> = (0..n).map(site).map(|s| (s.name.clone(), s)).collect();
    let state = State { sites };
    let problems = state.validate();
    assert!(
        problems.is_empty(),
        "bench fixture is invalid: {problems:?}"
    );
    state
}
