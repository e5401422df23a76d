//! `RouteTable::lookup_host` (once per request), `RouteTable::compile` and a
//! whole publish (compile + `RouteTable::attach_metrics`, once per change or
//! health flip, off the hot path) with 1, 100 and 10,000 sites.

mod support;

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion};
use slotproxy::config::RoutingSection;
use slotproxy::routing::table::Addresses;
use slotproxy::routing::{Health, RouteTable};

const SIZES: [usize; 3] = [1, 100, 10_000];

fn bench_lookup(c: &mut Criterion) {
    let mut group = c.benchmark_group("lookup_host");
    for n in SIZES {
        let table = RouteTable::compile(
            &support::state(n),
            &RoutingSection::default(),
            &Health::new(),
            &Addresses::new(),
            1,
        );
        // a Host header as browsers send it: mixed case is rare, a port is common
        let host = format!("site{}.example.com:8080", n / 2);
        assert!(table.lookup_host(host.as_bytes()).is_some());
        group.bench_with_input(BenchmarkId::new("hit", n), &host, |b, h| {
            b.iter(|| table.lookup_host(black_box(h.as_bytes())))
        });
        let slot_host = format!("site{}-staging.slots.example.com", n / 2);
        assert!(table.lookup_host(slot_host.as_bytes()).is_some());
        group.bench_with_input(BenchmarkId::new("slot_host", n), &slot_host, |b, h| {
            b.iter(|| table.lookup_host(black_box(h.as_bytes())))
        });
        let miss = "unknown.example.org";
        group.bench_with_input(BenchmarkId::new("miss", n), &miss, |b, h| {
            b.iter(|| table.lookup_host(black_box(h.as_bytes())))
        });
    }
    group.finish();
}

fn bench_compile(c: &mut Criterion) {
    let mut group = c.benchmark_group("compile");
    group.sample_size(10);
    for n in SIZES {
        let state = support::state(n);
        let routing = RoutingSection::default();
        let health = Health::new();
        group.bench_with_input(BenchmarkId::from_parameter(n), &state, |b, s| {
            b.iter(|| RouteTable::compile(black_box(s), &routing, &health, &Addresses::new(), 1))
        });
    }
    group.finish();
}

fn bench_publish(c: &mut Criterion) {
    let mut group = c.benchmark_group("publish");
    group.sample_size(10);
    for n in SIZES {
        let state = support::state(n);
        let routing = RoutingSection::default();
        let health = Health::new();
        group.bench_with_input(BenchmarkId::from_parameter(n), &state, |b, s| {
            b.iter(|| {
                let mut t =
                    RouteTable::compile(black_box(s), &routing, &health, &Addresses::new(), 1);
                t.attach_metrics();
                t
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench_lookup, bench_compile, bench_publish);
criterion_main!(benches);
