//! The Kubernetes Ingress conformance scenarios, run against the routing core.
//!
//! The `.feature` files are read from `../shared/conformance/ingress/` (never copied). Each
//! feature's Ingress is translated by hand into the golden table
//! `tests/fixtures/conformance-<feature>/table.json` (whose `manifests.yaml` holds the same
//! Ingress with its Services and EndpointSlices, for the Python translator's tests); every
//! request of every scenario is then routed: a 200 must be served by the named Service, a 404
//! must match nothing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::path::{Path, PathBuf};

use silex_routing::{parse_table, CompiledTable, RoutingTable};

const FEATURES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../../shared/conformance/ingress"
);
const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures");

/// One request of a scenario (a Scenario Outline yields one per Examples row).
#[derive(Debug)]
struct Case {
    /// `file:line` of the scenario, and its name.
    origin: String,
    url: String,
    status: u16,
    service: Option<String>,
}

/// A scenario being read: where it is, its step lines, its Examples rows (header first).
struct Scenario {
    origin: String,
    steps: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Scenario {
    /// The scenario's requests: one, or one per Examples row with `<column>` substituted.
    fn cases(self) -> Vec<Case> {
        let Scenario {
            origin,
            steps,
            rows,
        } = self;
        if rows.is_empty() {
            return vec![case(origin, &steps)];
        }
        let header = &rows[0];
        rows[1..]
            .iter()
            .enumerate()
            .map(|(n, row)| {
                let steps: Vec<String> = steps
                    .iter()
                    .map(|step| {
                        header
                            .iter()
                            .zip(row)
                            .fold(step.clone(), |s, (k, v)| s.replace(&format!("<{k}>"), v))
                    })
                    .collect();
                case(format!("{origin} [example {}]", n + 1), &steps)
            })
            .collect()
    }
}

fn case(origin: String, steps: &[String]) -> Case {
    let mut url = None;
    let mut status = None;
    let mut service = None;
    for step in steps {
        if let Some((_, rest)) = step.split_once(" request to ") {
            url = Some(rest.replace('"', ""));
        } else if let Some((_, rest)) = step.split_once("status-code must be ") {
            status = Some(rest.trim().parse::<u16>().expect("status code"));
        } else if let Some((_, rest)) = step.split_once("served by the \"") {
            service = Some(rest.split('"').next().unwrap_or_default().to_owned());
        }
    }
    let (Some(url), Some(status)) = (url, status) else {
        panic!("{origin}: no request or no status-code step");
    };
    Case {
        origin,
        url,
        status,
        service,
    }
}

/// The scenarios of a feature file: `When I send a "M" request to URL`, `status-code must be
/// N` and `served by the "SVC" service`; Scenario Outlines are expanded over their Examples.
fn cases(feature: &str) -> Vec<Case> {
    let path = Path::new(FEATURES).join(format!("{feature}.feature"));
    let text =
        fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let mut scenarios: Vec<Scenario> = Vec::new();
    let mut in_examples = false;
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if let Some(name) = line
            .strip_prefix("Scenario:")
            .or_else(|| line.strip_prefix("Scenario Outline:"))
        {
            in_examples = false;
            scenarios.push(Scenario {
                origin: format!("{feature}.feature:{}: {}", i + 1, name.trim()),
                steps: Vec::new(),
                rows: Vec::new(),
            });
        } else if let Some(scenario) = scenarios.last_mut() {
            if line.starts_with("Examples:") {
                in_examples = true;
            } else if in_examples && line.starts_with('|') {
                let cells = line.trim_matches('|').split('|');
                scenario
                    .rows
                    .push(cells.map(|cell| cell.trim().to_owned()).collect());
            } else if !line.starts_with('|') {
                scenario.steps.push(line.to_owned());
            }
        }
    }
    scenarios.into_iter().flat_map(Scenario::cases).collect()
}

fn fixture(name: &str) -> PathBuf {
    Path::new(FIXTURES).join(name).join("table.json")
}

