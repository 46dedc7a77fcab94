//! Lookup and compile cost of the routing table at 1, 100, 10,000 and 100,000 routes.
//!
//! `cargo bench -p silex-routing --bench lookup`. Each table has 10 routes per host (Prefix and
//! Exact alternating), so 100,000 routes means 10,000 hosts; lookups should not get slower as
//! the table grows.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use silex_routing::{
    Backend, CompiledTable, Endpoint, PathMatch, Route, RoutingTable, VirtualHost, TABLE_VERSION,
};

const SIZES: [usize; 4] = [1, 100, 10_000, 100_000];
const ROUTES_PER_HOST: usize = 10;
const BACKENDS: usize = 100;

fn table(routes: usize) -> RoutingTable {
    let hosts = routes.div_ceil(ROUTES_PER_HOST);
    let hosts = (0..hosts)
        .map(|h| VirtualHost {
            name: format!("host-{h}.example.com"),
            routes: (0..ROUTES_PER_HOST.min(routes - h * ROUTES_PER_HOST))
                .map(|r| Route {
                    path: format!("/r{r}/api"),
                    path_match: if r % 2 == 0 {
                        PathMatch::Prefix
                    } else {
                        PathMatch::Exact
                    },
                    backend: format!("ns/svc-{}:80", (h + r) % BACKENDS),
                    ingress: Some(format!("ns/ing-{h}")),
                    options: Default::default(),
                    redirect_https: false,
                })
                .collect(),
            default_backend: None,
            redirect_https: false,
        })
        .collect();
    let backends: BTreeMap<String, Backend> = (0..BACKENDS)
        .map(|n| {
            let endpoint = Endpoint {
                address: IpAddr::V4(Ipv4Addr::new(10, 0, 0, n as u8)),
                port: 8080,
                weight: 1,
            };
            let backend = Backend {
                service: Some(format!("ns/svc-{n}")),
                endpoints: vec![endpoint],
                ..Default::default()
            };
            (format!("ns/svc-{n}:80"), backend)
        })
        .collect();
    RoutingTable {
        version: TABLE_VERSION,
        listeners: BTreeMap::new(),
        defaults: Default::default(),
        hosts,
        backends,
        default_backend: None,
        certificates: BTreeMap::new(),
        default_certificate: None,
    }
}

fn lookup(c: &mut Criterion) {
    let mut group = c.benchmark_group("route");
    for routes in SIZES {
        let compiled = CompiledTable::compile(&table(routes)).expect("compile");
        let last = routes.div_ceil(ROUTES_PER_HOST) - 1;
        let host = format!("Host-{last}.example.com:443");
        assert!(compiled.route(&host, "/r0/api/v1/users?id=7").is_some());
        group.bench_with_input(BenchmarkId::new("prefix_hit", routes), &host, |b, host| {
            b.iter(|| compiled.route(black_box(host), black_box("/r0/api/v1/users?id=7")))
        });
        if routes > 1 {
            assert!(compiled.route(&host, "/r1/api").is_some());
            group.bench_with_input(BenchmarkId::new("exact_hit", routes), &host, |b, host| {
                b.iter(|| compiled.route(black_box(host), black_box("/r1/api")))
            });
        }
        group.bench_with_input(BenchmarkId::new("host_miss", routes), &(), |b, ()| {
            b.iter(|| compiled.route(black_box("nope.example.com"), black_box("/r0/api")))
        });
    }
    group.finish();
}

fn compile(c: &mut Criterion) {
    let mut group = c.benchmark_group("compile");
    group.sample_size(10);
    for routes in SIZES {
        let raw = table(routes);
        group.bench_with_input(BenchmarkId::from_parameter(routes), &raw, |b, raw| {
            b.iter(|| CompiledTable::compile(black_box(raw)).expect("compile"))
        });
    }
    group.finish();
}

criterion_group!(benches, lookup, compile);
criterion_main!(benches);
