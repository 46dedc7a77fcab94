//! Correctness at scale (not timing): 100,000 exact hosts and 1,000 wildcard hosts.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

use silex_routing::{
    Backend, CompiledTable, Endpoint, PathMatch, Route, RoutingTable, VirtualHost, TABLE_VERSION,
};

const EXACT: usize = 100_000;
const WILDCARD: usize = 1_000;
const BACKENDS: usize = 1_000;

fn backend_id(n: usize) -> String {
    format!("ns/svc-{n:04}:80")
}

fn route(path: &str, path_match: PathMatch, backend: usize) -> Route {
    Route {
        path: path.to_owned(),
        path_match,
        backend: backend_id(backend),
        ingress: None,
        options: Default::default(),
        redirect_https: false,
    }
}

/// Host `i` routes `/` to backend `i`, `/api` to `i+1`, `/api/v1` to `i+2` and exact
/// `/health` to `i+3` (all modulo [`BACKENDS`]).
fn host(name: String, i: usize) -> VirtualHost {
    VirtualHost {
        name,
        routes: vec![
            route("/", PathMatch::Prefix, i % BACKENDS),
            route("/api", PathMatch::Prefix, (i + 1) % BACKENDS),
            route("/api/v1/", PathMatch::Prefix, (i + 2) % BACKENDS),
            route("/health", PathMatch::Exact, (i + 3) % BACKENDS),
        ],
        default_backend: None,
        redirect_https: false,
    }
}

fn big_table() -> RoutingTable {
    let mut hosts: Vec<VirtualHost> = (0..EXACT)
        .map(|i| host(format!("host-{i}.example.com"), i))
        .collect();
    hosts.extend((0..WILDCARD).map(|i| host(format!("*.zone-{i}.example.org"), EXACT + i)));
    let backends: BTreeMap<String, Backend> = (0..BACKENDS)
        .map(|n| {
            let backend = Backend {
                service: Some(format!("ns/svc-{n:04}")),
                endpoints: vec![Endpoint {
                    address: IpAddr::V4(Ipv4Addr::new(10, 0, (n / 256) as u8, (n % 256) as u8)),
                    port: 8080,
                    weight: 1,
                }],
                ..Default::default()
            };
            (backend_id(n), backend)
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

#[test]
fn lookups_are_correct_in_a_large_table() {
    let table = CompiledTable::compile(&big_table()).expect("compile");
    let served = |host: &str, path: &str| {
        table
            .route(host, path)
            .map(|m| table.backends()[m.backend.0].id.clone())
    };
    for i in [0, 1, EXACT / 2, EXACT - 1] {
        let host = format!("host-{i}.example.com");
        assert_eq!(served(&host, "/"), Some(backend_id(i % BACKENDS)), "{host}");
        assert_eq!(
            served(&host, "/api/x"),
            Some(backend_id((i + 1) % BACKENDS))
        );
        assert_eq!(
            served(&host, "/api/v1/users"),
            Some(backend_id((i + 2) % BACKENDS))
        );
        assert_eq!(
            served(&host, "/health"),
            Some(backend_id((i + 3) % BACKENDS))
        );
        assert_eq!(served(&host, "/health/x"), Some(backend_id(i % BACKENDS)));
        let upper = format!("HOST-{i}.Example.com:8443");
        assert_eq!(served(&upper, "/api"), Some(backend_id((i + 1) % BACKENDS)));
    }
    for i in [0, WILDCARD - 1] {
        let n = EXACT + i;
        let host = format!("anything.zone-{i}.example.org");
        let m = table.route(&host, "/api/v1").unwrap();
        assert_eq!(m.host, format!("*.zone-{i}.example.org"));
        assert_eq!(
            table.backends()[m.backend.0].id,
            backend_id((n + 2) % BACKENDS)
        );
        assert_eq!(served(&format!("zone-{i}.example.org"), "/"), None);
        assert_eq!(served(&format!("a.b.zone-{i}.example.org"), "/"), None);
    }
    assert_eq!(served("host-100000.example.com", "/"), None);
    assert_eq!(served("example.com", "/"), None);
    assert_eq!(served("", "/"), None);
    assert_eq!(table.backends().len(), BACKENDS);
}