fn load(name: &str) -> RoutingTable {
    let path = fixture(name);
    let bytes = fs::read(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    parse_table(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Splits `http://host/path` (or `https://`) into the Host header and the request path.
fn split_url(url: &str) -> (&str, &str) {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .unwrap_or_else(|| panic!("not an http(s) URL: {url}"));
    match rest.find('/') {
        Some(slash) => (&rest[..slash], &rest[slash..]),
        None => (rest, ""),
    }
}

/// Routes every case of `feature` through the compiled `fixture` table; returns the count.
fn run(feature: &str, fixture_name: &str) -> usize {
    let table = CompiledTable::compile(&load(fixture_name))
        .unwrap_or_else(|e| panic!("{fixture_name}: {e}"));
    let cases = cases(feature);
    assert!(
        !cases.is_empty(),
        "no scenarios found in {FEATURES}/{feature}.feature"
    );
    let mut failures = Vec::new();
    for case in &cases {
        let (host, path) = split_url(&case.url);
        let got = table.route(host, path).map(|m| {
            table.backends()[m.backend.0]
                .service
                .clone()
                .unwrap_or_default()
        });
        let want = match case.status {
            200 => Some(format!(
                "conformance/{}",
                case.service
                    .as_deref()
                    .unwrap_or_else(|| panic!("{}: 200 without a service", case.origin))
            )),
            404 => None,
            other => panic!("{}: status {other} is not about routing", case.origin),
        };
        if got != want {
            failures.push(format!(
                "{}\n    GET {} -> {got:?}, want {want:?}",
                case.origin, case.url
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} scenarios failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    cases.len()
}

#[test]
fn path_rules() {
    assert_eq!(run("path_rules", "conformance-path-rules"), 16);
}

#[test]
fn host_rules() {
    // Includes the https:// scenario: routing does not depend on the scheme.
    assert_eq!(run("host_rules", "conformance-host-rules"), 6);
}

#[test]
fn default_backend() {
    let table = load("conformance-default-backend");
    assert!(
        table.hosts.is_empty(),
        "a table with only a default backend"
    );
    let count = run("default_backend", "conformance-default-backend");
    assert_eq!(count, 6, "one case per Examples row");
}

#[test]
fn the_empty_host_of_default_backend_is_exercised() {
    let urls: Vec<String> = cases("default_backend")
        .into_iter()
        .map(|c| c.url)
        .collect();
    assert!(urls.iter().any(|u| split_url(u).0.is_empty()), "{urls:?}");
    assert!(urls.iter().any(|u| split_url(u).1 == "/"), "{urls:?}");
}

/// The golden tables are canonical, as the Python translator must produce them: pretty JSON
/// exactly as serde writes it, hosts sorted by name, routes by (path, match), default options.
#[test]
fn fixtures_are_canonical() {
    let mut seen = 0;
    for entry in fs::read_dir(FIXTURES).unwrap() {
        let dir = entry.unwrap().path();
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        if !name.starts_with("conformance-") {
            continue;
        }
        seen += 1;
        let text = fs::read_to_string(fixture(&name)).unwrap();
        let table = load(&name);
        let canonical = serde_json::to_string_pretty(&table).unwrap() + "\n";
        assert_eq!(
            text, canonical,
            "{name}/table.json is not in canonical form"
        );
        assert!(table.listeners.is_empty(), "{name}");
        assert_eq!(table.defaults, Default::default(), "{name}");
        let names: Vec<&str> = table.hosts.iter().map(|h| h.name.as_str()).collect();
        assert!(
            names.windows(2).all(|w| w[0] < w[1]),
            "{name}: hosts not sorted: {names:?}"
        );
        for host in &table.hosts {
            let keys: Vec<_> = host
                .routes
                .iter()
                .map(|r| (r.path.as_str(), r.path_match))
                .collect();
            let sorted = keys.windows(2).all(|w| {
                (w[0].0, w[0].1 == silex_routing::PathMatch::Prefix)
                    < (w[1].0, w[1].1 == silex_routing::PathMatch::Prefix)
            });
            assert!(
                sorted,
                "{name}: routes of {} not sorted: {keys:?}",
                host.name
            );
        }
        for (id, backend) in &table.backends {
            let (service, port) = id.rsplit_once(':').unwrap();
            assert_eq!(backend.service.as_deref(), Some(service), "{name}: {id}");
            assert!(port.parse::<u16>().is_ok(), "{name}: {id}");
        }
        CompiledTable::compile(&table).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(
            dir.join("manifests.yaml").is_file(),
            "{name}: no manifests.yaml"
        );
    }
    assert!(seen >= 3, "conformance fixtures in {FIXTURES}: {seen}");
}
