//! Simulation of a ramp seen by its clients (docs/performance/
//! control-plane.md, "Ramp: slot vs bucket assignment"): 100,000 clients
//! with churn, a ramp of staging from 0% to 50% in steps of 10, every request routed by the real
//! `routing::decide` on real compiled tables, once with `[routing]
//! assignment = "slot"` (Azure's cookie) and once with `"bucket"`.
//!
//! Per step it prints the realised share of staging (clients served by it
//! over all clients) and how many returning clients switched version,
//! forward (production → staging) and back (staging → production).
//!
//! ```sh
//! cargo run --example ramp_sim            # CLIENTS=100000 CHURN=0.1 SEED=1
//! ```

use rand::{Rng, SeedableRng};
use slotproxy::config::{Assignment, RoutingSection};
use slotproxy::model::{Deployment, Site, Slot, State, PRODUCTION};
use slotproxy::routing::table::{Addresses, WEIGHT_SCALE};
use slotproxy::routing::{decide, Health, RouteTable};

fn env<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn slot(name: &str, percent: Option<f64>, port: u16) -> Slot {
    Slot {
        traffic_percent: percent,
        deployment: Some(Deployment::of(name, vec![format!("127.0.0.1:{port}")])),
        ..Slot::empty(name)
    }
}

fn table(percent: f64, assignment: Assignment) -> RouteTable {
    let site = Site {
        name: "shop".into(),
        hostnames: vec!["shop.test".into()],
        slot_domain: None,
        trusted_proxies: Vec::new(),
        assignment_key: None,
        slots: [slot(PRODUCTION, None, 1), slot("staging", Some(percent), 2)]
            .into_iter()
            .map(|s| (s.name.clone(), s))
            .collect(),
    };
    let state = State {
        sites: [(site.name.clone(), site)].into(),
    };
    let routing = RoutingSection {
        assignment,
        ..RoutingSection::default()
    };
    RouteTable::compile(&state, &routing, &Health::new(), &Addresses::new(), 1)
}

#[derive(Clone, Default)]
struct Client {
    /// The pin cookie's value, as the browser would send it back.
    cookie: Option<Vec<u8>>,
    last: Option<u16>,
}

fn run(assignment: Assignment, clients: usize, churn: f64, seed: u64) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut pop = vec![Client::default(); clients];
    let (mut total_fwd, mut total_back) = (0u64, 0u64);
    let mut worst = 0.0f64;
    println!(
        "\n{assignment:?} assignment ({clients} clients, {:.0}% churn per step)",
        churn * 100.0
    );
    println!("| rule | realised share | |diff| | switched forward | switched back |");
    println!("| ---: | ---: | ---: | ---: | ---: |");
    for step in 0..=5 {
        let percent = f64::from(step * 10);
        let t = table(percent, assignment);
        let site = &t.sites[0];
        let staging = site
            .slots
            .iter()
            .position(|s| &*s.name == "staging")
            .unwrap() as u16;
        if step > 0 {
            for c in pop.iter_mut() {
                if rng.random_bool(churn) {
                    *c = Client::default();
                }
            }
        }
        let (mut on_staging, mut fwd, mut back) = (0u64, 0u64, 0u64);
        for c in pop.iter_mut() {
            let d = decide(
                site,
                None,
                c.cookie.as_deref(),
                rng.random_range(0..WEIGHT_SCALE),
            );
            if d.set_cookie {
                c.cookie = Some(match d.bucket {
                    Some(b) => format!("b.{b}").into_bytes(),
                    None if d.slot == 0 => b"self".to_vec(),
                    None => site.slots[d.slot as usize].name.as_bytes().to_vec(),
                });
            }
            on_staging += u64::from(d.slot == staging);
            match c.last {
                Some(l) if l != d.slot && d.slot == staging => fwd += 1,
                Some(l) if l != d.slot => back += 1,
                _ => {}
            }
            c.last = Some(d.slot);
        }
        let share = on_staging as f64 * 100.0 / clients as f64;
        let diff = (share - percent).abs();
        worst = worst.max(diff);
        total_fwd += fwd;
        total_back += back;
        println!("| {percent}% | {share:.2}% | {diff:.2} | {fwd} | {back} |");
    }
    println!(
        "worst |share - rule|: {worst:.2} points; switched forward {total_fwd}, back {total_back}"
    );
}

fn main() {
    let clients = env("CLIENTS", 100_000usize);
    let churn = env("CHURN", 0.1f64);
    let seed = env("SEED", 1u64);
    run(Assignment::Slot, clients, churn, seed);
    run(Assignment::Bucket, clients, churn, seed);
}
